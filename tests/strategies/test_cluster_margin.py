"""Cluster-margin: margin pre-filter, smallest-first round-robin over clusters, micro-clusters."""

from __future__ import annotations

import torch

import al_lightning.strategies.cluster_margin  # noqa: F401
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.margin import softmax_margin
from al_lightning.strategies.ranking import smallest_k


def blob_outputs(sizes: list[int], margins: torch.Tensor, seed: int = 0) -> PoolOutputs:
    """Blobs of the given sizes, 100 apart in 2-D; two-class logits whose margin grows with ``margins``."""
    g = torch.Generator().manual_seed(seed)
    blob = torch.cat([torch.full((size,), b) for b, size in enumerate(sizes)])
    centres = torch.stack([100.0 * torch.arange(len(sizes)), torch.zeros(len(sizes))], dim=1)
    features = centres[blob] + torch.randn(len(blob), 2, generator=g)
    # p1 − p2 = tanh(z/2) is increasing in z ≥ 0, so margin order is the order of ``margins``.
    logits = torch.stack([margins, torch.zeros_like(margins)], dim=1)
    return PoolOutputs(index=torch.arange(len(blob)) + 100, logits=logits, features=features)


def test_round_robin_over_clusters_smallest_first():
    # Blobs A (2 points), B (3), C (5), laid out C, A, B; margins rise with the position.
    sizes = [5, 2, 3]
    outputs = blob_outputs(sizes, torch.arange(10.0) / 10)
    chosen = build("cluster_margin", num_clusters=3, margin_factor=10).select(outputs, 9) - 100
    c, a, b = [0, 1, 2, 3, 4], [5, 6], [7, 8, 9]
    # Round 1: A, B, C each give their lowest margin; round 2 again; round 3: A is spent.
    assert chosen.tolist() == [a[0], b[0], c[0], a[1], b[1], c[1], b[2], c[2], c[3]]


def test_equal_sized_clusters_go_in_the_order_of_their_lowest_margin():
    # Two blobs of 3; blob 1 holds the lowest margin overall.
    margins = torch.tensor([0.5, 0.6, 0.7, 0.9, 0.1, 0.8])
    outputs = blob_outputs([3, 3], margins)
    chosen = build("cluster_margin", num_clusters=2).select(outputs, 4) - 100
    assert chosen.tolist() == [4, 0, 5, 1]


def test_only_the_lowest_margins_are_candidates():
    g = torch.Generator().manual_seed(0)
    logits, features = torch.randn(300, 5, generator=g), torch.randn(300, 4, generator=g)
    outputs = PoolOutputs(index=torch.arange(300), logits=logits, features=features)
    lowest = set(smallest_k(softmax_margin(outputs.logits), 20).tolist())
    chosen = build("cluster_margin", num_clusters=4, margin_factor=4).select(outputs, 5)
    assert chosen.unique().numel() == 5 and set(chosen.tolist()) <= lowest
    # No more candidates than clusters: every candidate is its own cluster, so this is margin sampling.
    same = build("cluster_margin", num_clusters=20, margin_factor=1).select(outputs, 5)
    assert torch.equal(same, build("margin").select(outputs, 5))


def test_micro_clusters_give_the_same_clusters_on_separated_blobs():
    sizes = [10, 25, 60]
    margins = torch.rand(sum(sizes), generator=torch.Generator().manual_seed(3))
    outputs = blob_outputs(sizes, margins, seed=3)
    direct = build("cluster_margin", num_clusters=3, margin_factor=20).select(outputs, 12)
    micro = build("cluster_margin", num_clusters=3, margin_factor=20)
    micro.max_points = 30  # 95 candidates → 30 k-means micro-clusters → 3 clusters
    chosen = micro.select(outputs, 12)
    assert chosen.unique().numel() == 12
    assert torch.equal(chosen, direct)
