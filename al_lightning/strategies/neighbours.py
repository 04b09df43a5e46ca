"""Exact nearest neighbours, radius graphs and k-means on the fixed-point grid: the engine of the typicality and coverage strategies.

TypiClust, ProbCover, MaxHerding, DropQuery and k-means (issue 20) compare every pool point
with its neighbours or with cluster centres. Their published code runs faiss (TypiClust) or
torch ``cdist`` on dense N×N blocks in float32 (ProbCover), and scikit-activeml builds N×N
matrices. Here every distance is an exact integer on the grid of
:mod:`~al_lightning.strategies.distances` (q = round(x·2^e), squared distances below 2^53 in
float64), computed block by block by torch matrix products, so

* memory is O(N·k) for a k-neighbour list or the edges of a radius graph, never N×N;
* a neighbour list, an edge, a cluster assignment and a k-means centre are functions of the
  grid values alone, the same for any row or column blocking, thread count, BLAS or device,
  and ties go to the lowest position: a query scored on one rank or two, in any batching,
  gives the same picks;
* k-means centres stay on the grid (each is the rounded mean of its members, sums exact in
  float64), so Lloyd's iterations are exact too.

**Across ranks.** Inside :func:`sharing_work` (the query runs strategies that set
``Strategy.shares_work`` in it, on every DDP rank with the same gathered inputs) each rank
does the rows of its contiguous shard: its neighbour lists, its edges, its points' nearest
other label, its points' k-means assignment and partial centre sums. Lists, edges and
assignments are gathered in rank order (= position order); the sums are exact integers, so
their all-reduce is exact too. Every rank then holds what one process computes, bit for bit,
and the strategy goes on identically on all of them.

Why torch and not faiss: faiss's exact search (``IndexFlatL2``) and its k-means are float32
BLAS, whose rounding depends on the thread count and the blocking; the grid makes the result
exact, at the cost of float64 products (measured in ``benchmarks/README.md``); the radius
graph gets float32's speed back by screening float32 products with a rigorous error bound and
computing exactly only the pairs near the radius. Both run on a CUDA device when the tensors
are there. Symmetric work (the radius graph, MaxHerding's initial gains) is done on the
blocks on and above the diagonal only (:func:`upper_blocks`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from al_lightning.distributed import gather_rows, rank, world_size
from al_lightning.strategies.distances import (
    BLOCK_BYTES,
    CONVERT_BYTES,
    _Float64Rows,
    _rows,
    grid_exponent,
    nearest_centres,
    on_grid,
    sq_norms,
)


@dataclass
class GridPoints:
    """Vectors on one fixed-point grid and their exact squared norms.

    Attributes:
        q: (n, d) float32 grid values, integers of at most B bits.
        sq: (n,) float64 exact ‖q‖².
        exponent: e, the grid's scale: q = round(x·2^e).
    """

    q: Tensor
    sq: Tensor
    exponent: int

    def __len__(self) -> int:
        return self.q.shape[0]

    def to_grid_sq(self, value: float) -> float:
        """A squared distance in the inputs' units, in grid units (× 4^e): exact, a power-of-two scaling."""
        return math.ldexp(float(value), 2 * self.exponent)

    def from_grid_sq(self, values: Tensor) -> Tensor:
        """Squared grid distances in the inputs' units (÷ 4^e)."""
        return values.to(torch.float64) * math.ldexp(1.0, -2 * self.exponent)

    def take(self, positions: Tensor) -> "GridPoints":
        """The rows at ``positions``, on the same grid."""
        return GridPoints(self.q[positions], self.sq[positions], self.exponent)


def on_one_grid(*tensors: Optional[Tensor], unit: bool = False) -> list[Optional[GridPoints]]:
    """Each of ``tensors`` ((n_i, d) features; None passes through) on ONE grid, so distances between them are exact.

    ``unit``: the rows scaled to unit length first (zero rows stay zero), as the typicality and
    coverage papers' code L2-normalises its features. Deterministic: the rows go on one grid,
    each grid row is divided by the square root of its exact squared norm (IEEE division and
    square root are correctly rounded: the same bits on any device), and the unit rows go on
    one grid. They differ from x/‖x‖ computed in floating point by about one grid step.

    Raises ValueError on NaN or infinite values (from :func:`~al_lightning.strategies.distances.grid_exponent`).
    """
    if unit:
        return _unit_rows_on_one_grid(on_one_grid(*tensors))
    present = [t for t in tensors if t is not None]
    dim = present[0].shape[1] if present else 1
    exponent = grid_exponent(present, dim)
    out: list[Optional[GridPoints]] = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        q = on_grid(t, exponent)
        out.append(GridPoints(q, sq_norms(q), exponent))
    return out


@dataclass(frozen=True)
class WorkSplit:
    """This rank's share of the engine's row loops, and how the shares are put back together.

    Attributes:
        rank: this process's rank.
        ranks: how many ranks share the work (1: this process does everything).
        device: where the collectives run (the rank's GPU under NCCL).
    """

    rank: int = 0
    ranks: int = 1
    device: Optional[torch.device] = None

    def shard(self, n: int) -> Optional[Tensor]:
        """Positions of the rows this rank computes (a contiguous shard), or None for all of them."""
        if self.ranks == 1:
            return None
        start, stop = (n * self.rank) // self.ranks, (n * (self.rank + 1)) // self.ranks
        return torch.arange(start, stop)

    def gather(self, rows: Tensor) -> Tensor:
        """Every rank's rows, in rank order (= position order of the shards)."""
        if self.ranks == 1:
            return rows
        return gather_rows(rows, self.device or rows.device)

    def smallest(self, partial: Tensor) -> Tensor:
        """The elementwise least over ranks of ``partial`` (any order gives the same)."""
        if self.ranks == 1:
            return partial
        least = partial.to(self.device or partial.device)
        dist.all_reduce(least, op=dist.ReduceOp.MIN)
        return least.to(partial.device)

    def total(self, partial: Tensor) -> Tensor:
        """The sum over ranks of ``partial`` (exact integer values: any order gives the same sum)."""
        if self.ranks == 1:
            return partial
        summed = partial.to(self.device or partial.device)
        dist.all_reduce(summed)
        return summed.to(partial.device)


_SPLIT: contextvars.ContextVar[WorkSplit] = contextvars.ContextVar("work_split", default=WorkSplit())


@contextlib.contextmanager
def sharing_work(device: Optional[torch.device] = None) -> Iterator[WorkSplit]:
    """Within this block, every rank of the process group does its share of the engine's work.

    Every rank must make the same engine calls in the same order with the same inputs (the
    strategy runs on every rank on the same gathered outputs).
    """
    token = _SPLIT.set(WorkSplit(rank(), world_size(), device))
    try:
        yield _SPLIT.get()
    finally:
        _SPLIT.reset(token)


def current_split() -> WorkSplit:
    """The work split in force: :func:`sharing_work`'s, or this process alone."""
    return _SPLIT.get()


def concat(*points: GridPoints) -> GridPoints:
    """The rows of ``points`` one after the other; they must share one grid (:func:`on_one_grid`)."""
    exponents = {p.exponent for p in points}
    if len(exponents) != 1:
        raise ValueError(f"can only join points on one grid, got exponents {sorted(exponents)}")
    return GridPoints(torch.cat([p.q for p in points]), torch.cat([p.sq for p in points]), points[0].exponent)


def row_order(points: GridPoints) -> Tensor:
    """(n,) positions that sort the rows by their grid values, lexicographically (first column first; ties: lower position).

    A canonical order for a set of rows given without ids (the labeled features): whatever order
    they arrive in, ``points.take(row_order(points))`` is the same. Stable sorts from the last
    column to the first: O(d·n log n).
    """
    order = torch.arange(len(points), device=points.q.device)
    for column in range(points.q.shape[1] - 1, -1, -1):
        order = order[torch.sort(points.q[order, column], stable=True).indices]
    return order


def sum_columns(values: Tensor) -> Tensor:
    """(n,) the sum of each row of (n, k) ``values``, first column to last: a fixed order, so the same bits on any device.

    Exact for grid squared distances while the sums stay below 2^53; beyond, each addition is one
    correctly rounded float64 operation, in the same order everywhere.
    """
    total = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    for column in range(values.shape[1]):
        total += values[:, column]
    return total


def _unit_blocks(grid: GridPoints) -> Iterator[tuple[int, Tensor]]:
    """(start, float64 unit rows) of ``grid``, a few MB at a time: each row over the root of its exact squared norm."""
    norms = grid.sq.sqrt()
    norms[norms == 0] = 1.0
    step = _rows(grid.q.shape[1], CONVERT_BYTES)
    for start in range(0, len(grid), step):
        yield start, grid.q[start : start + step].to(torch.float64) / norms[start : start + step, None]


def _unit_rows_on_one_grid(grids: list[Optional[GridPoints]]) -> list[Optional[GridPoints]]:
    """The unit rows of ``grids`` on one grid, in two passes over row blocks (the largest value, then the
    rounding): no float64 copy of the whole set. Each block's values are the same in both passes."""
    present = [g for g in grids if g is not None]
    dim = present[0].q.shape[1] if present else 1
    largest = max((float(block.abs().max()) for g in present for _, block in _unit_blocks(g) if block.numel()), default=0.0)
    exponent = grid_exponent([torch.tensor([largest], dtype=torch.float64)], dim)
    out: list[Optional[GridPoints]] = []
    for grid in grids:
        if grid is None:
            out.append(None)
            continue
        q = torch.empty_like(grid.q)
        for start, block in _unit_blocks(grid):
            q[start : start + block.shape[0]] = on_grid(block, exponent)
        out.append(GridPoints(q, sq_norms(q), exponent))
    return out


#: The widest column block: a product block of ~4 MB then has ≥ 256 rows. Narrow blocks of
#: many columns (26 × 20,000 at d = 128) ran float64 products at a third of the speed of
#: 256 × 2,048 ones (32 against 92 GFLOP/s, 2 threads; benchmarks/README.md).
MAX_BLOCK_COLUMNS = 2048


def _blocks(n_rows: int, n_cols: int, dim: int) -> tuple[int, int]:
    """(row step, column step): a column block of at most ~64 MB of float64 and 2,048 columns, a product block of ~4 MB."""
    cols = max(1, min(n_cols, _rows(dim, BLOCK_BYTES), MAX_BLOCK_COLUMNS))
    step = max(1, min(max(1, n_rows), _rows(dim, 2 * CONVERT_BYTES), _rows(cols, 2 * CONVERT_BYTES)))
    return step, cols


def pairwise_blocks(points: GridPoints, others: GridPoints, rows: Optional[Tensor]) -> Iterator[tuple[slice, slice, Tensor]]:
    """Yield (row slice, column slice, exact squared distances of that block) over rows × ``others``.

    The block is a reused buffer: use it before the next one comes.

    Column blocks outside (each converted to float64 once), row blocks inside. ``rows``:
    positions of the rows of ``points`` to use (all by default); the row slices index them.
    """
    n = len(points) if rows is None else rows.numel()
    m, dim = others.q.shape
    step, cols = _blocks(n, m, dim)
    converted = _Float64Rows(points.q, step)
    products = torch.empty(step, cols, dtype=torch.float64, device=points.q.device)
    row_sq = points.sq if rows is None else points.sq[rows]
    for c in range(0, m, cols):
        cs = slice(c, min(m, c + cols))
        block_cols = others.q[cs].to(torch.float64).T
        for r in range(0, n, step):
            rs = slice(r, min(n, r + step))
            block = torch.mm(converted(rs.start, rs.stop, rows), block_cols, out=products[: rs.stop - r, : cs.stop - c])
            block.mul_(-2.0).add_(others.sq[cs]).add_(row_sq[rs, None])
            yield rs, cs, block


def upper_blocks(n: int, dim: int) -> list[tuple[slice, slice]]:
    """The square blocks of an n × n symmetric matrix on and above the diagonal that this rank computes.

    All of them outside :func:`sharing_work`; inside, the ranks take them in turn (block t to
    rank t mod ranks), so the work splits evenly though the rows' shares of the triangle do not.
    """
    split = current_split()
    side = min(_blocks(n, n, dim))
    starts = range(0, n, side)
    pairs = [(slice(r, min(n, r + side)), slice(c, min(n, c + side))) for r in starts for c in starts if c >= r]
    return pairs[split.rank :: split.ranks]


def exact_block(points: GridPoints, rs: slice, cs: slice) -> Tensor:
    """(rows, columns) float64 exact squared grid distances between the points at ``rs`` and at ``cs``."""
    block = torch.mm(points.q[rs].to(torch.float64), points.q[cs].to(torch.float64).T)
    return block.mul_(-2.0).add_(points.sq[cs]).add_(points.sq[rs, None])


def _k_smallest(block: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(rows, k) the k smallest values of each row and their columns, by (value, column): ties to the lower column.

    ``topk`` gives the k-th smallest value t (its value is unique, the columns it returns are
    not); every value below t is in, and of the values equal to t the lowest columns fill up to
    k. Then a stable sort of the k by value. O(columns) per row, not a sort of the row.
    """
    if k == 0:
        return block[:, :0], torch.zeros(block.shape[0], 0, dtype=torch.long, device=block.device)
    kth = block.topk(k, dim=1, largest=False).values.amax(dim=1, keepdim=True)
    below = block < kth
    ties = block == kth
    wanted = k - below.sum(dim=1, keepdim=True)
    chosen = below | (ties & (ties.cumsum(dim=1) <= wanted))
    columns = chosen.nonzero()[:, 1].view(block.shape[0], k)  # row-major: each row's columns in order
    values = block.gather(1, columns)
    order = torch.sort(values, dim=1, stable=True).indices
    return values.gather(1, order), columns.gather(1, order)


def nearest_neighbours(
    points: GridPoints,
    k: int,
    rows: Optional[Tensor] = None,
    among: Optional[GridPoints] = None,
    exclude_self: bool = True,
) -> tuple[Tensor, Tensor]:
    """(n, k) exact squared grid distances and positions of the k nearest neighbours of each row, nearest first.

    Neighbours are rows of ``among`` (default: ``points`` itself, then a row is not its own
    neighbour when ``exclude_self``). Equal distances go to the lower position, so the lists
    are a function of the grid values alone. ``rows``: only the rows of ``points`` at these
    positions (n of them; a rank's shard), each still searched against all of ``among``.
    Memory O(n·k) beyond one ~64 MB column block: never n × len(among).
    """
    same = among is None
    among = points if among is None else among
    split = current_split() if rows is None else WorkSplit()
    mine = split.shard(len(points))
    if mine is not None:
        values, positions = nearest_neighbours(points, k, mine.to(points.q.device), None if same else among, exclude_self)
        return split.gather(values), split.gather(positions)
    n = len(points) if rows is None else rows.numel()
    available = len(among) - (1 if same and exclude_self else 0)
    if k > available:
        raise ValueError(f"asked for {k} nearest neighbours among {available} points")
    device = points.q.device
    own = (torch.arange(len(points), device=device) if rows is None else rows.to(device)) if same else None
    # Column blocks come in position order, so within a row the kept lists hold lower positions
    # than any later block: a stable sort of [kept, block's k nearest] keeps (distance, position) order.
    kept: dict[int, tuple[Tensor, Tensor]] = {}
    for rs, cs, block in pairwise_blocks(points, among, rows):
        if own is not None and exclude_self:
            inside = (own[rs] >= cs.start) & (own[rs] < cs.stop)
            block[inside.nonzero().squeeze(1), own[rs][inside] - cs.start] = torch.inf
        values, positions = _k_smallest(block, min(k, block.shape[1]))
        positions += cs.start
        previous = kept.get(rs.start)
        if previous is not None:
            values = torch.cat([previous[0], values], dim=1)
            positions = torch.cat([previous[1], positions], dim=1)
            order = torch.sort(values, dim=1, stable=True).indices[:, :k]
            values, positions = values.gather(1, order), positions.gather(1, order)
        kept[rs.start] = (values, positions)
    if not kept:
        return torch.empty(n, k, dtype=torch.float64, device=device), torch.empty(n, k, dtype=torch.long, device=device)
    starts = sorted(kept)
    return torch.cat([kept[s][0] for s in starts]), torch.cat([kept[s][1] for s in starts])


class TooManyEdges(ValueError):
    """:func:`radius_edges` found more than ``max_edges`` pairs; ``found`` is how many it had when it stopped."""

    def __init__(self, found: int, max_edges: int) -> None:
        super().__init__(f"the radius graph has more than {max_edges} edges (stopped at {found})")
        self.found = found
        self.max_edges = max_edges


def _ieee_float32_products(device: torch.device) -> bool:
    """Whether float32 matrix products on ``device`` are IEEE float32, as the screen's error bound needs:
    not TF32 or bf16, which ``torch.set_float32_matmul_precision("high"/"medium")`` allows."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else getattr(torch.backends.mkldnn, "matmul", None)
    precision = getattr(backend, "fp32_precision", None)
    if precision is None:  # torch before the per-backend settings
        return torch.get_float32_matmul_precision() == "highest"
    return precision in ("none", "ieee")


def _float32_estimate(points: GridPoints, rs: slice, cs: slice) -> tuple[Tensor, float]:
    """(rows, columns) float32 estimates T of the squared grid distances between the points at ``rs`` and at
    ``cs``, and a bound M with |T − D| ≤ M for every exact D of the block.

    Grid values are integers of at most 24 bits, exact in float32. A float32 product q_i·q_j in
    any summation order (BLAS blocking, FMA, threads) is within γ_d‖q_i‖‖q_j‖ of the exact one,
    γ_d = d·u/(1 − d·u), u = 2^-24 (Higham, *Accuracy and Stability of Numerical Algorithms*,
    §3.1); T = ‖q_i‖² + ‖q_j‖² − 2q_i·q_j formed in float32 adds three roundings, so
    |T − D| ≤ (γ_d + 5u)(‖q_i‖² + ‖q_j‖²), and M is that with the block's largest norms, rounded up generously.
    """
    dim = points.q.shape[1]
    unit = math.ldexp(1.0, -24)
    slack = (dim * unit / (1 - dim * unit) + 8 * unit) * 1.01
    band = (float(points.sq[rs].max()) + float(points.sq[cs].max())) * slack
    block = torch.mm(points.q[rs], points.q[cs].T)
    block.mul_(-2.0).add_(points.sq[cs].to(torch.float32)).add_(points.sq[rs].to(torch.float32)[:, None])
    return block, band


def _exact_pairs(points: GridPoints, i: Tensor, j: Tensor) -> Tensor:
    """(P,) float64 exact squared grid distances between the points at ``i`` and at ``j``, pair by pair."""
    dots = (points.q[i].to(torch.float64) * points.q[j].to(torch.float64)).sum(1)  # integers below 2^53: exact
    return points.sq[i] + points.sq[j] - 2.0 * dots


def _pairs_within(points: GridPoints, radius_sq: float, rs: slice, cs: slice, screened: bool) -> tuple[Tensor, Tensor]:
    """(i, j): the pairs (point ``rs.start + i``, point ``cs.start + j``) with exact squared grid distance < ``radius_sq``.

    One block. ``screened``: from the float32 estimates of :func:`_float32_estimate`, the same
    pairs ~2× sooner: T < R − M is in, T > R + M out, and the thin band between is computed exactly.
    """
    if not screened:
        i, j = (exact_block(points, rs, cs) < radius_sq).nonzero(as_tuple=True)
        return i, j
    estimate, band = _float32_estimate(points, rs, cs)
    low, high = _float32_outward(radius_sq - band, -math.inf), _float32_outward(radius_sq + band, math.inf)
    i, j = (estimate <= high).nonzero(as_tuple=True)  # in, or in the band: few
    unsure = (estimate[i, j] >= low).nonzero().squeeze(1)
    if unsure.numel():
        keep = torch.ones_like(i, dtype=torch.bool)
        keep[unsure] = _exact_pairs(points, i[unsure] + rs.start, j[unsure] + cs.start) < radius_sq
        i, j = i[keep], j[keep]
    return i, j


def _float32_outward(value: float, towards: float) -> float:
    """``value`` rounded to float32, then one float32 step towards ``towards`` (so a bound stays a bound)."""
    rounded = torch.tensor(value, dtype=torch.float32)
    return float(torch.nextafter(rounded, torch.tensor(towards, dtype=torch.float32)))


def radius_edges(points: GridPoints, radius_sq: float, max_edges: Optional[int] = None) -> Tensor:
    """(E, 2) pairs (i, j), sorted, with exact ‖q_i − q_j‖² < ``radius_sq`` (grid units), self-pairs included.

    The graph of δ-balls (ProbCover): edge (i, j) when point j lies within δ of point i.
    Built block by block and stored as edges: memory O(E), never N×N. ``max_edges``: raise
    :class:`TooManyEdges` as soon as more than that many pairs are found (memory then stays
    O(max_edges) plus one block), so a radius that is too large fails before it fills memory.

    The graph is symmetric: only the blocks on and above the diagonal are computed, each giving
    its pairs both ways; inside :func:`sharing_work` the ranks take those blocks in turn.
    Products are screened in float32 (:func:`_pairs_within`) where the device's float32
    products are IEEE; the pairs are exact either way.
    """
    device = points.q.device
    n, dim = points.q.shape
    screened = _ieee_float32_products(device)
    split = current_split()
    found: list[Tensor] = []
    count = over = 0
    try:
        for rs, cs in upper_blocks(n, dim):
            i, j = _pairs_within(points, radius_sq, rs, cs, screened)
            pairs = [torch.stack([i + rs.start, j + cs.start], dim=1)]
            if cs != rs:
                pairs.append(torch.stack([j + cs.start, i + rs.start], dim=1))
            for both in pairs:
                count += both.shape[0]
                if max_edges is not None and count > max_edges:
                    raise TooManyEdges(count, max_edges)
                found.append(both)
    except TooManyEdges as too_many:
        if split.ranks == 1:
            raise
        found, over = [], too_many.found
    local = torch.cat(found) if found else torch.empty(0, 2, dtype=torch.long, device=device)
    if split.ranks > 1:
        # Every rank learns whether any went past the limit, so all raise or none does.
        counts = split.total(torch.tensor([0 if over else count, over], dtype=torch.float64))
        total = int(counts[0]) + int(counts[1])
        if counts[1] > 0 or (max_edges is not None and total > max_edges):
            raise TooManyEdges(total, max_edges)
        local = split.gather(local)
    return local[torch.argsort(local[:, 0] * n + local[:, 1])]


def nearest_other_label_sq(points: GridPoints, labels: Tensor) -> Tensor:
    """(N,) exact squared grid distance from each point to the nearest point with another label (inf if none).

    ProbCover's purity (Yehuda et al. 2022, §4.2): the δ-ball of x is pure when every point in
    it shares x's k-means pseudo-label, i.e. when δ is at most this distance. Distances are
    symmetric: only the blocks on and above the diagonal are computed (:func:`upper_blocks`;
    the ranks take them in turn and keep the smallest, exact in any order), each giving its
    rows' and its columns' nearest. Where float32 products are IEEE, a block's float32
    estimates (:func:`_screen_bounds`) leave per row and column the few pairs that can be the
    nearest, and only those are computed exactly.
    """
    n, dim = points.q.shape
    device = points.q.device
    labels = labels.to(device)
    screened = _ieee_float32_products(device)
    nearest = torch.full((n,), torch.inf, dtype=torch.float64, device=device)
    for rs, cs in upper_blocks(n, dim):
        other = labels[rs, None] != labels[None, cs]
        if not screened:
            block = exact_block(points, rs, cs).masked_fill_(~other, torch.inf)
            torch.minimum(nearest[rs], block.amin(dim=1), out=nearest[rs])
            torch.minimum(nearest[cs], block.amin(dim=0), out=nearest[cs])
            continue
        estimate, band = _float32_estimate(points, rs, cs)
        estimate.masked_fill_(~other, torch.inf)
        # The exact nearest of a row is among the columns whose estimate is within 2·band of the row's least.
        rows_best = (estimate <= (estimate.amin(dim=1, keepdim=True) + 2 * band)) & other
        cols_best = (estimate <= (estimate.amin(dim=0, keepdim=True) + 2 * band)) & other
        i, j = (rows_best | cols_best).nonzero(as_tuple=True)
        if not i.numel():
            continue
        exact = _exact_pairs(points, i + rs.start, j + cs.start)
        nearest[rs].scatter_reduce_(0, i, exact, "amin")
        nearest[cs].scatter_reduce_(0, j, exact, "amin")
    return current_split().smallest(nearest)


@dataclass
class Clusters:
    """A k-means clustering of grid points.

    Attributes:
        centres: (K, d) centres on the points' grid (the rounded means of their members).
        assignment: (N,) the cluster of each point (its nearest centre, ties to the lower one).
        sq_distance: (N,) exact squared grid distance of each point to its centre.
        iterations: Lloyd iterations run.
    """

    centres: GridPoints
    assignment: Tensor
    sq_distance: Tensor
    iterations: int

    def sizes(self) -> Tensor:
        return torch.bincount(self.assignment, minlength=len(self.centres))

    def nearest_members(self) -> Tensor:
        """(K,) the position of each cluster's member nearest its centre (ties: lowest position); -1 for an empty cluster."""
        n = self.assignment.numel()
        k = len(self.centres)
        # Order by (cluster, distance, position): a stable sort by distance, then by cluster.
        by_distance = torch.sort(self.sq_distance, stable=True).indices
        by_cluster = by_distance[torch.sort(self.assignment[by_distance], stable=True).indices]
        sizes = self.sizes()
        firsts = torch.cumsum(sizes, 0) - sizes
        out = torch.full((k,), -1, dtype=torch.long, device=self.assignment.device)
        filled = sizes > 0
        out[filled] = by_cluster[firsts[filled].clamp(max=max(0, n - 1))]
        return out


def exact_total(values: Tensor) -> int:
    """The exact sum of non-negative integers below 2^53 held in float64, whatever their number (a Python int).

    Each value is split into two 27-bit limbs summed in int64 (exact for fewer than 2^36
    values), so the total does not depend on the order of the terms: the same on any device,
    and for a sum made of ranks' partial sums.
    """
    whole = values.to(torch.int64)
    high, low = whole >> 27, whole & ((1 << 27) - 1)
    return (int(high.sum()) << 27) + int(low.sum())


def kmeans_plus_plus(points: GridPoints, clusters: int, generator: torch.Generator) -> Tensor:
    """(K,) positions of greedy k-means++ seeds: the first uniform, each next the best of L draws ∝ D².

    k-means++ (Arthur & Vassilvitskii, 2007) as scikit-learn's ``KMeans`` runs it (the
    TypiClust authors' clustering): every step draws L = 2 + ⌊ln K⌋ candidates with probability
    ∝ D² (:func:`~al_lightning.strategies.badge.d2_sample`) and keeps the one that leaves the
    smallest potential Σ_x min(D²(x), ‖x − c‖²) (ties: the first drawn). Distances are exact and
    potentials exact integer sums (:func:`exact_total`), so the same points and generator give
    the same seeds on any device and any number of ranks. Cost: O(K·L·N·d).
    """
    from al_lightning.strategies.badge import d2_sample

    n = len(points)
    trials = 2 + int(math.log(clusters))
    split = current_split()
    mine = split.shard(n)
    rows = None if mine is None else mine.to(points.q.device)

    def distances_to(positions: list[int]) -> Tensor:
        """(N, len(positions)) exact squared distances to the points at ``positions``: one pass over the grid."""
        centres = points.take(torch.tensor(positions, device=points.q.device))
        out = torch.empty(len(points) if rows is None else rows.numel(), len(positions), dtype=torch.float64, device=points.q.device)
        for rs, cs, block in pairwise_blocks(points, centres, rows):
            out[rs, cs] = block
        return split.gather(out)

    first = int(torch.randint(n, (1,), generator=generator))
    picks = [first]
    nearest = distances_to([first])[:, 0]
    for _ in range(1, clusters):
        # The L candidates are drawn from the same D² (as scikit-learn does), then measured together.
        candidates = [d2_sample(nearest, picks, generator) for _ in range(trials)]
        covered = torch.minimum(nearest[:, None], distances_to(candidates))
        potentials = [exact_total(covered[:, t]) for t in range(trials)]
        best = potentials.index(min(potentials))  # the first drawn among equal potentials
        picks.append(candidates[best])
        nearest = covered[:, best].clone()
    return torch.tensor(picks, dtype=torch.long)


def kmeans(points: GridPoints, clusters: int, generator: torch.Generator, iterations: int = 100) -> Clusters:
    """Lloyd's k-means of grid points into ``clusters`` clusters, from k-means++ seeds; exact.

    Each iteration assigns every point to its nearest centre (exact distances, ties to the
    lower centre) and moves each centre to the rounded mean of its members: the sums are
    exact integers in float64 (below 2^53 for fewer than 2^29 points at B ≤ 24 bits), so the
    centres are a function of the assignment alone. An empty cluster keeps its centre. Stops
    when no assignment changes, or after ``iterations``. Inside :func:`sharing_work` each rank
    assigns its shard and sums its members; the seeds' distance passes are split the same way.

    Cost: O(N·K·d) per iteration in float64 products, plus O(K·N·d) for the seeds; memory
    O(N + K·d) beyond one ~64 MB block.
    """
    n, dim = points.q.shape
    if clusters > n:
        raise ValueError(f"asked for {clusters} clusters of {n} points; there must be at least as many points as clusters")
    if clusters < 1:
        raise ValueError(f"asked for {clusters} clusters; need at least 1")
    split = current_split()
    mine = split.shard(n)
    rows = None if mine is None else mine.to(points.q.device)
    first, stop = (0, n) if mine is None else (int(mine[0]) if mine.numel() else 0, int(mine[-1]) + 1 if mine.numel() else 0)

    def assign(centres: GridPoints) -> tuple[Tensor, Tensor]:
        distance, nearest = nearest_centres(points.q, centres.q, True, points.sq, centres.sq, rows)
        return split.gather(distance), split.gather(nearest)

    centres = points.take(kmeans_plus_plus(points, clusters, generator).to(points.q.device))
    distance, assignment = assign(centres)
    done = 0
    while done < iterations:
        done += 1
        sums = torch.zeros(clusters, dim, dtype=torch.float64, device=points.q.device)
        step = _rows(dim, 4 * CONVERT_BYTES)
        for start in range(first, stop, step):
            end = min(stop, start + step)
            sums.index_add_(0, assignment[start:end], points.q[start:end].to(torch.float64))
        sums = split.total(sums)
        counts = torch.bincount(assignment, minlength=clusters)
        filled = counts > 0
        q = centres.q.clone()
        q[filled] = (sums[filled] / counts[filled, None]).round_().float()
        centres = GridPoints(q, sq_norms(q), points.exponent)
        distance, new = assign(centres)
        if bool(torch.equal(new, assignment)):
            break
        assignment = new
    return Clusters(centres, assignment, distance, done)
