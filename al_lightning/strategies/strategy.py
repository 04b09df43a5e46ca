"""The strategy contract: ``select(outputs, budget)`` returns pool indices, nothing else."""

from __future__ import annotations

import abc
import warnings
from typing import Callable, ClassVar

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import key_ids, score_keys, smallest_keys


class Strategy(abc.ABC):
    """A query strategy: a pure function of model outputs on the pool.

    Subclasses set ``requires`` (the :class:`PoolOutputs` fields they read) and implement
    :meth:`_select`, which returns *positions* into ``outputs``; :meth:`select` checks the
    input, clamps the budget and maps positions to pool indices. A strategy holds no state
    between calls, so the same outputs, budget and seed always give the same selection.

    Args:
        seed: seeds every random choice the strategy makes.
    """

    #: Registry name, set by :func:`al_lightning.strategies.register`.
    name: ClassVar[str] = ""
    #: PoolOutputs fields this strategy reads.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        """Pick ``min(budget, len(outputs))`` pool indices from ``outputs.index``, in selection order."""
        if budget < 0:
            raise ConfigurationError(f"budget must be >= 0, got {budget}")
        self.check_outputs(outputs)
        n = len(outputs)
        if budget > n:
            warnings.warn(
                f"budget {budget} is larger than the {n} points left in the pool; selecting all {n}",
                stacklevel=2,
            )
        k = min(budget, n)
        if k == 0:
            return torch.empty(0, dtype=torch.long)
        positions = self._select(outputs, k)
        return outputs.index[positions.to(outputs.index.device)]

    def check_outputs(self, outputs: PoolOutputs) -> None:
        """Raise a clear error if a required field is missing or the logits are not finite."""
        from al_lightning.strategies.registry import strategies_not_requiring

        for field in self.requires:
            if getattr(outputs, field) is None:
                others = ", ".join(strategies_not_requiring(field)) or "none"
                raise ConfigurationError(
                    f"strategy '{self.name}' needs PoolOutputs.{field}, which is None; "
                    f"strategies that do without it: {others}"
                )
        if "logits" in self.requires:
            finite = torch.isfinite(outputs.logits)
            if not bool(finite.all()):
                bad_rows = (~finite).any(dim=1).nonzero().squeeze(1)
                raise ConfigurationError(
                    f"logits hold NaN or infinite values for {bad_rows.numel()} of {len(outputs)} points "
                    f"(pool indices {outputs.index[bad_rows[:5].to(outputs.index.device)].tolist()}...); "
                    "check the model (diverged training, fp16 overflow) before querying"
                )

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with ``self.seed``."""
        return torch.Generator().manual_seed(self.seed)

    @abc.abstractmethod
    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        """Positions (into ``outputs.index``) of ``budget`` distinct points, in selection order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed})"


def chunk_rows(num_classes: int, elements: int = 1 << 22) -> int:
    """Rows per block so that a (rows, C) temporary holds about ``elements`` values."""
    return max(1, elements // max(1, num_classes))


class RankedStrategy(Strategy):
    """Score every point on its own, select the ``budget`` lowest scores.

    The "score, then rank" split (as in baal's heuristics): a subclass only supplies
    :meth:`scorer`. Ranking uses :mod:`~al_lightning.strategies.ranking` keys, so ties go to
    the smaller pool position and a batch-by-batch reduction selects exactly the same points.
    """

    requires: ClassVar[tuple[str, ...]] = ("logits",)

    @abc.abstractmethod
    def scorer(self, outputs: PoolOutputs) -> Callable[[Tensor], Tensor]:
        """A function from a (B, C) block of logits to (B,) scores; lower is queried first.

        ``outputs`` gives access to the head (``weight``, ``bias``) for scores that need it.
        """

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        score = self.scorer(outputs)
        logits = outputs.logits
        step = chunk_rows(logits.shape[1])
        best = None
        for start in range(0, logits.shape[0], step):
            block = logits[start : start + step]
            ids = torch.arange(start, start + block.shape[0], device=block.device)
            keys = score_keys(score(block), ids)
            if best is not None:
                keys = torch.cat([best, keys])
            best = smallest_keys(keys, budget)
        return key_ids(best)
