"""PowerMargin: b points drawn with probability ∝ (1 − margin)^β."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from al_lightning.strategies.margin import softmax_margin
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.stochastic import PowerSampling


@register("power_margin")
class PowerMargin(PowerSampling):
    """Draw b points without replacement with probability ∝ (1 − (p₁ − p₂))^β of the softmax.

    Power sampling (Kirsch et al., TMLR 2023, "Stochastic Batch Acquisition: A Simple Baseline
    for Deep Active Learning") of the margin score. The score powered is 1 − margin, as in the
    authors' code (``get_margin_scores`` in BlackHC/active_learning_redux returns
    ``1. - (p₁ − p₂)``, fed to its power sampler), so a small margin is drawn often. Their
    margin is of the MC-averaged softmax; here the head is deterministic, so it is ``margin``'s
    softmax of the logits. A one-hot prediction (1 − margin = 0) is drawn only after every
    other point, by id. Noise keyed by pool id (:mod:`~al_lightning.strategies.stochastic`).

    Args:
        beta: the power β (1 in the paper; larger is closer to top-b ``margin``, 0 uniform).

    Cost: O(N·C) time; O(b) memory, streamed batch by batch (never N×C).
    """

    def power_scores(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        return lambda chunk: 1 - softmax_margin(chunk.logits)
