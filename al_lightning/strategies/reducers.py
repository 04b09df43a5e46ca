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

from al_lightning.strategies.outputs import PoolOutputs, check_finite_logits
from al_lightning.strategies.ranking import key_ids, score_keys, smallest_keys

#: Key of an empty slot: larger than any real key, so it sorts last.
EMPTY_KEY = torch.iinfo(torch.int64).max


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
    """

    def __init__(self, score: Callable[[PoolOutputs], Tensor], budget: int, check_logits: bool = True) -> None:
        self.score = score
        self.budget = budget
        self.check_logits = check_logits
        self.keys = torch.empty(0, dtype=torch.int64)

    def update(self, chunk: PoolOutputs) -> None:
        if len(chunk) == 0:
            return
        if self.check_logits:
            check_finite_logits(chunk.logits, chunk.index)
        scores = self.score(chunk)
        self._keep(score_keys(scores, chunk.index.to(scores.device)).cpu())

    def _keep(self, keys: Tensor) -> None:
        self.keys = smallest_keys(torch.cat([self.keys, keys]), self.budget)

    def state(self) -> Tensor:
        padded = torch.full((self.budget,), EMPTY_KEY, dtype=torch.int64)
        padded[: self.keys.numel()] = self.keys
        return padded

    def merge_state(self, state: Tensor) -> None:
        self._keep(state[state != EMPTY_KEY].cpu())

    def finish(self, rescan: Optional[Callable[[Reducer], None]] = None) -> Tensor:
        return key_ids(self.keys)
