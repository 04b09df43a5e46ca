"""TypiClust: the most typical unlabeled point of each cluster not yet covered by labels (Hacohen et al., ICML 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.kmeans_sampling import fill_at_random, index_order
from al_lightning.strategies.neighbours import (
    GridPoints,
    concat,
    kmeans,
    nearest_neighbours,
    on_one_grid,
    row_order,
    sum_columns,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


def most_typical(points: GridPoints, members: Tensor, neighbours: int) -> int:
    """The position (from ``members``) of the most typical of ``members``: the smallest mean squared distance to its
    k = min(``neighbours``, n // 2) nearest other members; ties and k = 0 (one member) to the first of ``members``.

    Typicality is 1 / (mean squared distance + 1e-5) in the published code; the 1e-5 and the
    reciprocal do not change the order, so the exact sum of squared grid distances ranks instead.
    """
    k = min(neighbours, members.numel() // 2)
    if k == 0:
        return int(members[0])
    sq, _ = nearest_neighbours(points.take(members.to(points.q.device)), k)
    return int(members[int(torch.argmin(sum_columns(sq)).cpu())])


def visit_order(sizes: Tensor, labeled_counts: Tensor, min_cluster_size: int) -> Tensor:
    """Clusters with more than ``min_cluster_size`` points, by fewest labeled points, then largest, then cluster id."""
    eligible = (sizes > min_cluster_size).nonzero().squeeze(1)
    by_size = eligible[torch.argsort(-sizes[eligible], stable=True)]
    return by_size[torch.argsort(labeled_counts[by_size], stable=True)]


def typiclust_picks(
    points: GridPoints,
    assignment: Tensor,
    labeled: int,
    budget: int,
    min_cluster_size: int,
    neighbours: int,
) -> list[int]:
    """TypiClust's selection loop, given a clustering of ``points`` whose first ``labeled`` rows are labeled.

    Returns positions (≥ ``labeled``) in selection order; fewer than ``budget`` when the clusters
    with more than ``min_cluster_size`` points run out of unlabeled members.
    """
    clusters = int(assignment.max()) + 1 if assignment.numel() else 0
    assignment = assignment.cpu()
    sizes = torch.bincount(assignment, minlength=clusters)
    labeled_counts = torch.bincount(assignment[:labeled], minlength=clusters)
    order = visit_order(sizes, labeled_counts, min_cluster_size).tolist()
    free = torch.ones(assignment.numel(), dtype=torch.bool)
    free[:labeled] = False
    picks: list[int] = []
    turn = 0
    while len(picks) < budget and order:
        cluster = order[turn % len(order)]
        members = (free & (assignment == cluster)).nonzero().squeeze(1)
        if members.numel() == 0:
            order.remove(cluster)  # every point of it is labeled or picked
            continue
        pick = most_typical(points, members, neighbours)
        picks.append(pick)
        free[pick] = False
        turn += 1
    return picks


@register("typiclust")
class TypiClust(Strategy):
    """Select the most typical unlabeled point of each of the largest clusters that labels do not cover yet.

    Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and
    Low Budgets" (ICML 2022), TPC_RP, following the authors' code
    (``github.com/avihu111/TypiClust``, ``deep-al/pycls/al/typiclust.py``):

    1. The embeddings of the labeled and unlabeled points are L2-normalised (the code's
       ``ds_utils.load_features(normalized=True)``) and clustered by k-means into
       K = min(M + b, ``max_clusters`` = 500) clusters (M labeled points).
    2. Clusters with more than ``min_cluster_size`` = 5 points (the code's strict
       ``cluster_size > MIN_CLUSTER_SIZE``) are visited in order of fewest labeled points,
       then largest size (then cluster id), cyclically: the code fixes this order once and
       takes the i-th pick from cluster ``i mod (number of such clusters)``; it does not
       re-count a cluster's labels after a pick (the paper's text says "the cluster with the
       fewest labeled points").
    3. From the visited cluster it picks the most typical point among its unlabeled, unpicked
       members: typicality = 1 / (mean of the squared Euclidean distances, as faiss
       ``IndexFlatL2`` returns them, to its k = min(``neighbours`` = 20, n // 2) nearest
       other such members, n their number, + 1e-5); ties to the lowest pool index, a lone
       member is taken. The pick then counts as labeled (it leaves the cluster's members).

    Where this differs from the code: k-means is the exact Lloyd's algorithm of
    :mod:`~al_lightning.strategies.neighbours` from k-means++ seeds drawn from the strategy's
    seeded generator, at most ``iterations`` steps, on the fixed-point grid (the code runs
    sklearn ``KMeans`` up to 50 clusters and ``MiniBatchKMeans(batch_size=5000)`` above,
    unseeded, in float32); nearest neighbours are exact (the code: faiss on the GPU). The code
    clusters the whole training set, validation points included; here the points scored (the
    pool, or its ``--al.pairwise_subset``) and the labeled set (or ``--al.labeled_subset``).
    Where the code would fail, this falls back: a cluster whose members are all labeled or
    picked leaves the cycle (the code's ``argmax`` of nothing), and when no cluster is large
    enough, or all have run out, the remaining picks are drawn at random (seeded) from the
    unpicked pool (the code's division by zero). It works without labeled points
    (``labeled_features`` None or empty: K = min(b, 500)).

    The pool is taken in order of pool index and the labeled rows in the lexicographic order of
    their grid values, so the picks depend on the ids and values, not on the rows' order.

    Cost: k-means, O((N + M)·K·d) per Lloyd iteration; then per pick one exact k-NN search
    within the visited cluster, O(n_c²·d) for its n_c unlabeled members (≈ ((N + M)/K)² ·d).
    Memory: the grid, (N + M)·d float32 values, plus O(N + M + K·d + n_c·k) and one ~64 MB
    block.

    Args:
        seed: seeds the k-means++ seeding (and the random fallback).
        max_clusters: cap on K (the code's ``MAX_NUM_CLUSTERS``).
        min_cluster_size: clusters of at most this many points are never visited (the code's
            ``MIN_CLUSTER_SIZE``).
        neighbours: k of the typicality (the code's ``K_NN``).
        iterations: at most this many Lloyd steps, 100 (the code's ``MiniBatchKMeans`` default,
            used above 50 clusters; its ``KMeans`` up to 50 allows 300); they stop as soon as no
            assignment changes, usually much sooner.
        normalize: L2-normalise the features first, as the code does.
    """

    requires = ("features",)
    accepts = ("labeled_features",)
    pairwise = True
    shares_work = True

    def __init__(
        self,
        seed: int = 0,
        max_clusters: int = 500,
        min_cluster_size: int = 5,
        neighbours: int = 20,
        iterations: int = 100,
        normalize: bool = True,
    ) -> None:
        super().__init__(seed)
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.neighbours = neighbours
        self.iterations = iterations
        self.normalize = normalize

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        order = index_order(outputs)
        features = outputs.features[order.to(outputs.features.device)]
        labeled = outputs.labeled_features
        if labeled is not None and labeled.shape[0] == 0:
            labeled = None
        pool, known = on_one_grid(features, labeled, unit=self.normalize)
        m = 0 if known is None else len(known)
        points = pool if known is None else concat(known.take(row_order(known)), pool)
        generator = self.generator()
        clusters = kmeans(points, min(m + budget, self.max_clusters, len(points)), generator, self.iterations)
        picks = typiclust_picks(points, clusters.assignment, m, budget, self.min_cluster_size, self.neighbours)
        picks = fill_at_random([p - m for p in picks], len(pool), budget, generator)
        return order[torch.tensor(picks, dtype=torch.long)]
