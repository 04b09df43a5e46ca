"""MaxHerding: greedy maximisation of generalised coverage with an RBF kernel (Bae, Noh & Sutherland, ECCV 2024).

Bae, Noh & Sutherland, "Generalized Coverage for More Robust Low-Budget Active Learning"
(ECCV 2024). Generalised coverage of the pool U by the set S ∪ L (picks and labeled points)
is f(S) = Σ_{x∈U} max_{s∈S∪L} k(x, s), with k(x, s) = exp(−γ‖x − s‖²) on L2-normalised
features; MaxHerding adds, b times, the unlabeled point with the largest gain
Σ_x max(k(x, s) − c(x), 0), c(x) the current max (0 with no labeled points). This follows
scikit-activeml 1.0.1's ``skactiveml.pool.MaxHerding(metric="rbf", metric_dict={"gamma": γ},
normalize_samples=True)``, whose picks ``benchmarks/coverage_vs_skactiveml.py`` matches:
the sum runs over the unlabeled points only, the labeled points count as already in S,
``gamma=None`` is sklearn's default 1/d, and samples are normalised first (``normalize``).
It ranks by the mean gain, here the sum (the same order); it breaks equal gains at random,
here the lowest position.

f is monotone submodular, so gains only decrease: the greedy loop is lazy (:func:`lazy_greedy`:
the largest stale gain is recomputed until it is fresh), with the picks of the plain loop.

Two kernels:

* exact, when N ≤ ``max_dense``: every k(x, s), computed block by block from the grid (never
  stored: memory O(N)); the initial gains cost one pass over the N²/2 pairs (k is symmetric),
  each recomputed gain (and each pick's coverage) one O(N·d) pass, several recomputed
  together in one product;
* truncated, above: k(x, s) is kept only when s is x itself or among x's ``neighbours``
  nearest points (:func:`~al_lightning.strategies.neighbours.nearest_neighbours`, O(N²·d)
  time, memory O(N·k)); a recomputed gain costs O(k) on average. This is a different (smaller)
  objective: a pick covers only the points that have it among their neighbours. With
  ``neighbours`` ≥ N − 1 it is the exact one. Its effect on the picks at N = 5,000 and 20,000
  is measured in ``benchmarks/README.md`` (coverage vs scikit-activeml).

The labeled points' c(x) is always exact: exp of the nearest labeled distance, O(N·M·d).

Exactness: squared distances are exact integers on the grid of
:mod:`~al_lightning.strategies.distances` (and the unit rows come from exact norms by
correctly rounded operations), converted to the inputs' units exactly (a power of two), so the
exponent −γ·D is one correctly rounded product. ``exp`` is NOT correctly rounded: its last
bit may differ between libraries, devices and torch's vectorised and scalar paths. Each term
max(k − c, 0) (one rounding) is put on a fixed-point grid of 2^-36 (round half to even) and the
gains are int64 sums, exact in any order: for a given exp the gains, ties (lowest position)
and picks are the same for any blocking and thread count; another exp can change a term by
one unit of 2^-36 when k lies within an ulp of a rounding boundary, which changes a pick
only between gains equal to ~N·2^-36.

Cost: exact: O(N²·d/2) for the initial gains + O(N·d) per recomputed gain + O(N·M·d) for the
labeled set; truncated: O(N²·d) for the neighbour lists (float64 products, ~64 MB blocks) +
O(N·k) for the gains; memory O(N) exact, O(N·k) truncated.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.neighbours import (
    GridPoints,
    current_split,
    exact_block,
    nearest_neighbours,
    pairwise_blocks,
    upper_blocks,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.probcover import coverage_points
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy

#: Gains are sums of terms rounded to multiples of 2^-FIXED_BITS: int64 holds the sum of 2^27 terms ≤ 1.
FIXED_BITS = 36


def fixed_terms(kernel: Tensor, floor: Tensor) -> Tensor:
    """int64 max(kernel − floor, 0) in units of 2^-FIXED_BITS (round half to even)."""
    return torch.round((kernel - floor).clamp_(min=0.0).mul_(math.ldexp(1.0, FIXED_BITS))).long()


def fixed_sums_(kernel: Tensor, floor: Tensor, dim: int) -> Tensor:
    """int64 sums along ``dim`` of :func:`fixed_terms` (the same values), computed in place in ``kernel``.

    The terms are integers ≤ 2^FIXED_BITS held in float64; a sum of fewer than 2^(53 − FIXED_BITS)
    of them stays below 2^53, so float64 adds them exactly in any order: no int64 copy of the block.
    """
    terms = kernel.sub_(floor).clamp_(min=0.0).mul_(math.ldexp(1.0, FIXED_BITS)).round_()
    if terms.shape[dim] < 1 << (53 - FIXED_BITS):
        return terms.sum(dim).long()
    return terms.long().sum(dim)


def kernel_of(points: GridPoints, gamma: float) -> Callable[[Tensor], Tensor]:
    """Squared grid distances (float64) → exp(−γ·D) in the inputs' units, in place."""
    scale = -gamma * math.ldexp(1.0, -2 * points.exponent)  # exact: γ times a power of two

    def kernel(sq_grid: Tensor) -> Tensor:
        return sq_grid.mul_(scale).exp_()

    return kernel


def lazy_greedy(gains: Tensor, budget: int, gains_of: Callable[[Tensor], Tensor], cover: Callable[[int], None]) -> Tensor:
    """The plain greedy picks of a monotone submodular objective, by lazy evaluation: ties to the lowest position.

    ``gains``: (N,) int64 exact gains before the first pick; ``gains_of(positions)``: those
    points' exact gains now; ``cover(p)``: make p a pick (raise the coverage it brings). Gains
    only decrease, so a gain computed before the last pick is an upper bound of the gain now.
    Each step looks at the largest bound, the lowest position among equal ones; if it was
    computed since the last pick it is that point's gain, no other gain is larger, and no lower
    position has an equal one (its bound would be as large and come first): the plain loop's
    pick. Otherwise the largest stale bounds are recomputed, 1, then 2, 4, ... at a time (one
    product for several columns: at most twice the columns one at a time would need), and the
    step looks again.
    """
    bounds = gains.clone()
    fresh = torch.ones_like(bounds, dtype=torch.bool)
    picks: list[int] = []
    for _ in range(budget):
        batch = 1
        while True:
            p = int(torch.argmax(bounds))  # the first of equal maxima
            if fresh[p]:
                break
            stale = torch.where(fresh, -2, bounds)  # picks hold -1, fresh points are not looked at
            positions = stale.topk(min(batch, int((stale >= 0).sum()))).indices
            bounds[positions] = gains_of(positions)
            fresh[positions] = True
            batch *= 2
        picks.append(p)
        bounds[p] = -1  # below any gain: never again
        cover(p)
        fresh.zero_()
    return torch.tensor(picks, dtype=torch.long)


@register("maxherding")
class MaxHerding(Strategy):
    """Select the points that most increase the RBF-kernel coverage of the pool (MaxHerding).

    Label-free: needs only ``features``; ``labeled_features``, when given with rows, count as
    already picked. See the module docstring for the paper, scikit-activeml, the truncation
    and what is exact.

    Args:
        gamma: the RBF kernel's γ in k(x, s) = exp(−γ‖x − s‖²); None: 1/d (sklearn's default).
        normalize: scale every feature vector to unit length first (scikit-activeml's
            ``normalize_samples=True``, the paper's setting).
        max_dense: up to this many pool points, the exact kernel; above, the truncated one.
        neighbours: k, the neighbours each point keeps kernel values for when truncated.
        seed: unused (the picks are deterministic); kept for the common interface.
    """

    requires = ("features",)
    accepts = ("labeled_features",)
    pairwise = True
    shares_work = True

    def __init__(
        self,
        gamma: Optional[float] = None,
        normalize: bool = True,
        max_dense: int = 20_000,
        neighbours: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if gamma is not None and not gamma > 0:
            raise ConfigurationError(f"maxherding: gamma must be > 0 (or None: 1/d), got {gamma}")
        if neighbours < 1:
            raise ConfigurationError(f"maxherding: neighbours must be >= 1, got {neighbours}")
        if max_dense < 0:
            raise ConfigurationError(f"maxherding: max_dense must be >= 0, got {max_dense}")
        self.gamma = gamma
        self.normalize = normalize
        self.max_dense = max_dense
        self.neighbours = neighbours

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        pool, labeled = coverage_points(outputs.features, outputs.labeled_features, self.normalize)
        n, dim = pool.q.shape
        kernel = kernel_of(pool, 1.0 / dim if self.gamma is None else float(self.gamma))
        device = pool.q.device
        covered = torch.zeros(n, dtype=torch.float64, device=device)  # c(x)
        if labeled is not None:
            covered = kernel(nearest_neighbours(pool, 1, among=labeled)[0][:, 0])
        if n <= self.max_dense:
            picks = self._exact(pool, kernel, covered, budget)
        else:
            picks = self._truncated(pool, kernel, covered, budget)
        return picks.to(outputs.index.device)

    @staticmethod
    def _exact(pool: GridPoints, kernel: Callable[[Tensor], Tensor], covered: Tensor, budget: int) -> Tensor:
        n, dim = pool.q.shape
        device = pool.q.device
        # The initial gains from the blocks on and above the diagonal: k is symmetric, so block
        # (rows x, columns s) also gives block (rows s, columns x). Under DDP the ranks take the
        # blocks in turn and add their int64 partial gains (exact in any order).
        gains = torch.zeros(n, dtype=torch.long, device=device)
        floorless = not bool(covered.any())  # no labeled points: term(x, s) = term(s, x)
        for rs, cs in upper_blocks(n, dim):
            block = kernel(exact_block(pool, rs, cs))
            if rs == cs:
                gains[cs] += fixed_sums_(block, covered[rs, None], 0)
            elif floorless:
                terms = block.mul_(math.ldexp(1.0, FIXED_BITS)).round_()
                gains[cs] += terms.sum(0).long()
                gains[rs] += terms.sum(1).long()
            else:
                gains[rs] += fixed_sums_(block.clone(), covered[None, cs], 1)
                gains[cs] += fixed_sums_(block, covered[rs, None], 0)
        gains = current_split().total(gains)

        def gains_of(positions: Tensor) -> Tensor:
            """Those points' exact gains now: column blocks of k(x, p), summed as they come (O(N·d) per point)."""
            out = torch.zeros(positions.numel(), dtype=torch.long, device=device)
            for rs, cs, block in pairwise_blocks(pool, pool.take(positions), None):
                out[cs] += fixed_sums_(kernel(block), covered[rs, None], 0)
            return out

        def cover(p: int) -> None:
            for rs, _, block in pairwise_blocks(pool, pool.take(torch.tensor([p], device=device)), None):
                torch.maximum(covered[rs], kernel(block)[:, 0], out=covered[rs])

        return lazy_greedy(gains, budget, gains_of, cover)

    def _truncated(self, pool: GridPoints, kernel: Callable[[Tensor], Tensor], covered: Tensor, budget: int) -> Tensor:
        n = len(pool)
        k = min(self.neighbours, n - 1)
        device = pool.q.device
        distances, positions = nearest_neighbours(pool, k)
        own = torch.arange(n, device=device)
        # Row x keeps k(x, x) = 1 and k(x, s) for its k nearest s.
        row_cols = torch.cat([own[:, None], positions], dim=1).reshape(-1)
        row_values = torch.cat([torch.ones(n, 1, dtype=torch.float64, device=device), kernel(distances)], dim=1)
        del distances, positions
        gains = torch.zeros(n, dtype=torch.long, device=device)
        gains.index_add_(0, row_cols, fixed_terms(row_values, covered[:, None]).reshape(-1))
        # The same entries grouped by s: column p lists the x that keep k(x, p).
        order = torch.argsort(row_cols, stable=True)
        col_rows = own.repeat_interleave(k + 1)[order]
        col_values = row_values.reshape(-1)[order]
        ptr = torch.zeros(n + 1, dtype=torch.long, device=device)
        ptr[1:] = torch.cumsum(torch.bincount(row_cols, minlength=n), 0)

        def column(p: int) -> tuple[Tensor, Tensor]:
            part = slice(int(ptr[p]), int(ptr[p + 1]))
            return col_rows[part], col_values[part]

        def gains_of(positions: Tensor) -> Tensor:
            out = torch.empty(positions.numel(), dtype=torch.long, device=device)
            for i, p in enumerate(positions.tolist()):
                xs, values = column(p)
                out[i] = fixed_terms(values, covered[xs]).sum()
            return out

        def cover(p: int) -> None:
            xs, values = column(p)
            covered[xs] = torch.maximum(covered[xs], values)

        return lazy_greedy(gains, budget, gains_of, cover)
