"""Small dataset wrappers: in-memory images and features, views of a subset with their own
transform, and a collate function that drops skipped items."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from al_lightning.errors import ConfigurationError


class TensorImageDataset(Dataset):
    """Images held in one (N, channels, H, W) tensor, with (N,) integer targets.

    Grayscale images (1 channel) are expanded to ``channels`` on access, so a 3-channel
    backbone reads them without a copy of the whole set.
    """

    def __init__(self, images: Tensor, targets: Tensor, channels: int = 3) -> None:
        if images.shape[0] != targets.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
        self.images = images
        self.targets = targets.long()
        self.channels = channels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image = self.images[i]
        if image.shape[0] != self.channels:
            image = image.expand(self.channels, *image.shape[1:])
        return image, int(self.targets[i])


class SubsetView(Dataset):
    """Items ``indices`` of ``dataset`` with ``transform`` applied.

    Args:
        dataset: yields ``(image, target)``.
        indices: which items, in order.
        transform: applied to the image.
        targets: labels to return instead of the dataset's own, aligned with ``indices``
            (the oracle's labels for the labeled set).
        with_index: yield ``(image, index)`` instead of ``(image, target)``: the pool-scoring
            view, which never hands out the targets of unlabeled points.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int] | Tensor,
        transform: Optional[Callable[[Any], Any]] = None,
        targets: Optional[Tensor] = None,
        with_index: bool = False,
    ) -> None:
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.transform = transform
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.long)
        if self.targets is not None and self.targets.numel() != self.indices.numel():
            raise ValueError(f"{self.indices.numel()} indices but {self.targets.numel()} targets")
        self.with_index = with_index

    def __len__(self) -> int:
        return self.indices.numel()

    def __getitem__(self, i: int) -> Optional[tuple[Any, int]]:
        index = int(self.indices[i])
        item = self.dataset[index]
        if item is None:  # an unreadable image that the source was told to skip
            return None
        image, target = item
        if self.transform is not None:
            image = self.transform(image)
        if self.with_index:
            return image, index
        return image, int(self.targets[i]) if self.targets is not None else int(target)


class BatchView(Dataset):
    """Whole batches of ``view``: item ``[i, j, ...]`` is the collated batch of those items.

    For samplers that choose each batch themselves
    (:class:`~al_lightning.data.samplers.GlobalBatchSampler`), under a DataLoader with
    ``batch_size=None``; unreadable items are dropped as :func:`collate_skipping_none` does.
    """

    def __init__(self, view: Dataset) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, positions: list[int]) -> Any:
        if not isinstance(positions, list):  # a sampler of single items was put in the batch sampler's place
            raise ConfigurationError(
                "the training loader's batch sampler was replaced (Lightning's distributed sampler?): "
                "build the Trainer with use_distributed_sampler=False, as the CLI does"
            )
        return collate_skipping_none([self.view[i] for i in positions])


class ArrayImageDataset(Dataset):
    """Images held in one (N, H, W, 3) uint8 array (CIFAR's in-memory form), with (N,) targets.

    Items are ``(PIL image, target)``, as torchvision's CIFAR10 gives them, so PIL-based
    transforms (random crop with padding, flips) apply unchanged.
    """

    def __init__(self, images: np.ndarray, targets: Tensor) -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
        if images.shape[0] != targets.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} targets")
        self.images = images
        self.targets = targets.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]), int(self.targets[i])


class FeatureDataset(Dataset):
    """Precomputed (N, D) feature vectors with (N,) targets; items are ``(float32 vector, target)``.

    The features may be memory-mapped and in any float dtype: each vector is read and cast on
    access, so a file larger than memory still works with a float32 model.
    """

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        if features.shape[0] != targets.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows but {targets.shape[0]} targets")
        self.features = features
        self.targets = targets.long()

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.features[i].float(), int(self.targets[i])


def collate_skipping_none(batch: list[Any]) -> Any:
    """``default_collate`` over the items that are not ``None``; ``None`` if every item was.

    Datasets built with ``skip_corrupt=True`` return ``None`` for an unreadable image; this
    drops those items so one bad file costs one sample, not the run.
    """
    items = [item for item in batch if item is not None]
    return default_collate(items) if items else None
