"""Round-wise measures of the labeled set's class balance."""

from __future__ import annotations

import math

from torch import Tensor


def imbalance_ratio(counts: Tensor) -> float:
    """Largest over smallest per-class labeled count (inf if a class has no labels)."""
    smallest = int(counts.min())
    return math.inf if smallest == 0 else int(counts.max()) / smallest


def class_entropy(counts: Tensor) -> float:
    """Entropy (nats) of the labeled set's class distribution; log C when perfectly balanced."""
    p = counts.double() / max(1, int(counts.sum()))
    p = p[p > 0]
    return float(-(p * p.log()).sum())
