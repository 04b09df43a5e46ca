"""ImageNet-LT: the long-tailed ImageNet subset of Liu et al. (2019), from its split files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from al_lightning.data.images import ImageFileDataset
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import imagenet_transforms
from al_lightning.errors import ConfigurationError

TRAIN_FILE = "ImageNet_LT_train.txt"
TEST_FILE = "ImageNet_LT_test.txt"
LINE_FORMAT = "'<path relative to --data.path> <integer label>', e.g. 'train/n01440764/n01440764_10026.JPEG 0'"


@register_source("imagenet_lt")
class ImageNetLTSource(DatasetSource):
    """ImageNet-LT (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019).

    115,846 training images of ImageNet in 1,000 classes, 1,280 down to 5 per class (a Pareto
    profile), and a balanced test set of 50,000 images (50 per class) from ImageNet's
    validation set. ``path`` is the ImageNet root (``train/<wnid>/``, ``val/<wnid>/``) that
    the split files ``ImageNet_LT_train.txt`` and ``ImageNet_LT_test.txt`` (in ``split_dir``,
    default ``path``) refer to, one ``<relative path> <label>`` per line. The split files are
    read at construction (a few MB); no image is opened until it is read. Class names are the
    WordNet ids taken from the paths' folders. ImageNet transforms at ``image_size`` (default 224).

    Args:
        split_dir: the folder holding the two split files, when not ``path``.
        skip_corrupt: serve ``None`` (with a warning) for an unreadable image instead of stopping.
    """

    needs_path = True
    layout = f"the ImageNet root (train/<wnid>/, val/<wnid>/) that the paths in {TRAIN_FILE} and {TEST_FILE} are relative to"

    def __init__(
        self,
        path: Optional[str] = None,
        image_size: Optional[int] = None,
        split_dir: Optional[str] = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(path, image_size)
        self.image_size = image_size or 224
        self.skip_corrupt = skip_corrupt
        self.split_dir = Path(split_dir).expanduser() if split_dir else self.path
        missing = [name for name in (TRAIN_FILE, TEST_FILE) if not (self.split_dir / name).is_file()]
        if missing:
            raise ConfigurationError(
                f"dataset '{self.name}': no {' or '.join(missing)} in '{self.split_dir}'; put the ImageNet-LT split "
                f"files (Liu et al. 2019) there, or pass --data.dataset_args.split_dir=<the folder holding them>"
            )
        self.train_files, self.train_targets = self._read_split(TRAIN_FILE)
        self.test_files, self.test_targets = self._read_split(TEST_FILE)
        self._num_classes = int(max(self.train_targets.max(), self.test_targets.max())) + 1
        self.class_names = self._class_names()

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def load(self) -> DatasetSplits:
        train_transform, eval_transform = imagenet_transforms(self.image_size)
        return DatasetSplits(
            train=ImageFileDataset(self.path, self.train_files, self.train_targets, skip_corrupt=self.skip_corrupt),
            test=ImageFileDataset(self.path, self.test_files, self.test_targets, skip_corrupt=self.skip_corrupt),
            train_targets=self.train_targets,
            class_names=list(self.class_names),
            train_transform=train_transform,
            eval_transform=eval_transform,
        )

    def _read_split(self, name: str) -> tuple[list[str], Tensor]:
        """The relative paths and labels listed in split file ``name``, checked line by line."""
        file = self.split_dir / name
        files, labels = [], []
        with open(file, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                fields = line.rsplit(maxsplit=1)
                if len(fields) != 2 or not fields[1].isdecimal():
                    raise ConfigurationError(
                        f"dataset '{self.name}': line {number} of '{file}' is {line.strip()!r}; expected {LINE_FORMAT}"
                    )
                files.append(fields[0].strip())
                labels.append(int(fields[1]))
        if not files:
            raise ConfigurationError(f"dataset '{self.name}': '{file}' lists no images; expected lines {LINE_FORMAT}")
        # One stat per split catches a --data.path that is not the root the split files refer to.
        if not (self.path / files[0]).is_file():
            raise ConfigurationError(
                f"dataset '{self.name}': '{self.path / files[0]}' (line 1 of {name}) does not exist; --data.path "
                f"should be {self.layout}"
            )
        return files, torch.as_tensor(labels, dtype=torch.long)

    def _class_names(self) -> list[str]:
        """Each label's WordNet id: the folder of the first image listed with it (its label if none is)."""
        names = [str(c) for c in range(self._num_classes)]
        seen = set()
        for files, targets in ((self.train_files, self.train_targets), (self.test_files, self.test_targets)):
            for file, target in zip(files, targets.tolist()):
                if target not in seen:
                    seen.add(target)
                    names[target] = Path(file).parent.name
        return names
