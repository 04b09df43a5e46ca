"""Coreset: greedy k-center cover of the pool in feature space (Sener & Savarese, ICLR 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.distances import nearest_centre_sq_distances
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


def k_center_greedy(features: Tensor, centres: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """Positions of ``budget`` rows of ``features`` chosen by greedy k-center from ``centres``.

    Sener & Savarese's Algorithm 1: each step takes the point farthest from all centres so far
    (ties: lowest position) and makes it a centre. A running minimum distance is updated with
    the new centre only, so a step costs one (N, d) matrix-vector product. With no centres
    (0 rows) the first pick is drawn from ``generator``. Inputs are used in float32;
    ``budget`` must not exceed ``len(features)``.
    """
    features = features.to(torch.float32).contiguous()
    n = features.shape[0]
    picks = torch.empty(budget, dtype=torch.long)
    if budget == 0:
        return picks
    sq_norms = features.square().sum(1)
    if centres.shape[0] > 0:
        min_sq = nearest_centre_sq_distances(features, centres)
        pick = int(min_sq.argmax())
    else:
        min_sq = torch.full((n,), float("inf"), device=features.device)
        pick = int(torch.randint(n, (1,), generator=generator))
    for step in range(budget):
        picks[step] = pick
        new_sq = torch.mv(features, features[pick]).mul_(-2).add_(sq_norms).add_(sq_norms[pick]).clamp_min_(0)
        torch.minimum(min_sq, new_sq, out=min_sq)
        min_sq[pick] = -1.0  # a centre is never picked again, even among exact duplicates
        pick = int(min_sq.argmax())
    return picks


@register("coreset")
class Coreset(Strategy):
    """Select a batch that covers the pool: greedy k-center from the labeled set.

    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach"
    (ICLR 2018), Algorithm 1, the 2-approximation of the minimax facility-location problem on
    penultimate features. The labeled points are the initial centres; with none, the first
    pick is random (seeded). The published code recomputed distances to every labeled column
    at each step and built N×N matrices; here a running minimum is kept instead, updated with
    the new centre only, and the initial distances are computed in ~64 MB blocks.

    Cost: O(N·M·d) for the initial distances plus O(b·N·d) for the picks (one matrix-vector
    product each); O(N + b) memory beyond the inputs and one block. At ImageNet scale use
    ``partitioned_coreset``, which divides both terms by p.
    """

    requires = ("features", "labeled_features")
    pairwise = True

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        return k_center_greedy(outputs.features, outputs.labeled_features, budget, self.generator())
