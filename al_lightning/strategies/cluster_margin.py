"""Cluster-margin: low-margin points, spread round-robin over agglomerative clusters."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering, KMeans
from torch import Tensor

from al_lightning.strategies.margin import softmax_margin
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import smallest_k
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy, chunk_rows


@register("cluster_margin")
class ClusterMargin(Strategy):
    """Select the lowest-margin points, taken in turn from clusters of the candidates' features.

    Citovsky et al., "Batch Active Learning at Scale", NeurIPS 2021, as the published code
    of our paper adapts it. The k_m = min(N, margin_factor·b) points with the smallest
    softmax margin p₁ − p₂ (ties to the lower position) are the candidates; their features
    are cut into ``num_clusters`` clusters by agglomerative clustering with average linkage.
    Clusters are visited smallest first, round-robin, each giving its lowest-margin point
    not yet taken, until b points are chosen. Equal-sized clusters go in the order of their
    lowest-margin member. Citovsky et al. cluster the whole pool once, up front, and draw a
    random point per cluster; the published code took the lowest margin per cluster but
    clustered the unlabeled pool (or a random subset of it) without the margin pre-filter.
    We cluster the pre-filtered candidates, afresh at every query.

    Agglomerative clustering needs all pairwise distances. Above ``max_points`` candidates
    they are first grouped into ``max_points`` k-means micro-clusters (random initialisation
    seeded from ``seed``, since k-means++ seeding of thousands of centres takes minutes; at
    most ``kmeans_iterations`` Lloyd steps, as the groups only need to be local), the
    micro-cluster centres are clustered, and every candidate takes its micro-cluster's
    cluster. Cluster sizes still count candidates; linkage between centres ignores how many
    candidates each stands for.

    Cost: O(N·C) time for the margins; clustering O(k_m·m·d·iterations + m²·(d + log m))
    with m = min(k_m, max_points). Memory O(N + k_m·d + m²) beyond one block of logits.

    Args:
        seed: seeds the k-means micro-clustering (the rest is deterministic).
        num_clusters: agglomerative clusters.
        margin_factor: candidates per budgeted point.
    """

    requires = ("logits", "features")
    pairwise = True
    #: Largest set clustered directly; the O(m²) distance matrix bounds memory.
    max_points: int = 5000
    #: Lloyd iterations of the micro-clustering.
    kmeans_iterations: int = 20

    def __init__(self, seed: int = 0, num_clusters: int = 20, margin_factor: int = 10) -> None:
        super().__init__(seed)
        self.num_clusters = num_clusters
        self.margin_factor = margin_factor

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        logits = outputs.logits
        step = chunk_rows(logits.shape[1])
        margins = torch.cat([softmax_margin(logits[s : s + step]) for s in range(0, logits.shape[0], step)])
        candidates = smallest_k(margins, min(len(outputs), self.margin_factor * budget)).cpu()
        features = outputs.features[candidates.to(outputs.features.device)].float().cpu().numpy()
        clusters = self._visit_order(torch.from_numpy(self._cluster(features)).long())
        num_clusters = int(clusters.max()) + 1
        # Candidates are in margin order, so a stable sort by cluster ranks each cluster's members.
        by_cluster = torch.argsort(clusters, stable=True)
        sizes = torch.bincount(clusters, minlength=num_clusters)
        starts = torch.cumsum(sizes, 0) - sizes
        rank = torch.empty_like(clusters)
        rank[by_cluster] = torch.arange(len(clusters)) - starts[clusters[by_cluster]]
        # Round j takes every cluster's j-th member, in visit order.
        order = torch.argsort(rank * num_clusters + clusters)[:budget]
        return candidates[order]

    @staticmethod
    def _visit_order(clusters: Tensor) -> Tensor:
        """Relabel clusters 0, 1, ... smallest first; equal sizes by their lowest-margin member."""
        n = len(clusters)
        num_clusters = int(clusters.max()) + 1
        sizes = torch.bincount(clusters, minlength=num_clusters)
        first = torch.full((num_clusters,), n).scatter_reduce(0, clusters, torch.arange(n), "amin")
        visit = torch.empty(num_clusters, dtype=torch.long)
        visit[torch.argsort(sizes * (n + 1) + first)] = torch.arange(num_clusters)
        return visit[clusters]

    def _cluster(self, features: np.ndarray) -> np.ndarray:
        """Agglomerative cluster of each row of ``features``, via micro-clusters above ``max_points``."""
        if len(features) <= self.num_clusters:
            return np.arange(len(features))
        micro = None
        if len(features) > self.max_points:
            kmeans = KMeans(
                n_clusters=self.max_points,
                init="random",
                n_init=1,
                max_iter=self.kmeans_iterations,
                random_state=self.seed % 2**32,
            ).fit(features)
            micro, features = kmeans.labels_, kmeans.cluster_centers_
        labels = AgglomerativeClustering(n_clusters=self.num_clusters, linkage="average").fit(features).labels_
        return labels if micro is None else labels[micro]
