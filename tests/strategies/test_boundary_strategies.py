"""MASE and BASE: a 2-D, 3-class toy worked out by hand, and a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from al_lightning.quotas import even_shares
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.boundary import boundary_distance, inverse_distance_table, weight_distance_table

# Head: w0 = (1, 0), w1 = (0, 1), w2 = (-1, 0), no bias. ‖w0−w1‖ = ‖w1−w2‖ = √2, ‖w0−w2‖ = 2.
WEIGHT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
# name: (point, predicted class, distance to the nearest boundary) — worked out by hand.
TOY = {
    "a": ((2.0, 0.0), 0, 2 / math.sqrt(2)),
    "b": ((1.0, 0.8), 0, 0.2 / math.sqrt(2)),
    "c": ((0.1, 1.0), 1, 0.9 / math.sqrt(2)),
    "d": ((-1.0, 0.5), 2, 0.5 / math.sqrt(2)),
    "e": ((-3.0, 0.0), 2, 3 / math.sqrt(2)),
    "f": ((0.05, 0.0), 0, 0.05 / math.sqrt(2)),
    "g": ((1.0, 0.9), 0, 0.1 / math.sqrt(2)),
    "h": ((0.85, 1.0), 1, 0.15 / math.sqrt(2)),
}
NAMES = list(TOY)


def toy_outputs() -> PoolOutputs:
    features = torch.tensor([TOY[n][0] for n in NAMES])
    return PoolOutputs(index=torch.arange(len(NAMES)), logits=features @ WEIGHT.T, weight=WEIGHT, bias=torch.zeros(3))


def names(indices: torch.Tensor) -> list[str]:
    return [NAMES[i] for i in indices.tolist()]


def test_toy_distances_match_hand_computation():
    out = toy_outputs()
    assert out.logits.argmax(1).tolist() == [TOY[n][1] for n in NAMES]
    expected = torch.tensor([TOY[n][2] for n in NAMES])
    assert torch.allclose(boundary_distance(out.logits, inverse_distance_table(WEIGHT)), expected, atol=1e-6)


def test_mase_on_the_toy():
    # Sorted by distance: f .035, g .071, h .106, b .141, d .354, c .636, a 1.41, e 2.12
    assert names(build("mase").select(toy_outputs(), 3)) == ["f", "g", "h"]


def test_base_on_the_toy():
    # Class 0 takes f (its own point nearest a boundary, .035).
    # Class 1: f (.035 from entering class 1) is taken, next is g (.071).
    # Class 2: f (.05) is taken, then d (its own, .354): MASE would never leave the 0|1 boundary.
    assert names(build("base").select(toy_outputs(), 3)) == ["f", "g", "d"]


def test_base_quotas_follow_the_paper():
    assert even_shares(10, 4) == [3, 3, 2, 2]
    assert even_shares(2, 5) == [1, 1, 0, 0, 0]


def reference_distances(logits, weight):
    """The paper's formulation: a (N, C, d) tensor of w_p − w_c (tiny sizes only)."""
    predicted = logits.argmax(1)
    differences = weight[predicted][:, None, :] - weight[None, :, :]
    gaps = logits.gather(1, predicted[:, None]) - logits
    distances = gaps / differences.norm(dim=2)
    rows = torch.arange(len(logits))
    distances[rows, predicted] = math.inf
    nearest = distances.min(1).values
    distances[rows, predicted] = nearest
    return distances, nearest


def reference_base(logits, weight, budget):
    distances, _ = reference_distances(logits, weight)
    taken, picked = set(), []
    for c, quota in enumerate(even_shares(budget, logits.shape[1])):
        for i in sorted(range(len(logits)), key=lambda i: (distances[i, c].item(), i)):
            if quota == 0:
                break
            if i not in taken:
                taken.add(i)
                picked.append(i)
                quota -= 1
    return picked


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget", [1, 6, 40, 150])
def test_base_and_mase_match_the_brute_force_reference(seed, budget):
    g = torch.Generator().manual_seed(seed)
    n, num_classes, dim = 300, 6, 5
    features, weight, bias = torch.randn(n, dim, generator=g), torch.randn(num_classes, dim, generator=g), torch.randn(num_classes, generator=g)
    logits = features @ weight.T + bias
    out = PoolOutputs(index=torch.arange(n), logits=logits, weight=weight)
    assert build("base").select(out, budget).tolist() == reference_base(logits, weight, budget)
    # depth 1 per class forces the widening path on nearly every class
    assert build("base", depth_factor=1, min_depth=0).select(out, budget).tolist() == reference_base(logits, weight, budget)
    _, nearest = reference_distances(logits, weight)
    expected = sorted(range(n), key=lambda i: (nearest[i].item(), i))[:budget]
    assert build("mase").select(out, budget).tolist() == expected


def test_identical_class_weights_have_no_boundary():
    weight = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    table = weight_distance_table(weight)
    assert table[0, 1] == 0 and table[0, 2] == pytest.approx(math.sqrt(2))
    # h = (2, 0.5) with biases (0, -1, 0): z = (2, 1, 0.5). The gap to class 1 never closes,
    # so the nearest boundary is class 2's, at 1.5/√2.
    logits = torch.tensor([[2.0, 1.0, 0.5]])
    assert boundary_distance(logits, inverse_distance_table(weight)).item() == pytest.approx(1.5 / math.sqrt(2))
