"""Mergeable running summaries of the pool: what streaming selection keeps instead of N×C outputs.

A reducer is fed blocks of :class:`PoolOutputs` (``update``), can absorb another reducer's
state of the same shape (``merge_state``: blocks seen on another DDP rank), and finally
returns the selected ids (``finish``). States are fixed-shape tensors, so gathering them
across ranks is one ``all_gather``.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional

import torch
from torch import Tensor

from al_lightning.strategies.outputs import PoolOutputs, check_finite
from al_lightning.strategies.ranking import EMPTY_KEY, key_ids, key_words, score_keys, smallest_keys


class Reducer(abc.ABC):
    """A running, mergeable summary of the pool for one selection."""

    @abc.abstractmethod
    def update(self, chunk: PoolOutputs) -> None:
        """Fold in a block of the pool (``chunk.index`` holds the ids to return)."""

    @abc.abstractmethod
    def state(self) -> Tensor:
        """This reducer's summary, a tensor whose shape depends only on the settings."""

    @abc.abstractmethod
    def merge_state(self, state: Tensor) -> None:
        """Absorb the :meth:`state` of a reducer that saw other blocks."""

    @abc.abstractmethod
    def finish(self, rescan: Optional[Callable[["Reducer"], None]] = None) -> Tensor:
        """The selected ids, in selection order.

        ``rescan(fresh)`` feeds every block again into the reducer ``fresh`` (merged across
        ranks); a reducer that kept too little calls it to widen its view, rarely.
        """


class RankedReducer(Reducer):
    """The ``budget`` smallest (score, id) keys seen so far: O(b) memory.

    Args:
        score: maps a block to its (B,) scores, lower first.
        budget: how many to keep.
        check_logits: refuse blocks with NaN or infinite logits.
        dtype: the precision scores are ranked in (see
            :func:`~al_lightning.strategies.ranking.ranking_dtype`): float64 keeps float64
            scores exact, anything else ranks in float32. It fixes the state's shape.
    """

    def __init__(
        self,
        score: Callable[[PoolOutputs], Tensor],
        budget: int,
        check_logits: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.score = score
        self.budget = budget
        self.check_logits = check_logits
        self.dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.keys = torch.empty(0, key_words(self.dtype), dtype=torch.int64)

    def update(self, chunk: PoolOutputs) -> None:
        if len(chunk) == 0:
            return
        if self.check_logits:
            check_finite(chunk.logits, "logits", chunk.index)
        scores = self.score(chunk).to(self.dtype)
        self._keep(score_keys(scores, chunk.index.to(scores.device)).cpu())

    def _keep(self, keys: Tensor) -> None:
        self.keys = smallest_keys(torch.cat([self.keys, keys]), self.budget)

    def state(self) -> Tensor:
        padded = torch.full((self.budget, self.keys.shape[1]), EMPTY_KEY, dtype=torch.int64)
        padded[: len(self.keys)] = self.keys
        return padded

    def merge_state(self, state: Tensor) -> None:
        self._keep(state[state[:, 0] != EMPTY_KEY].cpu())

    def finish(self, rescan: Optional[Callable[[Reducer], None]] = None) -> Tensor:
        return key_ids(self.keys)
