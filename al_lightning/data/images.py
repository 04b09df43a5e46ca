"""Reading image files: one function opens them all, so a bad file is reported with its path.

Sources built on image files (``image_folder``, ``image_pool``, ``imagenet``, ``imagenet_lt``) serve an
:class:`ImageFileDataset`, which reads through :func:`load_image`. A corrupt or unreadable
file stops the run with a :class:`CorruptImageError` naming it, unless the user asked to skip
such files (``--data.dataset_args.skip_corrupt=true``): then the item is ``None``, a warning names the file,
and :func:`~al_lightning.data.datasets.collate_skipping_none` drops it from its batch.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from al_lightning.errors import ConfigurationError


class CorruptImageError(ConfigurationError):
    """An image file that cannot be read or decoded (truncated, not an image, missing).

    Attributes:
        path: the file.
        reason: what PIL or the file system said.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        super().__init__(
            f"cannot read image '{self.path}' ({reason}); replace or delete the file, "
            f"or pass --data.dataset_args.skip_corrupt=true to skip unreadable images"
        )

    def __reduce__(self):
        # The default pickling would call cls(message); keep (path, reason) across processes.
        return type(self), (self.path, self.reason)


def is_image_file(name: str) -> bool:
    """Whether ``name`` has one of torchvision's image extensions (any case), as ImageFolder decides."""
    return name.lower().endswith(IMG_EXTENSIONS)


def image_files(folder: str | os.PathLike, prefix: str = "") -> list[str]:
    """Image files under ``folder``, at any depth, as POSIX paths ``prefix/<name>`` (``<name>``
    without a prefix): one ``os.scandir`` pass per folder, file names sorted, then sub-folders in
    sorted order (ImageFolder's order for flat folders).

    ``DirEntry.is_file`` answers from the directory listing on most file systems, so no file is
    stat'ed one by one (ImageNet: 1,000 listings, not 1.28M stats). Hidden entries are left out:
    macOS's ``._name.jpg`` companions carry an image extension but are not images.
    """
    with os.scandir(folder) as scan:
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    named = [(e, f"{prefix}/{e.name}" if prefix else e.name) for e in entries]
    files = [name for e, name in named if is_image_file(e.name) and e.is_file()]
    for sub, name in named:
        if sub.is_dir():
            files += image_files(sub.path, name)
    return files


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB image.

    The pixels are decoded here (not lazily by the first transform), so a truncated file fails
    in this call and the error carries its path.

    Raises:
        CorruptImageError: the file is missing, unreadable or not a decodable image.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # OSError covers PIL's UnidentifiedImageError and "image file is truncated".
        raise CorruptImageError(path, f"{type(err).__name__}: {err}") from err


class ImageFileDataset(Dataset):
    """Image files under ``root`` with integer targets; items are ``(PIL RGB image, target)``.

    Nothing is opened until an item is read. The relative paths are held in one NumPy bytes
    array rather than a list of ``str``: DataLoader workers forked from the main process then
    share it instead of copying it page by page as reference counts change (ImageNet has
    1.28M files).

    Args:
        root: the folder the paths are relative to.
        files: paths relative to ``root``.
        targets: one label per file.
        skip_corrupt: return ``None`` for an unreadable file, with a warning naming it once
            (per process), instead of raising :class:`CorruptImageError`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        files: Sequence[str],
        targets: Sequence[int] | Tensor,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = os.fspath(root)
        self.files = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        if self.files.shape[0] != self.targets.numel():
            raise ValueError(f"{self.files.shape[0]} files but {self.targets.numel()} targets")
        self.skip_corrupt = skip_corrupt
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return self.files.shape[0]

    def path(self, i: int) -> str:
        """The full path of item ``i``."""
        return os.path.join(self.root, os.fsdecode(self.files[i]))

    def __getitem__(self, i: int) -> Optional[tuple[Image.Image, int]]:
        try:
            image = load_image(self.path(i))
        except CorruptImageError as err:
            if not self.skip_corrupt:
                raise
            if i not in self._warned:
                self._warned.add(i)
                warnings.warn(f"skipping unreadable image '{err.path}' ({err.reason})", stacklevel=2)
            return None
        return image, int(self.targets[i])
