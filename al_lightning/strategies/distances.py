"""Blocked squared Euclidean distances: no (N, K) or (N, K, d) temporary beyond ~64 MB blocks.

Shared by the strategies that look at feature-space geometry (Coreset, BADGE, balancing).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

#: Bytes of temporaries per block when a computation is streamed over rows (and columns).
BLOCK_BYTES = 64 << 20

#: Squared distances below this fraction of ‖x‖² + ‖y‖² are float32 rounding of the expansion
#: ‖x‖² + ‖y‖² − 2x·y (a few 1e-7 of it, measured up to C = 1000, d = 2048), so they count as 0:
#: a duplicate of a centre then gets no D² weight instead of a random tiny one.
ROUNDING = 1e-5


def expanded_sq_distances(sq_x: Tensor, sq_y: Tensor, cross: Tensor) -> Tensor:
    """(N, K) ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y from squared norms (N,), (K,) and inner products (N, K).

    ``cross`` is overwritten. Values within :data:`ROUNDING` of zero become exactly 0.
    """
    scale = sq_x[:, None] + sq_y[None, :]
    distances = cross.mul_(-2.0).add_(scale)
    return distances.masked_fill_(distances <= ROUNDING * scale, 0.0)


def nearest_sq_distances(sq_x: Tensor, sq_y: Tensor, cross: Callable[[slice, slice], Tensor]) -> Tensor:
    """(N,) squared distance from each of N points to the nearest of K centres.

    ``cross(rows, cols)`` returns the (rows, cols) block of inner products; blocks are sized so
    that temporaries stay near :data:`BLOCK_BYTES`, whatever N and K are.
    """
    n, k = sq_x.numel(), sq_y.numel()
    cols = max(1, min(k, 4096))
    rows = max(1, BLOCK_BYTES // (16 * cols))
    nearest = torch.full((n,), torch.inf, device=sq_x.device)
    for r in range(0, n, rows):
        rs = slice(r, r + rows)
        for c in range(0, k, cols):
            cs = slice(c, c + cols)
            block = expanded_sq_distances(sq_x[rs], sq_y[cs], cross(rs, cs)).amin(dim=1)
            torch.minimum(nearest[rs], block, out=nearest[rs])
    return nearest


def nearest_centre_sq_distances(points: Tensor, centres: Tensor) -> Tensor:
    """(N,) squared distance from every row of ``points`` to its nearest row of ``centres``."""
    points, centres = points.float(), centres.float()
    return nearest_sq_distances(points.square().sum(1), centres.square().sum(1), lambda r, c: points[r] @ centres[c].T)


def squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    """(N, K) squared distances between rows of ``points`` and of ``centres``, computed in row blocks."""
    points, centres = points.float(), centres.float()
    sq_points, sq_centres = points.square().sum(1), centres.square().sum(1)
    out = torch.empty(points.shape[0], centres.shape[0], device=points.device)
    rows = max(1, BLOCK_BYTES // (4 * max(centres.shape[0], points.shape[1])))
    for start in range(0, points.shape[0], rows):
        block = slice(start, start + rows)
        out[block] = expanded_sq_distances(sq_points[block], sq_centres, points[block] @ centres.T)
    return out
