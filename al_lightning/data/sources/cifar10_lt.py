"""Long-tailed CIFAR-10: the exponential profile of Cao et al. (2019), as the paper uses it."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from al_lightning.data.datasets import ArrayImageDataset
from al_lightning.data.sources.cifar10 import CIFAR10Source
from al_lightning.data.sources.source import DatasetSplits, register_source
from al_lightning.errors import ConfigurationError

#: Seed of the per-class shuffles that pick the kept images (the paper's ``imbalance_seed``).
SELECTION_SEED = 0


def long_tail_counts(n_max: int = 5000, num_classes: int = 10, ratio: float = 10.0) -> list[int]:
    """Images kept per class: ``int(n_max · r^(−c/(C−1)))`` for class c, so the head keeps
    ``n_max`` and the tail ``n_max / r`` (Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019).

    Computed as their code does, ``n_max · (1/r)^(c/(C−1))`` truncated, so the counts match
    theirs to the image: ratio 10 gives 5000/3871/2997/2320/1796/1391/1077/834/645/500.
    """
    factor = 1.0 / ratio
    return [int(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def long_tail_indices(targets: Tensor, counts: Sequence[int], seed: int = SELECTION_SEED) -> Tensor:
    """Indices of the images kept: for each class in order 0..C−1, the first ``counts[c]`` of a
    shuffle of its indices by one ``numpy.random.RandomState(seed)``; grouped by class.

    This is the draw of Cao et al.'s ``IMBALANCECIFAR10`` and of the paper's code
    (``np.random.seed(0)`` then ``np.random.shuffle`` per class), so the same images are kept,
    in the same order.
    """
    labels = targets.numpy()
    rng = np.random.RandomState(seed)
    kept = []
    for c, count in enumerate(counts):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        kept.append(members[:count])
    return torch.as_tensor(np.concatenate(kept), dtype=torch.long)


def long_tail_keep(targets: Tensor, num_classes: int, ratio: float) -> Tensor:
    """The training images a long-tailed variant keeps: :func:`long_tail_counts` with ``n_max``
    the smallest class of the balanced set, drawn by :func:`long_tail_indices`. Every
    long-tailed source goes through here, so they all cut the same way."""
    n_max = int(targets.bincount(minlength=num_classes).min())
    return long_tail_indices(targets, long_tail_counts(n_max, num_classes, ratio))


def check_imbalance_ratio(dataset: str, ratio: float) -> None:
    """A ratio below 1 is most likely the paper's code's ``imbalance_factor`` (its inverse)."""
    if not ratio >= 1:
        raise ConfigurationError(
            f"dataset '{dataset}': imbalance_ratio must be >= 1 (largest class / smallest class), got "
            f"{ratio}; the paper uses 10 (its code's imbalance_factor 0.1 is the inverse)"
        )


@register_source("cifar10_lt")
class CIFAR10LTSource(CIFAR10Source):
    """CIFAR-10 with its training set cut to an exponential long tail; the test set is untouched.

    Class c keeps ``int(n_max · r^(−c/9))`` training images, ``n_max`` being the per-class size
    of the balanced training set (5,000) and ``r = imbalance_ratio``. The paper's setting is
    r = 10: 20,431 images, from 5,000 (airplane) down to 500 (truck). The kept images are
    drawn as in Cao et al.'s and the paper's code (see :func:`long_tail_indices`). Same files,
    download and transforms as ``cifar10``.

    Args:
        imbalance_ratio: size of the largest class over the smallest (≥ 1; 1 keeps everything).
    """

    def __init__(
        self,
        path: Optional[str] = None,
        image_size: Optional[int] = None,
        download: bool = False,
        imbalance_ratio: float = 10.0,
    ) -> None:
        check_imbalance_ratio("cifar10_lt", imbalance_ratio)
        super().__init__(path, image_size, download)
        self.imbalance_ratio = imbalance_ratio

    def load(self) -> DatasetSplits:
        splits = super().load()
        keep = long_tail_keep(splits.train_targets, self.num_classes, self.imbalance_ratio)
        train = ArrayImageDataset(splits.train.images[keep.numpy()], splits.train_targets[keep])
        return dataclasses.replace(splits, train=train, train_targets=train.targets)
