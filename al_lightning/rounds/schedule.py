"""Which strategy a query uses: a cold start for a run without labels, and a handover after a number of labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import Strategy, TrainsWithClassifier
from al_lightning.strategies.registry import STRATEGIES

#: ``queried_by`` of a round whose labels came with the data (the initial pool, an image pool's seed labels).
INITIAL_POOL = "initial_pool"


@dataclass(frozen=True)
class ScheduledStrategy:
    """One strategy a run may query with: the option that named it, its name for records, and the strategy."""

    option: str
    name: str
    strategy: Strategy

    @property
    def reads_features(self) -> bool:
        """Whether it reads the trunk's features of the pool or of the labeled set."""
        return bool({"features", "labeled_features"} & set(self.strategy.requires))


def label_free_strategies() -> list[str]:
    """Registry names of the strategies that can pick labels without a trained head:
    they read no logits, and train no networks alongside the classifier."""
    return [
        name for name, cls in sorted(STRATEGIES.classes().items()) if "logits" not in cls.requires and not issubclass(cls, TrainsWithClassifier)
    ]


class StrategySchedule:
    """The strategy of each query, chosen by the number of labeled points when the query runs, and nothing else.

    With no labeled point, ``cold_start`` picks (when given); from ``handover_at`` labeled
    points on, ``handover`` picks; otherwise ``main`` (``--al.strategy``). Being a pure function
    of the labeled count, the choice is the same in a run resumed with ``--ckpt_path=last`` or
    continued after people's labels as in an uninterrupted one.

    Args:
        main: ``--al.strategy``.
        cold_start: ``--al.cold_start``: must read no logits (the head of a run without labels is untrained).
        handover: ``--al.handover_to``, used from ``handover_at`` labels on (both or neither).
        handover_at: the number of labeled points at which ``handover`` takes over (at least 1).
    """

    def __init__(
        self,
        main: ScheduledStrategy,
        cold_start: Optional[ScheduledStrategy] = None,
        handover: Optional[ScheduledStrategy] = None,
        handover_at: Optional[int] = None,
    ) -> None:
        if (handover is None) != (handover_at is None):
            raise ConfigurationError("--al.handover_to and --al.handover_at go together: give both (or neither)")
        if handover_at is not None and handover_at < 1:
            raise ConfigurationError(f"--al.handover_at must be at least 1 labeled point, got {handover_at}")
        if cold_start is not None and "logits" in cold_start.strategy.requires:
            raise ConfigurationError(
                f"--al.cold_start={cold_start.name} reads the head's outputs, which are untrained before the first labels; "
                f"use a label-free strategy: {', '.join(label_free_strategies())}"
            )
        if cold_start is not None and isinstance(cold_start.strategy, TrainsWithClassifier):
            raise ConfigurationError(
                f"--al.cold_start={cold_start.name} trains alongside the classifier, which needs labels; "
                f"use a label-free strategy: {', '.join(label_free_strategies())}"
            )
        self.main = main
        self.cold_start = cold_start
        self.handover = handover
        self.handover_at = handover_at

    def for_query(self, num_labeled: int) -> ScheduledStrategy:
        """The strategy of a query made when ``num_labeled`` points are labeled."""
        if num_labeled == 0 and self.cold_start is not None:
            return self.cold_start
        if self.handover is not None and num_labeled >= self.handover_at:
            return self.handover
        return self.main

    def all(self) -> list[ScheduledStrategy]:
        """Every strategy the run may query with, ``main`` first: what checks of a strategy must see."""
        return [s for s in (self.main, self.cold_start, self.handover) if s is not None]
