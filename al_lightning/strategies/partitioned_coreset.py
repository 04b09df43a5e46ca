"""Partitioned Coreset: greedy k-center on p random slices of the pool, as the paper runs it on ImageNet."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.quotas import even_shares
from al_lightning.strategies.coreset import k_center_greedy
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.partitions import paired_partitions
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


@register("partitioned_coreset")
class PartitionedCoreset(Strategy):
    """Coreset run independently on ``partitions`` random slices of the pool and labeled set.

    The paper's appendix A.3 (after Citovsky et al., "Batch Active Learning at Scale",
    NeurIPS 2021): the unlabeled and the labeled set are each shuffled (seeded) and cut into
    p near-equal parts; partition i runs greedy k-center (Sener & Savarese, ICLR 2018) on its
    unlabeled part from its own labeled part, with ``even_shares(b, p)[i]`` picks (the parts
    differ in size by at most one, larger first, so no part is short of its share when
    b ≤ N). A partition without labeled points starts from a seeded random pick. Returns partition 0's picks in
    selection order, then partition 1's, and so on.

    Cost: O(N·M·d/p) for the initial distances, p times less than ``coreset``, then the
    picks, which bring up to date only the points that could be the next pick
    (:func:`~al_lightning.strategies.coreset.k_center_greedy`: at most about twice the plain
    O(b·N·d/p), usually a small fraction of it); memory is one partition's features in
    float32 ((N/p)·d values) plus a ~64 MB block.

    Args:
        seed: seeds the partitions and any random first pick.
        partitions: p, the number of slices (10 in the paper's ImageNet runs).
    """

    requires = ("features", "labeled_features")
    pairwise = True

    def __init__(self, seed: int = 0, partitions: int = 10) -> None:
        super().__init__(seed)
        if partitions < 1:
            raise ConfigurationError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        generator = self.generator()
        features, labeled = outputs.features, outputs.labeled_features
        pairs = paired_partitions(len(outputs), labeled.shape[0], self.partitions, generator)
        quotas = even_shares(budget, self.partitions)
        picks = [
            unlabeled[k_center_greedy(features[unlabeled], labeled[centres], quota, generator)]
            for (unlabeled, centres), quota in zip(pairs, quotas)
            if quota
        ]
        return torch.cat(picks)
