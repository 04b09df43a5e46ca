"""CIFAR-10, read from the python version of the dataset (what torchvision downloads)."""

from __future__ import annotations

import pickle
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import download_and_extract_archive

from al_lightning.data.datasets import ArrayImageDataset
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import cifar_transforms
from al_lightning.errors import ConfigurationError

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
#: Where ``download=True`` puts the data when no path is given (relative to the working directory).
DEFAULT_DOWNLOAD_PATH = "./data/cifar10"


@register_source("cifar10")
class CIFAR10Source(DatasetSource):
    """CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009).

    50,000 training and 10,000 test 32×32 RGB images in 10 classes, read from
    ``path/cifar-10-batches-py/`` (``path`` may also be that folder itself). The batches are
    unpickled directly rather than through torchvision's ``CIFAR10``, which checks MD5 sums
    and so rejects anything but the exact published files. With ``download=True`` a missing
    copy is fetched by torchvision's downloader into ``path`` (default ``./data/cifar10``).
    CIFAR transforms as in the paper: random crop with 4-pixel padding + flip for training,
    normalisation only for evaluation.

    Args:
        download: fetch the data when it is missing (``--data.dataset_args.download=true``).
    """

    layout = f"a folder holding {BATCHES_DIR}/ with {', '.join(TRAIN_FILES)}, {TEST_FILE} and {META_FILE}"

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None, download: bool = False) -> None:
        super().__init__(path or (DEFAULT_DOWNLOAD_PATH if download else None), image_size)
        self.image_size = image_size or 32
        self.download = download
        if self.path is None:
            raise ConfigurationError(
                f"dataset '{self.name}' needs --data.path ({self.layout}), "
                f"or --data.dataset_args.download=true to download it into {DEFAULT_DOWNLOAD_PATH}"
            )
        self.root = self.path if (self.path / TRAIN_FILES[0]).is_file() else self.path / BATCHES_DIR
        missing = self._missing_files()
        if missing and not download:
            raise ConfigurationError(
                f"dataset '{self.name}': no CIFAR-10 data in '{self.path}' (missing {', '.join(missing)}); "
                f"pass --data.dataset_args.download=true to download it there, or point --data.path at {self.layout}"
            )

    @property
    def num_classes(self) -> int:
        return 10

    def load(self) -> DatasetSplits:
        if self.download and self._missing_files():
            self._download()
        train_images, train_targets = self._read_batches(TRAIN_FILES)
        test_images, test_targets = self._read_batches((TEST_FILE,))
        class_names = self._read(META_FILE).get("label_names")
        if not isinstance(class_names, list) or len(class_names) != self.num_classes:
            raise self._unreadable(META_FILE, f"expected 'label_names' with {self.num_classes} names")
        train_transform, eval_transform = cifar_transforms(self.image_size)
        return DatasetSplits(
            train=ArrayImageDataset(train_images, train_targets),
            test=ArrayImageDataset(test_images, test_targets),
            train_targets=train_targets,
            class_names=[str(name) for name in class_names],
            train_transform=train_transform,
            eval_transform=eval_transform,
        )

    def _missing_files(self) -> list[str]:
        files = (self.root / name for name in (*TRAIN_FILES, TEST_FILE, META_FILE))
        return [str(file.relative_to(self.path)) for file in files if not file.is_file()]

    def _download(self) -> None:
        try:
            download_and_extract_archive(CIFAR10.url, str(self.path), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad checksum a RuntimeError
            raise ConfigurationError(
                f"dataset '{self.name}': downloading {CIFAR10.url} into '{self.path}' failed ({err}); "
                f"download and extract it by hand so that --data.path is {self.layout}"
            ) from err
        if self._missing_files():
            raise ConfigurationError(f"dataset '{self.name}': still missing {', '.join(self._missing_files())} after downloading")

    def _read_batches(self, names: tuple[str, ...]) -> tuple[np.ndarray, Tensor]:
        """(N, 32, 32, 3) uint8 images and (N,) targets from the pickled batches ``names``."""
        images, targets = [], []
        for name in names:
            batch = self._read(name)
            data, labels = batch.get("data"), batch.get("labels")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise self._unreadable(name, "expected 'data' as an (n, 3072) uint8 array")
            if labels is None or len(labels) != data.shape[0]:
                raise self._unreadable(name, f"expected 'labels' with one label per row of 'data' ({data.shape[0]})")
            images.append(data)
            targets.extend(labels)
        # Rows are channel-major (1024 R, 1024 G, 1024 B); PIL wants height × width × channel.
        pixels = np.ascontiguousarray(np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        targets = torch.as_tensor(targets, dtype=torch.long)
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.num_classes):
            raise self._unreadable(names[0], f"labels outside 0..{self.num_classes - 1}")
        return pixels, targets

    def _read(self, name: str) -> dict[str, Any]:
        file = self.root / name
        try:
            with open(file, "rb") as f:
                content = pickle.load(f, encoding="latin1")
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError) as err:
            raise self._unreadable(name, f"{type(err).__name__}: {err}") from err
        if not isinstance(content, dict):
            raise self._unreadable(name, f"expected a pickled dict, found {type(content).__name__}")
        return content

    def _unreadable(self, name: str, reason: str) -> ConfigurationError:
        return ConfigurationError(
            f"dataset '{self.name}': cannot read '{self.root / name}' ({reason}); it is not the python version of "
            f"CIFAR-10: delete '{self.root}' and pass --data.dataset_args.download=true to fetch a fresh copy"
        )
