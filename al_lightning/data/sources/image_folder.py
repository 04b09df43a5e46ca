"""Any tree of class folders: ``path/train/<class>/<image>`` and ``path/test/<class>/<image>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Optional

from torchvision.datasets.folder import IMG_EXTENSIONS

from al_lightning.data.images import ImageFileDataset, image_files, is_image_file
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import imagenet_transforms
from al_lightning.errors import ConfigurationError


@register_source("image_folder")
class ImageFolderSource(DatasetSource):
    """A user's images in torchvision's ImageFolder layout, one folder per class.

    ``path/train`` is the pool (minus the validation split); ``path/test`` (or ``path/val``)
    is the test split and must hold the same class folders. ImageNet-style transforms at
    ``image_size`` (default 224). The class folders are listed at construction; the files are
    listed by :meth:`load` with one ``os.scandir`` pass per folder, and no image is opened
    until an item is read (through :func:`~al_lightning.data.images.load_image`).

    Args:
        skip_corrupt: serve ``None`` (with a warning) for an unreadable image instead of
            stopping; the data module's loaders drop such items.
    """

    needs_path = True
    layout = "a folder with train/<class>/<image> and test/<class>/<image> (or val/<class>/<image>)"
    #: Names accepted for the test split's folder, tried in order.
    test_dirs: ClassVar[tuple[str, ...]] = ("test", "val")

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None, skip_corrupt: bool = False) -> None:
        super().__init__(path, image_size)
        self.image_size = image_size or 224
        self.skip_corrupt = skip_corrupt
        self.train_dir = self._require_dir(self.path / "train")
        self.test_dir = next((self.path / d for d in self.test_dirs if (self.path / d).is_dir()), None)
        if self.test_dir is None:
            folders = " or ".join(f"{d}/" for d in self.test_dirs)
            raise ConfigurationError(f"dataset '{self.name}': no {folders} folder in '{self.path}'; expected {self.layout}")
        self.class_names = self._class_folders(self.train_dir)
        test_classes = self._class_folders(self.test_dir)
        if test_classes != self.class_names:
            raise ConfigurationError(
                f"dataset '{self.name}': the class folders of '{self.test_dir}' differ from those of "
                f"'{self.train_dir}' ({_difference(self.class_names, test_classes, self.test_dir.name)}); "
                f"both splits need the same class folders"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self) -> DatasetSplits:
        train, test = self._dataset(self.train_dir), self._dataset(self.test_dir)
        train_transform, eval_transform = imagenet_transforms(self.image_size)
        return DatasetSplits(
            train=train,
            test=test,
            train_targets=train.targets,
            class_names=list(self.class_names),
            train_transform=train_transform,
            eval_transform=eval_transform,
        )

    def _require_dir(self, path: Path) -> Path:
        if not path.is_dir():
            raise ConfigurationError(f"dataset '{self.name}': '{path}' is not a folder; expected {self.layout}")
        return path

    def _class_folders(self, root: Path) -> list[str]:
        """The sorted class folders of ``root`` (hidden ones, such as ``.ipynb_checkpoints``, left out)."""
        with os.scandir(root) as scan:
            entries = list(scan)
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        if not classes:
            loose = sum(1 for e in entries if is_image_file(e.name))
            found = f"; it holds {loose} images directly: {self._flat_fix(root)}" if loose else ""
            raise ConfigurationError(f"dataset '{self.name}': '{root}' has no class folders{found}; expected {self.layout}")
        return classes

    def _flat_fix(self, root: Path) -> str:
        """How to fix a split folder that holds images but no class folders."""
        return "move them into one sub-folder per class"

    def _dataset(self, root: Path) -> ImageFileDataset:
        files: list[str] = []
        targets: list[int] = []
        empty = []
        for target, name in enumerate(self.class_names):
            images = image_files(root / name, name)
            if not images:
                empty.append(name)
            files += images
            targets += [target] * len(images)
        if empty:
            raise ConfigurationError(
                f"dataset '{self.name}': no image files ({', '.join(IMG_EXTENSIONS)}) in {len(empty)} class "
                f"folder(s) of '{root}': {_first(empty)}; expected {self.layout}"
            )
        return ImageFileDataset(root, files, targets, skip_corrupt=self.skip_corrupt)


def _first(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _difference(train: list[str], test: list[str], test_name: str) -> str:
    missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    parts = [f"missing from {test_name}/: {_first(missing)}"] if missing else []
    parts += [f"only in {test_name}/: {_first(extra)}"] if extra else []
    return "; ".join(parts)
