"""BADGE's last-layer gradient embedding, computed from logits and features alone.

For a linear head z = W h + b and the cross-entropy loss against the predicted label
ŷ = argmax z, the gradient with respect to W is the outer product g(x) = δ ⊗ h with
δ = softmax(z) − onehot(ŷ) (Ash et al., 2020, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds"). Because g is an outer product, its norms, inner products
and 2-D average pooling factor into O(C + d) work per point, no backward pass and no (N, C·d)
matrix: at ImageNet scale (C = 1000, d = 2048) one embedding has 2M entries, 8 MB in float32.

The sign of δ does not matter (Ash et al.'s code uses onehot − softmax): distances are the same.

For selection, δ and h go on fixed-point grids (:class:`GradientGrid`,
:mod:`~al_lightning.strategies.distances`): their inner products are then exact integers, and
a distance between embeddings is a fixed sequence of correctly rounded float64 operations on
them (:func:`gradient_sq_distances`), the same bits on any device, thread count or BLAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from al_lightning.strategies.distances import BLOCK_BYTES, dots, grid_exponent, on_grid, sq_norms


def head_logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Logits h Wᵀ + b of the linear head, for points whose logits the caller does not have (the labeled set).

    One float32 matrix product: like the model's own logits, its last bits may depend on the
    BLAS, the thread count and the shape of the call (outside the exactness promise of
    :mod:`~al_lightning.strategies.distances`).
    """
    return torch.addmm(bias.detach().float(), features.detach().float(), weight.detach().float().T)


def gradient_factors(logits: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """The factors (δ, h) of g = δ ⊗ h, in float32: δ = softmax(z) − onehot(argmax z), (N, C); h, (N, d).

    No division by a batch size: the gradient of one point's loss, so every point is on the
    same scale (the published code differentiates the batch-mean loss, so it scales each point
    by 1/(its batch's size): 1/B, but 1/B' > 1/B for the last, smaller batch).
    """
    z = logits.detach().float()
    delta = torch.softmax(z, dim=1)
    delta.scatter_add_(1, z.argmax(dim=1, keepdim=True), torch.full((z.shape[0], 1), -1.0, device=z.device))
    return delta, features.detach().float()


def gradient_sq_norms(delta: Tensor, features: Tensor) -> Tensor:
    """(N,) ‖g‖² = ‖δ‖²·‖h‖² in float32, O(N·(C + d)) (for looking at embeddings; selection uses :class:`GradientGrid`)."""
    return torch.linalg.vector_norm(delta, dim=1).square() * torch.linalg.vector_norm(features, dim=1).square()


@dataclass(frozen=True)
class GradientGrid:
    """Gradient embeddings g = δ ⊗ h of some points, held as their two factors on fixed-point grids.

    ``delta`` (n, C) and ``h`` (n, d) are float32 integers q_δ = round(δ·2^e_δ), q_h = round(h·2^e_h)
    (:func:`~al_lightning.strategies.distances.on_grid`); ``sq`` (n,) float64 is
    fl(‖q_δ‖²·‖q_h‖²), the squared norm of q_δ ⊗ q_h (two exact integers, one rounding).
    The grid embedding is g·2^``exponent`` up to the rounding of the factors, ``exponent`` = e_δ + e_h.
    """

    delta: Tensor
    h: Tensor
    sq: Tensor
    exponent: int

    def __len__(self) -> int:
        return self.delta.shape[0]


def gradient_grids(*factors: tuple[Tensor, Tensor]) -> list[GradientGrid]:
    """The (δ, h) pairs of :func:`gradient_factors` for several point sets (the pool, the labeled set) on common grids.

    One exponent for every δ (from the largest |δ| of all the sets, C dimensions) and one for
    every h (d dimensions), by :func:`~al_lightning.strategies.distances.grid_exponent`, so
    that distances between the sets are exact functions of the grid values.
    """
    exponent_delta = grid_exponent([delta for delta, _ in factors], factors[0][0].shape[1])
    exponent_h = grid_exponent([h for _, h in factors], factors[0][1].shape[1])
    grids = []
    for delta, h in factors:
        q_delta, q_h = on_grid(delta, exponent_delta), on_grid(h, exponent_h)
        grids.append(
            GradientGrid(q_delta, q_h, torch.mul(sq_norms(q_delta), sq_norms(q_h)), exponent_delta + exponent_h)
        )
    return grids


def gradient_sq_distances(sq_x: Tensor, sq_y: Tensor, delta_dots: Tensor, h_dots: Tensor) -> Tensor:
    """‖g_x − g_y‖² of grid embeddings from their squared norms and the exact inner products of their factors.

    ‖q_δ ⊗ q_h − q_δ' ⊗ q_h'‖² = ‖g_x‖² + ‖g_y‖² − 2(q_δ·q_δ')(q_h·q_h'), computed as exactly this
    sequence of float64 operations, each a separate elementwise torch call:

        t = fl(a·b)                 a = q_δ·q_δ', b = q_h·q_h' (``delta_dots``, ``h_dots``: exact integers)
        s = fl(sq_x + sq_y)         sq = fl(‖q_δ‖²·‖q_h‖²) (:class:`GradientGrid`)
        D = max(fl(s − 2t), 0)      (2t is exact, so fused or not this rounds once)

    IEEE-754 rounds each operation correctly (to nearest, ties to even), so D is the same
    bits on any CPU or CUDA device with float64, and a point's value never depends on the
    others computed with it. Not an integer (the products have up to 104 bits), but a
    duplicate (same factors) gets exactly 0. The clamp removes the rounding below 0 of near
    duplicates. Broadcasts: (n,) with () or (n, 1) with (1, k). ``delta_dots`` is overwritten.
    """
    products = torch.mul(delta_dots, h_dots, out=delta_dots)
    return torch.add(sq_x, sq_y).add_(products, alpha=-2.0).clamp_min_(0.0)


def gradient_sq_distances_to(grid: GradientGrid, position: int) -> Tensor:
    """(n,) :func:`gradient_sq_distances` from every point of ``grid`` to its point at ``position``."""
    delta_dots = dots(grid.delta, grid.delta[position])
    h_dots = dots(grid.h, grid.h[position])
    return gradient_sq_distances(grid.sq, grid.sq[position], delta_dots, h_dots)


def nearest_gradient_sq_distances(points: GradientGrid, centres: GradientGrid) -> Tensor:
    """(n,) the smallest :func:`gradient_sq_distances` from each of ``points`` to any of ``centres``, in ~64 MB blocks.

    The inner products of the factors are exact float64 matrix products of the grid values, so a
    point's value does not depend on the block it is computed in.
    """
    n, k = len(points), len(centres)
    nearest = torch.full((n,), torch.inf, dtype=torch.float64, device=points.sq.device)
    cols = max(1, min(k, 2048))
    rows = max(1, BLOCK_BYTES // (8 * max(2 * cols, points.delta.shape[1] + points.h.shape[1])))
    for c in range(0, k, cols):
        cs = slice(c, min(k, c + cols))
        centre_delta, centre_h = centres.delta[cs].to(torch.float64), centres.h[cs].to(torch.float64)
        for r in range(0, n, rows):
            rs = slice(r, min(n, r + rows))
            delta_dots = torch.mm(points.delta[rs].to(torch.float64), centre_delta.T)
            h_dots = torch.mm(points.h[rs].to(torch.float64), centre_h.T)
            block = gradient_sq_distances(points.sq[rs, None], centres.sq[None, cs], delta_dots, h_dots)
            torch.minimum(nearest[rs], block.amin(dim=1), out=nearest[rs])
    return nearest


def pool_bounds(length: int, pooled_dim: int) -> tuple[Tensor, Tensor]:
    """Start (inclusive) and end (exclusive) of each of the ``pooled_dim`` bins of adaptive average pooling over ``length``.

    PyTorch's rule, the same along each axis of ``adaptive_avg_pool2d`` as in ``adaptive_avg_pool1d``:
    bin i is [⌊i·L/P⌋, ⌈(i+1)·L/P⌉), so bins overlap by one entry when P does not divide L, and
    repeat entries when L < P.
    """
    i = torch.arange(pooled_dim, dtype=torch.int64)
    return (i * length) // pooled_dim, ((i + 1) * length + pooled_dim - 1) // pooled_dim


POOLED_ROWS = 16
"""The paper's code's ``POOLING_H``: at most this many class bins in partitioned BADGE's pooled grid."""

POOLED_DIM = 512
"""The paper's code's ``POOLING_AREA``: the pooled grid has (about) this many entries."""


def pool_grid(num_classes: int, pooled_dim: int = POOLED_DIM, pooled_rows: int = POOLED_ROWS) -> tuple[int, int]:
    """(h, w): the ``adaptive_avg_pool2d`` output size the paper's code pools the (C, d) gradient grid to.

    The paper's code (``badge_sampler.py``, ``use_adaptive_pool``)::

        pool_h = min(POOLING_H, grad_embed.size(1))      # POOLING_H = 16, size(1) = C
        pool_w = int(float(POOLING_AREA) / pool_h)       # POOLING_AREA = 512

    so h = min(16, C), w = ⌊512 / h⌋: 16 × 32 = 512 for C ≥ 16, but C × ⌊512/C⌋ for fewer
    classes (10 × 51 = 510 for C = 10, 3 × 170 = 510 for C = 3). Here h is also capped at
    ``pooled_dim`` so that w ≥ 1 for a ``pooled_dim`` below ``pooled_rows`` (the code's
    w would be 0); with the paper's 512 and 16 the cap never binds.
    """
    h = min(pooled_rows, num_classes, pooled_dim)
    return h, pooled_dim // h


def pool_outer(u: Tensor, x: Tensor, output_size: tuple[int, int]) -> Tensor:
    """(N, h·w) ``adaptive_avg_pool2d`` of the outer products u ⊗ x, (N, L, d) grids, to (h, w), flattened row-major.

    The mean of an outer product over a rectangular bin R × S is mean_R(u) · mean_S(x), and the
    2-D bins are the products of the 1-D bins of each axis (:func:`pool_bounds`, overlaps and
    repeats included), so this is ``adaptive_avg_pool1d`` of u to h bins times that of x to w
    bins: O(L + d + h·w) per point, never the (N, L, d) grid. Computed in the inputs' dtype.
    """
    h, w = output_size
    pooled_u = F.adaptive_avg_pool1d(u[:, None, :], h)[:, 0]
    pooled_x = F.adaptive_avg_pool1d(x[:, None, :], w)[:, 0]
    return (pooled_u[:, :, None] * pooled_x[:, None, :]).reshape(u.shape[0], h * w)


def pooled_gradient_embedding(
    logits: Tensor,
    features: Tensor,
    output_size: tuple[int, int] = (POOLED_ROWS, POOLED_DIM // POOLED_ROWS),
    rows: Optional[Tensor] = None,
) -> Tensor:
    """(n, h·w) pooled gradient embeddings, as partitioned BADGE uses (the paper's appendix A.3 and its code).

    The paper's code lays each point's gradient out as the (C, d) grid
    ``grad[:, :, None] * embedding[:, None, :]``, g[c, j] = (p_c − 1[c = ŷ]) · h_j (rows: classes,
    columns: features), pools it with ``F.adaptive_avg_pool2d(grad_embed, (h, w))`` and flattens
    the (h, w) result row-major. This is equal to that, for ``output_size`` = (h, w), without
    forming the grid (:func:`pool_outer` on the factors δ and h of :func:`gradient_factors`):
    O(C + d + h·w) per point, in float64, returned as float32. The paper's code's output size
    for C classes is :func:`pool_grid` (16 × 32 for C ≥ 16); an (h, w) larger than (C, d)
    repeats rows or columns, as ``adaptive_avg_pool2d`` does.

    Unlike the paper's code, no 1/B factor: that code differentiates the batch-mean loss, which
    scales every point by 1/(its batch's size). A common scale changes no k-means++ pick; only
    the last, smaller batch of each partition got a larger one there.

    Args:
        logits: (N, C) head outputs.
        features: (N, d) penultimate embeddings.
        output_size: (h, w), class bins × feature bins.
        rows: positions into ``logits`` and ``features`` to embed (a partition); they are
            gathered a block at a time, so the selected rows are never copied as a whole.
    """
    h, w = output_size
    if h < 1 or w < 1:
        raise ValueError(f"pooled_gradient_embedding needs an output size of at least (1, 1), got {tuple(output_size)}")
    num_classes, dim = logits.shape[1], features.shape[1]
    n = logits.shape[0] if rows is None else rows.numel()
    step = max(1, BLOCK_BYTES // (8 * (2 * num_classes + 2 * dim + 2 * (h + w) + 2 * h * w)))
    pooled = torch.empty(n, h * w, device=logits.device)
    for start in range(0, n, step):
        block = slice(start, start + step) if rows is None else rows[start : start + step]
        delta, feats = gradient_factors(logits[block], features[block])
        bins = pool_outer(delta.double(), feats.double(), (h, w))
        pooled[start : start + bins.shape[0]] = bins
    return pooled
