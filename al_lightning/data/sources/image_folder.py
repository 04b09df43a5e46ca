"""Any tree of class folders: ``path/train/<class>/<image>`` and ``path/test/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torchvision.datasets import ImageFolder

from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import imagenet_transforms
from al_lightning.errors import ConfigurationError

#: Names accepted for the test split's folder, tried in order.
TEST_DIRS = ("test", "val")


@register_source("image_folder")
class ImageFolderSource(DatasetSource):
    """A user's images in torchvision's ImageFolder layout, one folder per class.

    ``path/train`` is the pool (minus the validation split); ``path/test`` (or ``path/val``)
    is the test split and must hold the same class folders. ImageNet-style transforms at
    ``image_size`` (default 224).
    """

    needs_path = True
    layout = "a folder with train/<class>/<image> and test/<class>/<image> (or val/<class>/<image>)"

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None) -> None:
        super().__init__(path, image_size)
        self.image_size = image_size or 224
        self.train_dir = self._require_dir(self.path / "train")
        self.test_dir = next((self.path / d for d in TEST_DIRS if (self.path / d).is_dir()), None)
        if self.test_dir is None:
            raise ConfigurationError(f"dataset '{self.name}': no test/ or val/ folder in '{self.path}'; expected {self.layout}")

    @property
    def class_names(self) -> list[str]:
        return sorted(entry.name for entry in self.train_dir.iterdir() if entry.is_dir())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self) -> DatasetSplits:
        train, test = self._folder(self.train_dir), self._folder(self.test_dir)
        if test.classes != train.classes:
            raise ConfigurationError(
                f"dataset '{self.name}': {self.test_dir} has classes {test.classes[:5]}... but "
                f"{self.train_dir} has {train.classes[:5]}...; both splits need the same class folders"
            )
        train_transform, eval_transform = imagenet_transforms(self.image_size)
        return DatasetSplits(
            train=train,
            test=test,
            train_targets=torch.as_tensor(train.targets, dtype=torch.long),
            class_names=list(train.classes),
            train_transform=train_transform,
            eval_transform=eval_transform,
        )

    def _require_dir(self, path: Path) -> Path:
        if not path.is_dir():
            raise ConfigurationError(f"dataset '{self.name}': '{path}' is not a folder; expected {self.layout}")
        return path

    def _folder(self, root: Path) -> ImageFolder:
        try:
            return ImageFolder(str(root))
        except (FileNotFoundError, RuntimeError) as err:
            raise ConfigurationError(f"dataset '{self.name}': cannot read '{root}' ({err}); expected {self.layout}") from err
