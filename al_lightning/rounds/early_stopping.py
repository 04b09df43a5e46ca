"""Early stopping within a round, and the round's best weights."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn


class RoundEarlyStopping:
    """Tracks the monitored validation score of one round and keeps a copy of the best weights.

    Fed once per validation run (:meth:`update`), so it follows ``check_val_every_n_epoch``:
    ``patience`` counts validation checks without improvement, as Lightning's own
    ``EarlyStopping`` does. By default a tie is not an improvement, so the earliest best
    weights are kept; the paper's code counted a tie as one (``>=``), keeping the latest.

    Args:
        patience: checks without improvement before the round ends (``None``: never early).
        mode: ``max`` or ``min``: which direction of the score is better.
        tie_improves: count a score equal to the best as an improvement.
    """

    def __init__(self, patience: Optional[int], mode: Literal["max", "min"] = "max", tie_improves: bool = False) -> None:
        self.patience = patience
        self.mode = mode
        self.tie_improves = tie_improves
        self.reset()

    def reset(self) -> None:
        """Forget the previous round."""
        self.best_score: Optional[float] = None
        self.best_epoch = 0
        self.bad_checks = 0
        self.best_state: Optional[dict[str, Tensor]] = None

    def update(self, score: float, epoch: int, module: nn.Module) -> None:
        """Record the score of the weights ``module`` holds after epoch ``epoch`` (1-based within the round)."""
        improved = self.best_score is None or self._better(score, self.best_score) or (self.tie_improves and score == self.best_score)
        if improved:
            self.best_score, self.best_epoch, self.bad_checks = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            self.bad_checks += 1

    def _better(self, score: float, best: float) -> bool:
        return score > best if self.mode == "max" else score < best

    @property
    def exhausted(self) -> bool:
        """Whether patience has run out."""
        return self.patience is not None and self.bad_checks >= self.patience

    @torch.no_grad()
    def restore_best(self, module: nn.Module) -> None:
        """Load the best weights into ``module`` (a no-op if nothing was monitored)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)
