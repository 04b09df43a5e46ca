"""k-means: the point nearest each of b k-means centres of the unlabeled embeddings, the cold-start baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.neighbours import Clusters, GridPoints, kmeans, on_one_grid
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


def index_order(outputs: PoolOutputs) -> Tensor:
    """(N,) positions that sort ``outputs`` by pool index.

    The clustering strategies work on the pool in this order (and map back), so their picks do
    not depend on the order the rows come in: only on the ids and the values.
    """
    return torch.argsort(outputs.index.cpu())


def fill_at_random(picks: list[int], n: int, budget: int, generator: torch.Generator) -> list[int]:
    """``picks`` followed by points of ``range(n)`` not in it, uniformly at random, up to ``budget`` in all."""
    if len(picks) >= budget:
        return picks[:budget]
    free = torch.ones(n, dtype=torch.bool)
    free[torch.tensor(picks, dtype=torch.long)] = False
    rest = free.nonzero().squeeze(1)
    drawn = rest[torch.randperm(rest.numel(), generator=generator)[: budget - len(picks)]]
    return picks + drawn.tolist()


def nearest_to_centres(points: GridPoints, budget: int, generator: torch.Generator, iterations: int) -> tuple[list[int], Clusters]:
    """Positions of the member nearest each of ``budget`` k-means centres, largest cluster first, and the clustering.

    k-means++ seeds from ``generator``, then Lloyd's iterations (:func:`~al_lightning.strategies.neighbours.kmeans`,
    exact on the grid). Clusters are ordered by size, descending; equal sizes in cluster order
    (the order of their k-means++ seeds). A cluster left empty (only possible with fewer
    distinct points than clusters) gives no point; the caller fills the gap.
    """
    clusters = kmeans(points, budget, generator, iterations)
    members = clusters.nearest_members()
    sizes = clusters.sizes()
    order = torch.argsort(-sizes, stable=True)
    return [int(m) for m in members[order].tolist() if m >= 0], clusters


@register("kmeans")
class KMeansSampling(Strategy):
    """Select the unlabeled point nearest each centre of a k-means clustering of the unlabeled pool into b clusters.

    The cold-start baseline of the typicality papers: Hacohen et al. (ICML 2022) and Gupte et
    al. ("Revisiting Active Learning in the Era of Vision Foundation Models", TMLR 2024, whose
    "centroid" initial query this is: ``ALFM/src/init_strategies/centroid_init.py``). It reads
    only the embeddings (``features``), not the head or any label, so it works before any
    label exists (round 0, ``--data.initial_pool_size=0``) and with an untrained head.

    The features are L2-normalised (``normalize``, as the published code does), put on the
    exact fixed-point grid of :mod:`~al_lightning.strategies.neighbours` and cut into b
    clusters by k-means++ seeding (Arthur & Vassilvitskii 2007; draws from the strategy's
    seeded generator) and at most ``iterations`` Lloyd steps, which stop early when no
    assignment changes. Each cluster gives its member nearest its centre (ties: lowest pool
    index). The picks come in order of cluster size, largest first, equal sizes in the order of
    the clusters' k-means++ seeds: a budget cut short keeps the points that stand for the most
    of the pool. The published code runs faiss's float32 k-means (100 iterations, k-means++
    seeds); here every distance is exact, so the picks are the same on any machine, thread
    count or device. With fewer distinct points than b, an empty cluster's pick is drawn at
    random (seeded) from the points not picked.

    The pool is taken in order of pool index, so the picks depend on the ids and the values,
    not on the order the rows arrive in.

    Cost: O(N·b·d) per Lloyd iteration (float64 products on the grid) plus O(N·b·d) for the
    seeds; memory O(N·d) for the grid plus O(N + b·d) and one ~64 MB block.

    Args:
        seed: seeds the k-means++ seeding (and the fill for empty clusters).
        iterations: at most this many Lloyd steps; 100, the published code's ``niter`` (Lloyd's
            iterations usually converge well before).
        normalize: L2-normalise the features first (cosine geometry, as the published code).
    """

    requires = ("features",)
    pairwise = True
    shares_work = True

    def __init__(self, seed: int = 0, iterations: int = 100, normalize: bool = True) -> None:
        super().__init__(seed)
        self.iterations = iterations
        self.normalize = normalize

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        order = index_order(outputs)
        features = outputs.features[order.to(outputs.features.device)]
        (points,) = on_one_grid(features, unit=self.normalize)
        generator = self.generator()
        picks, _ = nearest_to_centres(points, budget, generator, self.iterations)
        picks = fill_at_random(picks, len(points), budget, generator)
        return order[torch.tensor(picks, dtype=torch.long)]
