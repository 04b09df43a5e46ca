"""Feature-space distances to the decision boundaries of a linear head, from the logits alone.

For a linear head z = W h + b, the boundary between classes p and c is the hyperplane
z_p = z_c, and the distance from h to it is |z_p − z_c| / ‖w_p − w_c‖. With a C×C table of
1/‖w_i − w_j‖ (from the Gram matrix W Wᵀ) every distance costs O(1) per (point, class) after
the forward pass: O(N·C) for the pool, where the paper's code built a (B, C, d) tensor of
w_p − w_c per batch, O(N·C·d).
"""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.ranking import first_argmax, ranking_dtype


def weight_distance_table(weight: Tensor) -> Tensor:
    """(C, C) table of ‖w_i − w_j‖ between the head's class weight vectors, in float64.

    From the Gram matrix (‖w_i‖² + ‖w_j‖² − 2 w_i·w_j) in float64, which avoids the
    cancellation that float32 would suffer for nearby weight vectors.
    """
    w = weight.detach().to(torch.float64)
    gram = w @ w.T
    sq = gram.diagonal()
    table = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min_(0.0).sqrt_()
    table.fill_diagonal_(0.0)
    return table


def inverse_distance_table(weight: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(C, C) table of 1/‖w_i − w_j‖ in ``dtype`` (computed in float64), 0 on the diagonal.

    Two classes with identical weight vectors have no boundary: their entry is the largest
    float, so a positive logit gap becomes +inf (an exact tie stays at distance 0).
    """
    table = weight_distance_table(weight)
    inverse = torch.where(table > 0, 1.0 / table, torch.finfo(dtype).max)
    inverse.fill_diagonal_(0.0)
    return inverse.to(device=weight.device, dtype=dtype)


def pairwise_boundary_distances(logits: Tensor, inverse: Tensor) -> tuple[Tensor, Tensor]:
    """Distances from each point to the boundary between its predicted class and every class.

    Args:
        logits: (B, C) head outputs.
        inverse: (C, C) :func:`inverse_distance_table` of the head.

    Returns:
        ``(distances, predicted)``: (B, C) distances (z_p − z_c)/‖w_p − w_c‖, +inf at c = p,
        in float64 if ``logits`` or ``inverse`` is float64 and float32 otherwise, and the
        (B,) predicted classes p.
    """
    dtype = ranking_dtype(logits, inverse)
    logits = logits.detach().to(dtype)
    # The first maximum and a gather: max's values and (first) indices, faster than max(dim=1).
    predicted = first_argmax(logits)
    top = logits.gather(1, predicted[:, None])
    distances = top - logits
    distances.mul_(inverse.to(logits.device, dtype).index_select(0, predicted))
    distances.scatter_(1, predicted[:, None], torch.inf)
    return distances, predicted


def boundary_distance(logits: Tensor, inverse: Tensor) -> Tensor:
    """(B,) distance from each point to the nearest decision boundary of the head (MASE's DDB).

    The region where the prediction changes is the union of the half-spaces z_c ≥ z_p, so
    the exact distance is the smallest pairwise boundary distance.
    """
    distances, _ = pairwise_boundary_distances(logits, inverse)
    return distances.min(dim=1).values


def class_boundary_distances(logits: Tensor, inverse: Tensor) -> Tensor:
    """(B, C) distance of each point to the boundary of each class c, as BASE ranks them.

    For c ≠ p (the predicted class) it is the distance to the boundary between p and c,
    (z_p − z_c)/‖w_p − w_c‖: how far the point is from entering class c. For c = p it is
    the distance to the nearest boundary (MASE's DDB): how far it is from leaving class c.
    This follows the paper's code (its DCSDB for c ≠ p is the pairwise boundary).
    """
    distances, predicted = pairwise_boundary_distances(logits, inverse)
    nearest = distances.amin(dim=1, keepdim=True)  # min's values, without its (slower) indices
    return distances.scatter_(1, predicted[:, None], nearest)
