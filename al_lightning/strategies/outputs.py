"""What a strategy sees of the model and the pool: :class:`PoolOutputs`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError

#: Fields with one row per scored point: sliced into blocks, sharded across ranks, gathered.
PER_POINT_FIELDS = ("logits", "features", "targets", "images")
#: Fields shared by every point: the head, the labeled set, the number of classes.
SHARED_FIELDS = ("weight", "bias", "labeled_features", "labeled_targets", "num_classes")


@dataclass
class PoolOutputs:
    """Model outputs on the unlabeled pool, plus the linear head and the labeled set.

    Only ``index`` is mandatory; a strategy says which other fields it needs
    (``Strategy.requires``) and accepts ``None`` for the rest, so a caller computes only
    what the chosen strategy uses (BASE and MASE need ``logits`` and ``weight``, not
    ``features``).

    Attributes:
        index: (N,) pool indices of the scored points; ``select`` returns values from it.
        logits: (N, C) head outputs.
        features: (N, d) penultimate embeddings, the head's input.
        weight: (C, d) weight of the linear head.
        bias: (C,) bias of the linear head.
        labeled_features: (M, d) embeddings of the labeled set.
        labeled_targets: (M,) labels of the labeled set.
        targets: (N,) true labels of the pool. The cheating ``balanced_random`` baseline
            reads them all (it requires them); ``balancing`` accepts them and reads one per
            pick, as the oracle's answer for that pick (label feedback), when the oracle can
            answer at once (the simulated oracle); without them it assumes each pick's class.
        images: (N, channels, H, W) the pool's images, for strategies that look at pixels
            (VAAL); the query callback streams them batch by batch instead.
        num_classes: C, the classifier's number of classes. Inferred from ``logits``,
            ``weight`` or ``bias`` when one is given; strategies that read only labels
            (``balancing``, ``balanced_random``) need it given, since a class that has no
            labeled point yet is invisible in the labels.
    """

    index: Tensor
    logits: Optional[Tensor] = None
    features: Optional[Tensor] = None
    weight: Optional[Tensor] = None
    bias: Optional[Tensor] = None
    labeled_features: Optional[Tensor] = None
    labeled_targets: Optional[Tensor] = None
    targets: Optional[Tensor] = None
    images: Optional[Tensor] = None
    num_classes: Optional[int] = None

    def __post_init__(self) -> None:
        self.index = torch.as_tensor(self.index, dtype=torch.long)
        if self.index.dim() != 1:
            raise ConfigurationError(f"PoolOutputs.index must be 1-D (N,), got shape {tuple(self.index.shape)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "num_classes" and value is not None and not isinstance(value, Tensor):
                setattr(self, f.name, torch.as_tensor(value))
        self._check_shapes()
        self._check_num_classes()

    def __len__(self) -> int:
        return self.index.numel()

    def _head_classes(self) -> Optional[int]:
        """C as ``logits``, ``weight`` or ``bias`` give it (the first present), or None."""
        for value, dim in ((self.logits, 1), (self.weight, 0), (self.bias, 0)):
            if value is not None:
                return value.shape[dim]
        return None

    def _check_num_classes(self) -> None:
        head = self._head_classes()
        if self.num_classes is None:
            self.num_classes = head
            return
        if isinstance(self.num_classes, Tensor):
            self.num_classes = int(self.num_classes)
        if self.num_classes < 1:
            raise ConfigurationError(f"PoolOutputs.num_classes must be >= 1, got {self.num_classes}")
        if head is not None and head != self.num_classes:
            raise ConfigurationError(f"PoolOutputs.num_classes is {self.num_classes} but the logits/head have {head} classes")
        for name in ("targets", "labeled_targets"):
            value = getattr(self, name)
            if value is not None and value.numel() and (int(value.min()) < 0 or int(value.max()) >= self.num_classes):
                raise ConfigurationError(
                    f"PoolOutputs.{name} must lie in [0, {self.num_classes}) (num_classes), got values in "
                    f"[{int(value.min())}, {int(value.max())}]"
                )

    def _check_shapes(self) -> None:
        n = len(self)
        expected = {
            "logits": (n, None),
            "features": (n, None),
            "targets": (n,),
            "labeled_targets": (None,),
            "bias": (None,),
            "weight": (None, None),
            "labeled_features": (None, None),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
                want = "(" + ", ".join("N" if s == n else "*" if s is None else str(s) for s in shape) + ")"
                raise ConfigurationError(
                    f"PoolOutputs.{name} has shape {tuple(value.shape)}, expected {want} with N={n} "
                    "(the length of `index`)"
                )
        c = self._head_classes()
        for name, dim in (("logits", 1), ("weight", 0), ("bias", 0)):
            value = getattr(self, name)
            if value is not None and value.shape[dim] != c:
                raise ConfigurationError(
                    f"PoolOutputs.{name} has {value.shape[dim]} classes but another field has {c}"
                )
        d = next((v.shape[1] for v in (self.features, self.weight, self.labeled_features) if v is not None), None)
        for name in ("features", "weight", "labeled_features"):
            value = getattr(self, name)
            if value is not None and value.shape[1] != d:
                raise ConfigurationError(f"PoolOutputs.{name} has feature dimension {value.shape[1]}, another field has {d}")
        if self.labeled_features is not None and self.labeled_targets is not None:
            if self.labeled_features.shape[0] != self.labeled_targets.shape[0]:
                raise ConfigurationError(
                    f"PoolOutputs.labeled_features has {self.labeled_features.shape[0]} rows but "
                    f"labeled_targets has {self.labeled_targets.shape[0]}"
                )
        if self.images is not None and (self.images.dim() < 2 or self.images.shape[0] != n):
            raise ConfigurationError(f"PoolOutputs.images has shape {tuple(self.images.shape)}, expected (N, ...) with N={n}")
        if self.index.numel() and self.index.unique().numel() != n:
            raise ConfigurationError("PoolOutputs.index holds repeated pool indices; de-duplicate before selecting")


def check_finite(values: Tensor, field: str, index: Optional[Tensor] = None) -> None:
    """Refuse NaN or infinite values in ``PoolOutputs.<field>``: they mean a broken model or input, not an uncertain one.

    One summing pass decides the usual case without a mask of the tensor's size; only when
    the sum is not finite (a bad value, or finite values overflowing it) are rows checked,
    block by block. Non-float tensors pass. ``index`` names bad rows by pool index (for
    per-point fields); without it they are named by row.
    """
    if not values.is_floating_point() or bool(torch.isfinite(values.sum())):
        return
    rows = values.reshape(values.shape[0], -1)
    step = max(1, (1 << 22) // max(1, rows.shape[1]))
    bad_rows = torch.cat(
        [(~torch.isfinite(rows[s : s + step])).any(dim=1).nonzero().squeeze(1) + s for s in range(0, rows.shape[0], step)]
    )
    if bad_rows.numel():
        first = bad_rows[:5]
        where = f"pool indices {index[first.to(index.device)].tolist()}" if index is not None else f"rows {first.tolist()}"
        unit = "points" if index is not None else "rows"
        raise ConfigurationError(
            f"PoolOutputs.{field} holds NaN or infinite values for {bad_rows.numel()} of {rows.shape[0]} {unit} "
            f"({where}...); check the model (diverged training, fp16 overflow) and its inputs before querying"
        )
