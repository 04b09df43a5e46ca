"""Partitioned BADGE's pooled embedding against the paper's code: ``adaptive_avg_pool2d`` of the (C, d) gradient grid.

The paper's code (``src/query_strategies/badge_sampler.py``, ``get_gradient_embeddings`` with
``use_adaptive_pool=True``)::

    grad = torch.autograd.grad(nn.CrossEntropyLoss()(logits, max_logit_idx), logits)[0]
    grad_embed = grad[:, :, None] * embedding[:, None, :]           # (B, C, d)
    pool_h = min(POOLING_H, grad_embed.size(1))                     # POOLING_H = 16
    pool_w = int(float(POOLING_AREA) / pool_h)                      # POOLING_AREA = 512
    grad_embed = F.adaptive_avg_pool2d(grad_embed, (pool_h, pool_w))
    grad_embed = grad_embed.view(grad_embed.size(0), -1)

The references below build that grid explicitly, on small shapes, and pool it with PyTorch.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import al_lightning.strategies.partitioned_badge as partitioned_badge
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.gradient_embedding import (
    gradient_factors,
    pool_bounds,
    pool_grid,
    pool_outer,
    pooled_gradient_embedding,
)
from tests.strategies.plain_partitions import plain_partitions, plain_shares

CLASSES = [3, 10, 17, 40]
DIMS = [5, 32, 50, 64]


def make_outputs(n: int, num_classes: int, dim: int, labeled: int = 0, seed: int = 0) -> PoolOutputs:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g)
    weight = torch.randn(num_classes, dim, generator=g) / dim**0.5
    bias = torch.randn(num_classes, generator=g)
    return PoolOutputs(
        index=torch.randperm(10 * n, generator=g)[:n],
        logits=features @ weight.T + bias,
        features=features,
        weight=weight,
        bias=bias,
        labeled_features=torch.randn(labeled, dim, generator=g),  # may be empty: no labeled points
    )


def paper_grid_size(num_classes: int) -> tuple[int, int]:
    """The code's two lines, verbatim but for the names."""
    pool_h = min(16, num_classes)
    pool_w = int(float(512) / pool_h)
    return pool_h, pool_w


def autograd_grid(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(N, C, d) float64 gradient grids, each point's own loss (no 1/B), by autograd, laid out as the code does."""
    z = logits.detach().double().clone().requires_grad_()
    loss = F.cross_entropy(z, z.detach().argmax(dim=1), reduction="sum")  # Σ of per-point losses
    (grad,) = torch.autograd.grad(loss, z)  # (N, C): p − onehot(ŷ)
    return grad[:, :, None] * features.double()[:, None, :]


def reference_pooled(logits: torch.Tensor, features: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    return F.adaptive_avg_pool2d(autograd_grid(logits, features), output_size).flatten(1)


@pytest.mark.parametrize("num_classes, dim", list(itertools.product(CLASSES, DIMS)))
@pytest.mark.parametrize("paper_size", [False, True], ids=["16x32", "paper_grid"])
def test_pool_outer_is_adaptive_avg_pool2d_of_the_explicit_grid(num_classes, dim, paper_size):
    g = torch.Generator().manual_seed(num_classes * 100 + dim)
    u = torch.randn(7, num_classes, generator=g, dtype=torch.float64)
    x = torch.randn(7, dim, generator=g, dtype=torch.float64)
    size = paper_grid_size(num_classes) if paper_size else (16, 32)
    expected = F.adaptive_avg_pool2d(u[:, :, None] * x[:, None, :], size).reshape(7, -1)
    got = pool_outer(u, x, size)
    assert got.dtype == torch.float64 and got.shape == (7, size[0] * size[1])
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("num_classes, dim", list(itertools.product(CLASSES, DIMS)))
def test_pooled_gradient_embedding_is_the_pooled_autograd_gradient_grid(num_classes, dim):
    out = make_outputs(7, num_classes, dim, seed=num_classes + dim)
    for size in [(16, 32), paper_grid_size(num_classes)]:
        expected = reference_pooled(out.logits, out.features, size)
        got = pooled_gradient_embedding(out.logits, out.features, size)
        assert got.dtype == torch.float32 and got.shape == (7, size[0] * size[1])
        # float32 factors (softmax in float32), float64 pooling: float32 accuracy.
        assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-7)
        # From the same float32 factors, only the final rounding to float32 differs.
        delta, h = gradient_factors(out.logits, out.features)
        exact = F.adaptive_avg_pool2d(delta.double()[:, :, None] * h.double()[:, None, :], size).flatten(1)
        assert torch.allclose(got.double(), exact, rtol=1e-6, atol=1e-12)


def test_pool_grid_is_the_paper_codes_rule():
    for num_classes in list(range(1, 40)) + [100, 1000, 21843]:
        assert pool_grid(num_classes) == paper_grid_size(num_classes)
    assert pool_grid(1000) == (16, 32) and pool_grid(10) == (10, 51) and pool_grid(3) == (3, 170)
    # Beyond the paper's settings: h is capped at pooled_dim so that w >= 1.
    assert pool_grid(100, pooled_dim=8) == (8, 1) and pool_grid(5, pooled_dim=8) == (5, 1)
    assert pool_grid(100, pooled_dim=256, pooled_rows=8) == (8, 32)


@pytest.mark.parametrize("length, bins", [(17, 16), (40, 16), (50, 32), (5, 32), (3, 16), (64, 32), (1000, 16)])
def test_pool_bounds_are_pytorchs_bins(length, bins):
    starts, ends = pool_bounds(length, bins)
    averaging = torch.zeros(length, bins, dtype=torch.float64)
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        averaging[s:e, i] = 1.0 / (e - s)
    x = torch.randn(3, length, dtype=torch.float64)
    assert torch.allclose(x @ averaging, F.adaptive_avg_pool1d(x[:, None], bins)[:, 0], rtol=1e-12, atol=1e-15)
    # The same bins along each axis of adaptive_avg_pool2d.
    assert torch.allclose(x @ averaging, F.adaptive_avg_pool2d(x[:, None, :], (1, bins))[:, 0], rtol=1e-12, atol=1e-15)
    assert torch.allclose(
        x @ averaging, F.adaptive_avg_pool2d(x[:, :, None], (bins, 1))[:, :, 0], rtol=1e-12, atol=1e-15
    )
    if length % bins and length > bins:
        assert bool((starts[1:] < ends[:-1]).any())  # overlapping bins, not a partition


@pytest.mark.parametrize("num_classes, dim", [(3, 5), (10, 50), (17, 32), (40, 64)])
def test_the_paper_codes_embedding_up_to_its_batch_scale(num_classes, dim):
    """The code's get_gradient_embeddings on a linear head, batch by batch; its batch-mean loss scales each batch by 1/B."""
    torch.manual_seed(0)
    head = nn.Linear(dim, num_classes).double()
    features = torch.randn(10, dim, dtype=torch.float64)
    embedding_list = []
    for batch in features.split(4):  # batches of 4, 4 and 2
        with torch.no_grad():
            logits = head(batch)
            max_logit, max_logit_idx = logits.max(dim=1)
        logits.requires_grad = True
        loss = nn.CrossEntropyLoss()(logits, max_logit_idx)
        grad = torch.autograd.grad(loss, logits)[0]
        with torch.no_grad():
            grad_embed = grad[:, :, None] * batch[:, None, :]
            pool_h = min(16, grad_embed.size(1))
            pool_w = int(float(512) / pool_h)
            grad_embed = F.adaptive_avg_pool2d(grad_embed, (pool_h, pool_w))
            grad_embed = grad_embed.view(grad_embed.size(0), -1)
        embedding_list.append(grad_embed * batch.shape[0])  # undo the batch-mean's 1/B
    expected = torch.cat(embedding_list)
    with torch.no_grad():
        logits = head(features)
    got = pooled_gradient_embedding(logits, features, pool_grid(num_classes))
    assert got.shape == expected.shape == (10, pool_h * pool_w)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-7)


def reference_embedding_function(calls: list):
    """A stand-in for pooled_gradient_embedding: the autograd grid pooled by adaptive_avg_pool2d at the code's size."""

    def embed(logits, features, output_size, rows=None):
        calls.append(tuple(output_size))
        if rows is not None:
            logits, features = logits[rows], features[rows]
        assert tuple(output_size) == paper_grid_size(logits.shape[1])
        return reference_pooled(logits, features, paper_grid_size(logits.shape[1])).float()

    return embed


@pytest.mark.parametrize("num_classes, dim", [(17, 50), (10, 32), (40, 5)])
@pytest.mark.parametrize("labeled, labeled_centres", [(12, True), (12, False), (0, True)])
def test_partitioned_badge_seeds_on_the_reference_pooling(monkeypatch, num_classes, dim, labeled, labeled_centres):
    out = make_outputs(45, num_classes, dim, labeled=labeled, seed=3)
    seed, parts, budget = 5, 3, 9
    size = paper_grid_size(num_classes)
    seen = []
    real_seed_partition = partitioned_badge.seed_partition

    def spy(x, centres, take, generator, split=None):
        assert split == size  # the (h, w) grid of the pooled embeddings, for the rank-one bounds
        seen.append((x.clone(), None if centres is None else centres.clone(), take))
        return real_seed_partition(x, centres, take, generator, split)

    monkeypatch.setattr(partitioned_badge, "seed_partition", spy)
    strategy = build("partitioned_badge", seed=seed, partitions=parts, labeled_centres=labeled_centres)
    chosen = strategy.select(out, budget)
    monkeypatch.undo()

    num_labeled = labeled if labeled_centres else 0
    partitions = plain_partitions(45, num_labeled, parts, seed)
    assert [take for _, _, take in seen] == plain_shares(budget, parts)
    for (x, centres, _), (unlabeled, labeled_part) in zip(seen, partitions):
        assert x.shape == (len(unlabeled), size[0] * size[1])
        expected = reference_pooled(out.logits[unlabeled], out.features[unlabeled], size)
        assert torch.allclose(x.double(), expected, rtol=1e-5, atol=1e-7)
        if not labeled_part:
            assert centres is None
            continue
        feats = out.labeled_features[labeled_part]
        expected = reference_pooled(feats @ out.weight.T + out.bias, feats, size)
        assert torch.allclose(centres.double(), expected, rtol=1e-5, atol=1e-6)

    # The same k-means++ seeding on the reference-pooled embeddings picks the same points.
    calls = []
    monkeypatch.setattr(partitioned_badge, "pooled_gradient_embedding", reference_embedding_function(calls))
    for s in range(seed, seed + 4):
        reference = build("partitioned_badge", seed=s, partitions=parts, labeled_centres=labeled_centres).select(
            out, budget
        )
        monkeypatch.undo()
        ours = build("partitioned_badge", seed=s, partitions=parts, labeled_centres=labeled_centres).select(out, budget)
        monkeypatch.setattr(partitioned_badge, "pooled_gradient_embedding", reference_embedding_function(calls))
        assert torch.equal(ours, reference), s
        if s == seed:
            assert torch.equal(ours, chosen)
    assert calls and set(calls) == {size}


def test_pooled_gradient_embedding_rejects_an_empty_grid():
    out = make_outputs(3, 4, 5)
    with pytest.raises(ValueError, match="at least"):
        pooled_gradient_embedding(out.logits, out.features, (0, 32))
