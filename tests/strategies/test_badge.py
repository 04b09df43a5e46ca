"""BADGE and partitioned BADGE: the analytic gradient embedding against the explicit one, and the seeding.

The picks are compared with plain references (tests/strategies/plain_selection.py) that put
the vectors on the documented fixed-point grid, update every point after every pick and draw
by an inverse CDF written there: the same positions in the same order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import al_lightning.strategies.badge  # noqa: F401
import al_lightning.strategies.partitioned_badge as partitioned_badge_module
from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.distances import (
    grid_exponent,
    nearest_centre_sq_distances,
    on_grid,
    sq_distances_to,
    sq_norms,
)
from al_lightning.strategies.gradient_embedding import (
    gradient_factors,
    gradient_grids,
    gradient_sq_distances_to,
    gradient_sq_norms,
    head_logits,
    nearest_gradient_sq_distances,
    pooled_gradient_embedding,
)
from al_lightning.strategies.partitioned_badge import seed_partition
from tests.strategies.plain_partitions import plain_partitions, plain_shares
from tests.strategies.plain_selection import (
    count_measured_rows,
    plain_badge,
    plain_d2,
    plain_partitioned_badge,
    plain_sq_distances,
)


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
    (grid,) = gradient_grids((delta, h))
    unit = 2.0 ** (-2 * grid.exponent)  # grid units back to the embedding's
    assert torch.allclose(grid.sq * unit, g.square().sum(1), rtol=1e-5, atol=1e-9)
    expected = torch.cdist(g, g).square()
    for i in range(9):  # the grid has 24 bits at C = 4 and d = 5: float32-like accuracy
        assert torch.allclose(gradient_sq_distances_to(grid, i) * unit, expected[:, i], rtol=1e-4, atol=1e-6)
        assert float(gradient_sq_distances_to(grid, i)[i]) == 0.0


def test_nearest_distances_match_brute_force():
    out = make_outputs(n=30, num_classes=4, dim=5)
    delta, h = gradient_factors(out.logits, out.features)
    pool, centres = gradient_grids((delta[:20], h[:20]), (delta[20:], h[20:]))
    nearest = nearest_gradient_sq_distances(pool, centres) * 2.0 ** (-2 * pool.exponent)
    g = explicit_embedding(out.logits, out.features)
    assert torch.allclose(nearest, torch.cdist(g[:20], g[20:]).square().amin(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "num_classes, dim, output_size",
    [
        (10, 100, (16, 32)),  # C < 16: class rows repeated; 100 features in 32 overlapping bins
        (16, 64, (16, 32)),  # bins of 1 class × 2 features
        (3, 1000, (3, 170)),  # the paper's code's grid for C = 3
        (40, 3, (16, 32)),  # overlapping class bins, feature columns repeated
        (3, 7, (16, 32)),  # C·d = 21 < 512: rows and columns repeated
        (2, 5, (1, 3)),
    ],
)
def test_pooled_embedding_is_adaptive_avg_pool2d_of_the_class_by_feature_grid(num_classes, dim, output_size):
    out = make_outputs(n=7, num_classes=num_classes, dim=dim)
    delta, h = gradient_factors(out.logits, out.features)
    grid = delta.double()[:, :, None] * h.double()[:, None, :]  # (N, C, d): rows classes, columns features
    expected = F.adaptive_avg_pool2d(grid, output_size).reshape(7, -1)
    pooled = pooled_gradient_embedding(out.logits, out.features, output_size)
    assert pooled.shape == (7, output_size[0] * output_size[1])
    assert torch.allclose(pooled.double(), expected, rtol=1e-6, atol=1e-12)
    rows = torch.tensor([5, 0, 3])
    assert torch.equal(pooled_gradient_embedding(out.logits, out.features, output_size, rows=rows), pooled[rows])


def pick_frequencies(
    strategy_kwargs: dict, out: PoolOutputs, budget: int = 1, position: int = 0, seeds: int = 600
) -> torch.Tensor:
    """(N,) share of ``seeds`` seeds for which BADGE's ``position``-th pick is each pool position."""
    index_to_position = {int(i): p for p, i in enumerate(out.index.tolist())}
    counts = torch.zeros(len(out), dtype=torch.float64)
    for seed in range(seeds):
        chosen = build("badge", seed=seed, **strategy_kwargs).select(out, budget)
        counts[index_to_position[int(chosen[position])]] += 1
    return counts / seeds


def test_without_labeled_centres_the_first_pick_has_the_largest_gradient_norm():
    out = make_outputs(n=50, labeled=8)
    largest = explicit_embedding(out.logits, out.features).norm(dim=1).argmax()
    strategy = build("badge", labeled_centres=False)
    assert "labeled_features" not in strategy.requires
    no_labels = PoolOutputs(**{**vars(out), "labeled_features": None})
    for seed in range(3):
        chosen = build("badge", seed=seed, labeled_centres=False).select(out, 5)
        assert chosen[0] == out.index[largest]
        # The labeled set is not read: the same picks without it.
        assert torch.equal(chosen, build("badge", seed=seed, labeled_centres=False).select(no_labels, 5))
    # With labeled centres but an empty labeled set, the seeding starts the same way.
    empty = PoolOutputs(**{**vars(out), "labeled_features": out.labeled_features[:0]})
    assert build("badge").select(empty, 5)[0] == out.index[largest]


def test_without_labeled_centres_the_second_pick_is_d2_sampled_from_the_first():
    out = make_outputs(n=6, num_classes=3, dim=4, labeled=3, seed=3)
    g = explicit_embedding(out.logits, out.features)
    first = int(g.norm(dim=1).argmax())
    weights = (g - g[first]).square().sum(1)  # D² to the only centre, 0 for the first pick itself
    freq = pick_frequencies({"labeled_centres": False}, out, budget=2, position=1)
    assert freq[first] == 0
    assert torch.allclose(freq, weights / weights.sum(), atol=0.06), (freq, weights / weights.sum())


def test_with_labeled_centres_the_first_pick_is_d2_sampled_away_from_the_labeled_set():
    out = make_outputs(n=7, num_classes=3, dim=4, labeled=3, seed=3)
    out.features[[0, 4]] = out.labeled_features[[1, 2]]  # two copies of labeled points
    out.logits = head_logits(out.features, out.weight, out.bias)
    g = explicit_embedding(out.logits, out.features)
    labeled_g = explicit_embedding(out.labeled_features @ out.weight.T + out.bias, out.labeled_features)
    weights = torch.cdist(g, labeled_g).square().amin(1)  # D² to the nearest labeled point
    weights[[0, 4]] = 0.0  # exactly 0, not the rounding of an expanded distance
    expected = weights / weights.sum()
    freq = pick_frequencies({}, out)
    assert freq[0] == freq[4] == 0  # never a labeled duplicate
    assert torch.allclose(freq, expected, atol=0.06), (freq, expected)
    # Not Ash et al.'s deterministic start: the largest-‖g‖ point is not always first.
    assert freq[int(g.norm(dim=1).argmax())] < 0.9


@pytest.mark.parametrize("name, kwargs", [("badge", {}), ("partitioned_badge", {"partitions": 1, "pooled_dim": 16})])
def test_a_copy_of_a_labeled_point_is_never_picked(name, kwargs):
    out = make_outputs(n=25, num_classes=100, dim=512, labeled=6, seed=2)
    copy = 11
    out.features[copy] = out.labeled_features[2]
    out.weight, out.bias = out.weight / 200, out.bias / 200  # unsure: every other point has some weight
    out.logits = head_logits(out.features, out.weight, out.bias)
    # A copy: its features and logits are the labeled point's as the strategy computes them
    # (one (6, d) product; the pool's (25, d) product may round its logits differently). Its
    # distance on the grid is then exactly 0, so it is the one point left after 24 draws.
    out.logits[copy] = head_logits(out.labeled_features, out.weight, out.bias)[2]
    for seed in range(5):
        chosen = build(name, seed=seed, **kwargs).select(out, 24)
        assert out.index[copy] not in chosen.tolist()
    # Confident points too (the old float32 expansion left the copy ~3e-7 of its squared norm,
    # more than the tiny embeddings of confident points weigh): exactly 0.
    out.weight, out.bias = out.weight * 200, out.bias * 200
    out.logits = head_logits(out.features, out.weight, out.bias)
    out.logits[copy] = head_logits(out.labeled_features, out.weight, out.bias)[2]
    pool, labeled = gradient_grids(
        gradient_factors(out.logits, out.features),
        gradient_factors(head_logits(out.labeled_features, out.weight, out.bias), out.labeled_features),
    )
    assert float(nearest_gradient_sq_distances(pool, labeled)[copy]) == 0.0


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


def pooled_explicit_embedding(logits: torch.Tensor, features: torch.Tensor, pooled_dim: int) -> torch.Tensor:
    """The paper's code's pooling of the autograd (C, d) gradient grid: (min(16, C), ⌊pooled_dim/h⌋) bins (h ≤ pooled_dim)."""
    num_classes, dim = logits.shape[1], features.shape[1]
    pool_h = min(16, num_classes, pooled_dim)
    grid = explicit_embedding(logits, features).reshape(-1, num_classes, dim)
    return F.adaptive_avg_pool2d(grid, (pool_h, pooled_dim // pool_h)).flatten(1)


@pytest.mark.parametrize("labeled, labeled_centres", [(0, False), (17, False), (17, True)])
def test_partitioned_takes_each_partitions_share_from_its_own_part(labeled, labeled_centres):
    out = make_outputs(n=103, labeled=labeled)
    seed, parts, budget = 7, 4, 22
    strategy = build("partitioned_badge", seed=seed, partitions=parts, pooled_dim=8, labeled_centres=labeled_centres)
    chosen = strategy.select(out, budget).tolist()
    partitions = plain_partitions(103, labeled, parts, seed)
    shares = plain_shares(budget, parts)
    assert len(chosen) == budget == sum(shares) and shares == [6, 6, 5, 5]
    pooled = pooled_explicit_embedding(out.logits, out.features, 8)
    start = 0
    for (unlabeled, _), share in zip(partitions, shares):
        block = chosen[start : start + share]
        assert set(block) <= set(out.index[unlabeled].tolist())
        if not labeled_centres:  # Ash et al.'s start in each part: its largest pooled embedding
            assert block[0] == int(out.index[unlabeled][pooled[unlabeled].norm(dim=1).argmax()])
        start += share


def test_partitioned_seeds_each_part_from_its_own_labeled_part():
    # Pool point k is a copy of labeled point k. Partition i's copies of *its own* labeled
    # points weigh 0 in D² and are never picked; the other parts' copies are fair game. Paired
    # with another part's labeled points, or with all of them, it would pick its own copies
    # (a quarter of its part) or draw uniformly.
    out = make_outputs(n=40, labeled=40, seed=1)
    out.features = out.labeled_features.clone()
    out.logits = head_logits(out.features, out.weight, out.bias)
    parts, budget = 4, 8
    for seed in range(10):
        chosen = build("partitioned_badge", seed=seed, partitions=parts, pooled_dim=8).select(out, budget).tolist()
        start = 0
        for (unlabeled, labeled_part), share in zip(plain_partitions(40, 40, parts, seed), plain_shares(budget, parts)):
            positions = [int((out.index == i).nonzero()) for i in chosen[start : start + share]]
            assert set(positions) <= set(unlabeled)
            assert not set(positions) & set(labeled_part)  # no copy of its own labeled points
            start += share


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


# Partitioned BADGE's seeding skips points that cannot move; the plain one updates all.


def clustered_embeddings(
    n: int, m: int, dim: int = 24, clusters: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and centres around a few tight clusters far apart: most points provably keep their centre."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(clusters, dim, generator=g) * 5
    x = means[torch.randint(clusters, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)
    y = means[torch.randint(clusters, (m,), generator=g)] + 0.3 * torch.randn(m, dim, generator=g)
    return x, y


@pytest.mark.parametrize("m", [0, 5, 80])
@pytest.mark.parametrize("seed", [0, 1])
def test_seeding_draws_what_the_plain_seeding_draws(m, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(400, 33, generator=g), torch.randn(m, 33, generator=g)
    centres = y if m else None
    expected = plain_d2(x, centres, 90, torch.Generator().manual_seed(seed))
    assert seed_partition(x, centres, 90, torch.Generator().manual_seed(seed)).tolist() == expected


@pytest.mark.parametrize("m", [0, 40])
def test_seeding_on_clusters_skips_most_points_and_draws_the_same(m, monkeypatch):
    x, y = clustered_embeddings(3000, m)
    measured = count_measured_rows(partitioned_badge_module, monkeypatch)
    chosen = seed_partition(x, y if m else None, 150, torch.Generator().manual_seed(3)).tolist()
    monkeypatch.undo()
    assert chosen == plain_d2(x, y if m else None, 150, torch.Generator().manual_seed(3))
    assert sum(measured) < 150 * 3000 / 4  # the plain seeding measures 3000 points per pick


def test_seeding_with_duplicates_and_copies_of_centres_draws_the_same():
    x, y = clustered_embeddings(600, 30, seed=4)
    x[300:400] = x[:100]  # duplicates: equal weights, then 0 once one copy is a centre
    x[400:420] = y[:20]  # copies of centres: weight 0, never drawn until all else is
    for seed in range(3):
        expected = plain_d2(x, y, 600, torch.Generator().manual_seed(seed))
        chosen = seed_partition(x, y, 600, torch.Generator().manual_seed(seed)).tolist()
        assert chosen == expected and sorted(chosen) == list(range(600))


def test_seeding_on_an_integer_grid_breaks_ties_as_the_plain_seeding():
    # Small integers: many equal weights, and the largest-norm start ties too.
    grid = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij"), -1).reshape(-1, 2)
    x = torch.cat([grid, grid, -grid])
    for centres in (None, torch.tensor([[0.0, 0.0], [4.0, 4.0]])):
        for seed in range(3):
            expected = plain_d2(x, centres, len(x), torch.Generator().manual_seed(seed))
            assert seed_partition(x, centres, len(x), torch.Generator().manual_seed(seed)).tolist() == expected


@pytest.mark.parametrize(
    "n, labeled, parts, budget",
    [
        (103, 17, 4, 60),  # a budget larger than any partition's 26 points
        (103, 2, 4, 30),  # two partitions without labeled points: the largest-norm start
        (60, 0, 3, 60),  # no labeled set, every point picked
    ],
)
def test_partitioned_draws_what_the_plain_partitioned_seeding_draws(n, labeled, parts, budget):
    out = make_outputs(n=n, num_classes=20, dim=12, labeled=labeled, seed=n)
    if not labeled:
        out.labeled_features = torch.empty(0, 12)  # an empty labeled set, not a missing one
    chosen = build("partitioned_badge", seed=6, partitions=parts).select(out, budget)
    expected = plain_partitioned_badge(
        out.logits, out.features, out.weight, out.bias, out.labeled_features, budget, parts, 6
    )
    assert chosen.tolist() == out.index[expected].tolist()


def test_partitioned_with_float64_outputs_holding_float32_values_draws_as_with_float32():
    out = make_outputs(n=90, num_classes=20, dim=12, labeled=12, seed=8)
    wide = PoolOutputs(
        **{
            **vars(out),
            **{f: getattr(out, f).double() for f in ("logits", "features", "weight", "bias", "labeled_features")},
        }
    )
    strategy = build("partitioned_badge", seed=1, partitions=3)
    assert torch.equal(strategy.select(wide, 40), strategy.select(out, 40))


# BADGE's picks against the plain BADGE (every point updated after every pick, the documented distance).


@pytest.mark.parametrize(
    "n, num_classes, dim, labeled, budget",
    [
        (3, 2, 2, 0, 3),  # every point: the largest ‖g‖ first
        (60, 5, 6, 0, 30),
        (60, 5, 6, 10, 60),  # every point, the labeled set as centres
        (150, 40, 2048, 20, 40),
        (200, 10, 7, 300, 50),  # more labeled points than pool points
    ],
)
def test_badge_picks_what_the_plain_badge_picks(n, num_classes, dim, labeled, budget):
    out = make_outputs(n=n, num_classes=num_classes, dim=dim, labeled=labeled, seed=n + dim)
    if not labeled:
        out.labeled_features = torch.empty(0, dim)  # an empty labeled set: the largest-‖g‖ start
    for seed in range(3):
        chosen = build("badge", seed=seed).select(out, budget)
        expected = plain_badge(out.logits, out.features, out.weight, out.bias, out.labeled_features, budget, seed)
        assert chosen.tolist() == out.index[expected].tolist()


def test_badges_first_pick_without_labeled_points_worked_by_hand():
    # Two classes, logits (z, 0): δ = (p − 1, 1 − p) for ŷ = 0, so ‖g‖² = 2(1 − p)²‖h‖², largest for the least sure point.
    logits = torch.tensor([[3.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    out = PoolOutputs(index=torch.arange(3), logits=logits, features=features, weight=torch.eye(2), bias=torch.zeros(2))
    # (1 − p)² · ‖h‖²: 0.0474·1, 0.3775²·1 = 0.1425, 0.2689²·4 = 0.2893 → point 2.
    assert build("badge", labeled_centres=False).select(out, 1).tolist() == [2]
    assert build("badge", labeled_centres=False).select(out, 3).tolist() == plain_badge(
        logits, features, torch.eye(2), torch.zeros(2), None, 3, 0
    )


@pytest.mark.parametrize("dim", [7, 2048])
def test_badge_with_duplicates_and_near_duplicates_picks_what_the_plain_badge_picks(dim):
    out = make_outputs(n=120, num_classes=8, dim=dim, labeled=10, seed=dim)
    out.weight, out.bias = out.weight / dim**0.5, out.bias / dim**0.5  # unsure enough that no δ is 0 on its grid
    out.features[40:60] = out.features[:20]  # duplicates (and their logits below)
    out.features[60:70] = out.labeled_features  # copies of labeled points
    out.features[70:80] = out.features[80:90] * (1 + 1e-7)  # near-duplicates
    out.logits = head_logits(out.features, out.weight, out.bias)
    out.logits[60:70] = head_logits(out.labeled_features, out.weight, out.bias)
    for seed in range(3):
        chosen = build("badge", seed=seed).select(out, 120)
        expected = plain_badge(out.logits, out.features, out.weight, out.bias, out.labeled_features, 120, seed)
        assert chosen.tolist() == out.index[expected].tolist()
        positions = [int((out.index == i).nonzero()) for i in chosen.tolist()]
        # Weight 0 from the start: drawn (uniformly) only once every weight is 0, among the last
        # 40 (with the second of each duplicate pair, and of each near-duplicate pair the grid makes equal).
        assert set(range(60, 70)) <= set(positions[-40:])


def test_partitioned_badge_at_2048_dimensions_draws_what_the_plain_seeding_draws():
    out = make_outputs(n=150, num_classes=40, dim=2048, labeled=30, seed=11)
    out.features[100:110] = out.features[:10]
    out.logits = head_logits(out.features, out.weight, out.bias)
    chosen = build("partitioned_badge", seed=2, partitions=3).select(out, 60)
    expected = plain_partitioned_badge(out.logits, out.features, out.weight, out.bias, out.labeled_features, 60, 3, 2)
    assert chosen.tolist() == out.index[expected].tolist()


# The rank-one bounds: pooled gradient embeddings are outer products (class bins × feature bins).


def pooled_embeddings(n: int, labeled: int, num_classes: int = 40, dim: int = 64, seed: int = 0, spread: float = 0.2):
    """Pooled gradient embeddings (16 × 32) of a clustered pool and of a labeled set, as partitioned BADGE seeds on.

    ``spread`` scales the class means: at 0.2 the softmax is unsure; at 1 it is so sure that δ,
    and most embeddings, are tiny against the largest (a few grid steps, or 0, on the grid).
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g) * spread
    weight, bias = means, -0.5 * means.square().sum(1)
    features = means[torch.randint(num_classes, (n + labeled,), generator=g)] + 0.5 * torch.randn(
        n + labeled, dim, generator=g
    )
    grid = (16, 32)
    x = pooled_gradient_embedding(features[:n] @ weight.T + bias, features[:n], grid)
    y = pooled_gradient_embedding(head_logits(features[n:], weight, bias), features[n:], grid)
    return x, y


def on_one_grid(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    exponent = grid_exponent([x, y], x.shape[1])
    return on_grid(x, exponent), on_grid(y, exponent)


@pytest.mark.parametrize("labeled", [0, 60])
def test_seeding_pooled_embeddings_measures_few_points_and_draws_the_same(labeled, monkeypatch):
    x, y = pooled_embeddings(4000, labeled)
    centres = y if labeled else None
    bounds = partitioned_badge_module.RankOneBounds.build(on_one_grid(x, y)[0], (16, 32))
    assert bounds is not None and bounds.u.shape[1] + bounds.v.shape[1] == 16 + 32
    measured = count_measured_rows(partitioned_badge_module, monkeypatch)
    chosen = seed_partition(x, centres, 200, torch.Generator().manual_seed(2), (16, 32)).tolist()
    monkeypatch.undo()
    assert chosen == plain_d2(x, centres, 200, torch.Generator().manual_seed(2))
    assert sum(measured) < 200 * 4000 / 20  # the plain seeding measures 4000 points per pick


@pytest.mark.parametrize("spread", [0.2, 1.0])
def test_rank_one_lower_bounds_hold_for_every_point(spread):
    # The bound against the exact distance, point by point (duplicates and a copy of the pick included).
    x, _ = pooled_embeddings(3000, 0, seed=3, spread=spread)
    x[1000:1100] = x[:100]
    points = on_one_grid(x, x)[0]
    sq = sq_norms(points)
    bounds = partitioned_badge_module.RankOneBounds.build(points, (16, 32))
    for pick in (0, 5, 1000, 2999):
        lower = bounds.lower_bounds(pick)
        exact = sq_distances_to(points, sq, points[pick], sq[pick])
        assert bool((lower <= exact).all())
        assert float(lower[pick]) <= 0 and float(lower[1000 if pick == 0 else pick]) <= 0
        # and tight: within a few grid steps per entry (‖E‖ ≲ 2·√512) times the norms
        gap = exact - lower
        assert bool((gap <= 8 * 45 * (bounds.norm + bounds.norm[pick]) + 1e-6 * exact).all())


def test_rank_one_bounds_stay_sound_on_rows_that_are_not_rank_one():
    x, y = pooled_embeddings(2000, 30, seed=4)
    g = torch.Generator().manual_seed(0)
    x[::7] = torch.randn(x[::7].shape, generator=g) * x.std()  # every 7th row: no outer product
    x[500:520] = y[:20]  # copies of centres
    for seed in range(2):
        expected = plain_d2(x, y, 300, torch.Generator().manual_seed(seed))
        assert seed_partition(x, y, 300, torch.Generator().manual_seed(seed), (16, 32)).tolist() == expected
    noise = on_one_grid(*(torch.randn(300, 512, generator=g),) * 2)[0]
    assert partitioned_badge_module.RankOneBounds.build(noise, (16, 32)) is None
    assert partitioned_badge_module.RankOneBounds.build(noise, (16, 30)) is None  # not a split of 512


@pytest.mark.parametrize("spread, labeled", [(0.2, 300), (1.0, 300), (0.2, 7)])
def test_nearest_labeled_embedding_from_rank_one_bounds_is_the_exact_one(spread, labeled, monkeypatch):
    x, y = pooled_embeddings(3000, labeled, seed=5, spread=spread)
    y[-40:] = y[:40] * (1 + 2**-23)  # centres within a grid step of each other: near ties between them
    x[100:105] = y[:5]  # copies of centres: distance 0
    x[200:205] = y[:5] * (1 + 1e-6)  # within a grid step or so of a centre
    x[300:310] = x[400:410]  # duplicates of each other
    points, centres = on_one_grid(x, y)
    sq, centre_sq = sq_norms(points), sq_norms(centres)
    bounds = partitioned_badge_module.RankOneBounds.build(points, (16, 32))
    centre_bounds = partitioned_badge_module.RankOneBounds.build(centres, (16, 32))
    pairs: list[int] = []
    original = partitioned_badge_module.measure_pairs

    def counting(points, sq, centres, centre_sq, rows, cols):
        pairs.append(rows.numel())
        return original(points, sq, centres, centre_sq, rows, cols)

    monkeypatch.setattr(partitioned_badge_module, "measure_pairs", counting)
    nearest = bounds.nearest(points, sq, centres, centre_sq, centre_bounds)
    monkeypatch.undo()
    expected = plain_sq_distances(points.double(), centres.double()).amin(1)
    assert torch.equal(nearest, expected) and torch.equal(nearest, nearest_centre_sq_distances(points, centres))
    assert bool((nearest[100:105] == 0).all())
    if labeled > 100 and spread < 1:  # each point measured against a few centres, not all
        assert sum(pairs) < len(x) * labeled / 4
