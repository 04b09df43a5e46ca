"""BASE, Balanced Selection: for every class, the points nearest to that class's boundary."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.boundary import class_boundary_distances, weight_distance_table
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import key_ids, key_scores, score_keys
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy, chunk_rows

_EMPTY = torch.iinfo(torch.int64).max


def class_quotas(budget: int, num_classes: int) -> list[int]:
    """Picks per class: ⌊b/C⌋, plus one for the first b mod C classes (as the paper's code)."""
    base, extra = divmod(budget, num_classes)
    return [base + (c < extra) for c in range(num_classes)]


class ClassCandidates:
    """For each class, the ``depth`` smallest (distance, id) keys seen so far.

    A running reduction over blocks of points: memory O(C·depth), and a block costs one
    comparison per (point, class) once the lists are full, because only points below a
    class's current depth-th distance can enter its list.
    """

    def __init__(self, num_classes: int, depth: int, device: torch.device | str = "cpu") -> None:
        self.depth = depth
        self.keys = torch.full((num_classes, depth), _EMPTY, dtype=torch.int64, device=device)
        self.thresholds = torch.full((num_classes,), torch.inf, device=device)

    def update(self, distances: Tensor, ids: Tensor) -> None:
        """Fold in a (B, C) block of class distances for points ``ids`` (B,)."""
        passing = distances <= self.thresholds[None, :]
        rows, classes = passing.nonzero(as_tuple=True)
        if rows.numel() == 0:
            return
        new_keys = score_keys(distances[rows, classes], ids[rows])
        num_classes = self.keys.shape[0]
        all_classes = torch.cat([torch.arange(num_classes, device=classes.device).repeat_interleave(self.depth), classes])
        all_keys = torch.cat([self.keys.reshape(-1), new_keys])
        # Group by class, ascending key inside a class; keep the first `depth` of each group.
        order = torch.argsort(all_keys, stable=True)
        order = order[torch.argsort(all_classes[order], stable=True)]
        all_classes, all_keys = all_classes[order], all_keys[order]
        starts = torch.searchsorted(all_classes, torch.arange(num_classes, device=classes.device))
        rank = torch.arange(all_classes.numel(), device=classes.device) - starts[all_classes]
        keep = rank < self.depth
        self.keys[all_classes[keep], rank[keep]] = all_keys[keep]
        full = self.keys[:, -1] != _EMPTY
        self.thresholds = torch.where(full, key_scores(self.keys[:, -1]), torch.inf)

    def column(self, c: int) -> list[int]:
        """Ids of class ``c``'s candidates, nearest first."""
        keys = self.keys[c]
        return key_ids(keys[keys != _EMPTY]).tolist()


@register("base")
class BalancedSelection(Strategy):
    """For each class in turn, select its quota of points nearest to that class's boundary.

    The paper's BASE (Algorithm 2, as its code runs it): classes are visited in order
    0..C−1 and class c takes ⌊b/C⌋ + [c < b mod C] points with the smallest class-c
    distance (see :func:`~al_lightning.strategies.boundary.class_boundary_distances`),
    skipping points an earlier class already took. Balance comes from the *predicted*
    classes: no true label is read.

    Exact and cheap: each class keeps only its ``depth`` nearest candidates (a few times its
    quota; points near several boundaries are candidates of several classes) in a running
    reduction over blocks of logits; a class whose list runs out is widened by re-scanning
    the logits for that class alone, so the result equals a full sort per class.

    Cost: O(C²·d) for the weight-distance table, O(N·C) time, O(C·depth + C²) memory beyond
    one block of logits.

    Args:
        seed: unused (BASE is deterministic); accepted for a uniform interface.
        depth_factor: candidates kept per class, as a multiple of its quota.
        min_depth: candidates kept per class at least (beyond its quota).
    """

    requires = ("logits", "weight")

    def __init__(self, seed: int = 0, depth_factor: int = 4, min_depth: int = 16) -> None:
        super().__init__(seed)
        self.depth_factor = depth_factor
        self.min_depth = min_depth

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        logits = outputs.logits
        n, num_classes = logits.shape
        table = weight_distance_table(outputs.weight)
        quotas = class_quotas(budget, num_classes)
        depth = min(n, max(self.depth_factor * max(quotas), max(quotas) + self.min_depth))
        candidates = self._scan(logits, table, depth)

        taken: set[int] = set()
        picked: list[int] = []
        for c, quota in enumerate(quotas):
            column = candidates.column(c)
            position = 0
            while quota > 0:
                if position == len(column):
                    column = self._scan(logits, table, min(n, 4 * len(column)), only_class=c).column(0)
                candidate = column[position]
                position += 1
                if candidate not in taken:
                    taken.add(candidate)
                    picked.append(candidate)
                    quota -= 1
        return torch.tensor(picked, dtype=torch.long)

    @staticmethod
    def _scan(logits: Tensor, table: Tensor, depth: int, only_class: int | None = None) -> ClassCandidates:
        """Candidate lists of every class (or of ``only_class``) over all rows of ``logits``."""
        num_classes = 1 if only_class is not None else logits.shape[1]
        candidates = ClassCandidates(num_classes, depth, device=logits.device)
        step = chunk_rows(logits.shape[1])
        for start in range(0, logits.shape[0], step):
            distances = class_boundary_distances(logits[start : start + step], table)
            if only_class is not None:
                distances = distances[:, only_class : only_class + 1]
            ids = torch.arange(start, start + distances.shape[0], device=logits.device)
            candidates.update(distances, ids)
        return candidates
