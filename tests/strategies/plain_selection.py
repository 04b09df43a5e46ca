"""Greedy k-center and k-means++ seeding written plainly: after every pick, every point is updated.

Test references for ``coreset`` / ``partitioned_coreset`` and ``badge`` / ``partitioned_badge``,
which skip the points that provably cannot change. Nothing here calls the library's distance
code: the fixed-point grid is written from the rule in ``al_lightning.strategies.distances``'s
docstring, squared distances on it come from one plain float64 matrix product (exact integers,
whatever order the product sums in), BADGE's distance is the documented sequence of float64
operations written out, and the D² draw is an inverse-CDF draw written here (``torch.cumsum``
on the CPU, ``torch.searchsorted``). The pooled gradient embeddings of partitioned BADGE come
from the library's ``pooled_gradient_embedding``: an input here, tested on its own against the
paper code's ``adaptive_avg_pool2d`` of the (C, d) gradient grid
(tests/strategies/test_partitioned_badge_pooling.py).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from al_lightning.strategies.gradient_embedding import pool_grid, pooled_gradient_embedding
from tests.strategies.plain_partitions import partition_generator, plain_partitions, plain_shares


def plain_grid_bits(dim: int) -> int:
    """B = min(24, ⌊(51 − ⌈log₂ dim⌉) / 2⌋)."""
    ceil_log2 = 0
    while 2**ceil_log2 < dim:
        ceil_log2 += 1
    return min(24, (51 - ceil_log2) // 2)


def plain_grid_exponent(tensors: list[Optional[torch.Tensor]], dim: int) -> int:
    """The e with 2^(B−1) ≤ m·2^e < 2^B, m the largest |value| over all ``tensors`` (0 if every value is 0)."""
    largest = max((float(t.double().abs().max()) for t in tensors if t is not None and t.numel()), default=0.0)
    if largest == 0.0:
        return 0
    floor_log2 = 0  # the k with 2^k ≤ m < 2^(k+1)
    while 2.0 ** (floor_log2 + 1) <= largest:
        floor_log2 += 1
    while 2.0**floor_log2 > largest:
        floor_log2 -= 1
    return plain_grid_bits(dim) - 1 - floor_log2


def plain_grid(tensors: list[Optional[torch.Tensor]], dim: int) -> list[Optional[torch.Tensor]]:
    """round(x · 2^e) in float64 for each tensor (None stays None), one e for all of them."""
    exponent = plain_grid_exponent(tensors, dim)
    return [None if t is None else torch.round(t.double() * 2.0**exponent) for t in tensors]


def plain_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, k) ‖a_i − b_j‖² of float64 grid rows by one plain matrix product: exact integers."""
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)


def plain_draw(weights: torch.Tensor, taken: list[int], generator: torch.Generator) -> int:
    """Inverse-CDF draw ∝ ``weights``; uniform over the positions not taken when every weight is 0."""
    cdf = torch.cumsum(weights.double().cpu(), dim=0)
    total = cdf[-1]
    if total > 0:
        u = torch.rand(1, generator=generator, dtype=torch.float64) * total
        if u < total:
            return int(torch.searchsorted(cdf, u, right=True))
        return int(torch.searchsorted(cdf, total.reshape(1)))
    free = [i for i in range(len(weights)) if i not in taken]
    return free[int(torch.randint(len(free), (1,), generator=generator))]


def plain_k_center(features: torch.Tensor, centres: torch.Tensor, budget: int, generator: torch.Generator) -> list[int]:
    """Sener & Savarese's Algorithm 1 on the grid: the farthest point (lowest position among equals), then update all."""
    q, c = plain_grid([features, centres], features.shape[1])
    if len(c) > 0:
        nearest = plain_sq_distances(q, c).amin(1)
        pick = int(nearest.argmax())
    else:
        nearest = torch.full((len(q),), torch.inf, dtype=torch.float64)
        pick = int(torch.randint(len(q), (1,), generator=generator))
    picks = []
    for _ in range(budget):
        picks.append(pick)
        nearest = torch.minimum(nearest, plain_sq_distances(q, q[pick : pick + 1])[:, 0])
        nearest[pick] = -1.0
        pick = int(nearest.argmax())
    return picks


def plain_d2(x: torch.Tensor, centres: Optional[torch.Tensor], budget: int, generator: torch.Generator) -> list[int]:
    """k-means++ seeding on the grid: each pick drawn ∝ the squared distance to the nearest centre, then update all."""
    q, c = plain_grid([x, centres], x.shape[1])
    nearest = plain_sq_distances(q, c).amin(1) if c is not None and len(c) else None
    picks: list[int] = []
    for _ in range(budget):
        pick = int((q * q).sum(1).argmax()) if nearest is None else plain_draw(nearest, picks, generator)
        picks.append(pick)
        new = plain_sq_distances(q, q[pick : pick + 1])[:, 0]
        nearest = new if nearest is None else torch.minimum(nearest, new)
        nearest[pick] = 0.0
    return picks


def plain_badge(logits, features, weight, bias, labeled: Optional[torch.Tensor], budget: int, seed: int) -> list[int]:
    """BADGE: k-means++ on g = δ ⊗ h, the labeled points as existing centres, with the documented distance.

    δ = softmax(z) − onehot(argmax z) in float32; the labeled points' logits by ``torch.addmm``
    as the strategy computes them (an input to the exactness promise). δ of pool and labeled
    points on one grid (C dimensions), h on another (d dimensions); then, from exact inner
    products a = q_δ·q_δ', b = q_h·q_h' and sq = ‖q_δ‖²·‖q_h‖² (one rounding), the distance
    max(fl(fl(sq + sq') − 2·fl(a·b)), 0).
    """

    def delta_of(z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        return torch.softmax(z, dim=1) - F.one_hot(z.argmax(dim=1), z.shape[1]).float()

    deltas, hs = [delta_of(logits)], [features.float()]
    if labeled is not None and len(labeled):
        deltas.append(delta_of(torch.addmm(bias.float(), labeled.float(), weight.float().T)))
        hs.append(labeled.float())
    q_deltas = plain_grid(deltas, logits.shape[1])
    q_hs = plain_grid(hs, features.shape[1])
    sqs = [(d * d).sum(1) * (h * h).sum(1) for d, h in zip(q_deltas, q_hs)]

    def distances(i: int, j: int) -> torch.Tensor:  # (n_i, n_j) between set i and set j
        t = (q_deltas[i] @ q_deltas[j].T) * (q_hs[i] @ q_hs[j].T)
        return ((sqs[i][:, None] + sqs[j][None, :]) - 2 * t).clamp_min(0)

    generator = torch.Generator().manual_seed(seed)
    nearest = distances(0, 1).amin(1) if len(deltas) > 1 else None
    picks: list[int] = []
    for _ in range(budget):
        pick = int(sqs[0].argmax()) if nearest is None else plain_draw(nearest, picks, generator)
        picks.append(pick)
        new = ((sqs[0] + sqs[0][pick]) - 2 * ((q_deltas[0] @ q_deltas[0][pick]) * (q_hs[0] @ q_hs[0][pick]))).clamp_min(
            0
        )
        nearest = new if nearest is None else torch.minimum(nearest, new)
        nearest[pick] = 0.0
    return picks


def plain_partitioned_coreset(
    features: torch.Tensor, labeled: torch.Tensor, budget: int, parts: int, seed: int
) -> list[int]:
    """Positions: part i's share by plain greedy k-center from its own labeled part, part by part."""
    pairs = plain_partitions(len(features), len(labeled), parts, seed)
    picks: list[int] = []
    for i, ((unlabeled, centres), share) in enumerate(zip(pairs, plain_shares(budget, parts))):
        if share:
            chosen = plain_k_center(features[unlabeled], labeled[centres], share, partition_generator(seed, i))
            picks += [unlabeled[p] for p in chosen]
    return picks


def plain_partitioned_badge(logits, features, weight, bias, labeled, budget: int, parts: int, seed: int) -> list[int]:
    """Positions: part i's share by plain k-means++ on its pooled gradient embeddings, its labeled part as centres."""
    num_labeled = 0 if labeled is None else len(labeled)
    pairs = plain_partitions(len(logits), num_labeled, parts, seed)
    grid = pool_grid(logits.shape[1])
    picks: list[int] = []
    for i, ((unlabeled, labeled_part), share) in enumerate(zip(pairs, plain_shares(budget, parts))):
        if not share:
            continue
        x = pooled_gradient_embedding(logits[unlabeled], features[unlabeled], grid)
        y = None
        if labeled_part:
            part = labeled[labeled_part].float()
            y = pooled_gradient_embedding(torch.addmm(bias.float(), part, weight.float().T), part, grid)
        picks += [unlabeled[p] for p in plain_d2(x, y, share, partition_generator(seed, i))]
    return picks


def count_measured_rows(module, monkeypatch) -> list[int]:
    """Record, through ``monkeypatch``, how many rows each ``sq_distances_to`` call in ``module`` measures."""
    measured: list[int] = []
    original = module.sq_distances_to

    def counting(q, sq, centre, centre_sq, rows=None):
        measured.append(q.shape[0] if rows is None else rows.numel())
        return original(q, sq, centre, centre_sq, rows)

    monkeypatch.setattr(module, "sq_distances_to", counting)
    return measured
