"""Least-confidence sampling: the points whose top softmax probability is smallest."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import ranking_dtype
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import RankedStrategy


def max_probability(logits: Tensor) -> Tensor:
    """(B,) largest softmax probability of each row of logits, in float64 for float64 logits, else float32."""
    return logits.to(ranking_dtype(logits)).softmax(dim=1).amax(dim=1)


@register("confidence")
class ConfidenceSampling(RankedStrategy):
    """Select the points with the smallest maximum softmax probability.

    The paper's Confidence Sampler (vii) (Settles 2010, least confidence). Unlike the
    published code, scores stay aligned with pool indices.

    Cost: O(N·C) time; O(b) memory, streamed batch by batch (never N×C).
    """

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        return lambda chunk: max_probability(chunk.logits)
