"""Partitioned BADGE: BADGE on random partitions of the pool, with pooled embeddings (the paper's appendix A.3)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.quotas import even_shares
from al_lightning.strategies.badge import kmeans_pp
from al_lightning.strategies.distances import expanded_sq_distances, nearest_centre_sq_distances
from al_lightning.strategies.gradient_embedding import (
    POOLED_DIM,
    POOLED_ROWS,
    head_logits,
    pool_grid,
    pooled_gradient_embedding,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.partitions import paired_partitions
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


def seed_partition(x: Tensor, centres: Optional[Tensor], budget: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding of ``budget`` rows of ``x`` (n, P), Euclidean, with ``centres`` (m, P) as existing centres.

    One matrix-vector product over ``x`` per pick.
    """
    sq = torch.linalg.vector_norm(x, dim=1).square()
    nearest = nearest_centre_sq_distances(x, centres) if centres is not None else None

    def distances_to(i: int) -> Tensor:
        return expanded_sq_distances(sq, sq[i : i + 1], torch.mv(x, x[i])[:, None]).squeeze(1)

    return kmeans_pp(sq, distances_to, budget, generator, nearest)


@register("partitioned_badge")
class PartitionedBadge(Strategy):
    """BADGE run separately on p random partitions, in a pooled embedding space, to scale to ImageNet.

    The paper's appendix A.3, after Citovsky et al. (2021): the unlabeled and the labeled sets
    are each shuffled into p parts (:func:`~al_lightning.strategies.partitions.paired_partitions`,
    drawn first from the seeded generator), and partition i picks ``even_shares(b, p)[i]``
    points by k-means++ seeding (D² sampling, plain Euclidean) on gradient embeddings 2-D average
    pooled to (about) ``pooled_dim`` dimensions, with its labeled part as existing centres (the
    paper's code; without one, or with ``labeled_centres=False``, Ash et al.'s original
    seeding: its first pick is the largest pooled embedding). Picks come partition by partition.
    No partition runs short: the parts differ in size by at most one, larger ones first, so
    ``even_shares(b, p)[i]`` never exceeds part i's size when b ≤ N, and the total is b.

    The pooled embeddings are the paper's code's (``badge_sampler.py``, ``use_adaptive_pool``):
    each point's gradient as the (C, d) grid g[c, j] = (p_c − 1[c = ŷ]) · h_j (rows: classes,
    columns: features), pooled by ``F.adaptive_avg_pool2d`` to h = min(``pooled_rows``, C) class
    bins × w = ⌊``pooled_dim`` / h⌋ feature bins and flattened row-major: 16 × 32 = 512 values for
    C ≥ 16 with the defaults, C × ⌊512/C⌋ for fewer classes, as that code does
    (:func:`~al_lightning.strategies.gradient_embedding.pool_grid`; h is also capped at
    ``pooled_dim``). PyTorch's bins, overlapping where a size does not divide evenly, and
    repeating feature columns where w > d (h ≤ C, so class rows never repeat). Computed from the factors without the grid,
    as the mean of δ over each class bin times the mean of h over each feature bin, O(C + d + h·w)
    per point (:func:`~al_lightning.strategies.gradient_embedding.pooled_gradient_embedding`).
    No 1/batch-size factor (the paper's code has one from its batch-mean loss; a common scale
    changes no pick).

    Cost with P = h·w ≤ ``pooled_dim``: O(N·(C + d + P)) time to embed, O(N·M·P/p) for the labeled
    centres and O(b·N·P/p) for the seeding (one pass over a partition's (N/p, P) matrix per
    pick); O((N + M)·P/p) memory, one partition at a time, plus ~64 MB blocks.

    Args:
        seed: seeds the partitions and the D² draws.
        partitions: p, the number of partitions (the paper uses 10).
        pooled_dim: the pooled grid's area, the code's ``POOLING_AREA`` (the paper uses 512).
        labeled_centres: each partition's labeled part seeds its k-means++ as existing centres.
        pooled_rows: the most class bins, the code's ``POOLING_H`` (16).
    """

    requires = ("logits", "features", "weight", "bias", "labeled_features")
    pairwise = True

    def __init__(
        self,
        seed: int = 0,
        partitions: int = 10,
        pooled_dim: int = POOLED_DIM,
        labeled_centres: bool = True,
        pooled_rows: int = POOLED_ROWS,
    ) -> None:
        super().__init__(seed)
        self.labeled_centres = labeled_centres
        if not labeled_centres:
            self.requires = ("logits", "features", "weight", "bias")
        if partitions < 1:
            raise ConfigurationError(f"partitioned_badge needs partitions >= 1, got {partitions}")
        if pooled_dim < 1:
            raise ConfigurationError(f"partitioned_badge needs pooled_dim >= 1, got {pooled_dim}")
        if pooled_rows < 1:
            raise ConfigurationError(f"partitioned_badge needs pooled_rows >= 1, got {pooled_rows}")
        self.partitions = partitions
        self.pooled_dim = pooled_dim
        self.pooled_rows = pooled_rows

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        generator = self.generator()
        labeled = outputs.labeled_features if self.labeled_centres else None
        num_labeled = 0 if labeled is None else labeled.shape[0]
        parts = paired_partitions(len(outputs), num_labeled, self.partitions, generator)
        grid = pool_grid(outputs.logits.shape[1], self.pooled_dim, self.pooled_rows)
        picks = []
        for (unlabeled, labeled_part), take in zip(parts, even_shares(budget, self.partitions)):
            if take == 0:
                continue
            x = pooled_gradient_embedding(outputs.logits, outputs.features, grid, rows=unlabeled)
            y = None
            if labeled_part.numel() > 0:
                part_features = labeled[labeled_part.to(labeled.device)]
                logits = head_logits(part_features, outputs.weight, outputs.bias)
                y = pooled_gradient_embedding(logits, part_features, grid)
            picks.append(unlabeled[seed_partition(x, y, take, generator).to(unlabeled.device)])
        return torch.cat(picks)
