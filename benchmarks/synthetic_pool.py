"""Synthetic pools for the selection benchmarks: class-clustered embeddings and a linear head.

Embeddings h = μ_y + noise (y uniform over C classes, d dimensions), a nearest-centroid head
W = μ, b = −‖μ‖²/2, logits z = W h + b. Generated in row blocks with a fixed seed and cached
as .npy files (a full-size pool takes ~40 s to generate and 15 GB), then loaded whole.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

CACHE = Path(__file__).resolve().parent / ".cache"
BLOCK = 65_536


def class_centres(num_classes: int, dim: int, seed: int) -> torch.Tensor:
    """(C, d) seeded class means μ of norm ≈ 2, shared with benchmarks/imagenet_scale_run.py."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_classes, dim, generator=g) * (2.0 / dim**0.5)


def _head(num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centres = class_centres(num_classes, dim, seed)
    return centres, -0.5 * (centres**2).sum(1)


def _generate(n: int, num_classes: int, dim: int, seed: int, prefix: Path) -> None:
    centres, bias = _head(num_classes, dim, seed)
    features = np.lib.format.open_memmap(f"{prefix}_features.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    logits = np.lib.format.open_memmap(f"{prefix}_logits.npy", mode="w+", dtype=np.float32, shape=(n, num_classes))
    targets = np.lib.format.open_memmap(f"{prefix}_targets.npy", mode="w+", dtype=np.int64, shape=(n,))
    for start in range(0, n, BLOCK):
        rows = min(BLOCK, n - start)
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        y = torch.randint(0, num_classes, (rows,), generator=g)
        h = centres[y] + torch.randn(rows, dim, generator=g) / dim**0.5
        features[start : start + rows] = h.numpy()
        logits[start : start + rows] = (h @ centres.T + bias).numpy()
        targets[start : start + rows] = y.numpy()
    for array in (features, logits, targets):
        array.flush()


def load_pool(
    n: int, num_classes: int, dim: int, fields: set[str], seed: int = 0, mmap: bool = False
) -> dict[str, torch.Tensor]:
    """The pool's ``fields`` (subset of logits, features, targets, weight, bias), loaded into memory.

    ``mmap=True`` maps the cached arrays instead (read-only, pages read on first use), so
    that a full-size pool need not fit in memory twice over.
    """
    CACHE.mkdir(exist_ok=True)
    prefix = CACHE / f"pool_n{n}_c{num_classes}_d{dim}_s{seed}"
    if not Path(f"{prefix}_targets.npy").exists():
        _generate(n, num_classes, dim, seed, prefix)
    weight, bias = _head(num_classes, dim, seed)
    pool: dict[str, torch.Tensor] = {"weight": weight, "bias": bias}
    for field in fields & {"logits", "features", "targets"}:
        if mmap:
            with warnings.catch_warnings():  # torch warns that the mapping is read-only; nothing writes to it
                warnings.simplefilter("ignore", UserWarning)
                pool[field] = torch.from_numpy(np.load(f"{prefix}_{field}.npy", mmap_mode="r"))
        else:
            pool[field] = torch.from_numpy(np.load(f"{prefix}_{field}.npy"))
    return pool
