"""BADGE: k-means++ seeding on last-layer gradient embeddings (Ash et al., 2020)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from al_lightning.strategies.gradient_embedding import (
    gradient_factors,
    gradient_grids,
    gradient_sq_distances_to,
    head_logits,
    nearest_gradient_sq_distances,
)
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


def d2_sample(weights: Tensor, taken: list[int], generator: torch.Generator) -> int:
    """A position drawn with probability ∝ ``weights`` (≥ 0), or uniformly from those not ``taken`` if all are 0.

    Inverse-CDF sampling: u = U·total with U one float64 ``torch.rand`` from ``generator``,
    total the last entry of the float64 running sum of the weights, and the first position
    whose running sum exceeds u (``searchsorted``, right side). The running sum is
    ``torch.cumsum`` on the CPU, a sequential scan, so the same weights (exact ones, from
    :mod:`~al_lightning.strategies.distances`) give the same draw on any device. It has no
    limit on the number of points (``torch.multinomial`` stops at 2**24) and never returns a
    zero-weight position. With all weights 0: one ``torch.randint`` over the positions not taken.
    """
    cdf = weights.detach().to("cpu", torch.float64).cumsum(dim=0)
    total = cdf[-1:]
    if float(total) > 0:
        u = torch.rand(1, generator=generator, dtype=torch.float64) * total
        # u < total unless rounding made it equal: then take the first point that reaches the total.
        return int(torch.searchsorted(cdf, u, right=True)) if bool(u < total) else int(torch.searchsorted(cdf, total))
    free = torch.ones(weights.numel(), dtype=torch.bool)
    free[taken] = False
    candidates = free.nonzero().squeeze(1)
    return int(candidates[torch.randint(candidates.numel(), (1,), generator=generator)])


def kmeans_pp(
    sq_norms: Tensor,
    distances_to: Callable[[int], Tensor],
    budget: int,
    generator: torch.Generator,
    nearest: Optional[Tensor] = None,
) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): ``budget`` positions in selection order.

    Each pick is drawn with probability ∝ its squared distance to the nearest centre so far
    (D² sampling); a running minimum keeps that distance, updated with one call to
    ``distances_to`` per pick.

    Args:
        sq_norms: (N,) squared norms of the points.
        distances_to: ``distances_to(i)`` gives the (N,) squared distances to point i.
        budget: number of picks, at most N.
        generator: the source of every random draw.
        nearest: (N,) squared distances to existing centres (the labeled set). Without it,
            the first pick is the point of largest norm, as Ash et al.'s implementation starts.
    """
    picks: list[int] = []
    for _ in range(budget):
        pick = int(sq_norms.argmax()) if nearest is None else d2_sample(nearest, picks, generator)
        picks.append(pick)
        if len(picks) < budget:
            distances = distances_to(pick)
            nearest = distances if nearest is None else torch.minimum(nearest, distances)
            # A centre's own distance: 0 already for exact distances; said here so that no caller's rounding draws it again.
            nearest[pick] = 0.0
    return torch.tensor(picks, dtype=torch.long)


@register("badge")
class Badge(Strategy):
    """Diverse, uncertain points: k-means++ seeding on the gradient embeddings of the last layer.

    Ash et al. (2020), "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
    Bounds", as the paper's baseline (BADGE). g(x) = (softmax(z) − onehot(ŷ)) ⊗ h with
    ŷ = argmax z (:mod:`~al_lightning.strategies.gradient_embedding`): its norm is large for
    uncertain points, and D² sampling spreads the picks.

    Two variants, chosen by ``labeled_centres``:

    - ``True`` (default, the paper's code): the labeled points' embeddings (their logits
      from the head, ``weight`` and ``bias``) are existing centres, so the first pick is
      already drawn by D² away from the labeled set. Requires ``labeled_features``; an
      empty (0, d) labeled set falls back to the largest-‖g‖ first pick.
    - ``False`` (Ash et al.'s original): seeding from the unlabeled pool only, the first
      pick being the point with the largest ‖g‖; ``labeled_features`` are not read.

    Embeddings are never divided by a batch size: the published code divided the last,
    smaller batch by the full batch size, which shrank those points' D² weights (a bug, not
    copied).

    δ and h (of the pool and the labeled set together) go on fixed-point grids, and every
    distance is :func:`~al_lightning.strategies.gradient_embedding.gradient_sq_distances` of
    exact inner products, a fixed sequence of correctly rounded float64 operations: the same
    weights, hence the same draws (:func:`d2_sample`), on any machine, thread count or BLAS,
    given δ and h (see :mod:`~al_lightning.strategies.distances` for what is and is not covered).

    Cost: every distance is analytic in O(C + d) per pair (float64 products), so
    O((M + b)·N·(C + d)) time for M labeled points; O((N + M)·(C + d)) float32 memory for δ
    and the grids beside the inputs, never the (N, C·d) embedding (8 MB per point at
    C = 1000, d = 2048).

    Args:
        seed: seeds the D² draws.
        labeled_centres: seed k-means++ with the labeled set as existing centres.
    """

    requires = ("logits", "features", "weight", "bias", "labeled_features")
    pairwise = True

    def __init__(self, seed: int = 0, labeled_centres: bool = True) -> None:
        super().__init__(seed)
        self.labeled_centres = labeled_centres
        if not labeled_centres:
            self.requires = ("logits", "features", "weight", "bias")

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        factors = [gradient_factors(outputs.logits, outputs.features)]
        labeled = outputs.labeled_features if self.labeled_centres else None
        if labeled is not None and labeled.shape[0] > 0:
            factors.append(gradient_factors(head_logits(labeled, outputs.weight, outputs.bias), labeled))
        grids = gradient_grids(*factors)
        pool = grids[0]
        nearest = nearest_gradient_sq_distances(pool, grids[1]) if len(grids) > 1 else None
        return kmeans_pp(pool.sq, lambda i: gradient_sq_distances_to(pool, i), budget, self.generator(), nearest)
