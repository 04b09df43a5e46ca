"""PowerBALD: b points drawn with probability ∝ BALD's mutual information^β."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from al_lightning.strategies.bald import bald_block_rows, bald_scorer
from al_lightning.strategies.mc_dropout import check_dropout
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.stochastic import PowerSampling


@register("power_bald")
class PowerBALD(PowerSampling):
    """Draw b points without replacement with probability ∝ MI^β, MI being ``bald``'s score.

    PowerBALD (Kirsch et al., TMLR 2023, "Stochastic Batch Acquisition: A Simple Baseline for
    Deep Active Learning"; baal's ``PowerSampling(BALD())``): the mutual information of
    ``bald`` (the same consistent dropout masks on the head, from the seed), sampled by the
    Gumbel-top-k trick with noise keyed by pool id (:mod:`~al_lightning.strategies.stochastic`),
    so streamed, dense and multi-rank selections draw the same points. A point of MI 0 has
    probability 0: it is drawn only after every point of positive MI, by id.

    Args:
        dropout: the rate p at which each input feature of the head is dropped.
        samples: T, the number of dropout masks.
        beta: the power β (1 in the paper; larger is closer to top-b ``bald``, 0 uniform).

    Cost: ``bald``'s, O(N·T·C·d) time and O(T·d + b) memory plus a (block, T, C) temporary,
    streamed; plus one hash per point.
    """

    requires = ("features", "weight", "bias")

    def __init__(self, dropout: float = 0.5, samples: int = 20, beta: float = 1.0, seed: int = 0) -> None:
        super().__init__(beta, seed)
        check_dropout(dropout, samples)
        self.dropout = dropout
        self.samples = samples

    def block_rows(self, outputs: PoolOutputs) -> int:
        return bald_block_rows(outputs.num_classes or 1, self.samples)

    def power_scores(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        return bald_scorer(head, self.dropout, self.samples, self.seed, self.score_dtype(head))
