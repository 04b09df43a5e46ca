"""BADGE's last-layer gradient embedding, computed from logits and features alone.

For a linear head z = W h + b and the cross-entropy loss against the predicted label
ŷ = argmax z, the gradient with respect to W is the outer product g(x) = δ ⊗ h with
δ = softmax(z) − onehot(ŷ) (Ash et al., 2020, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds"). Because g is an outer product, its norms, inner products
and 2-D average pooling factor into O(C + d) work per point, no backward pass and no (N, C·d)
matrix: at ImageNet scale (C = 1000, d = 2048) one embedding has 2M entries, 8 MB in float32.

The sign of δ does not matter (Ash et al.'s code uses onehot − softmax): distances are the same.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from al_lightning.strategies.distances import BLOCK_BYTES, expanded_sq_distances


def head_logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Logits h Wᵀ + b of the linear head, for points whose logits the caller does not have (the labeled set)."""
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
    """(N,) ‖g‖² = ‖δ‖²·‖h‖², O(N·(C + d))."""
    return torch.linalg.vector_norm(delta, dim=1).square() * torch.linalg.vector_norm(features, dim=1).square()


def gradient_sq_distances(
    delta_x: Tensor,
    h_x: Tensor,
    delta_y: Tensor,
    h_y: Tensor,
    sq_x: Optional[Tensor] = None,
    sq_y: Optional[Tensor] = None,
) -> Tensor:
    """(N, K) squared distances between gradient embeddings of N points x and K points y.

    ‖g_x − g_y‖² = ‖δ_x‖²‖h_x‖² + ‖δ_y‖²‖h_y‖² − 2(δ_x·δ_y)(h_x·h_y): O(N·K·(C + d)), so the
    distances from all points to one centre cost O(N·(C + d)). Pass the squared norms if known.
    """
    sq_x = gradient_sq_norms(delta_x, h_x) if sq_x is None else sq_x
    sq_y = gradient_sq_norms(delta_y, h_y) if sq_y is None else sq_y
    cross = (delta_x @ delta_y.T).mul_(h_x @ h_y.T)
    return expanded_sq_distances(sq_x, sq_y, cross)


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
