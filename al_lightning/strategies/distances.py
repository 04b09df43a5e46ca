"""Blocked squared Euclidean distances: no (N, K) or (N, K, d) temporary beyond ~64 MB blocks.

Shared by the strategies that look at feature-space geometry (Coreset, BADGE, balancing).
:class:`RowDots` gives each point the same inner product with a new centre whether it is
computed with every point or on its own, so that a selection that skips points picks
exactly what the plain one picks.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

#: Bytes of temporaries per block when a computation is streamed over rows (and columns).
BLOCK_BYTES = 64 << 20
#: Every product call of :class:`RowDots` and :func:`padded_product` multiplies a multiple of
#: this many rows (and of centres).
GROUP_ROWS = 64

#: Squared distances below this fraction of ‖x‖² + ‖y‖² are float32 rounding of the expansion
#: ‖x‖² + ‖y‖² − 2x·y (a few 1e-7 of it, measured up to C = 1000, d = 2048), so they count as 0:
#: a duplicate of a centre then gets no D² weight instead of a random tiny one.
ROUNDING = 1e-5


def expanded_sq_distances(sq_x: Tensor, sq_y: Tensor, cross: Tensor) -> Tensor:
    """(N, K) ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y from squared norms (N,), (K,) and inner products (N, K).

    ``cross`` is overwritten. Values within :data:`ROUNDING` of zero become exactly 0.
    """
    scale = sq_x[:, None] + sq_y[None, :]
    distances = cross.mul_(-2.0).add_(scale)
    return distances.masked_fill_(distances <= ROUNDING * scale, 0.0)


def _nearest_in_block(sq_x: Tensor, sq_y: Tensor, cross: Tensor) -> Tensor:
    """``expanded_sq_distances(sq_x, sq_y, cross).amin(dim=1)``, bit for bit, in three passes over the block instead of seven.

    fl(fl(‖x‖² + ‖y‖²) − 2·x·y) is one ``add`` with ``alpha=-2`` (−2·x·y is exact, so fused
    or not it rounds once, as ``mul_(-2).add_``). The :data:`ROUNDING` cut-off is then applied
    to the row minima only: a row's minimum after zeroing is 0 if some entry is at or below
    its cut-off fl(ROUNDING·s) and the plain minimum otherwise (the other entries stay
    above their cut-offs, which are ≥ 0); no entry can be at or below its cut-off when the
    minimum is above the row's largest cut-off (rounding is monotone, so that is
    fl(ROUNDING·fl(‖x‖² + max ‖y‖²))). Only the rows where it is not are checked entry by
    entry. ``cross`` is overwritten.
    """
    scale = sq_x[:, None] + sq_y[None, :]
    distances = torch.add(scale, cross, alpha=-2.0, out=cross)
    minima = distances.amin(dim=1)
    unsure = (minima <= ROUNDING * (sq_x + sq_y.amax())).nonzero().squeeze(1)
    if unsure.numel():
        cut = distances[unsure] <= ROUNDING * scale[unsure]
        minima[unsure] = torch.where(cut.any(dim=1), 0.0, minima[unsure])
    return minima


def _nearest(
    sq_x: Tensor, sq_y: Tensor, cross: Callable[[slice, slice], Tensor], with_index: bool
) -> tuple[Tensor, Optional[Tensor]]:
    n, k = sq_x.numel(), sq_y.numel()
    cols = max(1, min(k, 4096))
    rows = max(GROUP_ROWS, BLOCK_BYTES // (16 * cols) // GROUP_ROWS * GROUP_ROWS)
    nearest = torch.full((n,), torch.inf, device=sq_x.device)
    index = torch.zeros(n, dtype=torch.long, device=sq_x.device) if with_index else None
    for r in range(0, n, rows):
        rs = slice(r, r + rows)
        for c in range(0, k, cols):
            cs = slice(c, c + cols)
            if index is None:
                torch.minimum(nearest[rs], _nearest_in_block(sq_x[rs], sq_y[cs], cross(rs, cs)), out=nearest[rs])
                continue
            block = expanded_sq_distances(sq_x[rs], sq_y[cs], cross(rs, cs))
            # The same minimum as amin (a minimum is exact); a later block wins only if strictly nearer.
            values, positions = block.min(dim=1)
            nearer = values < nearest[rs]
            nearest[rs] = torch.where(nearer, values, nearest[rs])
            index[rs] = torch.where(nearer, positions + c, index[rs])
    return nearest, index


def nearest_sq_distances(sq_x: Tensor, sq_y: Tensor, cross: Callable[[slice, slice], Tensor]) -> Tensor:
    """(N,) squared distance from each of N points to the nearest of K centres.

    ``cross(rows, cols)`` returns the (rows, cols) block of inner products; blocks are sized so
    that temporaries stay near :data:`BLOCK_BYTES`, whatever N and K are.
    """
    return _nearest(sq_x, sq_y, cross, with_index=False)[0]


def nearest_centre_sq_distances(points: Tensor, centres: Tensor) -> Tensor:
    """(N,) squared distance from every row of ``points`` to its nearest row of ``centres``."""
    return nearest_centres(points, centres, with_index=False)[0]


def row_sq_norms(points: Tensor) -> Tensor:
    """(N,) ‖x‖² of each row as ``points.square().sum(1)`` computes it, bit for bit, in ~1 MB row blocks.

    No (N, d) temporary: the squares of one block at a time, in one reused buffer (a fresh
    large temporary costs a page fault per 4 kB).
    """
    out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    rows = max(1, (1 << 20) // (points.element_size() * max(1, points.shape[1])))
    buffer = torch.empty(min(rows, points.shape[0]), points.shape[1], dtype=points.dtype, device=points.device)
    for start in range(0, points.shape[0], rows):
        block = points[start : start + rows]
        squares = torch.square(block, out=buffer[: block.shape[0]])
        torch.sum(squares, 1, out=out[start : start + block.shape[0]])
    return out


def _padded(matrix: Tensor, rows: int) -> Tensor:
    """``matrix`` with zero rows appended up to ``rows`` (itself if it has them)."""
    if matrix.shape[0] == rows:
        return matrix
    out = torch.zeros(rows, matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    out[: matrix.shape[0]] = matrix
    return out


def _whole_groups(count: int) -> int:
    return -(-count // GROUP_ROWS) * GROUP_ROWS


def padded_product(points: Tensor, centres: Tensor) -> Callable[[slice, slice], Tensor]:
    """``cross(rows, cols)``: the block ``points[rows] @ centres[cols].T``, each entry the same whichever rows and centres share the call.

    BLAS picks other kernels, which round differently, for calls with few rows or columns
    (below 8 or so on MKL; a 1-row call is a matrix-vector product). Every call here
    multiplies whole groups of :data:`GROUP_ROWS` rows by whole groups of :data:`GROUP_ROWS`
    centres (the last ones padded with zeros, their products dropped), so the value for a
    pair depends on the two rows alone (measured on MKL, 1 and 2 threads, d from 1 to 2048):
    the distances of some rows to the centres, computed on their own, are those of the full
    computation bit for bit. ``centres`` is padded once; rows are padded per call, and only in
    a last, partial group.
    """
    count = centres.shape[0]
    centres = _padded(centres, _whole_groups(count))

    def cross(rows: slice, cols: slice) -> Tensor:
        block = points[rows]
        n = block.shape[0]
        stop = min(count, cols.stop)
        product = _padded(block, _whole_groups(n)) @ centres[cols.start : _whole_groups(stop)].T
        return product if product.shape == (n, stop - cols.start) else product[:n, : stop - cols.start].contiguous()

    return cross


def nearest_centres(points: Tensor, centres: Tensor, with_index: bool = True) -> tuple[Tensor, Optional[Tensor]]:
    """(N,) squared distance from every row of ``points`` to its nearest row of ``centres``, and that row's position.

    The distances are bit for bit those of :func:`nearest_centre_sq_distances` (the same blocks),
    and a row's distance does not depend on the other rows (:func:`padded_product`): computing
    it for some rows gives their values in a computation for all. The position is the first
    nearest centre within a block of columns, and a later block's only if strictly nearer.
    ``with_index=False`` returns None for the positions.
    """
    points, centres = points.float(), centres.float()
    sq_points, sq_centres = row_sq_norms(points), row_sq_norms(centres)
    return _nearest(sq_points, sq_centres, padded_product(points, centres), with_index)


def skip_slack(dim: int) -> float:
    """Relative error bound μ of one expanded squared distance in float32, ROUNDING's zeroing included.

    |computed − exact| ≤ μ·(‖x‖² + ‖y‖²) for any summation order of a ``dim``-term inner product
    ((2·dim + 8) units in the last place, plus :data:`ROUNDING`), doubled for safety.
    """
    return 2.0 * ((2 * dim + 8) * 2.0**-24 + ROUNDING)


def _centre_groups(centres: Tensor, groups: int, steps: int = 3) -> tuple[Tensor, Tensor]:
    """(G, d) means and (K,) group of each centre: ``steps`` Lloyd steps from evenly spaced centres (no randomness)."""
    means = centres[torch.linspace(0, centres.shape[0] - 1, groups).round().long()].clone()
    assign = nearest_centres(centres, means)[1]
    for _ in range(steps):
        sums = torch.zeros_like(means).index_add_(0, assign, centres)
        counts = torch.bincount(assign, minlength=groups)
        filled = counts > 0  # an empty group keeps its mean
        means[filled] = sums[filled] / counts[filled, None]
        assign = nearest_centres(centres, means)[1]
    return means, assign


#: :func:`nearest_centre_upper_bounds` groups the centres when there are at least this many.
GROUPED_FROM = 256


def nearest_centre_upper_bounds(points: Tensor, centres: Tensor) -> Tensor:
    """(N,) values at least :func:`nearest_centre_sq_distances` (its float32 values, bit for bit), in ~2·√K products per point.

    The K centres are grouped (√K groups, a few Lloyd steps) and each point is measured only
    against the centres of the group whose mean is nearest, then raised by :func:`skip_slack`
    times ‖x‖² + max ‖c‖², the most by which float32 rounding can put the plain computation
    below this one. Any grouping gives a valid bound; a point whose nearest centre lies in
    another group just gets a looser one. For a selection that needs the exact value only
    for the points that come near the top (greedy k-center). With fewer than
    :data:`GROUPED_FROM` centres the plain values themselves.
    """
    points, centres = points.float(), centres.float()
    count = centres.shape[0]
    if count < GROUPED_FROM:
        return nearest_centre_sq_distances(points, centres)
    means, members = _centre_groups(centres, round(count**0.5))
    sq_points, sq_centres = row_sq_norms(points), row_sq_norms(centres)  # once, for every call below
    group_of_point = _nearest(sq_points, row_sq_norms(means), padded_product(points, means), with_index=True)[1]
    bounds = torch.empty(points.shape[0], device=points.device)
    order = torch.argsort(group_of_point, stable=True)
    ends = torch.bincount(group_of_point, minlength=means.shape[0]).cumsum(0).tolist()
    rows = max(GROUP_ROWS, BLOCK_BYTES // (4 * points.shape[1]) // GROUP_ROWS * GROUP_ROWS)
    start = 0
    for group, end in enumerate(ends):
        inside = members == group
        for first in range(start, end, rows):
            chosen = order[first : min(end, first + rows)]
            cross = padded_product(points[chosen], centres[inside])
            bounds[chosen] = _nearest(sq_points[chosen], sq_centres[inside], cross, with_index=False)[0]
        start = end
    slack = skip_slack(points.shape[1])
    return bounds.add_(sq_points.add_(float(sq_centres.max())), alpha=slack)


#: Rows handed to :class:`RowDots` start at multiples of this many bytes.
ALIGN_BYTES = 64


def _row_stride(dim: int) -> int:
    per = ALIGN_BYTES // 4
    return -(-max(1, dim) // per) * per


def is_aligned(matrix: Tensor) -> bool:
    """Whether ``matrix`` is float32 with unit column stride and every row starting at :data:`ALIGN_BYTES`."""
    return (
        matrix.dtype == torch.float32
        and matrix.dim() == 2
        and (matrix.stride(1) == 1 or matrix.shape[1] <= 1)
        and (matrix.stride(0) * 4) % ALIGN_BYTES == 0
        and matrix.data_ptr() % ALIGN_BYTES == 0
    )


def aligned_rows(matrix: Tensor) -> Tensor:
    """``matrix`` in float32 with each row starting at a multiple of :data:`ALIGN_BYTES`: itself if it is, else a copy.

    A copy has rows of ``dim`` values padded to a multiple of 16 (a view, ``stride(0)`` the padded
    width). :class:`RowDots` needs it: BLAS peels unaligned leading elements, so a row's
    rounding would depend on where it lies in memory.
    """
    matrix = matrix.detach()
    if is_aligned(matrix):
        return matrix
    out = aligned_zeros(matrix.shape[0], matrix.shape[1], matrix.device)
    out.copy_(matrix)
    return out


def aligned_zeros(n: int, dim: int, device: torch.device) -> Tensor:
    """(n, dim) float32 zeros whose rows start at multiples of :data:`ALIGN_BYTES` (a view into padded storage)."""
    stride = _row_stride(dim)
    storage = torch.zeros(n * stride + ALIGN_BYTES // 4, dtype=torch.float32, device=device)
    skip = (-storage.data_ptr() % ALIGN_BYTES) // 4
    return storage[skip : skip + n * stride].view(n, stride)[:, :dim]


class RowDots:
    """Inner products of a vector with rows of a matrix, the same for a row whichever rows are computed with it.

    BLAS rounds a row's product differently depending on the call it is part of (MKL's
    sgemv takes rows in groups and treats the rows of a last, incomplete group, and rows
    that do not start on an aligned address, differently: a row of a (313, d) call and of a
    (10000, d) call can differ in the last bit), so a greedy selection that updates only some
    points would drift, by a rounding, from one that updates all of them, and a near tie would
    then go the other way. Here every call multiplies a multiple of :data:`GROUP_ROWS` aligned
    rows (:func:`aligned_rows`): a whole matrix in one call, its last rows padded in a buffer,
    or chosen rows gathered into that buffer. The value for a row then depends on the row and
    the vector alone (measured on MKL, 1 and 2 threads, d from 1 to 4096; also the same with
    the roles of row and vector swapped), and a full pass is as fast as one ``torch.mv``.
    One instance keeps the buffer for ``dim``-wide rows, so that many small calls allocate
    nothing.
    """

    def __init__(self, dim: int, device: torch.device) -> None:
        self.dim = dim
        self.device = device
        self.scratch = aligned_zeros(GROUP_ROWS, dim, device)

    def _buffer(self, rows: int) -> Tensor:
        padded = -(-rows // GROUP_ROWS) * GROUP_ROWS
        if self.scratch.shape[0] < padded:
            # Zeros at first; later rows of an earlier call: finite, and they change no other row.
            self.scratch = aligned_zeros(max(padded, 2 * self.scratch.shape[0]), self.dim, self.device)
        return self.scratch[:padded]

    def __call__(self, matrix: Tensor, vector: Tensor, rows: Optional[Tensor] = None) -> Tensor:
        """(n,) float32 inner products of ``vector`` with the rows of ``matrix`` (all, in order, or those at ``rows``).

        ``matrix`` is an (N, d) float32 matrix from :func:`aligned_rows` (or rows of one);
        ``vector`` a (d,) float32 tensor (a row of such a matrix, or any contiguous one).
        """
        if not is_aligned(matrix):
            raise ValueError("RowDots needs a matrix from aligned_rows()")
        if vector.data_ptr() % ALIGN_BYTES or not vector.is_contiguous():
            vector = vector.contiguous().clone()  # fresh allocations are aligned
        if rows is not None:
            buffer = self._buffer(rows.numel())
            chosen = buffer[: rows.numel()]
            if chosen.is_contiguous():
                torch.index_select(matrix, 0, rows, out=chosen)
            else:
                chosen.copy_(matrix.index_select(0, rows))
            return torch.mv(buffer, vector)[: rows.numel()]
        n = matrix.shape[0]
        whole = n // GROUP_ROWS * GROUP_ROWS
        out = torch.empty(n, dtype=matrix.dtype, device=matrix.device)
        if whole:
            torch.mv(matrix[:whole], vector, out=out[:whole])
        if whole < n:
            buffer = self._buffer(n - whole)
            buffer[: n - whole].copy_(matrix[whole:])
            out[whole:] = torch.mv(buffer, vector)[: n - whole]
        return out


def squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    """(N, K) squared distances between rows of ``points`` and of ``centres``, computed in row blocks."""
    points, centres = points.float(), centres.float()
    sq_points, sq_centres = points.square().sum(1), centres.square().sum(1)
    out = torch.empty(points.shape[0], centres.shape[0], device=points.device)
    rows = max(1, BLOCK_BYTES // (4 * max(centres.shape[0], points.shape[1])))
    for start in range(0, points.shape[0], rows):
        block = slice(start, start + rows)
        out[block] = expanded_sq_distances(sq_points[block], sq_centres, points[block] @ centres.T)
    return out
