"""Margin sampling: the points whose two most likely classes are closest in probability."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import ranking_dtype
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import RankedStrategy


def softmax_margin(logits: Tensor) -> Tensor:
    """(B,) difference between the two largest softmax probabilities of each row.

    Computed in float64 for float64 logits, in float32 otherwise.
    """
    top2 = logits.to(ranking_dtype(logits)).softmax(dim=1).topk(min(2, logits.shape[1]), dim=1).values
    return top2[:, 0] - top2[:, 1] if top2.shape[1] == 2 else top2[:, 0]


@register("margin")
class MarginSampling(RankedStrategy):
    """Select the points with the smallest p₁ − p₂ of the softmax.

    The paper's Margin Sampler (viii) (Scheffer et al. 2001; Settles 2010). The paper's text
    describes the margin of the logits; its code, which we follow, takes the softmax.

    Cost: O(N·C) time; O(b) memory, streamed batch by batch (never N×C).
    """

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        return lambda chunk: softmax_margin(chunk.logits)
