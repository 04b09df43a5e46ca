"""The strategy contract: ``select(outputs, budget)`` returns pool indices, nothing else."""

from __future__ import annotations

import abc
import warnings
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.outputs import PER_POINT_FIELDS, SHARED_FIELDS, PoolOutputs, check_finite
from al_lightning.strategies.ranking import check_ids, ranking_dtype

if TYPE_CHECKING:
    from al_lightning.strategies.reducers import Reducer


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
    #: PoolOutputs fields it uses when the caller can give them, and does without otherwise.
    accepts: ClassVar[tuple[str, ...]] = ()
    #: Whether it compares pool points with each other (quadratic in the pool, or clustering
    #: it): the query then scores ``--al.pairwise_subset`` points, as the paper's code did.
    pairwise: ClassVar[bool] = False
    #: Whether its geometry runs on :mod:`~al_lightning.strategies.neighbours`, whose row loops
    #: the DDP ranks can share: the query then hands every rank the whole outputs and selects
    #: on all of them inside :func:`~al_lightning.strategies.neighbours.sharing_work`.
    shares_work: ClassVar[bool] = False

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

    def point_scores(self, outputs: PoolOutputs) -> Optional[Tensor]:
        """(N,) this strategy's own score of each point in ``outputs``, lower asked first, or
        None for a strategy without a per-point score (random, coreset, BADGE: their picks
        depend on each other). Query files show it next to each queried item, so annotators
        can sort by it."""
        return None

    def check_outputs(self, outputs: PoolOutputs) -> None:
        """Raise a clear error if a required field is missing or not finite, or an index cannot be ranked.

        Pool indices must lie in [0, 2**32) for every strategy (streaming keys hold them in
        32 bits), so a dense and a streamed selection refuse the same pools.
        """
        from al_lightning.strategies.registry import strategies_not_requiring

        check_ids(outputs.index, "PoolOutputs.index")
        for field in self.requires:
            value = getattr(outputs, field)
            if value is None:
                others = ", ".join(strategies_not_requiring(field)) or "none"
                raise ConfigurationError(
                    f"strategy '{self.name}' needs PoolOutputs.{field}, which is None; "
                    f"strategies that do without it: {others}"
                )
            if isinstance(value, Tensor):
                check_finite(value, field, outputs.index if field in PER_POINT_FIELDS else None)

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


def iter_chunks(outputs: PoolOutputs, rows: int) -> Iterator[PoolOutputs]:
    """Row blocks of ``outputs`` whose ``index`` is the block's *positions* in ``outputs``.

    Per-point fields are sliced; head and labeled-set fields are shared by every block.
    """
    shared = {f: getattr(outputs, f) for f in SHARED_FIELDS}
    for start in range(0, len(outputs), rows):
        stop = min(start + rows, len(outputs))
        sliced = {f: getattr(outputs, f)[start:stop] for f in PER_POINT_FIELDS if getattr(outputs, f) is not None}
        yield PoolOutputs(index=torch.arange(start, stop), **sliced, **shared)


class StreamingStrategy(Strategy):
    """A strategy that reduces the pool block by block: memory independent of N.

    :meth:`reducer` returns a :class:`~al_lightning.strategies.reducers.Reducer`; the query
    callback feeds it the pool batch by batch on every rank and merges the ranks' states.
    ``select`` on dense outputs runs the same reducer over row blocks, so both paths pick
    exactly the same points.
    """

    def block_rows(self, outputs: PoolOutputs) -> int:
        """Points per block when selecting from dense outputs: ~4M values of a (rows, C) block."""
        return chunk_rows(outputs.num_classes or 1)

    @abc.abstractmethod
    def reducer(self, head: PoolOutputs, budget: int) -> "Reducer":
        """A fresh reducer for ``budget`` picks; ``head`` carries the fields shared by all
        blocks (``weight``, ``bias``), its per-point fields are not read (beyond their dtype,
        see :meth:`score_dtype`)."""

    def score_dtype(self, head: PoolOutputs) -> torch.dtype:
        """The precision scores are computed and ranked in: float64 if a field this strategy
        requires is float64 in ``head`` (the pool's outputs, or the head alone when streaming),
        float32 otherwise. It is fixed when the reducer is made, so its state's shape is too."""
        return ranking_dtype(*(getattr(head, f) for f in self.requires))

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        rows = self.block_rows(outputs)
        reducer = self.reducer(outputs, budget)
        for chunk in iter_chunks(outputs, rows):
            reducer.update(chunk)

        def rescan(fresh: "Reducer") -> None:
            for chunk in iter_chunks(outputs, rows):
                fresh.update(chunk)

        return reducer.finish(rescan)


class RankedStrategy(StreamingStrategy):
    """Score every point on its own, select the ``budget`` lowest scores.

    The "score, then rank" split (as in baal's heuristics): a subclass only supplies
    :meth:`scorer`. Ranking uses :mod:`~al_lightning.strategies.ranking` keys, so ties go to
    the smaller id and a batch-by-batch reduction selects exactly the same points; scores
    are ranked in :meth:`score_dtype` (float64 for float64 inputs, float32 otherwise).
    """

    requires: ClassVar[tuple[str, ...]] = ("logits",)

    @abc.abstractmethod
    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        """A function from a block of outputs to its (B,) scores; lower is queried first.

        ``head`` gives access to the linear head (``weight``, ``bias``) for scores that need it.
        """

    def point_scores(self, outputs: PoolOutputs) -> Optional[Tensor]:
        """The scores it ranks by, where ``outputs`` has the fields it requires."""
        if any(getattr(outputs, f) is None for f in self.requires):
            return None
        return self.scorer(outputs)(outputs)

    def reducer(self, head: PoolOutputs, budget: int) -> "Reducer":
        from al_lightning.strategies.reducers import RankedReducer

        return RankedReducer(
            self.scorer(head), budget, check_logits="logits" in self.requires, dtype=self.score_dtype(head)
        )


@runtime_checkable
class TrainsWithClassifier(Protocol):
    """A strategy with networks of its own, trained alongside the classifier (VAAL).

    The query callback calls :meth:`reset` at the start of every round and
    :meth:`train_step` after every classifier step, with that step's labeled images, a
    batch of unlabeled ones, and ``lr_scale``: the classifier's learning rate over its
    initial one, so the strategy's own learning rates can follow the classifier's schedule.
    """

    def reset(self, seed: int, device: torch.device | str = "cpu") -> None: ...

    def train_step(self, labeled_images: Tensor, unlabeled_images: Tensor, lr_scale: float = 1.0) -> dict[str, float]: ...
