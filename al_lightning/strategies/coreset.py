"""Coreset: greedy k-center cover of the pool in feature space (Sener & Savarese, ICLR 2018)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from al_lightning.strategies.distances import (
    GROUPED_FROM,
    grid_exponent,
    nearest_centre_upper_bounds,
    nearest_centres,
    on_grid,
    sq_distances_to,
    sq_norms,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


class _Farthest:
    """The largest of N values and its lowest position, kept per block of rows so that a change costs one block."""

    BLOCK = 1024

    def __init__(self, values: Tensor) -> None:
        n = values.numel()
        blocks = -(-n // self.BLOCK)
        self.padded = torch.full((blocks * self.BLOCK,), -torch.inf, dtype=values.dtype, device=values.device)
        self.padded[:n] = values
        self.blocks = self.padded.view(blocks, self.BLOCK)
        self.tops = self.blocks.amax(dim=1)

    def argmax(self) -> int:
        # The first block holding the maximum, then the first position in it: the first position overall.
        block = int(self.tops.argmax())
        return block * self.BLOCK + int(self.blocks[block].argmax())

    def lower(self, position: int, value: Tensor) -> None:
        """Set entry ``position`` to min(itself, ``value``)."""
        block = position // self.BLOCK
        self.padded[position] = torch.minimum(self.padded[position], value)
        self.tops[block] = self.blocks[block].max()

    def lower_many(self, positions: Tensor, values: Tensor) -> None:
        """Set the entries at ``positions`` (distinct) to min(themselves, ``values``)."""
        self.padded[positions] = torch.minimum(self.padded[positions], values)
        blocks = torch.unique(positions // self.BLOCK)
        self.tops[blocks] = self.blocks[blocks].amax(dim=1)


#: The lazy steps may cost this many times the plain passes they replace before
#: :func:`k_center_greedy` falls back to updating every point after each pick.
LAZY_LIMIT = 1.0
#: What one look at the largest bound costs (two small argmaxes, a few tensor calls), as
#: bytes of features multiplied.
LOOK_BYTES = 256 << 10


#: The first :func:`measure_labeled` call measures this many points; each later one as many as all before.
FIRST_MEASURED = 256


def measure_labeled(
    farthest: _Farthest,
    exact: Tensor,
    points: Tensor,
    sq: Tensor,
    labeled: Tensor,
    labeled_sq: Tensor,
    bounds: Optional[Tensor],
) -> None:
    """Replace upper bounds of the distance to the labeled set by the distances, for the points with the largest bounds.

    Measures the grid ``points`` not yet ``exact`` with the largest ``bounds`` (as many as were
    measured before, at least :data:`FIRST_MEASURED`), or all of them if ``bounds`` is None,
    against every ``labeled`` grid point: exact distances, as the plain computation's. A bound
    also holds the picks folded in so far, and the upper bound was at least the distance, so
    min(bound, distance) is the new bound.
    """
    waiting = (~exact).nonzero().squeeze(1)
    if bounds is not None:
        count = min(waiting.numel(), max(FIRST_MEASURED, int(exact.sum())))
        waiting = waiting[bounds[waiting].topk(count).indices]
    distances = nearest_centres(
        points[waiting], labeled, with_index=False, sq_points=sq[waiting], sq_centres=labeled_sq
    )[0]
    farthest.lower_many(waiting, distances)
    exact[waiting] = True


def k_center_greedy(features: Tensor, centres: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """Positions of ``budget`` rows of ``features`` chosen by greedy k-center from ``centres``.

    Sener & Savarese's Algorithm 1: each step takes the point farthest from all centres so far
    (ties: lowest position) and makes it a centre. With no centres (0 rows) the first pick is
    drawn from ``generator`` (one ``torch.randint``). ``budget`` must not exceed ``len(features)``.
    Distances are exact: the features and centres go on one fixed-point grid
    (:mod:`~al_lightning.strategies.distances`: q = round(x·2^e), one e for both), and every
    squared distance between grid points is an exact integer, so the picks are those of the
    plain algorithm on the grid values, the same on any machine, thread count or BLAS.

    Lazily, with the same picks as the plain algorithm (which updates every point's distance to
    its nearest centre after each pick, one pass over the (N, d) features per pick): a
    point's distance only ever decreases, so a stale value is an upper bound. Each step takes
    the point with the largest bound; if centres were added since its value was last brought up
    to date, it is compared with those centres only and the step looks again, otherwise its
    bound is its distance and, being the largest, it is the farthest point (and the lowest
    position among equals: every point before it has a smaller bound, so a smaller distance).
    A new centre usually changes only points near it, far from the top of the ranking, so a
    step looks at a few points instead of N. The distances to the labeled set are lazy too:
    from :data:`~al_lightning.strategies.distances.GROUPED_FROM` labeled points on, every
    point starts from an upper bound, its exact distance to the labeled points of one group
    (:func:`~al_lightning.strategies.distances.nearest_centre_upper_bounds`, ~2·√M products
    instead of M), and only the points whose bound reaches the top are measured against all
    M (:func:`measure_labeled`, in batches).

    If the lazy steps ever cost more than :data:`LAZY_LIMIT` times the plain passes they
    replace (many near ties, few dimensions), every point is brought up to date and the next
    8 steps update all points, then lazy steps are tried again (and 16 steps the next time,
    32, ...), so the cost stays within about twice the plain one.
    """
    n, dim = features.shape
    picks = torch.empty(budget, dtype=torch.long)
    if budget == 0:
        return picks
    exponent = grid_exponent([features, centres], dim)
    points, labeled = on_grid(features, exponent), on_grid(centres, exponent)
    sq = sq_norms(points)
    picked = torch.empty(budget, dim, device=points.device)  # grid values: float32 holds them exactly
    picked_sq = torch.empty(budget, dtype=torch.float64, device=points.device)
    taken = torch.tensor(-1.0, dtype=torch.float64, device=points.device)  # a centre's bound: below any distance

    def pass_with(position: int) -> Tensor:
        return sq_distances_to(points, sq, points[position], sq[position])

    # exact[i]: whether point i's bound holds its distance to the labeled set itself, not an upper bound of it.
    exact: Optional[Tensor] = None
    labeled_sq = sq_norms(labeled)
    if labeled.shape[0] >= GROUPED_FROM:
        bound = nearest_centre_upper_bounds(points, labeled, sq, labeled_sq)
        exact = torch.zeros(n, dtype=torch.bool, device=points.device)
        start = 0
    elif labeled.shape[0] > 0:
        bound = nearest_centres(points, labeled, with_index=False, sq_points=sq, sq_centres=labeled_sq)[0]
        start = 0
    else:
        start = 1
        first = int(torch.randint(n, (1,), generator=generator))
        picks[0] = first
        picked[0], picked_sq[0] = points[first], sq[first]
        bound = pass_with(first)
        bound[first] = taken
    if budget == start:
        return picks

    pass_cost = n  # rows multiplied by one plain pass
    look_cost = LOOK_BYTES / (4 * dim)  # a look at the largest bound, in rows multiplied
    step, eager_steps = start, 8
    while step < budget:
        # Lazy steps, until done or they cost more than the plain passes they replace.
        # fresh[i]: the picks folded into point i's bound (picks[:fresh[i]]).
        farthest = _Farthest(bound)
        fresh = [step] * n
        lazy_start, spent = step, 0.0
        while step < budget and spent <= LAZY_LIMIT * (step - lazy_start + 1) * pass_cost:
            pick = farthest.argmax()
            since = fresh[pick]
            spent += look_cost
            if exact is not None and not exact[pick]:
                measure_labeled(farthest, exact, points, sq, labeled, labeled_sq, farthest.padded[:n])
                continue
            if since < step:
                new = sq_distances_to(picked[since:step], picked_sq[since:step], points[pick], sq[pick])
                farthest.lower(pick, new.min())
                fresh[pick] = step
                spent += step - since
                continue
            picks[step] = pick
            picked[step], picked_sq[step] = points[pick], sq[pick]
            farthest.lower(pick, taken)
            step += 1
        if step == budget:
            break
        # Too many looks (many near ties, few dimensions): bring every bound up to date
        # (picked points keep their -1, below any distance), then update all points after
        # each pick, as the plain algorithm does, for a while (8, 16, 32, ... picks).
        if exact is not None:
            measure_labeled(farthest, exact, points, sq, labeled, labeled_sq, None)
            exact = None
        bound = farthest.padded[:n].clone()
        folded = torch.tensor(fresh, device=bound.device)
        for k in range(lazy_start, step):
            bound = torch.where(folded <= k, torch.minimum(bound, pass_with(int(picks[k]))), bound)
        for _ in range(eager_steps):
            if step == budget:
                break
            pick = int(bound.argmax())
            picks[step] = pick
            picked[step], picked_sq[step] = points[pick], sq[pick]
            torch.minimum(bound, pass_with(pick), out=bound)
            bound[pick] = taken
            step += 1
        eager_steps *= 2
    return picks


@register("coreset")
class Coreset(Strategy):
    """Select a batch that covers the pool: greedy k-center from the labeled set.

    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach"
    (ICLR 2018), Algorithm 1, the 2-approximation of the minimax facility-location problem on
    penultimate features. The labeled points are the initial centres; with none, the first
    pick is random (seeded). The published code recomputed distances to every labeled column
    at each step and built N×N matrices; here each point's distance to the labeled set is
    measured, in ~64 MB blocks, only if the point comes near the top, and its distance to
    its nearest centre is brought up to date only when it could be the next pick
    (:func:`k_center_greedy`), with the same picks as measuring all of them first and
    updating all of them after every pick. Distances are exact, on a fixed-point grid of the
    features (:mod:`~al_lightning.strategies.distances`), so the picks are the same on any
    machine, thread count or BLAS.

    Cost: O(N·√M·d) for upper bounds of the initial distances and O(N'·M·d) for the N' points
    whose bound reaches the top (at worst the plain O(N·M·d)), then per pick one pass over the
    N bounds plus the few points it has to bring up to date (each against the centres picked
    since it was last looked at); never much more than the plain O(b·N·d). Products are in
    float64 (exact on the grid). Memory: the grid, (N + M)·d float32 values, beside the
    inputs, plus O(N + b·d) and one ~64 MB block. At ImageNet scale use
    ``partitioned_coreset``, which divides the initial term by p².
    """

    requires = ("features", "labeled_features")
    pairwise = True

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        return k_center_greedy(outputs.features, outputs.labeled_features, budget, self.generator())
