"""BADGE and partitioned BADGE: the analytic gradient embedding against the explicit one, and the seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import al_lightning.strategies.badge  # noqa: F401
import al_lightning.strategies.partitioned_badge  # noqa: F401
from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.distances import nearest_sq_distances
from al_lightning.strategies.gradient_embedding import (
    gradient_factors,
    gradient_sq_distances,
    gradient_sq_norms,
    head_logits,
    pooled_gradient_embedding,
)
from al_lightning.strategies.partitions import paired_partitions, part_budgets


def make_outputs(n: int = 40, num_classes: int = 5, dim: int = 6, labeled: int = 0, seed: int = 0) -> PoolOutputs:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g)
    weight = torch.randn(num_classes, dim, generator=g)
    bias = torch.randn(num_classes, generator=g)
    return PoolOutputs(
        index=torch.randperm(10 * n, generator=g)[:n],
        logits=features @ weight.T + bias,
        features=features,
        weight=weight,
        bias=bias,
        labeled_features=torch.randn(labeled, dim, generator=g) if labeled else None,
    )


def explicit_embedding(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(N, C·d) gradient of each point's cross-entropy at its predicted label w.r.t. the head's weight, by autograd."""
    rows = []
    for z, h in zip(logits.double(), features.double()):
        z = z.clone().requires_grad_()
        F.cross_entropy(z[None], z.argmax()[None]).backward()
        rows.append(torch.outer(z.grad, h).reshape(-1))  # dL/dW = dL/dz ⊗ h for z = W h + b
    return torch.stack(rows)


def test_norms_and_distances_match_the_explicit_embedding():
    out = make_outputs(n=9, num_classes=4, dim=5)
    g = explicit_embedding(out.logits, out.features)
    delta, h = gradient_factors(out.logits, out.features)
    assert torch.allclose(gradient_sq_norms(delta, h).double(), g.square().sum(1), rtol=1e-5, atol=1e-7)
    expected = torch.cdist(g, g).square()
    assert torch.allclose(gradient_sq_distances(delta, h, delta, h).double(), expected, rtol=1e-4, atol=1e-6)
    some = gradient_sq_distances(delta, h, delta[3:5], h[3:5]).double()
    assert torch.allclose(some, expected[:, 3:5], rtol=1e-4, atol=1e-6)


def test_nearest_distances_match_brute_force():
    out = make_outputs(n=30, num_classes=4, dim=5)
    delta, h = gradient_factors(out.logits, out.features)
    sq = gradient_sq_norms(delta, h)
    pool, centres = slice(0, 20), slice(20, 30)
    nearest = nearest_sq_distances(
        sq[pool], sq[centres], lambda r, c: (delta[pool][r] @ delta[centres][c].T) * (h[pool][r] @ h[centres][c].T)
    )
    g = explicit_embedding(out.logits, out.features)
    assert torch.allclose(nearest.double(), torch.cdist(g[:20], g[20:]).square().amin(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "num_classes, dim, pooled_dim",
    [
        (10, 100, 512),  # C·d = 1000: bins of 1 or 2 entries that overlap, not a multiple of 512
        (16, 64, 512),  # C·d = 1024: bins of 2, each inside one class row
        (3, 1000, 512),  # bins that straddle class rows
        (40, 3, 512),  # bins covering several whole class rows
        (3, 7, 512),  # C·d = 21 < 512: entries repeated, as adaptive_avg_pool1d does
        (2, 5, 3),
    ],
)
def test_pooled_embedding_is_adaptive_avg_pool1d(num_classes, dim, pooled_dim):
    out = make_outputs(n=7, num_classes=num_classes, dim=dim)
    delta, h = gradient_factors(out.logits, out.features)
    g = (delta.double()[:, :, None] * h.double()[:, None, :]).reshape(7, 1, num_classes * dim)
    expected = F.adaptive_avg_pool1d(g, pooled_dim).squeeze(1)
    pooled = pooled_gradient_embedding(out.logits, out.features, pooled_dim)
    assert pooled.shape == (7, pooled_dim)
    assert torch.allclose(pooled.double(), expected, rtol=1e-5, atol=1e-8)
    rows = torch.tensor([5, 0, 3])
    assert torch.equal(pooled_gradient_embedding(out.logits, out.features, pooled_dim, rows=rows), pooled[rows])


def test_badge_first_pick_has_the_largest_gradient_norm():
    out = make_outputs(n=50)
    delta, h = gradient_factors(out.logits, out.features)
    largest = gradient_sq_norms(delta, h).argmax()
    for seed in range(3):
        assert build("badge", seed=seed).select(out, 5)[0] == out.index[largest]


@pytest.mark.parametrize("name, kwargs", [("badge", {}), ("partitioned_badge", {"partitions": 1, "pooled_dim": 16})])
def test_a_copy_of_a_labeled_point_is_never_picked(name, kwargs):
    out = make_outputs(n=25, num_classes=100, dim=512, labeled=6, seed=2)
    copy = 11
    out.features[copy] = out.labeled_features[2]
    # The pool's logits come from a (25, d) product, the labeled ones from a (6, d) one inside
    # the strategy: equal up to rounding. The copy's expanded distance comes out at 3e-7 of
    # its squared norm, not 0, and most points here are confident, with tiny embeddings that
    # weigh less than that: without the ROUNDING cut-off BADGE picks the copy for every seed.
    out.logits = head_logits(out.features, out.weight, out.bias)
    for seed in range(5):
        chosen = build(name, seed=seed, **kwargs).select(out, 24)
        assert out.index[copy] not in chosen.tolist()


def test_badge_still_fills_the_budget_when_every_point_is_a_labeled_one():
    out = make_outputs(n=8, labeled=3)
    out.features = out.labeled_features[torch.arange(8) % 3].clone()
    out.logits = head_logits(out.features, out.weight, out.bias)
    chosen = build("badge").select(out, 8)
    assert sorted(chosen.tolist()) == sorted(out.index.tolist())


@pytest.mark.parametrize("name", ["badge", "partitioned_badge"])
def test_seeded_determinism(name):
    out = make_outputs(n=60, labeled=10)
    first = build(name, seed=4).select(out, 12)
    assert torch.equal(first, build(name, seed=4).select(out, 12))
    assert not torch.equal(first, build(name, seed=5).select(out, 12))


@pytest.mark.parametrize("labeled", [0, 17])
def test_partitioned_takes_part_budgets_from_each_partition_in_order(labeled):
    out = make_outputs(n=103, labeled=labeled)
    seed, parts, budget = 7, 4, 22
    chosen = build("partitioned_badge", seed=seed, partitions=parts, pooled_dim=8).select(out, budget)
    partitions = paired_partitions(103, labeled, parts, torch.Generator().manual_seed(seed))
    counts = part_budgets(budget, parts)
    assert chosen.numel() == budget == sum(counts)
    start = 0
    for (unlabeled, _), count in zip(partitions, counts):
        assert set(chosen[start : start + count].tolist()) <= set(out.index[unlabeled].tolist())
        start += count


@pytest.mark.parametrize("n, parts", [(3, 5), (10, 4), (11, 10)])
def test_partitioned_fills_the_budget_when_partitions_are_small(n, parts):
    out = make_outputs(n=n, labeled=2)
    for budget in range(1, n + 1):
        chosen = build("partitioned_badge", partitions=parts, pooled_dim=8).select(out, budget)
        assert chosen.unique().numel() == budget


@pytest.mark.parametrize("kwargs", [{"partitions": 0}, {"pooled_dim": 0}])
def test_partitioned_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigurationError, match="needs"):
        build("partitioned_badge", **kwargs)
