"""MASE and BASE: a 2-D, 3-class toy worked out by hand, and a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.quotas import even_shares
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.balanced_selection import BalancedSelection, merge_sorted_keys, sparse_nonzero
from al_lightning.strategies.boundary import boundary_distance, inverse_distance_table, weight_distance_table
from al_lightning.strategies.ranking import EMPTY_KEY, sort_keys

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


def test_sparse_nonzero_is_nonzero():
    g = torch.Generator().manual_seed(0)
    for rows, cols, share in [(1, 8, 0.5), (7, 3, 0.0), (40, 61, 0.02), (33, 64, 0.9), (5, 5, 1.0)]:
        mask = torch.rand(rows, cols, generator=g) < share
        got, expected = sparse_nonzero(mask), mask.nonzero(as_tuple=True)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("words", [1, 2])
def test_merging_sorted_keys_equals_sorting_them(words):
    g = torch.Generator().manual_seed(words)
    for _ in range(50):
        rows, a, b = (int(v) for v in torch.randint(1, 12, (3,), generator=g))
        old = torch.randint(0, 20, (rows, a, words), generator=g)  # repeats: the same key in both tables
        new = torch.randint(0, 20, (rows, b, words), generator=g)
        old[torch.rand(rows, a, generator=g) < 0.2] = EMPTY_KEY
        new[torch.rand(rows, b, generator=g) < 0.2] = EMPTY_KEY
        old, new = sort_keys(old, dim=1)[0], sort_keys(new, dim=1)[0]
        depth = int(torch.randint(1, a + b + 1, (1,), generator=g))
        expected = sort_keys(torch.cat([old, new], dim=1), dim=1)[0][:, :depth]
        assert torch.equal(merge_sorted_keys(old, new, depth), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_base_in_many_small_blocks_matches_the_brute_force_reference(monkeypatch, dtype):
    # Small blocks: the candidate lists fill after the first ones and most blocks take the
    # sparse path (one comparison, the byte-word nonzero, the rank merge).
    g = torch.Generator().manual_seed(11)
    n, num_classes, dim = 600, 9, 5
    features = torch.randn(n, dim, generator=g)
    features[300:340] = features[:40]  # exact ties
    weight, bias = torch.randn(num_classes, dim, generator=g), torch.randn(num_classes, generator=g)
    logits = (features @ weight.T + bias).to(dtype)
    out = PoolOutputs(index=torch.arange(n), logits=logits, weight=weight.to(dtype))
    monkeypatch.setattr(BalancedSelection, "block_rows", lambda self, outputs: 16)
    for budget in (9, 50, 200):
        assert build("base").select(out, budget).tolist() == reference_base(logits, weight.to(dtype), budget)


def awkward_logits(dtype: torch.dtype, n: int = 2000, num_classes: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with ties everywhere: repeated rows, tied maxima, rows whose maximum is +0.0 or −0.0."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(num_classes, 4, generator=g)
    logits = (torch.randn(n, num_classes, generator=g) * 4).round() / 4  # few distinct values: many exact ties
    logits[200:400] = logits[:200].clone()  # repeated rows
    logits[400:500, 2] = logits[400:500, 5] = logits[400:500].amax(dim=1) + 1  # two maxima, first at 2
    logits[500:600] = -logits[500:600].abs() - 0.5
    logits[500:550, 3] = 0.0  # maximum +0.0
    logits[550:600, 1], logits[550:600, 4] = -0.0, 0.0  # maxima −0.0 then +0.0: argmax takes the −0.0
    return logits.to(dtype), weight.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_base_cpu_path_keeps_the_dense_paths_candidates_bit_for_bit(monkeypatch, dtype):
    # The CPU path (in-cache pieces, the predicted class from amax, the threshold test on
    # the sign of d − t⁺) against the dense path on every block: the same candidate keys.
    import al_lightning.strategies.balanced_selection as module

    logits, weight = awkward_logits(dtype)
    out = PoolOutputs(index=torch.arange(len(logits)), logits=logits, weight=weight)
    monkeypatch.setattr(module, "_FILL_ROWS", 8)
    monkeypatch.setattr(module, "_CACHE_BYTES", 37 * logits.shape[1] * logits.element_size())  # 37-row pieces
    monkeypatch.setattr(module, "_FOLD_ENTRIES", 50)
    monkeypatch.setattr(BalancedSelection, "block_rows", lambda self, outputs: 301)
    calls = []
    original = module.BalancedSelectionReducer._update_in_cache
    monkeypatch.setattr(
        module.BalancedSelectionReducer, "_update_in_cache", lambda self, *a: calls.append(1) or original(self, *a)
    )

    def candidates(strategy: BalancedSelection, budget: int) -> torch.Tensor:
        reducer = strategy.reducer(out, budget)
        for start in range(0, len(out), 301):
            reducer.update(PoolOutputs(index=out.index[start : start + 301], logits=logits[start : start + 301]))
        return reducer.state()

    for budget in (7, 30, 120):
        fast = candidates(build("base"), budget)
        assert calls, "the CPU path was not taken"
        with monkeypatch.context() as m:
            m.setattr(module.BalancedSelectionReducer, "_update_in_cache", module.BalancedSelectionReducer._update_dense)
            dense = candidates(build("base"), budget)
            dense_picks = build("base").select(out, budget)
        assert torch.equal(fast, dense)
        assert torch.equal(build("base").select(out, budget), dense_picks)
    for bad in (torch.nan, torch.inf, -torch.inf):  # refused on the CPU path too, naming the point
        broken = logits.clone()
        broken[1777, 3] = bad
        with pytest.raises(ConfigurationError, match="1777"):
            build("base").select(PoolOutputs(index=out.index, logits=broken, weight=weight), 30)


def test_first_argmax_is_argmax():
    from al_lightning.strategies.ranking import first_argmax

    for dtype in (torch.float32, torch.float64):
        logits, _ = awkward_logits(dtype)
        assert torch.equal(first_argmax(logits), logits.argmax(dim=1))
        with_nan = logits.clone()
        with_nan[7, 3] = torch.nan
        assert torch.equal(first_argmax(with_nan), with_nan.argmax(dim=1))
