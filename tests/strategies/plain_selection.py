"""Greedy k-center and k-means++ seeding written plainly: after every pick, every point is updated.

Test references for ``coreset`` / ``partitioned_coreset`` and ``partitioned_badge``, which
skip the points that provably cannot change. The distances come from the same library
primitives (the initial blocked distances, ``RowDots`` for one centre), so that both see the
same values bit for bit and a float32 near tie cannot go different ways; only the skipping
is left out here.
"""

from __future__ import annotations

from typing import Optional

import torch

from al_lightning.strategies.badge import d2_sample
from al_lightning.strategies.coreset import centre_sq_distances
from al_lightning.strategies.distances import RowDots, aligned_rows, nearest_centre_sq_distances, row_sq_norms
from al_lightning.strategies.gradient_embedding import head_logits, pool_grid, pooled_gradient_embedding
from al_lightning.strategies.partitioned_badge import embedding_sq_distances
from tests.strategies.plain_partitions import partition_generator, plain_partitions, plain_shares


def plain_k_center(features: torch.Tensor, centres: torch.Tensor, budget: int, generator: torch.Generator) -> list[int]:
    """Sener & Savarese's Algorithm 1: the farthest point (lowest position among equals), then update all."""
    features = features.to(torch.float32).contiguous()
    points = aligned_rows(features)
    sq = row_sq_norms(points)
    dots = RowDots(points.shape[1], points.device)
    if centres.shape[0] > 0:
        nearest = nearest_centre_sq_distances(features, centres)
        pick = int(nearest.argmax())
    else:
        nearest = torch.full((len(points),), torch.inf)
        pick = int(torch.randint(len(points), (1,), generator=generator))
    picks = []
    for _ in range(budget):
        picks.append(pick)
        nearest = torch.minimum(nearest, centre_sq_distances(dots(points, points[pick]), sq, sq[pick]))
        nearest[pick] = -1.0
        pick = int(nearest.argmax())
    return picks


def plain_d2(x: torch.Tensor, centres: Optional[torch.Tensor], budget: int, generator: torch.Generator) -> list[int]:
    """k-means++ seeding: each pick drawn ∝ the squared distance to the nearest centre, then update all."""
    sq = torch.linalg.vector_norm(x, dim=1).square()
    points = aligned_rows(x)
    dots = RowDots(points.shape[1], points.device)
    nearest = nearest_centre_sq_distances(x, centres) if centres is not None else None
    picks: list[int] = []
    for _ in range(budget):
        pick = int(sq.argmax()) if nearest is None else d2_sample(nearest, picks, generator)
        picks.append(pick)
        new = embedding_sq_distances(dots(points, points[pick]), sq, sq[pick])
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
            part = labeled[labeled_part]
            y = pooled_gradient_embedding(head_logits(part, weight, bias), part, grid)
        picks += [unlabeled[p] for p in plain_d2(x, y, share, partition_generator(seed, i))]
    return picks


def count_rowdots_rows(module, monkeypatch) -> list[int]:
    """Record, through ``monkeypatch``, how many rows each ``RowDots`` call in ``module`` measures."""
    measured: list[int] = []
    original = module.RowDots.__call__

    def counting(self, matrix, vector, rows=None):
        measured.append(matrix.shape[0] if rows is None else rows.numel())
        return original(self, matrix, vector, rows)

    monkeypatch.setattr(module.RowDots, "__call__", counting)
    return measured
