"""Round-wise measures of the labeled set's class balance, and the CSV files they go to."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from al_lightning.io import atomic_write_text


def imbalance_ratio(counts: Tensor) -> float:
    """Largest over smallest per-class labeled count (inf if a class has no labels)."""
    smallest = int(counts.min())
    return math.inf if smallest == 0 else int(counts.max()) / smallest


def class_entropy(counts: Tensor) -> float:
    """Entropy (nats) of the labeled set's class distribution; log C when perfectly balanced."""
    p = counts.double() / max(1, int(counts.sum()))
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rewrite ``path`` atomically with ``rows`` under the header ``columns``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
