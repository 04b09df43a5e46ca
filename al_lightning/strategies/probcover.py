"""ProbCover: greedy maximum coverage of the pool by δ-balls (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022).

Yehuda et al., "Active Learning Through a Covering Lens" (NeurIPS 2022); their code is
``deep-al/pycls/al/prob_cover.py`` in github.com/avihu111/TypiClust. What was matched there:

* features are L2-normalised (their ``load_features(normalized=True)``): option ``normalize``;
* edge i→j when ‖x_i − x_j‖ < δ, strict, self-loops included, over labeled and unlabeled points;
* the points covered by the labeled points' balls are removed first (all edges into them),
  then each step takes the point with the most uncovered points in its ball (``argmax``: ties
  to the lowest position) and removes the edges into the points its ball covers.

What was not copied: their graph loop ``range(N // 500)`` drops the last N mod 500 rows (those
points get no out-edges); here every row is used. When everything is covered every degree is
0 and their ``argmax`` returns position 0 again and again (a labeled point, or a repeated
pick); here the remaining picks are drawn at random (seeded) from the unpicked points, as
scikit-activeml's ``ProbCover`` does (its ``rand_argmax`` over equal utilities).

δ: given (``delta``), or chosen by the paper's purity rule (§4.2): k-means of all features
(labeled and pool, :func:`~al_lightning.strategies.neighbours.kmeans`) into K = the number of
classes pseudo-labels (``purity_clusters`` when the classes are unknown or to override it); a
ball is pure when it holds only its centre's pseudo-label, i.e. when δ is at most the
distance to the nearest point of another pseudo-label; δ is the largest value with a pure
ball for at least a fraction ``alpha`` of the points. The paper scans a grid of δ values; here
the largest δ is exact (one of the nearest-other-label distances). The chosen δ is logged.

Differences from scikit-activeml 1.0.1's ``ProbCover`` (its picks are matched in
``benchmarks/coverage_vs_skactiveml.py``): it does not normalise (give it normalised
features), its edges are ‖x_i − x_j‖ ≤ δ (non-strict; the same graph unless a distance equals δ
to the last bit), and it breaks equal degrees at random, here the lowest position.

Exactness: distances are exact integers on the grid of
:mod:`~al_lightning.strategies.distances` (normalisation included: the unit rows are
computed from exact norms by correctly rounded operations), δ² is compared with them after one
rounding, so the graph, the degrees (integers) and the picks are the same on any machine,
thread count, blocking or device. The purity-chosen δ is a function of the k-means
clustering, which is exact too.

Cost: the graph is built block by block from the N²/2 products on and above the diagonal
(it is symmetric; float32 products screened by an error bound, exact float64 in a thin band
around δ: :func:`~al_lightning.strategies.neighbours.radius_edges`), never an N×N matrix,
and stored as int64 edges: memory O(E), with E at most ``max_mean_degree``·N (the build stops
with an error naming ``delta`` beyond it); labeled coverage O(N·M·d) time, O(N) memory; the
greedy loop O(b·N + E). The purity rule adds k-means, O(iterations·(N + M)·K·d), and one
O(N²·d) pass for the nearest other-label distances.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.neighbours import (
    GridPoints,
    TooManyEdges,
    concat,
    kmeans,
    nearest_neighbours,
    nearest_other_label_sq,
    on_one_grid,
    radius_edges,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy

#: Pairs of pool points whose distances estimate the quantiles that error messages quote.
QUANTILE_PAIRS = 10_000
QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5)


def coverage_points(
    features: Tensor, labeled_features: Optional[Tensor], normalize: bool
) -> tuple[GridPoints, Optional[GridPoints]]:
    """The pool and the labeled set (None when absent or empty) on one grid, as unit rows if ``normalize``."""
    labeled = labeled_features if labeled_features is not None and labeled_features.shape[0] else None
    pool, lab = on_one_grid(features, labeled, unit=normalize)
    return pool, lab


def distance_quantiles(points: GridPoints, generator: torch.Generator, pairs: int = QUANTILE_PAIRS) -> str:
    """Quantiles of the distances between ``pairs`` seeded random pairs of distinct points, as text (inputs' units)."""
    n = len(points)
    i = torch.randint(n, (pairs,), generator=generator)
    j = (i + torch.randint(1, max(2, n), (pairs,), generator=generator)) % n
    q = points.q.cpu().to(torch.float64)
    sq = points.sq.cpu()
    d2 = (sq[i] + sq[j] - 2.0 * (q[i] * q[j]).sum(1)).clamp_(min=0)
    distances = points.from_grid_sq(d2).sqrt()
    values = torch.quantile(distances, torch.tensor(QUANTILES, dtype=torch.float64))
    shown = ", ".join(f"{p:g}: {v:.4g}" for p, v in zip(QUANTILES, values.tolist()))
    return f"pairwise distances (estimated from {pairs} seeded random pairs) have quantiles {shown}"


def purity_radius_sq(points: GridPoints, clusters: int, alpha: float, generator: torch.Generator, iterations: int) -> float:
    """The largest squared radius (grid units) whose balls are pure for a fraction ≥ ``alpha`` of ``points``.

    Pseudo-labels from k-means into ``clusters``; x's ball (‖y − x‖ < δ) is pure iff δ² ≤ the
    squared distance from x to the nearest point of another pseudo-label, so with those
    distances sorted, s_0 ≤ … ≤ s_{n−1}, the answer is s_{n−c}, c = ⌈alpha·n⌉ (alpha read as
    the decimal it is written as). inf when every point has one pseudo-label.
    """
    n = len(points)
    labels = kmeans(points, min(clusters, n), generator, iterations).assignment
    other = torch.sort(nearest_other_label_sq(points, labels)).values
    needed = math.ceil(Fraction(repr(float(alpha))) * n)
    return float(other[n - max(1, needed)])


def greedy_cover(edges: Tensor, n: int, covered: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """Positions of ``budget`` points picked by greedy maximum coverage of a symmetric graph with self-loops.

    ``edges``: (E, 2) sorted pairs (i, j), j in i's ball; ``covered``: (n,) bool, points
    already covered (changed in place). Each step takes the point whose ball holds the most
    uncovered points (ties: the lowest position) and covers its ball; an uncovered point has
    its own self-loop, so when the largest count is 0 everything is covered, and the rest are
    drawn uniformly without replacement (``generator``) from the points not yet picked.
    The graph is symmetric, so the points whose counts drop when j is covered are j's own
    neighbours: a step costs O(n) plus the edges of the newly covered points.
    """
    rows, cols = edges[:, 0], edges[:, 1]
    ptr = torch.zeros(n + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    degree = torch.bincount(rows[~covered[cols]], minlength=n)
    picked = torch.zeros(n, dtype=torch.bool)
    picks: list[int] = []
    while len(picks) < budget:
        top = int(torch.argmax(degree))  # the first of equal maxima
        if int(degree[top]) == 0:
            break
        picks.append(top)
        picked[top] = True
        ball = cols[ptr[top] : ptr[top + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        starts, counts = ptr[new], ptr[new + 1] - ptr[new]
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        degree -= torch.bincount(cols[torch.repeat_interleave(starts, counts) + offsets], minlength=n)
    rest = budget - len(picks)
    if rest:
        remaining = (~picked).nonzero().squeeze(1)
        picks.extend(remaining[torch.randperm(remaining.numel(), generator=generator)[:rest]].tolist())
    return torch.tensor(picks, dtype=torch.long)


@register("probcover")
class ProbCover(Strategy):
    """Select the points whose δ-balls cover the most of the pool not yet covered (ProbCover).

    Label-free: needs only ``features``; ``labeled_features``, when given with rows, cover
    their balls first. See the module docstring for the paper, the authors' code and
    scikit-activeml, and what is matched.

    Args:
        delta: the ball radius δ in feature units (of the unit rows when ``normalize``); None:
            chosen by purity.
        alpha: the purity δ must keep (fraction of points with a pure ball), when ``delta`` is None.
        purity_clusters: k-means clusters (pseudo-labels) for the purity rule; None: the number
            of classes of the outputs.
        normalize: scale every feature vector to unit length first, as the authors' code does.
        max_mean_degree: the graph may hold at most this many edges per point (int64 pairs):
            a larger δ is refused with an error naming ``delta``.
        kmeans_iterations: Lloyd iterations at most for the purity rule.
        seed: seeds the k-means, the picks after full coverage and the quantile sample.
    """

    requires = ("features",)
    accepts = ("labeled_features",)
    pairwise = True
    shares_work = True

    def __init__(
        self,
        delta: Optional[float] = None,
        alpha: float = 0.95,
        purity_clusters: Optional[int] = None,
        normalize: bool = True,
        max_mean_degree: int = 1000,
        kmeans_iterations: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if delta is not None and not delta > 0:
            raise ConfigurationError(f"probcover: delta must be > 0 (or None: chosen by purity), got {delta}")
        if not 0 < alpha <= 1:
            raise ConfigurationError(f"probcover: alpha must lie in (0, 1], got {alpha}")
        if purity_clusters is not None and purity_clusters < 2:
            raise ConfigurationError(f"probcover: purity_clusters must be >= 2, got {purity_clusters}")
        if max_mean_degree < 1:
            raise ConfigurationError(f"probcover: max_mean_degree must be >= 1, got {max_mean_degree}")
        self.delta = delta
        self.alpha = alpha
        self.purity_clusters = purity_clusters
        self.normalize = normalize
        self.max_mean_degree = max_mean_degree
        self.kmeans_iterations = kmeans_iterations

    def radius_sq(self, pool: GridPoints, labeled: Optional[GridPoints], num_classes: Optional[int]) -> tuple[float, str]:
        """δ² in grid units, and how δ was set (for messages)."""
        if self.delta is not None:
            return pool.to_grid_sq(float(self.delta) ** 2), f"delta={self.delta:g}"
        clusters = self.purity_clusters or num_classes
        if clusters is None:
            raise ConfigurationError(
                "probcover: delta=None is chosen by purity over k-means pseudo-labels, one per class, but the "
                "number of classes is unknown: set `purity_clusters` (e.g. the number of classes) or `delta`"
            )
        everything = pool if labeled is None else concat(pool, labeled)
        radius_sq = purity_radius_sq(everything, clusters, self.alpha, self.generator(), self.kmeans_iterations)
        if math.isinf(radius_sq):
            raise ConfigurationError(
                f"probcover: k-means into {clusters} clusters left one pseudo-label, so purity bounds no delta: "
                "set `delta` or `purity_clusters`"
            )
        delta = math.sqrt(float(pool.from_grid_sq(torch.tensor(radius_sq))))
        from pytorch_lightning.utilities import rank_zero_info

        rank_zero_info(
            f"[al] probcover: delta = {delta:.6g}, the largest with purity >= {self.alpha:g} over {clusters} "
            f"k-means pseudo-labels of {len(everything)} {'normalised ' if self.normalize else ''}features "
            "(set --al.strategy_args.delta to fix it)"
        )
        return radius_sq, f"delta={delta:.6g} (chosen by purity >= {self.alpha:g})"

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        pool, labeled = coverage_points(outputs.features, outputs.labeled_features, self.normalize)
        n = len(pool)
        radius_sq, which = self.radius_sq(pool, labeled, outputs.num_classes)
        units = "normalised features" if self.normalize else "features"

        def refuse(problem: str, advice: str) -> ConfigurationError:
            quantiles = distance_quantiles(pool, self.generator())
            return ConfigurationError(f"probcover: {which} {problem}; on these {n} {units}, {quantiles}; {advice}")

        limit = self.max_mean_degree * n
        try:
            edges = radius_edges(pool, radius_sq, max_edges=limit).cpu()
        except TooManyEdges:
            raise refuse(
                f"puts more than {limit} pairs in the graph of balls (max_mean_degree={self.max_mean_degree} per point)",
                "set a smaller `delta` (near a low quantile) or raise `max_mean_degree`",
            ) from None
        if n > 1 and edges.shape[0] <= n:
            raise refuse(
                "puts no point in another point's ball (only self-loops): nothing is covered but the picks themselves",
                "set a larger `delta` (near a low quantile)",
            )
        if n > 1 and int(torch.bincount(edges[:, 0], minlength=n).max()) == n:
            raise refuse("covers the whole pool with one ball", "set a smaller `delta` (near a low quantile)")
        covered = torch.zeros(n, dtype=torch.bool)
        if labeled is not None:
            nearest = nearest_neighbours(pool, 1, among=labeled)[0][:, 0].cpu()
            covered = nearest < radius_sq
        return greedy_cover(edges, n, covered, budget, self.generator()).to(outputs.index.device)
