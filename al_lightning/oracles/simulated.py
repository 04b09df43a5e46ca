"""The simulated oracle: the dataset's own labels, revealed as soon as they are asked for."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.oracles.base import Oracle, Query, register_oracle


@register_oracle("simulated")
class SimulatedOracle(Oracle):
    """Reveals the dataset's labels: the standard simulation of a human annotator in AL research.

    It knows every answer before it is asked, so strategies that read the pool's true labels
    (``balanced_random``, ``balancing``'s label feedback) get them from it (:meth:`true_labels`).

    Args:
        targets: (N,) the training set's labels (the query callback gives the dataset's own).

    Raises:
        ConfigurationError: some item has no label (an ``image_pool`` item outside the seed
            labels): people must answer, not this oracle.
    """

    answers_at_once: ClassVar[bool] = True

    def __init__(self, targets: Tensor) -> None:
        unknown = int((targets < 0).sum())
        if unknown:
            raise ConfigurationError(
                f"the simulated oracle reveals the dataset's own labels, but {unknown} of its {targets.numel()} "
                "training items have none; label the queries with people: --al.oracle=file --al.label_dir=DIR "
                "(or --al.oracle=labelstudio)"
            )
        self.targets = targets

    def request(self, query: Query) -> None:
        """Nothing to hand over: the labels are already known."""

    def collect(self, query: Query) -> Tensor:
        return self.targets[query.indices.to(self.targets.device)].cpu()

    def true_labels(self) -> Tensor:
        return self.targets
