"""Partitioned BADGE: BADGE on random partitions of the pool, with pooled embeddings (the paper's appendix A.3)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.badge import d2_sample
from al_lightning.strategies.distances import (
    grid_exponent,
    nearest_centres,
    on_grid,
    sq_distances_to,
    sq_norms,
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

#: Bounds computed in float64 are raised by (1 + 2^-40) (and by 2^-40 of a norm): far more than its rounding.
_UP = 1 + 2.0**-40


class RankOneBounds:
    """Lower bounds on each point's exact squared distance to a new centre, from a rank-one factorisation of its grid values.

    A pooled gradient embedding is the flattened (h, w) outer product of the class-bin means of
    δ and the feature-bin means of h (:func:`~al_lightning.strategies.gradient_embedding.pool_outer`),
    so its grid row X (integers, :mod:`~al_lightning.strategies.distances`), read as an (h, w)
    matrix, is nearly rank one: X = U ⊗ V + E, with p the largest |entry| (the first), V the row
    through it (integers), U the column through it over p (float64), and E what is left,
    measured (a few grid units per entry: each entry's rounding to the grid, and that of the
    row and column read off). Then for any two rows

        ⟨X, X'⟩ = (U·U')(V·V') + ⟨U ⊗ V, E'⟩ + ⟨E, X'⟩,   |the last two| ≤ ‖U‖‖V‖·‖E'‖ + ‖E‖·‖X'‖,

    so h + w products per point bound the exact squared distance ‖X‖² + ‖X'‖² − 2⟨X, X'⟩ from
    below, to within twice that slack plus τ = (h + w + 64)·2^-48 of the magnitudes involved,
    which covers every rounding of the float64 arithmetic here (each relative 2^-53; the
    h-term product U·U' at most h·2^-53·‖U‖‖U'‖; V·V' is exact). The stored norms ‖U‖‖V‖,
    ‖E‖ and ‖X‖ are rounded up (:data:`_UP`; ‖E‖ also by 2^-40·‖X‖, more than the rounding of
    computing E). A point whose lower bound is at least its current nearest distance cannot
    move: the bound is rigorous whatever the data (rows that are not rank one only get large
    residuals, hence no skipping). :meth:`build` declines (None) when the sampled rows, taken
    together, are far from rank one.
    """

    #: Largest Σ‖E‖ / Σ‖X‖ over the sampled rows for the bounds to be built. Grid rounding leaves a
    #: few units per entry, far below this for all but tiny rows (which the bounds still rule out
    #: against any large pick); rows that are not outer products leave most of their norm.
    TOLERANCE = 1e-2
    #: Rows per block when factorising (float64 temporaries that stay in cache).
    ROWS = 1024

    def __init__(self, u: Tensor, v: Tensor, size: Tensor, residual: Tensor, norm: Tensor, sq: Tensor) -> None:
        self.u, self.v = u, v  # (n, h) float64 and (n, w) float64 integers
        self.size = size  # ‖U‖·‖V‖, rounded up
        self.residual = residual  # ‖E‖, rounded up
        self.norm = norm  # ‖X‖, rounded up
        self.sq = sq  # ‖X‖², exact
        self.tau = (u.shape[1] + v.shape[1] + 64) * 2.0**-48
        self.shrunk_sq = sq * (1 - self.tau)  # ‖X‖²·(1 − τ), once for every pick

    @staticmethod
    def _factor(block: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        grid = block.to(torch.float64).view(-1, h, w)
        rows = torch.arange(grid.shape[0], device=grid.device)
        flat = grid.abs().view(grid.shape[0], -1).argmax(dim=1)
        r, c = flat // w, flat % w
        pivot = grid[rows, r, c]
        pivot = torch.where(pivot == 0, torch.ones_like(pivot), pivot)  # an all-zero row: U = V = E = 0
        u = grid[rows, :, c] / pivot[:, None]
        v = grid[rows, r, :]
        norm = torch.linalg.vector_norm(grid.flatten(1), dim=1)
        residual = torch.linalg.vector_norm((grid - u[:, :, None] * v[:, None, :]).flatten(1), dim=1)
        size = torch.linalg.vector_norm(u, dim=1) * torch.linalg.vector_norm(v, dim=1)
        return u, v, size * _UP, residual * _UP + norm * 2.0**-40, norm * _UP

    @classmethod
    def build(cls, points: Tensor, split: tuple[int, int], sq: Optional[Tensor] = None) -> Optional["RankOneBounds"]:
        """The bounds of the grid rows ``points`` (n, h·w) read as (h, w) matrices, or None if they are not near rank one.

        ``sq``: their exact squared norms (:func:`~al_lightning.strategies.distances.sq_norms`), if known.
        """
        h, w = split
        n, dim = points.shape
        if h * w != dim or n == 0:
            return None
        _, _, _, residual, norm = cls._factor(points[: min(n, 256)], h, w)
        if float(residual.sum()) > cls.TOLERANCE * float(norm.sum()):
            return None
        # Filled block by block into tensors allocated once: small results kept between the blocks'
        # temporaries would fragment the heap (measured: +1.5 GB of resident memory at 128k rows).
        columns = [torch.empty(n, width, dtype=torch.float64, device=points.device) for width in (h, w)]
        columns += [torch.empty(n, dtype=torch.float64, device=points.device) for _ in range(3)]
        for start in range(0, n, cls.ROWS):
            for column, part in zip(columns, cls._factor(points[start : start + cls.ROWS], h, w)):
                column[start : start + cls.ROWS] = part
        return cls(*columns, sq_norms(points) if sq is None else sq)

    def may_move(self, pick: int, nearest: Tensor) -> Tensor:
        """Positions whose exact squared distance to point ``pick`` might be below ``nearest`` (ascending).

        A point at 0 whose bound is below 0 is listed too (the pick itself, its duplicates):
        measuring it changes nothing.
        """
        return (self.lower_bounds(pick) < nearest).nonzero().squeeze(1)

    def lower_bounds(self, pick: int) -> Tensor:
        """(n,) float64 values at most each point's exact squared distance to point ``pick``.

        s − 2a − 2·slack − τ·(s + 2‖U‖‖V‖·‖U'‖‖V'‖ + 2·slack), with s = ‖X‖² + ‖X'‖², a the
        factors' estimate of ⟨X, X'⟩ and slack = ‖U‖‖V‖·‖E'‖ + ‖E‖·‖X'‖, regrouped per point as
        ‖X‖²(1 − τ) − 2a − k₁·‖U‖‖V‖ − k₂·‖E‖ + ‖X'‖²(1 − τ) (τ covers the regrouping's rounding).
        """
        tau = self.tau
        approx = torch.mv(self.u, self.u[pick]).mul_(torch.mv(self.v, self.v[pick]))
        k1 = (2 + 2 * tau) * float(self.residual[pick]) + 2 * tau * float(self.size[pick])
        k2 = (2 + 2 * tau) * float(self.norm[pick])
        lower = torch.add(self.shrunk_sq, approx, alpha=-2.0).sub_(self.size, alpha=k1).sub_(self.residual, alpha=k2)
        return lower.add_(float(self.shrunk_sq[pick]))

    def nearest(
        self, points: Tensor, sq: Tensor, centres: Tensor, centre_sq: Tensor, centre_bounds: "RankOneBounds"
    ) -> Tensor:
        """The exact squared distance from each grid row of ``points`` (these bounds' rows) to its nearest row of ``centres``.

        ``sq`` and ``centre_sq`` are their exact squared norms, ``centre_bounds`` the centres' factors.

        Each pair's squared distance less ‖x‖² is first estimated from the factors (h + w
        products, two small matrix products per block of pairs), to within a margin W per
        point (twice the slack with the worst centre, plus τ of the magnitudes); the nearest
        centre is among those within 2·W of the smallest estimate, and usually only one is. Only
        those pairs are measured, exactly (any order of summation gives the same integers), and
        their minimum is the minimum over all centres. A block of points with many pairs left
        is measured against every centre instead.
        """
        n, count = points.shape[0], centres.shape[0]
        tau = max(self.tau, centre_bounds.tau)
        most_residual, most_norm, most_size = (
            float(t.max()) for t in (centre_bounds.residual, centre_bounds.norm, centre_bounds.size)
        )
        slack = torch.mul(self.size, most_residual).add_(self.residual, alpha=most_norm)
        margin = (sq + float(centre_sq.max())).add_(self.size, alpha=2 * most_size).add_(slack, alpha=2.0).mul_(tau)
        margin.add_(slack, alpha=2.0).mul_(2.01 * _UP)  # 2.01·W: the candidates' reach beyond the smallest estimate
        # −2·U' is exact: the estimate takes one pass less.
        u_centres, v_centres = centre_bounds.u.T.mul(-2.0).contiguous(), centre_bounds.v.T.contiguous()
        out = torch.empty(n, dtype=torch.float64, device=points.device)
        rows = max(8, min(n, CACHE_BYTES // (8 * max(1, count))))
        estimates = torch.empty(rows, count, dtype=torch.float64, device=points.device)
        scratch = torch.empty(rows, count, dtype=torch.float64, device=points.device)
        positions = torch.arange(count, dtype=torch.float64, device=points.device)
        for start in range(0, n, rows):
            part = slice(start, min(n, start + rows))
            size = part.stop - start
            # ‖c‖² − 2·(U·U')(V·V'): the estimate less ‖x‖², which every pair of the row shares.
            estimate = torch.mm(self.u[part], u_centres, out=estimates[:size])
            estimate.mul_(torch.mm(self.v[part], v_centres, out=scratch[:size])).add_(centre_sq)
            reach = estimate.amin(dim=1).add_(margin[part])
            # 1.0 for a centre left, 0.0 otherwise (a float comparison is several times faster than a bool one)
            near = torch.le(estimate, reach[:, None], out=scratch[:size])
            left = near.sum(dim=1)
            if float(left.sum()) * 8 >= estimate.numel():  # many centres left: all of them, in one product
                out[part] = nearest_centres(points[part], centres, False, sq[part], centre_sq)[0]
                continue
            several = (left > 1).nonzero().squeeze(1)
            single = (left == 1).nonzero().squeeze(1)
            pairs = near[several].nonzero()
            row = torch.cat([single, several[pairs[:, 0]]])
            # A point's only centre left: the sum of positions over the centres left (exact in float64).
            col = torch.cat([torch.mv(near[single], positions).long(), pairs[:, 1]])
            measured = measure_pairs(points, sq, centres, centre_sq, row + start, col)
            block = torch.full((size,), torch.inf, dtype=torch.float64, device=out.device)
            out[part] = block.scatter_reduce_(0, row, measured, "amin")
        return out


#: Bytes of the blocks of pairs that :meth:`RankOneBounds.nearest` estimates at a time.
CACHE_BYTES = 4 << 20


def measure_pairs(points: Tensor, sq: Tensor, centres: Tensor, centre_sq: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """(k,) exact squared distances between grid rows ``points[rows[i]]`` and ``centres[cols[i]]``, pair by pair."""
    products = (points[rows].to(torch.float64) * centres[cols].to(torch.float64)).sum(1)
    return products.mul_(-2.0).add_(sq[rows]).add_(centre_sq[cols])


def seed_partition(
    x: Tensor,
    centres: Optional[Tensor],
    budget: int,
    generator: torch.Generator,
    split: Optional[tuple[int, int]] = None,
) -> Tensor:
    """k-means++ seeding of ``budget`` rows of ``x`` (n, P), Euclidean, with ``centres`` (m, P) as existing centres.

    ``x`` and ``centres`` go on one fixed-point grid (:mod:`~al_lightning.strategies.distances`),
    so every squared distance is an exact integer and the D² weights are the same on any
    machine. The draws are the plain seeding's, which after each pick updates every point's
    distance to its nearest centre (one pass over ``x``), with the same calls of the generator
    in the same order (:func:`~al_lightning.strategies.badge.d2_sample`); without centres the
    first pick is the point of largest grid norm (the first of equals). Faster, because most
    points provably keep their value and are not measured:

    - With ``split`` = (h, w), P = h·w, for pooled gradient embeddings (outer products, class
      bins × feature bins): :class:`RankOneBounds` bound each point's distance to the new
      centre from below in h + w products instead of P, and only the points whose bound is
      below their current distance are measured. The labeled centres (when they factor too)
      are bounded the same way, pair by pair, and each point is measured only against the
      centres its bounds leave (:meth:`RankOneBounds.nearest`).
    - Otherwise (or when the rows are not near rank one), the triangle inequality: each point
      keeps its nearest centre c(x) and that squared distance r(x), and a new centre p with
      ‖c(x) − p‖² ≥ 4·r(x) is no nearer than c(x) (‖x − p‖ ≥ ‖c − p‖ − ‖x − c‖ ≥ ‖x − c‖;
      exact integers, so no slack). After each pick only the distances from p to the centres
      so far are computed for all, and the points of centres near p are measured. When a
      quarter of the points or more could move, all are measured, and the test waits a few
      picks (1, 2, 4, ... up to 64) before it is tried again.

    Cost: O(n·m·(h + w)) for the labeled centres (O(n·m·P) without ``split``), then per pick
    O(n·(h + w)) for the rank-one test (or O((m + picks)·P) for the centre distances and O(n)
    for the triangle test), O(n) for the D² draw, and O(P) per point measured. Memory: the
    grid, (n + m)·P float32 values, and (n + m)·(h + w + 3) float64 factors.
    """
    n, dim = x.shape
    picks: list[int] = []
    if budget == 0:
        return torch.tensor(picks, dtype=torch.long)
    has_centres = centres is not None and centres.shape[0] > 0
    exponent = grid_exponent([x, centres if has_centres else None], dim)
    points = on_grid(x, exponent)
    sq = sq_norms(points)
    labeled = on_grid(centres, exponent) if has_centres else points[:0]
    labeled_sq = sq_norms(labeled)
    num_centres = labeled.shape[0]
    bounds = RankOneBounds.build(points, split, sq) if split is not None else None
    # With rank-one bounds the triangle test adds little (and needs each point's nearest centre).
    triangle = bounds is None
    nearest: Optional[Tensor] = None
    # The centres so far, labeled then picked, for the distances from each new pick to them.
    bank = torch.empty(num_centres + budget if triangle else 0, dim, device=points.device)
    bank_sq = torch.empty(num_centres + budget if triangle else 0, dtype=torch.float64, device=points.device)
    if num_centres > 0 and not triangle:
        centre_bounds = RankOneBounds.build(labeled, split, labeled_sq)
        if centre_bounds is not None:
            nearest = bounds.nearest(points, sq, labeled, labeled_sq, centre_bounds)
        else:
            nearest = nearest_centres(points, labeled, False, sq, labeled_sq)[0]
    elif num_centres > 0:
        nearest, assign = nearest_centres(points, labeled, True, sq, labeled_sq)
        bank[:num_centres], bank_sq[:num_centres] = labeled, labeled_sq

    def pass_with(position: int, rows: Optional[Tensor] = None) -> Tensor:
        return sq_distances_to(points, sq, points[position], sq[position], rows)

    wait, next_test = 1, 0  # after a test that skips too little, the next ones wait 1, 2, 4, ... picks
    for step in range(budget):
        pick = int(sq.argmax()) if nearest is None else d2_sample(nearest, picks, generator)
        picks.append(pick)
        if step + 1 == budget:
            break
        k = num_centres + step
        if triangle:
            bank[k], bank_sq[k] = points[pick], sq[pick]
        if nearest is None:
            nearest = pass_with(pick)
            if triangle:
                assign = torch.full((n,), k, dtype=torch.long, device=points.device)
        else:
            movable = None if bounds is None else bounds.may_move(pick, nearest)  # None: every point
            if triangle and step >= next_test:
                to_centres = sq_distances_to(bank[:k], bank_sq[:k], points[pick], sq[pick])
                near = (to_centres[assign] < 4 * nearest).nonzero().squeeze(1)
                if near.numel() * 4 >= n:
                    next_test, wait = step + wait, min(2 * wait, 64)
                else:
                    wait, movable = 1, near
            if movable is not None and movable.numel() * 4 >= n:
                movable = None
            if movable is None:
                new = pass_with(pick)
                nearer = new < nearest
                torch.minimum(nearest, new, out=nearest)
                if triangle:
                    assign.masked_fill_(nearer, k)
            else:
                new = pass_with(pick, movable)
                nearer = new < nearest[movable]
                moved = movable[nearer]
                nearest[moved] = new[nearer]
                if triangle:
                    assign[moved] = k
        nearest[pick] = 0.0  # exact already: its distance to itself
        if triangle:
            assign[pick] = k
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

    A partition's pooled embeddings and those of its labeled part go on one fixed-point grid
    (:mod:`~al_lightning.strategies.distances`), so every squared distance is an exact integer:
    a partition draws the same points on whichever rank, device, thread count or BLAS runs it,
    given its pooled embeddings (what is and is not covered: that module's docstring).

    Cost with P = h·w ≤ ``pooled_dim``: O(N·(C + d + P)) time to embed, O(N·M·(h + w)/p) for
    the labeled centres (bounds from the outer-product factors, then a few centres measured
    per point) and at most O(b·N·P/p) for the seeding, usually much less: after each pick only
    the points that their bounds cannot rule out are measured
    (:func:`seed_partition`), with the same draws as measuring all of them;
    O((N + M)·(P + h + w)/p) memory, one partition at a time (the embeddings and their grid in
    float32, the factors in float64), plus ~64 MB blocks.

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
        return seed_partition(x, y, budget, generator, grid)
