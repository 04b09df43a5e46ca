"""Power sampling (power_bald, power_margin): counter-based Gumbel noise, the draw's distribution, streaming."""

from __future__ import annotations

import math

import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.margin import softmax_margin
from al_lightning.strategies.stochastic import gumbel_noise, power_keys, uniform_noise
from tests.strategies.streams import stream

MASK = (1 << 64) - 1


def plain_splitmix64(z: int) -> int:
    """splitmix64's finaliser on Python ints (arbitrary precision, masked to 64 bits by hand)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def plain_uniform(seed: int, point: int) -> float:
    hashed = plain_splitmix64((plain_splitmix64(seed % (1 << 64)) + 0x9E3779B97F4A7C15 * (point + 1)) & MASK)
    return ((hashed >> 11) + 0.5) / 2**53


def pool(n=200, num_classes=5, dim=10, seed=0) -> PoolOutputs:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g)
    weight, bias = torch.randn(num_classes, dim, generator=g), torch.randn(num_classes, generator=g)
    index = torch.arange(n) * 3 + 1
    return PoolOutputs(index=index, logits=features @ weight.T + bias, features=features, weight=weight, bias=bias)


def test_uniforms_are_splitmix64_of_seed_and_id():
    ids = torch.tensor([0, 1, 2, 17, (1 << 32) - 1])
    for seed in (0, 5, -3, 2**70):
        assert uniform_noise(ids, seed).tolist() == [plain_uniform(seed, i) for i in ids.tolist()]
    # The known first output of splitmix64 seeded with 0 (the state steps by γ, then the finaliser).
    assert plain_splitmix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF


def test_noise_is_a_function_of_the_id_not_of_the_block_or_order():
    ids = torch.arange(1000) * 7
    whole = gumbel_noise(ids, seed=11)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gumbel_noise(ids[order], seed=11), whole[order])
    assert torch.equal(torch.cat([gumbel_noise(ids[:333], 11), gumbel_noise(ids[333:], 11)]), whole)
    assert not torch.equal(gumbel_noise(ids, seed=12), whole)


def test_uniforms_lie_strictly_inside_and_gumbels_have_the_right_mean():
    ids = torch.arange(40_000)
    u = uniform_noise(ids, seed=1)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    g = gumbel_noise(ids, seed=1)
    assert torch.equal(g, -torch.log(-torch.log(u)))
    assert abs(g.mean().item() - 0.5772156649) < 0.02  # Euler–Mascheroni
    assert abs(g.var().item() - math.pi**2 / 6) < 0.05


def test_first_pick_frequencies_follow_the_power_distribution():
    scores, ids = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.arange(4)
    for beta, expected in ((1.0, [0.1, 0.2, 0.3, 0.4]), (2.0, [1 / 30, 4 / 30, 9 / 30, 16 / 30]), (0.0, [0.25] * 4)):
        firsts = [int(power_keys(scores, ids, seed, beta).argmax()) for seed in range(3000)]
        frequencies = [firsts.count(i) / 3000 for i in range(4)]
        assert frequencies == pytest.approx(expected, abs=0.03), beta


def test_a_large_power_picks_the_top_scores():
    out = pool()
    chosen = build("power_margin", beta=1e4, seed=3).select(out, 20)
    assert set(chosen.tolist()) == set(build("margin").select(out, 20).tolist())


def test_equal_scores_are_drawn_uniformly():
    counts = torch.zeros(6)
    for seed in range(2000):
        counts[power_keys(torch.full((6,), 0.3), torch.arange(6) + 100, seed, beta=1.0).topk(2).indices] += 1
    assert (counts - 2000 / 3).abs().max() < 70  # 2 of 6 drawn per seed; the standard deviation is 21


def test_zero_scores_come_last_in_id_order():
    keys = power_keys(torch.tensor([0.0, 0.5, 0.0, 0.2, 0.0]), torch.tensor([9, 3, 4, 8, 1]), seed=0, beta=1.0)
    assert keys[[0, 2, 4]].tolist() == [-math.inf] * 3 and torch.isfinite(keys[[1, 3]]).all()
    logits = torch.tensor([[0.0, 0.0], [50.0, -50.0], [1.0, 0.0], [-60.0, 60.0], [0.0, 70.0]])  # rows 1, 3, 4 one-hot
    out = PoolOutputs(index=torch.tensor([10, 40, 20, 30, 5]), logits=logits)
    chosen = build("power_margin", seed=4).select(out, 5).tolist()
    assert sorted(chosen[:2]) == [10, 20] and chosen[2:] == [5, 30, 40]


@pytest.mark.parametrize("name, options", [("power_margin", {}), ("power_bald", {"samples": 4})])
@pytest.mark.parametrize("budget", [1, 30, 200])
@pytest.mark.parametrize("ranks", [1, 3])
def test_streamed_and_sharded_selection_equals_one_pass(name, options, budget, ranks):
    out = pool()
    strategy = build(name, seed=budget, **options)
    assert torch.equal(stream(strategy, out, budget, ranks, seed=budget + ranks), strategy.select(out, budget))


@pytest.mark.parametrize("name", ["power_margin", "power_bald"])
def test_a_point_draws_the_same_noise_at_any_position(name):
    out = pool()
    order = torch.randperm(200, generator=torch.Generator().manual_seed(1))
    shuffled = PoolOutputs(
        index=out.index[order], logits=out.logits[order], features=out.features[order], weight=out.weight, bias=out.bias
    )
    strategy = build(name, seed=6)
    assert torch.equal(strategy.select(shuffled, 25), strategy.select(out, 25))


def test_power_margin_powers_one_minus_the_margin():
    out = pool(n=20)
    scores = build("power_margin", beta=2.0, seed=8).point_scores(out)
    expected = -(2.0 * torch.log((1 - softmax_margin(out.logits)).double()) + gumbel_noise(out.index, 8))
    assert torch.equal(scores, expected.float())


@pytest.mark.parametrize("beta", [-1.0, math.inf, math.nan])
def test_bad_beta_is_refused(beta):
    with pytest.raises(ConfigurationError, match="beta"):
        build("power_bald", beta=beta)
