"""Stochastic batch acquisition: b points drawn without replacement with probability ∝ score^β.

Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic Batch
Acquisition: A Simple Baseline for Deep Active Learning", TMLR 2023. Taking the top-b scores
fills a batch with near-duplicates; drawing the batch from the power distribution
p(i) ∝ s_i^β keeps most of the informative points and adds diversity at no cost. β is the
paper's "coldness" (β = 1 in its experiments; β → ∞ is top-b, β = 0 uniform).

**The draw** is the Gumbel-top-k trick, as in the authors' code (``get_power_samples``: the
log-scores plus Gumbel noise, top-k): the b largest keys β·log s_i + G_i, G_i ~ Gumbel(0, 1),
are a sample without replacement from p(i) ∝ s_i^β. Each key depends on its own point only,
so a :class:`PowerSampling` strategy is a ranked strategy (lowest −key first) and streams
like one.

**The noise** G_i is a pure function of the seed and the point's *pool id*
(:func:`gumbel_noise`), not of the block, the rank or the position the point is scored at,
so a streamed, a dense and a multi-rank selection draw the same batch.

**Zero scores** (s = 0: BALD's MI of a point every sampled head agrees on, a one-hot
prediction's 1 − margin) have probability 0: their key is −inf, and they are taken after
every positive score, in the order of their ids (ties of keys go to the smaller id, as every
ranking key does). Negative scores count as 0, as in the authors' code.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.reducers import Reducer
from al_lightning.strategies.strategy import RankedStrategy, iter_chunks

#: splitmix64's constants (Steele, Lea & Flood, "Fast splittable pseudorandom number
#: generators", OOPSLA 2014): the golden-ratio increment and the finaliser's multipliers.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every input bit into every output bit."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform_noise(ids: Tensor, seed: int) -> Tensor:
    """(*ids.shape,) float64 uniforms in (0, 1), strictly, each a pure function of (``seed``, id).

    Counter-based, not a stream: u = (⌊h / 2^11⌋ + ½) / 2^53 with h = splitmix64(splitmix64(seed)
    + γ·(id + 1)) in wrapping uint64 arithmetic. A generator stream would give a point the
    draw of its position in whatever block or rank it is scored in; a hash of the id gives it
    the same draw in every block, on every rank, in any order, on any machine (integer
    arithmetic and one exact conversion). Computed and returned on the CPU.
    """
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed % (1 << 64)], dtype=np.uint64))
        counters = ids.detach().cpu().numpy().astype(np.uint64) + np.uint64(1)
        hashed = _mix64(key + _GAMMA * counters)
    top = (hashed >> np.uint64(11)).astype(np.float64)  # 53 bits: exact in float64
    return torch.from_numpy((top + 0.5) * math.ldexp(1.0, -53))


def gumbel_noise(ids: Tensor, seed: int) -> Tensor:
    """(*ids.shape,) float64 standard Gumbel draws G = −log(−log u), u = :func:`uniform_noise` (``ids``, ``seed``).

    Computed on the CPU (the same logarithm for every rank, whatever its device), returned on ``ids``' device.
    """
    return (-torch.log(-torch.log(uniform_noise(ids, seed)))).to(ids.device)


def power_keys(scores: Tensor, ids: Tensor, seed: int, beta: float) -> Tensor:
    """(B,) Gumbel-top-k keys β·log s + G of non-negative ``scores``, in ``scores``' dtype: the b largest are
    a draw of b points without replacement with probability ∝ s^β.

    A score ≤ 0 gets the key −inf (probability 0); β = 0 gives G alone (uniform draws).
    """
    noise = gumbel_noise(ids, seed).to(scores.device)
    if beta == 0:
        return noise.to(scores.dtype)
    log_scores = torch.log(scores.to(torch.float64).clamp_min(0))  # log 0 = −inf
    return (beta * log_scores + noise).to(scores.dtype)


class PowerSampling(RankedStrategy):
    """A ranked strategy that draws its b points with probability ∝ score^β (module docstring).

    A subclass supplies :meth:`power_scores`: non-negative scores, larger = more informative.
    Points are ranked by −key, lowest first. The noise is keyed by pool id, so a dense
    ``select`` feeds its blocks with their pool ids (not positions) as the query does.

    Args:
        beta: the power β (the paper's coldness), ≥ 0.
    """

    def __init__(self, beta: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        if not (beta >= 0 and math.isfinite(beta)):
            raise ConfigurationError(f"beta must be a finite number >= 0, got {beta}")
        self.beta = beta

    @abc.abstractmethod
    def power_scores(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        """A function from a block of outputs to its (B,) non-negative scores, larger drawn more often."""

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        scores_of, dtype = self.power_scores(head), self.score_dtype(head)
        return lambda chunk: -power_keys(scores_of(chunk).to(dtype), chunk.index, self.seed, self.beta)

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        rows = self.block_rows(outputs)

        def feed(reducer: Reducer) -> None:
            for chunk in iter_chunks(outputs, rows):
                # pool ids, not positions: the noise is keyed by them
                chunk.index = outputs.index[chunk.index.to(outputs.index.device)]
                reducer.update(chunk)

        reducer = self.reducer(outputs, budget)
        feed(reducer)
        chosen = reducer.finish(feed).to(outputs.index.device)
        order = outputs.index.argsort()
        return order[torch.searchsorted(outputs.index[order], chosen)]
