"""Partitioned Coreset: greedy k-center on p random slices of the pool, as the paper runs it on ImageNet."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.coreset import k_center_greedy
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.partitions import PartitionedStrategy
from al_lightning.strategies.registry import register


@register("partitioned_coreset")
class PartitionedCoreset(PartitionedStrategy):
    """Coreset run independently on ``partitions`` random slices of the pool and labeled set.

    The paper's appendix A.3 (after Citovsky et al., "Batch Active Learning at Scale",
    NeurIPS 2021): the unlabeled and the labeled set are each shuffled (seeded) and cut into
    p near-equal parts; partition i runs greedy k-center (Sener & Savarese, ICLR 2018) on its
    unlabeled part from its own labeled part, with ``even_shares(b, p)[i]`` picks
    (:class:`~al_lightning.strategies.partitions.PartitionedStrategy`: under DDP the
    partitions go to different ranks). A partition without labeled points starts from a
    random pick drawn from its own generator. Returns partition 0's picks in selection
    order, then partition 1's, and so on.

    Cost: at most O(N·M·d/p) for the initial distances, p times less than ``coreset``
    (usually O(N·√(M/p)·d) for their upper bounds and a few points measured), then the
    picks, which bring up to date only the points that could be the next pick
    (:func:`~al_lightning.strategies.coreset.k_center_greedy`: at most about twice the plain
    O(b·N·d/p), usually a small fraction of it); memory is one partition's features and their
    fixed-point grid, both (N/p)·d float32 values, plus a ~64 MB block. The distances are exact
    (:mod:`~al_lightning.strategies.distances`), so a partition picks the same points on
    whichever rank, device, thread count or BLAS runs it.

    Args:
        seed: seeds the partitions and each partition's random first pick.
        partitions: p, the number of slices (10 in the paper's ImageNet runs).
    """

    requires = ("features", "labeled_features")

    def _select_in_partition(self, outputs: PoolOutputs, budget: int, generator: torch.Generator) -> Tensor:
        return k_center_greedy(outputs.features, outputs.labeled_features, budget, generator)
