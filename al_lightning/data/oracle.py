"""The oracle answers "what is the label of these points?"."""

from __future__ import annotations

from torch import Tensor


class SimulatedOracle:
    """Reveals the dataset's own labels: the standard simulation of a human annotator."""

    def __init__(self, targets: Tensor) -> None:
        self.targets = targets

    def label(self, indices: Tensor) -> Tensor:
        return self.targets[indices.to(self.targets.device)]
