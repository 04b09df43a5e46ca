"""BADGE's last-layer gradient embedding, computed from logits and features alone.

For a linear head z = W h + b and the cross-entropy loss against the predicted label
ŷ = argmax z, the gradient with respect to W is the outer product g(x) = δ ⊗ h with
δ = softmax(z) − onehot(ŷ) (Ash et al., 2020, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds"). Because g is an outer product, its norms, inner products
and average pooling factor into O(C + d) work per point, no backward pass and no (N, C·d)
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
    same scale (the published code divided its last, smaller batch by the full batch size).
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
    """Start (inclusive) and end (exclusive) of each of the ``pooled_dim`` bins of ``adaptive_avg_pool1d`` over ``length``.

    PyTorch's rule: bin i is [⌊i·L/P⌋, ⌈(i+1)·L/P⌉), so bins overlap by one entry when P does not
    divide L, and repeat entries when L < P.
    """
    i = torch.arange(pooled_dim, dtype=torch.int64)
    return (i * length) // pooled_dim, ((i + 1) * length + pooled_dim - 1) // pooled_dim


def pooled_gradient_embedding(
    logits: Tensor,
    features: Tensor,
    pooled_dim: int = 512,
    rows: Optional[Tensor] = None,
) -> Tensor:
    """(n, pooled_dim) average-pooled gradient embeddings, as partitioned BADGE uses (the paper's appendix A.3).

    Equal to ``F.adaptive_avg_pool1d(g.reshape(n, 1, C * d), pooled_dim)`` with g flattened in
    (C, d) row-major order, without forming g. The flat prefix sum
    G(j) = Σ_{j' < j} g_j' = D_c·S_d + δ_c·S_k, with (c, k) = divmod(j, d) and D, S the prefix
    sums of δ and h, gives each bin [s, e) as (G(e) − G(s)) / (e − s): O(C + d + pooled_dim)
    per point. The prefix sums are float64, so the difference keeps float32 accuracy. As
    ``adaptive_avg_pool1d`` does, a C·d smaller than ``pooled_dim`` is stretched by repeating
    entries: the output always has ``pooled_dim`` columns.

    Args:
        logits: (N, C) head outputs.
        features: (N, d) penultimate embeddings.
        pooled_dim: number of bins.
        rows: positions into ``logits`` and ``features`` to embed (a partition); they are
            gathered a block at a time, so the selected rows are never copied as a whole.
    """
    num_classes, dim = logits.shape[1], features.shape[1]
    n = logits.shape[0] if rows is None else rows.numel()
    starts, ends = pool_bounds(num_classes * dim, pooled_dim)
    bounds = torch.cat([starts, ends]).to(logits.device)
    cls, col = bounds // dim, bounds % dim
    lengths = (ends - starts).to(device=logits.device, dtype=torch.float64)
    step = max(1, BLOCK_BYTES // (8 * (3 * num_classes + 2 * dim + 8 * pooled_dim)))
    pooled = torch.empty(n, pooled_dim, device=logits.device)
    for start in range(0, n, step):
        block = slice(start, start + step) if rows is None else rows[start : start + step]
        delta, h = gradient_factors(logits[block], features[block])
        delta = delta.double()
        # D_c for c = 0..C, and δ padded with δ_C = 0 for the end bound j = C·d.
        class_prefix = F.pad(delta.cumsum(dim=1), (1, 0))
        delta = F.pad(delta, (0, 1))
        feature_prefix = F.pad(h.double().cumsum(dim=1), (1, 0))
        flat_prefix = class_prefix[:, cls] * feature_prefix[:, dim:] + delta[:, cls] * feature_prefix[:, col]
        bins = (flat_prefix[:, pooled_dim:] - flat_prefix[:, :pooled_dim]) / lengths
        pooled[start : start + bins.shape[0]] = bins
    return pooled
