"""BASE, Balanced Selection: for every class, the points nearest to that class's boundary."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from al_lightning.quotas import even_shares
from al_lightning.strategies.boundary import class_boundary_distances, inverse_distance_table
from al_lightning.strategies.outputs import PoolOutputs, check_finite
from al_lightning.strategies.ranking import (
    EMPTY_KEY,
    key_ids,
    key_scores,
    key_words,
    ranking_dtype,
    score_keys,
    smallest_keys,
    sort_keys,
    sparse_nonzero,
)
from al_lightning.strategies.reducers import Reducer
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import StreamingStrategy

#: Above this share of (point, class) pairs passing the thresholds, a block is merged densely.
_DENSE_SHARE = 0.125
#: Bytes of logits per piece on the CPU path: a few such buffers stay in cache.
_CACHE_BYTES = 2 << 20
#: Rows (at least; 4 × depth if more) that fill the candidate lists on the dense path before the CPU path.
_FILL_ROWS = 512
#: Passing entries that the CPU path folds in at once, so that the thresholds tighten.
_FOLD_ENTRIES = 1 << 15


def merge_sorted_keys(old: Tensor, new: Tensor, depth: int) -> Tensor:
    """The ``depth`` smallest keys of each row of two row-wise sorted key tables (R, D, W) and (R, D', W).

    Equal to sorting their concatenation along dim 1 and keeping ``depth``. One-word keys are
    merged by rank (each key's place is its position plus the number of smaller keys in the
    other table, found by ``searchsorted``), cheaper than a sort; two-word keys are sorted.
    """
    if old.shape[-1] != 1:
        return sort_keys(torch.cat([old, new], dim=1), dim=1)[0][:, :depth]
    a, b = old[..., 0].contiguous(), new[..., 0].contiguous()
    # Ties between the tables (the same key twice) put the old one first: either order gives the same keys.
    place_a = torch.arange(a.shape[1]) + torch.searchsorted(b, a, side="left")
    place_b = torch.arange(b.shape[1]) + torch.searchsorted(a, b, side="right")
    merged = torch.empty(a.shape[0], a.shape[1] + b.shape[1], dtype=a.dtype)
    merged.scatter_(1, place_a, a)
    merged.scatter_(1, place_b, b)
    return merged[:, :depth, None]


class ClassCandidates:
    """For each class, the ``depth`` smallest (distance, id) keys seen so far.

    Memory O(C·depth). Once the lists are full a block costs one comparison per (point,
    class): only points below a class's current depth-th distance can enter its list, and
    after the first blocks those are few. Distances are ranked in ``dtype`` (float64 keeps
    them exact, see :mod:`~al_lightning.strategies.ranking`).
    """

    def __init__(self, num_classes: int, depth: int, dtype: torch.dtype = torch.float32) -> None:
        self.depth = depth
        self.keys = torch.full((num_classes, depth, key_words(dtype)), EMPTY_KEY, dtype=torch.int64)
        self.thresholds = torch.full((num_classes,), torch.inf, dtype=dtype)
        self.full = False  # every list holds `depth` keys (all thresholds finite)

    def update(self, distances: Tensor, ids: Tensor) -> None:
        """Fold in a (B, C) block of class distances for the points ``ids`` (B,)."""
        distances, ids = distances.cpu().to(self.thresholds.dtype), ids.cpu()
        if self.full:
            # Every list is full: few entries pass, so a plain comparison and no count. (The
            # distances of finite logits, all the reducer lets through, are never NaN.)
            rows, classes = sparse_nonzero(torch.le(distances, self.thresholds[None, :]))
            if rows.numel() == 0:
                return
        else:
            # Not `distances <= thresholds`: NaN fails every comparison, so written this way a
            # NaN passes and reaches score_keys, which refuses it.
            passing = ~(distances > self.thresholds[None, :])
            count = int(passing.sum())
            if count == 0:
                return
            if count > _DENSE_SHARE * passing.numel():
                block = smallest_keys(score_keys(distances, ids[:, None]).transpose(0, 1), self.depth, dim=1)
                self._merge_rows(torch.arange(self.keys.shape[0]), block)
                return
            rows, classes = passing.nonzero(as_tuple=True)
        self.add(classes, distances[rows, classes], ids[rows])

    def add(self, classes: Tensor, distances: Tensor, ids: Tensor) -> None:
        """Fold in single (class, distance, id) entries, in any order (those beyond a class's list change nothing)."""
        if classes.numel() == 0:
            return
        keys = score_keys(distances.to(self.thresholds.dtype), ids)
        # Group the new keys by class, ascending; keep at most `depth` per class.
        order = sort_keys(keys)[1]
        order = order[torch.argsort(classes[order], stable=True)]
        classes, keys = classes[order], keys[order]
        touched, counts = torch.unique_consecutive(classes, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(classes.numel()) - torch.repeat_interleave(starts, counts)
        width = min(self.depth, int(counts.max()))  # no wider than the longest run: the merge sorts depth + width
        keep = rank < width
        block = torch.full((touched.numel(), width, keys.shape[1]), EMPTY_KEY, dtype=torch.int64)
        slot = torch.repeat_interleave(torch.arange(touched.numel()), counts)
        block[slot[keep], rank[keep]] = keys[keep]
        self._merge_rows(touched, block)

    def merge(self, keys: Tensor) -> None:
        """Absorb another candidate table of the same shape (seen on other blocks)."""
        self._merge_rows(torch.arange(self.keys.shape[0]), keys.cpu())

    def _merge_rows(self, rows: Tensor, block: Tensor) -> None:
        merged = merge_sorted_keys(self.keys[rows], block, self.depth)
        self.keys[rows] = merged
        last = merged[:, -1]
        self.thresholds[rows] = torch.where(last[:, 0] != EMPTY_KEY, key_scores(last), torch.inf)
        self.full = bool(torch.isfinite(self.thresholds).all())

    def column(self, c: int) -> list[int]:
        """Ids of class ``c``'s candidates, nearest first."""
        keys = self.keys[c]
        return key_ids(keys[keys[:, 0] != EMPTY_KEY]).tolist()

    def columns(self) -> list[list[int]]:
        """Every class's :meth:`column`, from one conversion of the table (empty slots sort last)."""
        counts = (self.keys[:, :, 0] != EMPTY_KEY).sum(dim=1).tolist()
        return [ids[:count] for ids, count in zip(key_ids(self.keys).tolist(), counts)]


class BalancedSelectionReducer(Reducer):
    """Streaming BASE: per-class candidate lists, then the greedy class loop.

    Args:
        inverse: (C, C) inverse weight-distance table of the head; its dtype is the one
            distances are ranked in.
        quotas: picks per class.
        depth: candidates kept per class.
        classes: keep lists only for these classes (a widening pass for one class).
    """

    def __init__(self, inverse: Tensor, quotas: list[int], depth: int, classes: Optional[list[int]] = None) -> None:
        self.inverse = inverse
        self.quotas = quotas
        self.classes = classes
        self.candidates = ClassCandidates(len(classes) if classes is not None else len(quotas), depth, inverse.dtype)
        self._buffers: Optional[tuple[Tensor, Tensor, Tensor]] = None

    def update(self, chunk: PoolOutputs) -> None:
        if len(chunk) == 0:
            return
        logits, index = chunk.logits, chunk.index
        if not (
            self.classes is None
            and logits.device.type == "cpu"
            and logits.dim() == 2
            and ranking_dtype(logits, self.inverse) == self.inverse.dtype
        ):
            check_finite(logits, "logits", index)
            self._update_dense(logits, index)
            return
        if not self.candidates.full:
            check_finite(logits, "logits", index)
            # Fill the lists from the first rows only: the rest of the block takes the cheaper path.
            head = max(_FILL_ROWS, 4 * self.candidates.depth)
            self._update_dense(logits[:head], index[:head])
            logits, index = logits[head:], index[head:]
        if logits.shape[0] == 0:
            return
        if self.candidates.full:
            self._update_in_cache(logits, index)
        else:
            self._update_dense(logits, index)

    def _update_dense(self, logits: Tensor, index: Tensor) -> None:
        distances = class_boundary_distances(logits, self.inverse)
        if self.classes is not None:
            distances = distances[:, self.classes]
        self.candidates.update(distances, index)

    def _update_in_cache(self, logits: Tensor, ids: Tensor) -> None:
        """:meth:`update` on CPU once every list is full: the same distances and test, in cache-sized pieces.

        :func:`~al_lightning.strategies.boundary.class_boundary_distances` on a whole block makes
        several block-sized temporaries, each written to memory and read back (each fresh one
        paid in page faults too), and three of its steps (``argmax``, the comparison with the
        thresholds, which makes a bool mask, and ``nonzero`` on it) cost several float passes
        each on CPU. Here the block is taken :data:`_CACHE_BYTES` of logits at a time through
        buffers kept between blocks, and those steps are done with float arithmetic and
        row reductions, exactly:

        - the predicted class p is the first position of the row's ``amax`` (argmax's
          definition: equal values, +0.0 and −0.0 included, count as the maximum), where
          ``amax − z`` is ±0: the smallest of sign(amax − z)·C + c over the row's columns c
          (small integers, exact in floats);
        - the gaps z_p − z_c are ``amax − z`` itself (the same subtraction of the same
          values), except in a row whose maximum is a zero, where the sign of a zero gap
          could differ: those rows take the gathered z_p, as the dense path;
        - d ≤ t, with t the class's threshold, is d − t⁺ < 0 with t⁺ the next float above t
          (the sign of a difference of two floats is exact, and no float lies between t and
          t⁺); rows whose smallest d − t⁺ is negative are the few looked at entry by entry.

        Then the same products, nearest boundary and values as the dense path, bit for bit;
        the passing entries of all the pieces are folded in together.
        """
        inverse = self.inverse
        logits = logits.detach().to(inverse.dtype)
        n, num_classes = logits.shape
        rows = max(8, min(n, _CACHE_BYTES // (logits.element_size() * max(1, num_classes))))
        if self._buffers is None or self._buffers[0].shape[0] < rows or self._buffers[0].dtype != logits.dtype:
            self._buffers = (
                torch.empty(rows, num_classes, dtype=logits.dtype),
                torch.empty(rows, num_classes, dtype=logits.dtype),
                torch.arange(num_classes, dtype=logits.dtype),
            )
        above = self._above()
        found: list[tuple[Tensor, Tensor, Tensor]] = []
        count = 0
        for start in range(0, n, rows):
            block = logits[start : start + rows]
            if not bool(torch.isfinite(block.sum())):  # check_finite's test, a piece at a time, in cache
                check_finite(block, "logits", ids[start : start + rows])
            size = block.shape[0]
            distances, scratch = (b[:size] for b in self._buffers[:2])
            top = block.amax(dim=1, keepdim=True)
            torch.sub(top, block, out=distances)
            torch.sign(distances, out=scratch)
            torch.add(self._buffers[2], scratch, alpha=num_classes, out=scratch)
            predicted = scratch.amin(dim=1, keepdim=True).long()
            zero = (top[:, 0] == 0).nonzero().squeeze(1)
            if zero.numel():
                distances[zero] = block[zero].gather(1, predicted[zero]) - block[zero]
            distances.mul_(torch.index_select(inverse, 0, predicted[:, 0], out=scratch))
            distances.scatter_(1, predicted, torch.inf)
            distances.scatter_(1, predicted, distances.amin(dim=1, keepdim=True))
            torch.sub(distances, above, out=scratch)
            candidates = (scratch.amin(dim=1) < 0).nonzero().squeeze(1)
            if candidates.numel() == 0:
                continue
            within, classes = sparse_nonzero(scratch[candidates] < 0)
            passing = candidates[within]
            found.append((classes, distances[passing, classes], passing + start))
            count += classes.numel()
            if count >= _FOLD_ENTRIES:  # many pass (early blocks): tighten the thresholds now
                self._fold(found, ids)
                found, count, above = [], 0, self._above()
        self._fold(found, ids)

    def _above(self) -> Tensor:
        """The next float above each class's threshold: d ≤ t exactly when d − t⁺ < 0."""
        thresholds = self.candidates.thresholds
        return torch.nextafter(thresholds, torch.full_like(thresholds, torch.inf))

    def _fold(self, found: list[tuple[Tensor, Tensor, Tensor]], ids: Tensor) -> None:
        if found:
            classes, distances, positions = (torch.cat(parts) for parts in zip(*found))
            self.candidates.add(classes, distances, ids.cpu()[positions])

    def state(self) -> Tensor:
        return self.candidates.keys.clone()

    def merge_state(self, state: Tensor) -> None:
        self.candidates.merge(state)

    def finish(self, rescan: Optional[Callable[[Reducer], None]] = None) -> Tensor:
        taken: set[int] = set()
        picked: list[int] = []
        columns = {c: column for c, (column, quota) in enumerate(zip(self.candidates.columns(), self.quotas)) if quota}
        depth = self.candidates.depth
        for c, quota in enumerate(self.quotas):
            position = 0
            while quota > 0:
                if position == len(columns[c]):
                    depth *= 4
                    columns.update(self._widen([k for k in columns if k >= c], depth, rescan))
                    if position == len(columns[c]):
                        raise RuntimeError(f"BASE: class {c} has only {position} candidates; the budget exceeds the pool")
                candidate = columns[c][position]
                position += 1
                if candidate not in taken:
                    taken.add(candidate)
                    picked.append(candidate)
                    quota -= 1
        return torch.tensor(picked, dtype=torch.long)

    def _widen(self, classes: list[int], depth: int, rescan: Optional[Callable[[Reducer], None]]) -> dict[int, list[int]]:
        """A class ran out of candidates: rescan the pool once for longer lists of every class still to come.

        One pass serves them all, so an unlucky pool costs one or two extra passes, not one per class.
        """
        if rescan is None:
            raise RuntimeError(f"BASE: class {classes[0]} needs more candidates and no rescan was provided")
        wider = BalancedSelectionReducer(self.inverse, self.quotas, depth, classes=classes)
        rescan(wider)
        return dict(zip(classes, wider.candidates.columns()))


@register("base")
class BalancedSelection(StreamingStrategy):
    """For each class in turn, select its quota of points nearest to that class's boundary.

    The paper's BASE (Algorithm 2, as its code runs it): classes are visited in order
    0..C−1 and class c takes ⌊b/C⌋ + [c < b mod C] points with the smallest class-c
    distance (see :func:`~al_lightning.strategies.boundary.class_boundary_distances`),
    skipping points an earlier class already took. Balance comes from the *predicted*
    classes: no true label is read.

    Streaming and exact: each class keeps only its ``depth`` nearest candidates (a few
    times its quota; points near several boundaries are candidates of several classes) in
    a running reduction over blocks of logits, mergeable across DDP ranks. If a class's
    list runs out during the greedy loop, one rescan of the pool gives every class still to
    come a 4× longer list, so the result equals a full sort per class. Distances are
    computed and ranked in float64 when the logits or the head are float64, in float32
    otherwise (:meth:`score_dtype`).

    Cost: O(C²·d) for the weight-distance table, O(N·C) time, O(C·depth + C²) memory
    (never N×C).

    Args:
        seed: unused (BASE is deterministic); accepted for a uniform interface.
        depth_factor: candidates kept per class, as a multiple of its quota.
        min_depth: candidates kept per class at least beyond its quota.
    """

    requires = ("logits", "weight")

    def __init__(self, seed: int = 0, depth_factor: int = 16, min_depth: int = 16) -> None:
        super().__init__(seed)
        self.depth_factor = depth_factor
        self.min_depth = min_depth

    def point_scores(self, outputs: PoolOutputs) -> Optional[Tensor]:
        """Each point's nearest class distance: its distance to the nearest boundary (as MASE's)."""
        if outputs.logits is None or outputs.weight is None:
            return None
        inverse = inverse_distance_table(outputs.weight, self.score_dtype(outputs))
        return class_boundary_distances(outputs.logits, inverse).min(dim=1).values

    def reducer(self, head: PoolOutputs, budget: int) -> BalancedSelectionReducer:
        quotas = even_shares(budget, head.weight.shape[0])
        depth = max(self.depth_factor * max(quotas), max(quotas) + self.min_depth)
        return BalancedSelectionReducer(inverse_distance_table(head.weight, self.score_dtype(head)), quotas, depth)
