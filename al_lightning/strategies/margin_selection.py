"""MASE, Margin Selection: the points nearest to any decision boundary in feature space."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from al_lightning.strategies.boundary import boundary_distance, inverse_distance_table
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import RankedStrategy


@register("mase")
class MarginSelection(RankedStrategy):
    """Select the b points with the smallest distance to the head's decision boundary.

    The paper's MASE (xi, Algorithm 1): DDB(x) = min over c ≠ p of (z_p − z_c)/‖w_p − w_c‖,
    the exact feature-space distance to the multiclass boundary of a linear head, computed
    from the logits and a C×C table of weight distances (never a (B, C, d) tensor).

    Cost: O(C²·d) for the table, then O(N·C) time; O(C² + b) memory, streamed batch by batch.
    """

    requires = ("logits", "weight")

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        inverse = inverse_distance_table(head.weight, self.score_dtype(head))
        return lambda chunk: boundary_distance(chunk.logits, inverse)
