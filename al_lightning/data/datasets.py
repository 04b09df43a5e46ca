"""Small dataset wrappers: in-memory image tensors, and views of a subset with their own transform."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset


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

    def __getitem__(self, i: int) -> tuple[Any, int]:
        index = int(self.indices[i])
        image, target = self.dataset[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.with_index:
            return image, index
        return image, int(self.targets[i]) if self.targets is not None else int(target)
