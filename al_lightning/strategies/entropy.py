"""Entropy sampling: the points whose predicted class distribution has the highest entropy."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import ranking_dtype
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import RankedStrategy


def negative_entropy(logits: Tensor) -> Tensor:
    """(B,) Σ p log p of the softmax of each row (minus the entropy, so lower = more uncertain).

    Computed in float64 for float64 logits, in float32 otherwise.
    """
    log_p = logits.to(ranking_dtype(logits)).log_softmax(dim=1)
    return (log_p.exp() * log_p).sum(dim=1)


@register("entropy")
class EntropySampling(RankedStrategy):
    """Select the points with the largest softmax entropy −Σ p log p.

    Classic uncertainty sampling (Shannon entropy; Settles 2010). Not in the paper's
    comparison, included because users expect it.

    Cost: O(N·C) time; O(b) memory, streamed batch by batch (never N×C).
    """

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        return lambda chunk: negative_entropy(chunk.logits)
