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
    nearest_centre_sq_distances,
    nearest_centres,
    row_sq_norms,
    skip_slack,
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


#: Unit roundoff of float32.
_U32 = 2.0**-24


def _gamma(terms: int) -> float:
    """γ_k = k·u/(1 − k·u): |computed − exact| ≤ γ_k·Σ|terms| for a float32 sum of k products, in any order."""
    return terms * _U32 / (1 - terms * _U32)


class RankOneBounds:
    """Certified bounds on each point's squared distance to a new centre, from a rank-one factorisation of the embeddings.

    A pooled gradient embedding is the flattened (h, w) outer product of the class-bin means
    of δ and the feature-bin means of h (:func:`~al_lightning.strategies.gradient_embedding.pool_outer`),
    stored in float32: each row X of ``points`` is U ⊗ V + E with U (h,) and V (w,) read off X
    (V its row and U its column through the largest entry, over that entry) and E, the rounding
    left over, measured (‖E‖ in float64, rounded up). Then ⟨X, X'⟩ = ⟨U, U'⟩·⟨V, V'⟩ + ⟨E, X'⟩
    + ⟨U ⊗ V, E'⟩, so h + w products per point give the inner product with a new centre to
    within δ = γ_P·‖X‖·‖X'‖ (how far float32 can take the P-term product, any order)
    + ‖E‖·‖X'‖ + ‖U‖‖V‖·‖E'‖ + (γ_h + γ_w + 2u)·‖U‖‖V‖·‖U'‖‖V'‖ (the short products' rounding),
    and the squared distance as the plain seeding computes it, fl(fl(‖x‖² + ‖c‖²) − 2·fl(x·c)),
    to within 2δ + 2.01u·(‖x‖² + ‖c‖²) (and, should values underflow, a few hundred times the
    smallest subnormal: each operation may lose half of one). A point whose lower bound is above its current
    nearest distance (and above the :data:`~al_lightning.strategies.distances.ROUNDING`
    cut-off, below which a distance becomes 0) cannot move, whatever the rounding. Rows that
    are not rank-one (any other data) only get large residuals, hence no skipping: never a
    wrong one. :meth:`build` returns None when no (h, w) split of P with h, w ≥ 2 leaves
    small residuals.
    """

    #: Largest median ‖E‖/‖X‖ over the sampled rows for a split to be used.
    TOLERANCE = 1e-5
    #: Rows per block when factorising (float64 temporaries that stay in cache).
    ROWS = 1024

    def __init__(
        self, u: Tensor, v: Tensor, coefficient: Tensor, size: Tensor, residual: Tensor, norm: Tensor, dim: int
    ) -> None:
        # Stored transposed, (h, n) and (w, n): a vector times them streams over the points.
        self.u, self.v = u.T.contiguous(), v.T.contiguous()
        self.coefficient = coefficient  # γ_P·‖X‖ + ‖E‖, multiplies ‖X'‖
        self.size = size  # ‖U‖·‖V‖, rounded up
        self.residual = residual  # ‖E‖, rounded up
        self.norm = norm  # ‖X‖, rounded up
        self.short = 1.01 * (_gamma(u.shape[1]) + _gamma(v.shape[1]) + 2 * _U32)
        # Underflow: each float32 operation may also be off by half the smallest subnormal. The
        # factors' entries are at most 1 in U (over the largest entry), ‖U‖ ≤ √h.
        h, w = u.shape[1], v.shape[1]
        self.tiny = 2.0**-149 * (2 * dim + 4 * (h + w) * (1 + h) + 64)

    @staticmethod
    def _factor(block: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        grid = block.double().view(-1, h, w)
        rows = torch.arange(grid.shape[0], device=grid.device)
        flat = grid.abs().view(grid.shape[0], -1).argmax(dim=1)
        r, c = flat // w, flat % w
        pivot = grid[rows, r, c]
        u = torch.where(pivot[:, None] != 0, grid[rows, :, c] / pivot[:, None], 0.0).float()
        v = grid[rows, r, :].float()
        residual = (grid - u.double()[:, :, None] * v.double()[:, None, :]).flatten(1)
        # float64 products of float32 factors are exact; the subtraction rounds by 2^-53 of ‖X‖ at most.
        error = torch.linalg.vector_norm(residual, dim=1) + 2.0**-50 * torch.linalg.vector_norm(grid.flatten(1), dim=1)
        size = torch.linalg.vector_norm(u.double(), dim=1) * torch.linalg.vector_norm(v.double(), dim=1)
        return u, v, error, size

    @classmethod
    def build(cls, points: Tensor, sq: Tensor) -> Optional["RankOneBounds"]:
        n, dim = points.shape
        if points.dtype != torch.float32 or sq.dtype != torch.float32 or n == 0:
            return None
        sample = points[: min(n, 256)]
        scale = torch.linalg.vector_norm(sample.double(), dim=1).clamp_min(1e-300)
        splits = sorted(((h, dim // h) for h in range(2, dim // 2 + 1) if dim % h == 0), key=sum)
        for h, w in splits:  # the cheapest split that factors the sampled rows
            if float((cls._factor(sample, h, w)[2] / scale).median()) <= cls.TOLERANCE:
                break
        else:
            return None
        u = torch.empty(n, h, device=points.device)
        v = torch.empty(n, w, device=points.device)
        error = torch.empty(n, dtype=torch.float64, device=points.device)
        size = torch.empty(n, dtype=torch.float64, device=points.device)
        for start in range(0, n, cls.ROWS):
            part = slice(start, start + cls.ROWS)
            u[part], v[part], error[part], size[part] = cls._factor(points[part], h, w)
        up = 1 + 1e-6  # float64 → float32, rounded up
        gamma = _gamma(dim)
        norm = sq.double().sqrt() * (1 + 2 * gamma + 1e-6)  # ≥ ‖X‖ though sq rounded
        return cls(
            u.contiguous(),
            v.contiguous(),
            ((1.01 * gamma * norm + error) * up).float(),
            (size * up).float(),
            (error * up).float(),
            (norm * up).float(),
            dim,
        )

    def may_move(self, pick: int, nearest: Tensor, sq: Tensor) -> Tensor:
        """Positions whose plain-computed squared distance to point ``pick`` might be below ``nearest`` (ascending)."""
        lower, cut = self.lower_bounds(pick, sq)
        stays = (lower > torch.maximum(nearest, cut)) | (nearest == 0)
        return (~stays).nonzero().squeeze(1)

    def lower_bounds(self, pick: int, sq: Tensor) -> tuple[Tensor, Tensor]:
        """(lower, cut): where lower > cut, the plain-computed squared distance to point ``pick`` is at least lower.

        ``cut`` is fl(ROUNDING·(‖x‖² + ‖c‖²)), the plain computation's own: at or below it a
        distance is set to 0.
        """
        approx = (self.u[:, pick] @ self.u).mul_(self.v[:, pick] @ self.v)
        scale = sq + sq[pick]  # as expanded_sq_distances computes ‖x‖² + ‖c‖²
        cut = ROUNDING * scale  # at or below it, a distance is 0
        slack = self.coefficient * self.norm[pick]
        slack.add_(self.size, alpha=float(self.residual[pick] + self.short * self.size[pick]))
        # lower bound: fl(s − 2a) − (2δ + 8u·s), inflated 1% for the rounding of its own terms
        lower = torch.add(scale, approx, alpha=-2.0)
        lower.sub_(slack, alpha=2.02).sub_(scale, alpha=8.1 * _U32).sub_(4 * self.tiny)
        return lower, cut

    def nearest(
        self, points: Tensor, sq: Tensor, centres: Tensor, centre_sq: Tensor, centre_bounds: "RankOneBounds"
    ) -> Tensor:
        """:func:`~al_lightning.strategies.distances.nearest_centre_sq_distances` of ``points`` (these bounds' rows) to ``centres``, bit for bit.

        ``sq`` and ``centre_sq`` are their squared norms, ``centre_bounds`` the centres' factors.

        Each pair's squared distance is first bounded from the factors (h + w products, two
        small matrix products per block of pairs), to within a margin W per point that covers
        the plain computation's float32 rounding; a centre more than 2·W beyond a point's
        nearest bound cannot be its nearest, so each point is measured against the few
        centres left (usually one), in blocks of points sorted by their nearest bound so that
        a block shares its centres. Measured values do not depend on which rows or centres
        share the call (:func:`~al_lightning.strategies.distances.padded_product`), so the
        minimum over the centres left is the plain minimum over all. Points within reach of
        the :data:`~al_lightning.strategies.distances.ROUNDING` cut-off (a distance that may
        become 0) are measured against all centres.
        """
        n, count = points.shape[0], centres.shape[0]
        if count >= 2**24:  # positions are kept in float32 below
            return nearest_centre_sq_distances(points, centres)
        top_sq = float(centre_sq.max())
        # W: the largest margin of a point's pairs (RankOneBounds.lower_bounds' terms, each at its worst centre).
        margin = (self.coefficient * float(centre_bounds.norm.max())).add_(
            self.size, alpha=float((centre_bounds.residual + self.short * centre_bounds.size).max())
        )
        margin.mul_(2.02).add_(sq + top_sq, alpha=12 * _U32).add_(4 * self.tiny)
        nearest = torch.empty(n, device=points.device)
        # A centre left to each point (its largest), and how many are left.
        key = torch.empty(n, device=points.device)  # float32: exact for positions below 2**24
        left = torch.empty(n, device=points.device)
        extra_rows, extra_cols = [], []  # the centres left to points left more than one
        # Blocks of pairs that stay in cache; −2·U is exact, so the bound takes one product less.
        rows = max(8, min(n, CACHE_BYTES // (8 * max(1, count))))
        doubled = self.u.T.mul(-2)
        u_block = torch.empty(rows, count, device=points.device)
        v_block = torch.empty(rows, count, device=points.device)
        positions = torch.arange(count, dtype=torch.float32, device=points.device)
        for start in range(0, n, rows):
            part = slice(start, min(n, start + rows))
            size = part.stop - start
            # ‖c‖² − 2·a(x, c): the bound less ‖x‖², which every pair of the row shares.
            shifted = torch.mm(doubled[part], centre_bounds.u, out=u_block[:size])
            shifted.mul_(torch.mm(self.v[:, part].T, centre_bounds.v, out=v_block[:size])).add_(centre_sq)
            least = shifted.amin(dim=1)
            # 1.0 for a centre left, 0.0 otherwise (a float comparison is several times faster than a bool one)
            near = torch.le(shifted, (least + 2 * margin[part])[:, None], out=v_block[:size])
            torch.sum(near, dim=1, out=left[part])
            torch.mv(near, positions, out=key[part])  # a point's only centre left, where it has one
            nearest[part] = least.add_(sq[part])
            several = (left[part] > 1).nonzero().squeeze(1)
            if several.numel():
                pairs = near[several].nonzero()
                extra_rows.append(several[pairs[:, 0]] + start)
                extra_cols.append(pairs[:, 1])
        distances = torch.empty(n, device=points.device)
        # Near the cut-off a distance may become 0 (and NaN leaves no centre): measured against all centres.
        unsure = (nearest - margin <= ROUNDING * (sq + top_sq)) | (left == 0)
        if bool(unsure.any()):
            rows_unsure = unsure.nonzero().squeeze(1)
            distances[rows_unsure] = nearest_centre_sq_distances(points[rows_unsure], centres)
        # Every pair left: (point, its key) and the extra ones; by chunk of points sorted by key.
        sure = (~unsure).nonzero().squeeze(1)
        single = sure[left[sure] == 1]
        order = sure[torch.argsort(torch.where(left[sure] == 1, key[sure], count), stable=True)]
        rank = torch.full((n,), -1, dtype=torch.long, device=points.device)
        rank[order] = torch.arange(order.numel(), device=points.device)
        pair_rows = torch.cat([single, *extra_rows])
        pair_cols = torch.cat([key[single].long(), *extra_cols])
        kept = rank[pair_rows] >= 0
        chunk_of_pair = rank[pair_rows[kept]] // MEASURED_ROWS
        pair_cols = pair_cols[kept][torch.argsort(chunk_of_pair, stable=True)]
        per_chunk = torch.bincount(chunk_of_pair, minlength=-(-order.numel() // MEASURED_ROWS)).tolist()
        at = 0
        for chunk, pairs in enumerate(per_chunk):
            chosen = order[chunk * MEASURED_ROWS : (chunk + 1) * MEASURED_ROWS]
            cols = torch.unique(pair_cols[at : at + pairs])
            at += pairs
            distances[chosen] = nearest_centre_sq_distances(points[chosen], centres[cols])
        return distances


#: Points measured together by :meth:`RankOneBounds.nearest` (sorted by their nearest bound).
MEASURED_ROWS = 512
#: Bytes of the two blocks of pairs that :meth:`RankOneBounds.nearest` bounds at a time.
CACHE_BYTES = 2 << 20


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

    Pooled gradient embeddings are outer products (class bins × feature bins), so a sharper
    test comes first when the rows of ``x`` factor (:class:`RankOneBounds`): each point's
    distance to the new centre is bounded from h + w products instead of P, with the float32
    rounding of the plain computation accounted for, and only the points whose bound does not
    rule out a move are measured (those that do move, and the few within rounding of their
    value). Then the triangle test is not used, and the labeled centres (when they factor
    too) are bounded the same way, pair by pair, and each point measured only against the
    centres its bounds leave (:meth:`RankOneBounds.nearest`: the plain distances bit for bit).

    Cost: O(n·m·(h + w)) for the labeled centres (O(n·m·P) if they do not factor), then per
    pick O(n·(h + w)) for the rank-one test
    (or O((m + picks)·P) for the centre distances and O(n) for the triangle test), O(n) for
    the D² draw, and O(P) per point measured.
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
    nearest: Optional[Tensor] = None
    bounds = RankOneBounds.build(points, sq) if x.dtype == torch.float32 else None
    # With rank-one bounds the triangle test adds little (and needs each point's nearest centre).
    triangle = bounds is None
    # The centres so far, labeled then picked, for the distances from each new pick to them.
    bank = torch.empty(num_centres + budget if triangle else 0, dim, device=points.device)
    bank_sq = torch.empty(num_centres + budget if triangle else 0, device=points.device)
    if num_centres > 0 and not triangle:
        centre_sq = torch.linalg.vector_norm(centres, dim=1).square()
        centre_bounds = RankOneBounds.build(centres, centre_sq)
        if centre_bounds is not None and centre_bounds.u.shape == (bounds.u.shape[0], num_centres):
            nearest = bounds.nearest(x, sq, centres, centre_sq, centre_bounds)
        else:
            nearest = nearest_centre_sq_distances(x, centres)
    elif num_centres > 0:
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
        if triangle:
            bank[k], bank_sq[k] = points[pick], sq[pick]
        if nearest is None:
            nearest = embedding_sq_distances(row_dots(points, points[pick]), sq, sq[pick])
            if triangle:
                assign = torch.full((n,), k, dtype=torch.long, device=points.device)
                limit = nearest * 4 + (sq + sq[pick]) * slack
        else:
            movable = None if bounds is None else bounds.may_move(pick, nearest, sq)  # None: every point
            if triangle and step >= next_test:
                to_centres = torch.mv(bank[:k], points[pick]).mul_(-2).add_(bank_sq[:k]).add_(sq[pick])
                near = (to_centres[assign] < limit + slack * sq[pick]).nonzero().squeeze(1)
                if near.numel() * 4 >= n:
                    next_test, wait = step + wait, min(2 * wait, 64)
                else:
                    wait = 1
                    if movable is None:
                        movable = near
                    else:  # both tests are sound: a point either rules out stays
                        flagged = torch.zeros(n, dtype=torch.bool, device=points.device)
                        flagged[near] = True
                        movable = movable[flagged[movable]]
            if movable is not None and movable.numel() * 4 >= n:
                movable = None
            if movable is None:
                new = embedding_sq_distances(row_dots(points, points[pick]), sq, sq[pick])
                nearer = new < nearest
                torch.minimum(nearest, new, out=nearest)
                if triangle:
                    assign.masked_fill_(nearer, k)
                    limit = torch.where(nearer, nearest * 4 + (sq + sq[pick]) * slack, limit)
            else:
                new = embedding_sq_distances(row_dots(points, points[pick], movable), sq[movable], sq[pick])
                nearer = new < nearest[movable]
                moved = movable[nearer]
                nearest[moved] = new[nearer]
                if triangle:
                    assign[moved] = k
                    limit[moved] = nearest[moved] * 4 + (sq[moved] + sq[pick]) * slack
        # A centre's own distance is 0 up to rounding; make it exact so it is never drawn again.
        nearest[pick] = 0.0
        if triangle:
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

    Cost with P = h·w ≤ ``pooled_dim``: O(N·(C + d + P)) time to embed, O(N·M·(h + w)/p) for
    the labeled centres (bounds from the outer-product factors, then a few centres measured
    per point) and at most O(b·N·P/p) for the seeding, usually much less: after each pick only
    the points that their bounds cannot rule out are measured
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
