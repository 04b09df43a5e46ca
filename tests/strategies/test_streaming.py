"""Streaming selection (batch by batch, merged across ranks): the same picks as one pass, and as a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from al_lightning.strategies import PoolOutputs, build
from tests.strategies.streams import stream

STREAMING = ["margin", "confidence", "entropy", "mase", "base"]


def pool(n=700, num_classes=12, dim=6, seed=0, duplicates=True) -> PoolOutputs:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g)
    if duplicates:  # exact ties: the same image twice, as real pools have
        features[100:150] = features[:50]
    weight, bias = torch.randn(num_classes, dim, generator=g), torch.randn(num_classes, generator=g)
    index = torch.arange(n) * 7 + 3  # sorted pool indices, as the query callback passes them
    return PoolOutputs(index=index, logits=features @ weight.T + bias, weight=weight, bias=bias)


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("budget", [1, 13, 120, 700])
@pytest.mark.parametrize("ranks", [1, 3])
def test_chunked_streaming_equals_one_pass(name, budget, ranks):
    """A chunking test: the pool streamed in random batch splits, sharded over ``ranks`` reducers
    and merged as from several ranks, picks exactly what one pass over the whole pool picks.

    ``strategy.select`` runs the same reducer on one block, so this compares the reducer with
    itself (split vs unsplit); that the picks are right is
    :func:`test_streaming_matches_a_brute_force_reference`'s job.
    """
    outputs = pool()
    strategy = build(name)
    assert torch.equal(stream(strategy, outputs, budget, ranks, seed=budget), strategy.select(outputs, budget))


def boundary_distances(logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, C) (z_p − z_k)/‖w_p − w_k‖ for each point's predicted class p and every class k (inf at k = p), float64.

    Brute force, through the (N, C, d) tensor of w_p − w_k that the paper's code builds.
    """
    z, w = logits.double(), weight.double()
    p = z.argmax(1)
    out = (z.gather(1, p[:, None]) - z) / torch.linalg.vector_norm(w[p][:, None, :] - w[None, :, :], dim=2)
    return out.scatter(1, p[:, None], math.inf)


def ranked(scores: list[float], budget: int) -> list[int]:
    """Positions of the ``budget`` smallest scores, ties to the smaller position (= smaller pool index here)."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:budget]


def reference_selection(name: str, logits: torch.Tensor, weight: torch.Tensor, budget: int) -> list[int]:
    """Positions each strategy picks, from its definition, in float64 on the whole pool."""
    probs = logits.double().softmax(1)
    if name == "margin":  # smallest p1 − p2
        top2 = probs.topk(2, dim=1).values
        return ranked((top2[:, 0] - top2[:, 1]).tolist(), budget)
    if name == "confidence":  # smallest max p
        return ranked(probs.max(1).values.tolist(), budget)
    if name == "entropy":  # largest −Σ p log p
        return ranked((probs * probs.log()).sum(1).tolist(), budget)
    distances = boundary_distances(logits, weight)
    nearest = distances.min(1).values
    if name == "mase":  # nearest decision boundary first
        return ranked(nearest.tolist(), budget)
    # BASE, the paper's rule: classes 0..C−1 in turn, class c takes ⌊b/C⌋ + [c < b mod C]
    # unchosen points by its score: the nearest boundary for points predicted c, the distance
    # to the p|c boundary for the others.
    num_classes, predicted = logits.shape[1], logits.argmax(1)
    chosen: list[int] = []
    for c in range(num_classes):
        quota = budget // num_classes + (c < budget % num_classes)
        score = torch.where(predicted == c, nearest, distances[:, c]).tolist()
        chosen += [i for i in ranked(score, len(score)) if i not in chosen][:quota]
    return chosen


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("budget", [13, 120, 300])
@pytest.mark.parametrize("ranks", [1, 3])
def test_streaming_matches_a_brute_force_reference(name, budget, ranks):
    outputs = pool(n=300, num_classes=7)  # with duplicated rows: exact ties, to the smaller index
    expected = outputs.index[reference_selection(name, outputs.logits, outputs.weight, budget)]
    assert torch.equal(stream(build(name), outputs, budget, ranks, seed=budget + ranks), expected)


@pytest.mark.parametrize("budget", [24, 120])
def test_streaming_base_widens_exactly(budget):
    outputs = pool(seed=1)
    narrow = build("base", depth_factor=1, min_depth=0)  # lists as short as the quota: widening on most classes
    assert torch.equal(stream(narrow, outputs, budget, ranks=2, seed=5), build("base").select(outputs, budget))


def test_state_has_fixed_shape():
    outputs = pool()
    for name in STREAMING:
        small = build(name).reducer(outputs, 30)
        full = build(name).reducer(outputs, 30)
        full.update(outputs)
        assert small.state().shape == full.state().shape
