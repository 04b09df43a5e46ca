"""Fashion-MNIST, read from its four idx files (Debian's ``dataset-fashion-mnist`` or torchvision's layout)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from al_lightning.data.datasets import TensorImageDataset
from al_lightning.data.sources.cifar10_lt import check_imbalance_ratio, long_tail_keep
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import grayscale_transforms
from al_lightning.errors import ConfigurationError

#: Where Debian's package ``dataset-fashion-mnist`` installs the files; the default ``--data.path``.
DEBIAN_PATH = "/usr/share/datasets/fashion-mnist"
#: Where torchvision's ``FashionMNIST(root, download=True)`` puts them, under ``root``.
TORCHVISION_DIR = "FashionMNIST/raw"
#: (images, labels) file names of each split, without the ``.gz`` that both layouts may add.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SIZE = 28
#: Pixel mean and std of the 60,000 training images (values in [0, 1]).
MEAN, STD = 0.2860, 0.3530
#: idx magic numbers: two zero bytes, 0x08 (unsigned bytes), then the number of dimensions.
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
HOW_TO_GET = (
    f"install Debian's package (apt-get install dataset-fashion-mnist: files in {DEBIAN_PATH}, the default --data.path) "
    f"or point --data.path at a folder holding {TORCHVISION_DIR}/ as torchvision's FashionMNIST(root, download=True) writes it"
)


def read_idx(file: Path, magic: int) -> np.ndarray:
    """An idx file (LeCun's MNIST format, gzipped or not) as a uint8 array of its dimensions.

    Read whole and viewed with ``np.frombuffer`` (no per-item parsing): the 47 MB of
    training images take a few tenths of a second, most of it gunzip.

    Raises:
        ValueError: the file is not an idx file with ``magic``, or holds fewer bytes than its
            header says (a truncated copy); the message says which.
    """
    try:
        raw = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"truncated or corrupt gzip data: {err}") from err
    if len(raw) < 4:
        raise ValueError(f"{len(raw)} bytes, shorter than an idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{len(raw)} bytes, shorter than its {header}-byte header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        dims = "×".join(str(d) for d in shape)
        problem = "truncated" if len(raw) < expected else "trailing bytes"
        raise ValueError(f"{problem}: the header says {dims}, {expected:,} bytes in all, the file has {len(raw):,}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@register_source("fashion_mnist")
class FashionMNISTSource(DatasetSource):
    """Fashion-MNIST (Xiao et al., 2017): 60,000 training and 10,000 test 28×28 grayscale
    images of 10 kinds of garment, 6,000 and 1,000 per class.

    Read from the four idx files, gzipped or not, in ``path`` (default: Debian's
    ``/usr/share/datasets/fashion-mnist``) or in ``path/FashionMNIST/raw`` (torchvision's
    layout; ``path`` may also be that folder itself). No checksum is checked, so Debian's
    recompressed files, torchvision's and a slice of them all load. Images stay uint8 in
    memory (55 MB for both splits); the transforms repeat the gray channel for 3-channel
    backbones (see :func:`~al_lightning.data.transforms.grayscale_transforms`), at the natural
    28 px unless ``--data.image_size`` says otherwise.

    Args:
        imbalance_ratio: > 1 cuts the training set to the long tail of ``cifar10_lt``, with the
            same rule and draw: class c keeps ``int(6000 · r^(−c/9))`` images (r = 10: 6000 down
            to 600, 24,516 in all); the test set is untouched. 1 keeps everything.
    """

    layout = f"the four idx files (.gz or not) in {DEBIAN_PATH} (Debian) or in PATH/{TORCHVISION_DIR} (torchvision)"

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None, imbalance_ratio: float = 1.0) -> None:
        check_imbalance_ratio("fashion_mnist", imbalance_ratio)
        super().__init__(path or DEBIAN_PATH, image_size)
        self.image_size = image_size or IMAGE_SIZE
        self.imbalance_ratio = imbalance_ratio
        self.files = {split: tuple(self._find(name) for name in names) for split, names in FILES.items()}

    @property
    def num_classes(self) -> int:
        return len(CLASS_NAMES)

    def load(self) -> DatasetSplits:
        train_images, train_targets = self._read_split("train")
        test_images, test_targets = self._read_split("test")
        if self.imbalance_ratio != 1:
            keep = long_tail_keep(train_targets, self.num_classes, self.imbalance_ratio)
            train_images, train_targets = train_images[keep], train_targets[keep]
        train_transform, eval_transform = grayscale_transforms(self.image_size, MEAN, STD, IMAGE_SIZE)
        return DatasetSplits(
            train=TensorImageDataset(train_images, train_targets),
            test=TensorImageDataset(test_images, test_targets),
            train_targets=train_targets,
            class_names=list(CLASS_NAMES),
            train_transform=train_transform,
            eval_transform=eval_transform,
        )

    def _folder(self) -> Path:
        """The first of ``path``, ``path/FashionMNIST/raw`` and ``path/raw`` that holds any of the files."""
        candidates = [self.path, self.path / TORCHVISION_DIR, self.path / "raw"]
        names = [name + suffix for pair in FILES.values() for name in pair for suffix in ("", ".gz")]
        for folder in candidates:
            if any((folder / name).is_file() for name in names):
                return folder
        raise ConfigurationError(
            f"dataset '{self.name}': no Fashion-MNIST files in '{self.path}' or '{self.path / TORCHVISION_DIR}' "
            f"(expected {FILES['train'][0]}.gz and the three others); {HOW_TO_GET}"
        )

    def _find(self, name: str) -> Path:
        """``name`` in the data folder, the plain file first (no gunzip), else ``name.gz``."""
        folder = self._folder()
        for file in (folder / name, folder / f"{name}.gz"):
            if file.is_file():
                return file
        raise ConfigurationError(f"dataset '{self.name}': missing '{folder / name}.gz' (or '{name}' unzipped); {HOW_TO_GET}")

    def _read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, 28, 28) uint8 images and (N,) int64 labels of ``split``, checked against each other."""
        images_file, labels_file = self.files[split]
        images = self._read(images_file, IMAGES_MAGIC)
        labels = self._read(labels_file, LABELS_MAGIC)
        if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise self._unreadable(images_file, f"{images.shape[1]}×{images.shape[2]} images, Fashion-MNIST's are 28×28")
        if images.shape[0] != labels.shape[0]:
            raise self._unreadable(labels_file, f"{labels.shape[0]:,} labels for the {images.shape[0]:,} images of '{images_file}'")
        if labels.size and labels.max() >= self.num_classes:
            raise self._unreadable(labels_file, f"label {int(labels.max())}, outside 0..{self.num_classes - 1}")
        # One copy out of the read-only buffer, so torch owns writable memory.
        return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))

    def _read(self, file: Path, magic: int) -> np.ndarray:
        try:
            return read_idx(file, magic)
        except OSError as err:
            raise self._unreadable(file, f"{type(err).__name__}: {err.strerror or err}") from err
        except ValueError as err:
            raise self._unreadable(file, str(err)) from err

    def _unreadable(self, file: Path, reason: str) -> ConfigurationError:
        return ConfigurationError(
            f"dataset '{self.name}': cannot read '{file}' ({reason}); reinstall it "
            f"(apt-get install --reinstall dataset-fashion-mnist) or fetch torchvision's {TORCHVISION_DIR} again"
        )
