"""The active-learning pool: which training indices are labeled, with what label, in which round.

A small pure-torch object with one mutator, :meth:`ActivePool.label` (as baal's label map),
serialisable to a dict for Lightning checkpoints and to CSV for people (``pool.csv``, written
atomically by :func:`~al_lightning.run_files.write_pool`). No Lightning
and no data loading in here, so the invariants are testable on their own.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError

UNLABELED = -1


class ActivePool:
    """Labels and labeling rounds of the ``size`` training indices.

    Indices in ``holdout`` (the validation split used for early stopping) have known labels
    but are never part of the pool: they cannot be labeled, queried or counted in the budget.

    Args:
        size: number of training indices, 0..size−1.
        holdout: indices held out of the pool.
    """

    def __init__(self, size: int, holdout: Sequence[int] | Tensor = ()) -> None:
        self.size = size
        self.rounds = torch.full((size,), UNLABELED, dtype=torch.int32)
        self.labels = torch.full((size,), UNLABELED, dtype=torch.int64)
        self.holdout = torch.zeros(size, dtype=torch.bool)
        holdout = torch.as_tensor(holdout, dtype=torch.long)
        self._check_range(holdout, "holdout")
        self.holdout[holdout] = True

    # -- the one mutator -------------------------------------------------------------
    def label(self, indices: Sequence[int] | Tensor, labels: Sequence[int] | Tensor, round: int) -> None:
        """Record ``labels`` for ``indices`` as acquired in ``round``.

        Raises if an index is out of range, held out, already labeled or repeated: a label
        is never overwritten, so nothing labeled is ever lost.
        """
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if indices.numel() != labels.numel():
            raise ValueError(f"{indices.numel()} indices but {labels.numel()} labels")
        if round < 0:
            raise ValueError(f"round must be >= 0, got {round}")
        self._check_range(indices, "label")
        if indices.unique().numel() != indices.numel():
            raise ValueError("indices to label contain repeats")
        if bool(self.holdout[indices].any()):
            bad = indices[self.holdout[indices]][:5].tolist()
            raise ValueError(f"indices {bad} are in the held-out validation split and cannot be labeled")
        already = self.rounds[indices] != UNLABELED
        if bool(already.any()):
            raise ValueError(f"indices {indices[already][:5].tolist()} are already labeled")
        if bool((labels < 0).any()):
            raise ValueError("labels must be non-negative class indices")
        self.rounds[indices] = round
        self.labels[indices] = labels

    # -- views -----------------------------------------------------------------------
    @property
    def labeled_mask(self) -> Tensor:
        return self.rounds != UNLABELED

    @property
    def unlabeled_mask(self) -> Tensor:
        return (self.rounds == UNLABELED) & ~self.holdout

    def labeled_indices(self) -> Tensor:
        """Labeled indices, ordered by round, then index."""
        indices = self.labeled_mask.nonzero().squeeze(1)
        return indices[torch.argsort(self.rounds[indices], stable=True)]

    def unlabeled_indices(self) -> Tensor:
        """Indices that may still be queried, ascending."""
        return self.unlabeled_mask.nonzero().squeeze(1)

    def holdout_indices(self) -> Tensor:
        return self.holdout.nonzero().squeeze(1)

    @property
    def num_labeled(self) -> int:
        return int(self.labeled_mask.sum())

    @property
    def num_unlabeled(self) -> int:
        return int(self.unlabeled_mask.sum())

    @property
    def last_round(self) -> int:
        """The latest round in which anything was labeled (−1 if nothing is)."""
        return int(self.rounds.max()) if self.size else UNLABELED

    def class_counts(self, num_classes: int) -> Tensor:
        """(C,) number of labeled points per class."""
        return torch.bincount(self.labels[self.labeled_mask], minlength=num_classes)

    # -- persistence -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "rounds": self.rounds.clone(), "labels": self.labels.clone(), "holdout": self.holdout.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["size"] != self.size:
            raise ConfigurationError(
                f"the checkpoint's pool has {state['size']} training indices but this dataset has {self.size}; "
                "resume with the same dataset and split settings"
            )
        self.rounds = state["rounds"].to(torch.int32).clone()
        self.labels = state["labels"].to(torch.int64).clone()
        self.holdout = state["holdout"].to(torch.bool).clone()

    def to_csv(
        self,
        item_ids: Optional[Callable[[Tensor], Sequence[str]]] = None,
        class_names: Optional[Sequence[str]] = None,
    ) -> str:
        """``index,round`` rows, one per labeled index, in labeling order.

        With ``item_ids`` (indices → the items' ids, e.g. image paths, from the data) a
        ``path`` column follows, and with ``class_names`` a ``label`` column of class names:
        the rows then serve as a labels file (``path,label``). The ids come through a function
        so that only the labeled items are looked up and the pool stays free of data loading.
        """
        indices = self.labeled_indices()
        header, columns = ["index", "round"], [indices.tolist(), self.rounds[indices].tolist()]
        if item_ids is not None:
            header.append("path")
            columns.append(list(item_ids(indices)))
        if class_names is not None:
            header.append("label")
            columns.append([class_names[c] for c in self.labels[indices].tolist()])
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(zip(*columns))
        return buffer.getvalue()

    def _check_range(self, indices: Tensor, what: str) -> None:
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise ValueError(f"{what}: indices must lie in [0, {self.size}), got {indices.min().item()}..{indices.max().item()}")

    def __repr__(self) -> str:
        return (
            f"ActivePool(size={self.size}, labeled={self.num_labeled}, unlabeled={self.num_unlabeled}, "
            f"holdout={int(self.holdout.sum())}, last_round={self.last_round})"
        )
