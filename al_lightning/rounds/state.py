"""Where an experiment stands: one round counter and one phase, saved in checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Optional

from al_lightning.oracles import Query


class Phase(str, Enum):
    """What the experiment is doing in its current round."""

    #: The round trains, or is about to (a resumed run replays it from its start).
    TRAINING = "training"
    #: The round's labels were asked of people; the run pauses until they come back.
    WAITING = "waiting"
    #: Every round is done.
    FINISHED = "finished"


@dataclass
class RoundState:
    """The round the experiment is in and its phase; ``pending`` is the query of a :attr:`Phase.WAITING` round.

    The round counts trainings: round 0 trains on the initial pool, round r on the labels of
    the r-th query. It advances when a query is made, so a round whose budget is 0 (no new
    labels) still counts.
    """

    round: int = 0
    phase: Phase = Phase.TRAINING
    pending: Optional[Query] = None

    def wait_for(self, query: Query) -> None:
        """The query's labels are asked of people: the run pauses."""
        self.phase, self.pending = Phase.WAITING, query

    def labeled(self) -> None:
        """The pending query's labels came back: the round can train."""
        self.phase, self.pending = Phase.TRAINING, None

    def finish(self) -> None:
        self.phase, self.pending = Phase.FINISHED, None

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "phase": self.phase.value, "pending": None if self.pending is None else asdict(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        self.phase = Phase(state["phase"])
        self.pending = None if state["pending"] is None else Query(**state["pending"])
