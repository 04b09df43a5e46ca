"""Partitioned BADGE: BADGE on random partitions of the pool, with pooled embeddings (the paper's appendix A.3)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.badge import d2_sample
from al_lightning.strategies.distances import (
    ROUNDING,
    RowDots,
    aligned_rows,
    expanded_sq_distances,
    nearest_centres,
    row_sq_norms,
)
from al_lightning.strategies.gradient_embedding import (
    POOLED_DIM,
    POOLED_ROWS,
    head_logits,
    pool_grid,
    pooled_gradient_embedding,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.partitions import PartitionedStrategy
from al_lightning.strategies.registry import register


def embedding_sq_distances(dots: Tensor, sq_points: Tensor, sq_centre: Tensor) -> Tensor:
    """(n,) squared distances to one centre from inner products ``dots`` (overwritten): :func:`expanded_sq_distances`'s formula.

    Elementwise, so a point's value is the same bit for bit whether it is computed with all
    points or on its own (given the same inner product).
    """
    return expanded_sq_distances(sq_points, sq_centre.reshape(1), dots[:, None]).squeeze(1)


def skip_slack(dim: int) -> float:
    """Relative error bound μ of one expanded squared distance in float32, ROUNDING's zeroing included.

    |computed − exact| ≤ μ·(‖x‖² + ‖y‖²) for any summation order of a ``dim``-term inner product
    ((2·dim + 8) units in the last place, plus :data:`~al_lightning.strategies.distances.ROUNDING`),
    doubled for safety.
    """
    return 2.0 * ((2 * dim + 8) * 2.0**-24 + ROUNDING)


def seed_partition(x: Tensor, centres: Optional[Tensor], budget: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding of ``budget`` rows of ``x`` (n, P), Euclidean, with ``centres`` (m, P) as existing centres.

    The same draws as the plain seeding, which after each pick updates every point's squared
    distance to its nearest centre (one pass over ``x``): every distance is computed the same
    way, bit for bit (:class:`~al_lightning.strategies.distances.RowDots` for the inner
    products), and the random draws are the same calls of the generator in the same order
    (:func:`~al_lightning.strategies.badge.d2_sample`). Faster because most points provably
    keep their value: each point remembers its nearest centre c(x) and that distance r(x), and
    by the triangle inequality a new centre p with ‖c(x) − p‖ ≥ 2·r(x) is no nearer than c(x).
    So after each pick only the distances from p to the centres so far (m + picks rows) are
    computed for all, and only the points of centres near p are measured, the test written
    in squared distances, ‖c − p‖² ≥ 4·r² + 5·μ·(‖x‖² + ‖c‖² + ‖p‖²), with μ bounding float32
    rounding (:func:`skip_slack`) so that a skipped point would not have moved even by a
    rounding. When a quarter of the points or more could move, all are measured, and the
    test waits a few picks (1, 2, 4, ... up to 64) before it is tried again.

    Cost: O(n·m·P) for the labeled centres, then per pick O((m + picks)·P) for the centre
    distances, O(n) for the test and the D² draw, and O(P) per point measured.
    """
    sq = torch.linalg.vector_norm(x, dim=1).square()
    n, dim = x.shape
    picks: list[int] = []
    if budget == 0:
        return torch.tensor(picks, dtype=torch.long)
    points = aligned_rows(x)
    row_dots = RowDots(dim, points.device)
    slack = 5.0 * skip_slack(dim)
    num_centres = 0 if centres is None else centres.shape[0]
    # The centres so far, labeled then picked, for the distances from each new pick to them.
    bank = torch.empty(num_centres + budget, dim, device=points.device)
    bank_sq = torch.empty(num_centres + budget, device=points.device)
    nearest: Optional[Tensor] = None
    if num_centres > 0:
        nearest, assign = nearest_centres(x, centres)
        bank[:num_centres] = centres
        bank_sq[:num_centres] = row_sq_norms(bank[:num_centres])
        # 4·r² + μ'·(‖x‖² + ‖c(x)‖²): what ‖c(x) − p‖² must reach, less μ'·‖p‖², to skip x.
        limit = nearest * 4 + (sq + bank_sq[assign]) * slack
    wait, next_test = 1, 0  # after a test that skips too little, the next ones wait 1, 2, 4, ... picks
    for step in range(budget):
        pick = int(sq.argmax()) if nearest is None else d2_sample(nearest, picks, generator)
        picks.append(pick)
        if step + 1 == budget:
            break
        k = num_centres + step
        bank[k], bank_sq[k] = points[pick], sq[pick]
        if nearest is None:
            nearest = embedding_sq_distances(row_dots(points, points[pick]), sq, sq[pick])
            assign = torch.full((n,), k, dtype=torch.long, device=points.device)
            limit = nearest * 4 + (sq + sq[pick]) * slack
        else:
            movable = None  # None: measure every point
            if step >= next_test:
                to_centres = torch.mv(bank[:k], points[pick]).mul_(-2).add_(bank_sq[:k]).add_(sq[pick])
                movable = (to_centres[assign] < limit + slack * sq[pick]).nonzero().squeeze(1)
                if movable.numel() * 4 >= n:
                    movable, next_test, wait = None, step + wait, min(2 * wait, 64)
                else:
                    wait = 1
            if movable is None:
                new = embedding_sq_distances(row_dots(points, points[pick]), sq, sq[pick])
                nearer = new < nearest
                torch.minimum(nearest, new, out=nearest)
                assign.masked_fill_(nearer, k)
                limit = torch.where(nearer, nearest * 4 + (sq + sq[pick]) * slack, limit)
            else:
                new = embedding_sq_distances(row_dots(points, points[pick], movable), sq[movable], sq[pick])
                nearer = new < nearest[movable]
                moved = movable[nearer]
                nearest[moved] = new[nearer]
                assign[moved] = k
                limit[moved] = nearest[moved] * 4 + (sq[moved] + sq[pick]) * slack
        # A centre's own distance is 0 up to rounding; make it exact so it is never drawn again.
        nearest[pick] = 0.0
        assign[pick] = k
        limit[pick] = (2 * slack) * sq[pick]
    return torch.tensor(picks, dtype=torch.long)


@register("partitioned_badge")
class PartitionedBadge(PartitionedStrategy):
    """BADGE run separately on p random partitions, in a pooled embedding space, to scale to ImageNet.

    The paper's appendix A.3, after Citovsky et al. (2021): the unlabeled and the labeled sets
    are each shuffled into p parts (:class:`~al_lightning.strategies.partitions.PartitionedStrategy`:
    under DDP the partitions go to different ranks), and partition i picks ``even_shares(b, p)[i]``
    points, drawn from its own generator, by k-means++ seeding (D² sampling, plain Euclidean) on gradient embeddings 2-D average
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
    centres and at most O(b·N·P/p) for the seeding, usually much less: after each pick only
    the points that the triangle inequality cannot rule out are measured
    (:func:`seed_partition`), with the same draws as measuring all of them;
    O((N + M)·P/p) memory, one partition at a time, plus ~64 MB blocks.

    Args:
        seed: seeds the partitions and each partition's D² draws.
        partitions: p, the number of partitions (the paper uses 10).
        pooled_dim: the pooled grid's area, the code's ``POOLING_AREA`` (the paper uses 512).
        labeled_centres: each partition's labeled part seeds its k-means++ as existing centres.
        pooled_rows: the most class bins, the code's ``POOLING_H`` (16).
    """

    requires = ("logits", "features", "weight", "bias", "labeled_features")

    def __init__(
        self,
        seed: int = 0,
        partitions: int = 10,
        pooled_dim: int = POOLED_DIM,
        labeled_centres: bool = True,
        pooled_rows: int = POOLED_ROWS,
    ) -> None:
        super().__init__(seed, partitions)
        self.labeled_centres = labeled_centres
        if not labeled_centres:
            self.requires = ("logits", "features", "weight", "bias")
        if pooled_dim < 1:
            raise ConfigurationError(f"partitioned_badge needs pooled_dim >= 1, got {pooled_dim}")
        if pooled_rows < 1:
            raise ConfigurationError(f"partitioned_badge needs pooled_rows >= 1, got {pooled_rows}")
        self.pooled_dim = pooled_dim
        self.pooled_rows = pooled_rows

    def _select_in_partition(self, outputs: PoolOutputs, budget: int, generator: torch.Generator) -> Tensor:
        grid = pool_grid(outputs.logits.shape[1], self.pooled_dim, self.pooled_rows)
        x = pooled_gradient_embedding(outputs.logits, outputs.features, grid)
        y = None
        labeled = outputs.labeled_features if self.labeled_centres else None
        if labeled is not None and labeled.shape[0] > 0:
            y = pooled_gradient_embedding(head_logits(labeled, outputs.weight, outputs.bias), labeled, grid)
        return seed_partition(x, y, budget, generator)
