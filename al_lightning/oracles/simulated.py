"""The simulated oracle: the dataset's own labels, revealed as soon as they are asked for."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.oracles.base import Oracle, Query


class SimulatedOracle(Oracle):
    """Reveals the dataset's labels: the standard simulation of a human annotator in AL research.

    Args:
        targets: (N,) the training set's labels; < 0 where the dataset has none (an
            ``image_pool`` item outside the seed labels), which this oracle cannot answer.
    """

    answers_at_once: ClassVar[bool] = True

    def __init__(self, targets: Tensor) -> None:
        self.targets = targets

    def request(self, query: Query) -> None:
        """Nothing to hand over: the labels are already known."""

    def collect(self, query: Query) -> Tensor:
        labels = self.targets[query.indices.to(self.targets.device)].cpu()
        unknown = int((labels < 0).sum())
        if unknown:
            raise ConfigurationError(
                f"the simulated oracle reveals the dataset's own labels, but the dataset has none for {unknown} of the "
                f"{len(query)} items queried in round {query.round}; label them with people: "
                "--al.oracle=file --al.label_dir=DIR (or --al.oracle=labelstudio)"
            )
        return labels
