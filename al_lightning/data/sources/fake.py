"""Synthetic images (torchvision's FakeData), for smoke tests and timing without a dataset."""

from __future__ import annotations

from typing import Optional

import torch
from torchvision.datasets import FakeData

from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import cifar_transforms


@register_source("fake")
class FakeSource(DatasetSource):
    """Random RGB images with random labels: the loop runs, nothing is learnable.

    Args:
        num_classes: number of classes.
        train_size, test_size: number of images in each split.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        image_size: Optional[int] = None,
        num_classes: int = 10,
        train_size: int = 512,
        test_size: int = 128,
    ) -> None:
        super().__init__(path, image_size)
        self.image_size = image_size or 32
        self._num_classes = num_classes
        self.train_size, self.test_size = train_size, test_size

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def load(self) -> DatasetSplits:
        size = (3, self.image_size, self.image_size)
        train = FakeData(self.train_size, size, self._num_classes, random_offset=0)
        test = FakeData(self.test_size, size, self._num_classes, random_offset=self.train_size)
        targets = torch.tensor([_fake_target(i, size, self._num_classes) for i in range(self.train_size)])
        train_transform, eval_transform = cifar_transforms(self.image_size)
        return DatasetSplits(
            train=train,
            test=test,
            train_targets=targets,
            class_names=[f"class_{c}" for c in range(self._num_classes)],
            train_transform=train_transform,
            eval_transform=eval_transform,
        )


def _fake_target(index: int, size: tuple[int, ...], num_classes: int) -> int:
    """The label FakeData gives item ``index``: it seeds with the index, draws the image, then the label."""
    generator = torch.Generator().manual_seed(index)
    torch.randn(*size, generator=generator)
    return int(torch.randint(0, num_classes, (1,), generator=generator))
