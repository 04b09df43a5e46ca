"""Exact squared Euclidean distances on a fixed-point grid: the same bits on any machine.

Shared by the strategies that look at feature-space geometry (Coreset, BADGE, their partitioned
forms, balancing). Every value that decides a pick of ``coreset``, ``partitioned_coreset``,
``badge`` or ``partitioned_badge`` is computed here, or from values computed here, in exact
arithmetic, so that no summation order can change it.

**The grid.** The vectors one call compares (the points AND their centres, together) are
rounded to integers: q = round(x · 2^e) (round half to even), with one exponent e per call,

* B = min(24, ⌊(51 − ⌈log₂ d⌉) / 2⌋) bits for d-dimensional vectors (:func:`grid_bits`:
  20 at d = 2048, 21 at 512, 22 at 100, 24 at d ≤ 8), and
* e the integer with 2^(B−1) ≤ m · 2^e < 2^B, m the largest |value| over every vector of the
  call (:func:`grid_exponent`); e = 0 if all are 0; NaN or ±inf is refused.

So |q| ≤ 2^B ≤ 2^24: float32 holds q exactly (the grid is stored in float32, half the memory of
float64) and float64 holds every product: a squared norm is at most d·2^(2B) ≤ 2^51, an inner
product at most that in size, and a squared distance ‖q_x‖² + ‖q_c‖² − 2 q_x·q_c at most
4·d·2^(2B) ≤ 2^53. Every partial sum, in whatever order a BLAS, a thread split, a GPU kernel or
a block size takes the terms, is then an integer of at most 53 bits: exact. (Why 51 and not
52: the distance between q and −q reaches 4·d·2^(2B), which must stay ≤ 2^53.) x · 2^e is
exact (a power-of-two scale, :func:`on_grid`) and so is the rounding, so the grid itself is a
function of the values alone.

**What that buys.** Squared distances between grid vectors are exact integers (held in
float64): a duplicate is exactly 0, a stale nearest distance is an exact upper bound, the
minimum over some centres is an exact upper bound of the minimum over all, and a row's value
never depends on the rows, centres, block, thread count or device it was computed with. The
code that used to make float32 rounding repeatable (aligned rows, padding products to groups
of rows, a rounding cut-off for near-zero distances, slack for float32 error) is gone.

**The guarantee (issue 19).** Given the same grid inputs (below) and seed, ``coreset``,
``partitioned_coreset``, ``badge`` and ``partitioned_badge`` return the same indices in the
same order with any number of DDP ranks (the partitioned forms send partitions to different
ranks), any blocking or batching of the rows, any torch thread count, any BLAS (MKL, OpenBLAS,
cuBLAS, whatever kernel or split of the sums it picks), on the CPU or on a CUDA device with
IEEE-754 float64. Every value that decides a pick is exact or a fixed sequence of correctly
rounded float64 operations on exact values; every random draw is a call of a seeded CPU
generator whose arguments are such values. The grid inputs, and what is computed from them:

* ``coreset``, ``partitioned_coreset``: the features and labeled features themselves. Every
  distance and comparison is exact; without labeled points the first pick is one
  ``torch.randint`` of the (partition's) generator.
* ``partitioned_badge``: each partition's pooled gradient embeddings and its labeled part's
  (one grid for both). Distances are exact integers; the D² draws
  (:func:`~al_lightning.strategies.badge.d2_sample`) sum the weights by a sequential float64
  scan on the CPU, so the same weights give the same draw.
* ``badge``: δ = softmax(z) − onehot(argmax z) and h of the pool and the labeled set (δ on one
  grid, h on another). The distance ‖g_x − g_y‖² is a fixed sequence of correctly rounded
  float64 operations on exact integers
  (:func:`~al_lightning.strategies.gradient_embedding.gradient_sq_distances`): not an integer,
  but the same bits on any IEEE-754 machine; the draws as for ``partitioned_badge``.

Not covered: how the grid inputs come about. The model's features and logits are whatever the
model computes. For the two BADGEs, the grid inputs are computed from those by ordinary float
kernels, row by row: the labeled points' logits (:func:`~al_lightning.strategies.gradient_embedding.head_logits`,
one float32 matrix product, which a BLAS may round differently by shape and thread count), the
softmax (exp is not correctly rounded: CPU and CUDA libraries differ in the last bit) and the
pooling (float64 averages). A last-bit change there moves a grid value only if it crosses a
rounding midpoint, and then a draw only if the random number falls in the sliver of
probability that moved; rare, but possible. Nor does exactness make the grid the real numbers:
the picks are those of the exact algorithm on the grid values, which keep B bits below the
largest value of the call (a value below 2^-(B+1) of it rounds to 0).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import Tensor

#: Bytes of temporaries per block when a computation is streamed over rows (and columns).
BLOCK_BYTES = 64 << 20
#: Bytes of float64 rows converted at a time for a matrix-vector product: stays in cache, so a
#: float32 grid is read as fast as a float64 one would be, at half the memory.
CONVERT_BYTES = 2 << 20
#: The most bits a grid value has (float32 holds integers up to 2^24 exactly).
MAX_GRID_BITS = 24


def grid_bits(dim: int) -> int:
    """B = min(24, ⌊(51 − ⌈log₂ dim⌉) / 2⌋): grid values of ``dim``-dimensional vectors satisfy |q| ≤ 2^B."""
    return min(MAX_GRID_BITS, (51 - (max(1, dim) - 1).bit_length()) // 2)


def grid_exponent(tensors: Iterable[Optional[Tensor]], dim: int) -> int:
    """e with 2^(B−1) ≤ m·2^e < 2^B, m the largest |value| in ``tensors`` (None and empty ones skipped), B = :func:`grid_bits`.

    0 when every value is 0. Raises ValueError on NaN or ±inf.
    """
    largest = 0.0
    for tensor in tensors:
        if tensor is None or tensor.numel() == 0:
            continue
        low, high = (float(v) for v in torch.aminmax(tensor.detach()))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(
                "the distance grid got NaN or infinite values: check the model's features and logits for overflow"
            )
        largest = max(largest, -low, high)
    if largest == 0.0:
        return 0
    # largest = f·2^E with 0.5 ≤ f < 1 (frexp is exact), so largest·2^(B−E) = f·2^B.
    return grid_bits(dim) - math.frexp(largest)[1]


def _rows(width: int, budget: int) -> int:
    """Rows of ``width`` float64 values that fit in ``budget`` bytes (at least 1)."""
    return max(1, budget // (8 * max(1, width)))


def _scaled(values: Tensor, exponent: int) -> Tensor:
    """``values`` (float64) times 2^exponent, exactly: in steps that stay within float64's range."""
    while exponent:
        step = max(-1000, min(1000, exponent))
        values = values * math.ldexp(1.0, step)
        exponent -= step
    return values


def on_grid(x: Tensor, exponent: int) -> Tensor:
    """(n, d) float32 grid values q = round(x · 2^exponent), round half to even, in row blocks.

    With ``exponent`` from :func:`grid_exponent` over tensors that include ``x``, |q| ≤ 2^24
    and float32 holds q exactly. Works on float32 and float64 inputs (the values as given).
    x · 2^exponent is exact: in float32 for a float32 input and 2^-126 ≤ 2^exponent ≤ 2^100 (a
    product that leaves float32's normal range, or a subnormal input, is below 2^-26 and rounds
    to 0 however a device treats subnormals), in float64 otherwise.
    """
    x = x.detach()
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    step = _rows(x.shape[1] if x.dim() > 1 else 1, CONVERT_BYTES)
    in_float32 = x.dtype == torch.float32 and -126 <= exponent <= 100
    for start in range(0, x.shape[0], step):
        block = out[start : start + step]
        if in_float32:
            torch.mul(x[start : start + step], math.ldexp(1.0, exponent), out=block)
        else:
            block.copy_(_scaled(x[start : start + step].to(torch.float64), exponent))
        block.round_()
    return out


class _Float64Rows:
    """Row blocks of a float32 grid matrix converted to float64 in one reused buffer (no fresh pages per block)."""

    def __init__(self, matrix: Tensor, rows: int) -> None:
        self.matrix = matrix
        self.buffer = torch.empty(max(1, rows), matrix.shape[1], dtype=torch.float64, device=matrix.device)

    def __call__(self, start: int, stop: int, positions: Optional[Tensor] = None) -> Tensor:
        """Rows ``start:stop`` of the matrix, or of ``positions`` (rows ``positions[start:stop]``), as float64."""
        block = self.buffer[: stop - start]
        source = self.matrix[start:stop] if positions is None else self.matrix.index_select(0, positions[start:stop])
        return block.copy_(source)


def sq_norms(q: Tensor) -> Tensor:
    """(N,) float64 ‖q‖² of each row of a grid matrix: exact."""
    out = torch.empty(q.shape[0], dtype=torch.float64, device=q.device)
    step = _rows(q.shape[1], CONVERT_BYTES)
    rows = _Float64Rows(q, min(step, q.shape[0]))
    for start in range(0, q.shape[0], step):
        stop = min(q.shape[0], start + step)
        torch.sum(rows(start, stop).square_(), 1, out=out[start:stop])
    return out


def dots(q: Tensor, vector: Tensor, rows: Optional[Tensor] = None) -> Tensor:
    """(n,) float64 inner products of a grid vector (d,) with the rows of a grid matrix (all, or those at ``rows``): exact.

    Row blocks of the float32 grid are converted to float64 in a small reused buffer.
    """
    vector = vector.to(torch.float64)
    n = q.shape[0] if rows is None else rows.numel()
    out = torch.empty(n, dtype=torch.float64, device=q.device)
    step = _rows(q.shape[1], CONVERT_BYTES)
    converted = _Float64Rows(q, min(step, n))
    for start in range(0, n, step):
        stop = min(n, start + step)
        torch.mv(converted(start, stop, rows), vector, out=out[start:stop])
    return out


def sq_distances_to(q: Tensor, sq: Tensor, centre: Tensor, centre_sq: Tensor, rows: Optional[Tensor] = None) -> Tensor:
    """(n,) float64 exact ‖x − c‖² from the rows of ``q`` (all, or those at ``rows``) to one grid vector ``centre``.

    ``sq`` holds the rows' squared norms (all N), ``centre_sq`` the centre's (:func:`sq_norms`).
    """
    products = dots(q, centre, rows)
    return products.mul_(-2.0).add_(sq if rows is None else sq[rows]).add_(centre_sq)


def nearest_centres(
    points: Tensor,
    centres: Tensor,
    with_index: bool = True,
    sq_points: Optional[Tensor] = None,
    sq_centres: Optional[Tensor] = None,
    rows: Optional[Tensor] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    """(n,) float64 exact ‖x − c‖² from every grid row of ``points`` to its nearest row of ``centres``, and that row's position.

    ``rows``: only the points at these positions (n of them), gathered a block at a time. The
    position is the lowest among equally near centres. Blocks of centres (~64 MB in float64)
    and of points (~4 MB) keep temporaries bounded whatever N and K are; since every value is
    exact, the blocks change nothing. ``with_index=False`` returns None for the positions.
    Pass the squared norms (:func:`sq_norms`, of all N points) if known.
    """
    n = points.shape[0] if rows is None else rows.numel()
    k, dim = centres.shape
    sq_points = sq_norms(points) if sq_points is None else sq_points
    if rows is not None:
        sq_points = sq_points[rows]
    sq_centres = sq_norms(centres) if sq_centres is None else sq_centres
    cols = max(1, min(k, _rows(dim, BLOCK_BYTES)))
    step = max(1, min(n, _rows(dim, 2 * CONVERT_BYTES), _rows(cols, 2 * CONVERT_BYTES)))
    converted = _Float64Rows(points, step)
    products = torch.empty(step, cols, dtype=torch.float64, device=points.device)
    nearest = torch.full((n,), torch.inf, dtype=torch.float64, device=points.device)
    index = torch.zeros(n, dtype=torch.long, device=points.device) if with_index else None
    for c in range(0, k, cols):  # centres outside: each block converted once
        cs = slice(c, min(k, c + cols))
        block_centres = centres[cs].to(torch.float64).T
        for r in range(0, n, step):
            rs = slice(r, min(n, r + step))
            # ‖c‖² − 2x·c, then + ‖x‖² on the row minima: exact, so the order is free.
            block = torch.mm(
                converted(rs.start, rs.stop, rows), block_centres, out=products[: rs.stop - r, : cs.stop - c]
            )
            block.mul_(-2.0).add_(sq_centres[cs])
            if index is None:
                torch.minimum(nearest[rs], block.amin(dim=1).add_(sq_points[rs]), out=nearest[rs])
                continue
            values, positions = block.min(dim=1)  # the first of equal minima
            values.add_(sq_points[rs])
            nearer = values < nearest[rs]  # a later block only if strictly nearer: the lowest position overall
            nearest[rs] = torch.where(nearer, values, nearest[rs])
            index[rs] = torch.where(nearer, positions + c, index[rs])
    return nearest, index


def nearest_centre_sq_distances(points: Tensor, centres: Tensor, sq_points: Optional[Tensor] = None) -> Tensor:
    """(N,) float64 exact squared distance from every grid row of ``points`` to its nearest row of ``centres``."""
    return nearest_centres(points, centres, with_index=False, sq_points=sq_points)[0]


def squared_distances(points: Tensor, centres: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """(N, K) exact squared distances between grid rows of ``points`` and of ``centres``, in row blocks.

    Exact in float64; ``dtype=torch.float32`` rounds each exact value once (half the memory).
    """
    n = points.shape[0]
    sq_points, sq_centres = sq_norms(points), sq_norms(centres)
    centres64 = centres.to(torch.float64).T
    out = torch.empty(n, centres.shape[0], dtype=dtype, device=points.device)
    step = max(1, min(n, _rows(points.shape[1], 2 * CONVERT_BYTES), _rows(centres.shape[0], 2 * CONVERT_BYTES)))
    converted = _Float64Rows(points, step)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = torch.mm(converted(start, stop), centres64).mul_(-2.0).add_(sq_centres)
        out[start:stop] = block.add_(sq_points[start:stop, None])
    return out


def _nearest_means(points: Tensor, means: Tensor) -> Tensor:
    """(N,) position of the nearest of G ``means`` to each row of ``points``, by float32 products: approximate.

    For grouping only: a point given a group that is not quite the nearest gets a looser bound,
    never a wrong one, so this need not be exact (and is twice as fast as float64).
    """
    means = means.float()
    means_sq = means.square().sum(1)
    out = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    step = max(1, _rows(points.shape[1], 4 * CONVERT_BYTES) * 2)
    for start in range(0, points.shape[0], step):
        block = points[start : start + step].float()
        out[start : start + block.shape[0]] = torch.addmm(means_sq, block, means.T, alpha=-2.0).argmin(dim=1)
    return out


def _centre_groups(centres: Tensor, groups: int, steps: int = 3) -> tuple[Tensor, Tensor]:
    """(G, d) float32 means and (K,) group of each centre: ``steps`` Lloyd steps from evenly spaced centres (no randomness)."""
    means = centres[torch.linspace(0, centres.shape[0] - 1, groups).round().long()].float()
    assign = _nearest_means(centres, means)
    for _ in range(steps):
        sums = torch.zeros(groups, centres.shape[1], dtype=torch.float64, device=centres.device)
        sums.index_add_(0, assign, centres.to(torch.float64))
        counts = torch.bincount(assign, minlength=groups)
        filled = counts > 0  # an empty group keeps its mean
        means[filled] = (sums[filled] / counts[filled, None]).float()
        assign = _nearest_means(centres, means)
    return means, assign


#: :func:`nearest_centre_upper_bounds` groups the centres when there are at least this many.
GROUPED_FROM = 256


def nearest_centre_upper_bounds(
    points: Tensor, centres: Tensor, sq_points: Optional[Tensor] = None, sq_centres: Optional[Tensor] = None
) -> Tensor:
    """(N,) exact upper bounds of :func:`nearest_centre_sq_distances`, in ~2·√K products per point.

    The K grid centres are grouped (√K groups, a few Lloyd steps) and each point is measured
    only against the centres of the group whose mean is nearest: the exact distance to the
    nearest of some centres is at least the distance to the nearest of all. Any grouping gives a
    valid bound; a point whose nearest centre lies in another group just gets a looser one, so
    the grouping is done in float32 (approximate, twice as fast). For
    a selection that needs the exact value only for the points that come near the top (greedy
    k-center). With fewer than :data:`GROUPED_FROM` centres, the distances themselves.
    """
    sq_points = sq_norms(points) if sq_points is None else sq_points
    sq_centres = sq_norms(centres) if sq_centres is None else sq_centres
    count = centres.shape[0]
    if count < GROUPED_FROM:
        return nearest_centres(points, centres, with_index=False, sq_points=sq_points, sq_centres=sq_centres)[0]
    means, members = _centre_groups(centres, round(count**0.5))
    group_of_point = _nearest_means(points, means)
    bounds = torch.empty(points.shape[0], dtype=torch.float64, device=points.device)
    order = torch.argsort(group_of_point, stable=True)
    ends = torch.bincount(group_of_point, minlength=means.shape[0]).cumsum(0).tolist()
    start = 0
    for group, end in enumerate(ends):
        inside = (members == group).nonzero().squeeze(1)
        if end > start:
            chosen = order[start:end]
            bounds[chosen] = nearest_centres(points, centres[inside], False, sq_points, sq_centres[inside], chosen)[0]
        start = end
    return bounds
