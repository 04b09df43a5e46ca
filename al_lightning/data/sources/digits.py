"""scikit-learn's bundled handwritten digits: real images that need no download."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from al_lightning.data.datasets import TensorImageDataset
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import tensor_transforms

#: Share of each class kept aside as the test split (fixed, so every run tests on the same images).
TEST_FRACTION = 0.2
_SPLIT_SEED = 0


@register_source("digits")
class DigitsSource(DatasetSource):
    """The 1,797 8×8 grayscale digits (UCI) shipped inside scikit-learn.

    Upsampled to ``image_size`` (default 32) and split 80/20 per class into train and test
    with a fixed seed. The embedded default dataset of ``configs/demo.yaml``.
    """

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None) -> None:
        super().__init__(path, image_size)
        self.image_size = image_size or 32

    @property
    def num_classes(self) -> int:
        return 10

    def load(self) -> DatasetSplits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False).clamp_(0, 1)
        targets = torch.as_tensor(digits.target, dtype=torch.long)

        generator = torch.Generator().manual_seed(_SPLIT_SEED)
        test = torch.zeros(len(targets), dtype=torch.bool)
        for c in range(self.num_classes):
            members = (targets == c).nonzero().squeeze(1)
            members = members[torch.randperm(members.numel(), generator=generator)]
            test[members[: round(TEST_FRACTION * members.numel())]] = True

        train_transform, eval_transform = tensor_transforms(self.image_size)
        return DatasetSplits(
            train=TensorImageDataset(images[~test], targets[~test]),
            test=TensorImageDataset(images[test], targets[test]),
            train_targets=targets[~test],
            class_names=[str(c) for c in range(10)],
            train_transform=train_transform,
            eval_transform=eval_transform,
        )
