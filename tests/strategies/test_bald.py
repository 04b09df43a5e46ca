"""BALD on the head with consistent MC dropout: the formula, the masks, and streaming that picks what one pass picks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.bald import mutual_information
from al_lightning.strategies.mc_dropout import dropout_masks, perturbed_logits
from tests.strategies.streams import stream


def pool(n=300, num_classes=6, dim=12, seed=0, dtype=torch.float32) -> PoolOutputs:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g, dtype=torch.float64)
    features[n // 3 : n // 3 + n // 10] = features[: n // 10]  # exact duplicates: exact ties, to the smaller id
    weight = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    bias = torch.randn(num_classes, generator=g, dtype=torch.float64)
    features, weight, bias = features.to(dtype), weight.to(dtype), bias.to(dtype)
    return PoolOutputs(index=torch.arange(n) * 5 + 2, features=features, weight=weight, bias=bias)


def plain_mutual_information(logits: np.ndarray) -> list[float]:
    """I[y; ω] per point of (B, T, C) logits, in float64 with explicit loops over points, samples and classes."""
    result = []
    for point in logits:
        probs = []
        for sample in point:
            top = max(sample)
            exps = [math.exp(z - top) for z in sample]
            probs.append([e / sum(exps) for e in exps])
        samples, classes = len(probs), len(probs[0])
        mean = [sum(p[c] for p in probs) / samples for c in range(classes)]
        entropy = lambda p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
        result.append(entropy(mean) - sum(entropy(p) for p in probs) / samples)
    return result


def test_mutual_information_of_a_hand_made_case():
    # Point 0: the two samples are confident of different classes (MI near log 2); point 1: the
    # samples agree (MI 0); point 2: one sample one-hot (p underflows to exactly 0 for the others).
    logits = torch.tensor(
        [
            [[4.0, -4.0, 0.0], [-4.0, 4.0, 0.0]],
            [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]],
            [[0.0, -800.0, -800.0], [0.5, 0.0, -1.0]],
        ],
        dtype=torch.float64,
    )
    got = mutual_information(logits)
    expected = plain_mutual_information(logits.numpy())
    assert got.tolist() == pytest.approx(expected, abs=1e-12)
    assert got[0] > 0.6 and got[1] == 0.0 and torch.isfinite(got).all()


def test_one_hot_samples_have_zero_entropy_not_nan():
    logits = torch.full((2, 3, 4), -1e4)
    logits[:, :, 1] = 0.0  # every sample one-hot on class 1: every probability exactly 0 or 1
    assert mutual_information(logits).tolist() == [0.0, 0.0]


def test_perturbed_logits_are_the_masked_heads():
    out = pool(n=40, dtype=torch.float64)
    masks = dropout_masks(12, 5, 0.3, seed=7)
    assert masks.shape == (5, 12) and masks.dtype == torch.bool
    got = perturbed_logits(out.features, out.weight, out.bias, masks, 0.3)
    assert got.shape == (40, 5, 6) and got.dtype == torch.float64
    for t in range(5):
        plain = out.features @ (out.weight * masks[t] / 0.7).T + out.bias
        torch.testing.assert_close(got[:, t], plain, rtol=0, atol=1e-4)  # the grid keeps 22 bits here


def test_masks_come_from_the_seed_and_drop_at_the_rate():
    masks = dropout_masks(4000, 3, 0.25, seed=1)
    assert torch.equal(masks, dropout_masks(4000, 3, 0.25, seed=1))
    assert not torch.equal(masks, dropout_masks(4000, 3, 0.25, seed=2))
    assert abs(1 - masks.double().mean().item() - 0.25) < 0.02
    assert dropout_masks(10, 2, 0.0, seed=0).all()


def test_a_row_has_the_same_bits_alone_or_in_any_block():
    out = pool(n=97)
    masks = dropout_masks(12, 8, 0.5, seed=3)
    whole = perturbed_logits(out.features, out.weight, out.bias, masks, 0.5)
    for rows in (1, 5, 32):
        blocks = [
            perturbed_logits(out.features[s : s + rows], out.weight, out.bias, masks, 0.5) for s in range(0, 97, rows)
        ]
        assert torch.equal(torch.cat(blocks), whole)


def test_without_dropout_every_sample_agrees_and_mi_is_zero():
    out = pool()
    assert build("bald", dropout=0.0, samples=6).point_scores(out).abs().max() < 1e-6
    assert -build("bald", dropout=0.5, samples=6).point_scores(out).min() > 1e-2


def test_bald_selects_the_largest_mutual_information():
    out = pool(n=80, dtype=torch.float64)
    masks = dropout_masks(12, 10, 0.5, seed=4)
    logits = [[[0.0] * 6 for _ in range(10)] for _ in range(80)]
    f, w, b, m = out.features.numpy(), out.weight.numpy(), out.bias.numpy(), masks.numpy()
    for i in range(80):
        for t in range(10):
            for c in range(6):
                logits[i][t][c] = sum(f[i, k] * w[c, k] * m[t, k] for k in range(12)) / 0.5 + b[c]
    mi = plain_mutual_information(np.array(logits))
    chosen = build("bald", samples=10, seed=4).select(out, 15).tolist()
    positions = [(i - 2) // 5 for i in chosen]
    others = [i for i in range(80) if i not in positions]
    assert min(mi[i] for i in positions) >= max(mi[i] for i in others) - 1e-6
    assert [mi[i] for i in positions] == sorted((mi[i] for i in positions), reverse=True)


@pytest.mark.parametrize("rows", [1, 7, 10_000])
@pytest.mark.parametrize("budget", [1, 25, 150])
def test_streamed_selection_equals_one_pass(rows, budget):
    out = pool(n=150)
    strategy = build("bald", samples=5, seed=2)
    dense = strategy.select(out, budget)
    strategy.block_rows = lambda outputs: rows
    assert torch.equal(strategy.select(out, budget), dense)
    assert torch.equal(stream(strategy, out, budget, ranks=3, seed=rows), dense)


def test_two_halves_on_two_reducers_merge_into_the_whole_pool_selection():
    out = pool()
    strategy = build("bald", samples=5, seed=9)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    halves = [order[:150], order[150:]]
    reducers = []
    for rows in halves:
        reducer = strategy.reducer(out, 40)
        part = PoolOutputs(index=out.index[rows], features=out.features[rows], weight=out.weight, bias=out.bias)
        reducer.update(part)
        reducers.append(reducer)
    reducers[0].merge_state(reducers[1].state())
    assert torch.equal(reducers[0].finish(), strategy.select(out, 40))


def test_scores_in_float64_for_float64_features_else_float32():
    assert build("bald").point_scores(pool(dtype=torch.float64)).dtype == torch.float64
    assert build("bald").point_scores(pool(dtype=torch.float32)).dtype == torch.float32


def test_block_holds_about_four_million_sampled_logits():
    head = PoolOutputs(index=torch.empty(0, dtype=torch.long), weight=torch.zeros(1000, 8), bias=torch.zeros(1000))
    rows = build("bald").block_rows(head)
    assert rows * 20 * 1000 <= 1 << 22 < (rows + 1) * 20 * 1000


@pytest.mark.parametrize("options", [{"dropout": 1.0}, {"dropout": -0.1}, {"samples": 0}])
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigurationError):
        build("bald", **options)
