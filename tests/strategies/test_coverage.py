"""probcover and maxherding against plain greedy loops written here, on tiny hand-checked pools."""

from __future__ import annotations

import math

import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build, neighbours


def line(*xs):
    """Points on a line in 2-D (second coordinate 0): distances are the gaps."""
    return torch.tensor([[float(x), 0.0] for x in xs])


def outputs(features, labeled=None, num_classes=None):
    return PoolOutputs(index=torch.arange(len(features)) + 100, features=features, labeled_features=labeled,
                       num_classes=num_classes)


def plain_probcover(points, labeled, delta, budget):
    """The paper's greedy on lists: ball(i) = {j : ‖x_i − x_j‖ < δ}; ties to the lowest position."""
    def dist(a, b):
        return math.dist(a.tolist(), b.tolist())
    n = len(points)
    balls = [{j for j in range(n) if dist(points[i], points[j]) < delta} for i in range(n)]
    covered = {j for j in range(n) for lab in labeled if dist(lab, points[j]) < delta}
    picks = []
    for _ in range(budget):
        gains = [len(balls[i] - covered) if i not in picks else -1 for i in range(n)]
        best = max(gains)
        if best <= 0:
            break
        pick = gains.index(best)
        picks.append(pick)
        covered |= balls[pick]
    return picks


def plain_maxherding(points, labeled, gamma, budget):
    """Greedy Σ_x max(k(x, s) − c(x), 0) on a dense kernel, in plain Python floats."""
    def k(a, b):
        return math.exp(-gamma * sum((float(u) - float(v)) ** 2 for u, v in zip(a, b)))
    n = len(points)
    c = [max((k(x, lab) for lab in labeled), default=0.0) for x in points]
    picks = []
    for _ in range(budget):
        gains = [sum(max(k(points[x], points[s]) - c[x], 0.0) for x in range(n)) if s not in picks else -1.0
                 for s in range(n)]
        pick = gains.index(max(gains))
        picks.append(pick)
        c = [max(c[x], k(points[x], points[pick])) for x in range(n)]
    return picks


def test_probcover_on_a_line_takes_the_densest_ball_first_and_skips_covered_points():
    # Balls of radius 1.5: {0,1,2} around 1, {10,11} around 10 or 11, 20 alone.
    pool = line(0, 1, 2, 10, 11, 20)
    picks = build("probcover", delta=1.5, normalize=False).select(outputs(pool), 3)
    assert picks.tolist() == [101, 103, 105]  # 1 (3 points), 10 (2, lowest of 10 and 11), 20
    assert [p + 100 for p in plain_probcover(pool, [], 1.5, 3)] == picks.tolist()


def test_probcover_removes_the_labeled_balls_first():
    pool = line(0, 1, 2, 10, 11, 20)
    picks = build("probcover", delta=1.5, normalize=False).select(outputs(pool, line(1)), 2)
    assert picks.tolist() == [103, 105]  # 0, 1, 2 are covered by the labeled point at 1


def test_probcover_random_picks_once_everything_is_covered():
    pool = line(0, 1, 2, 10, 11, 20)
    picks = build("probcover", delta=1.5, normalize=False, seed=3).select(outputs(pool), 5)
    assert picks[:3].tolist() == [101, 103, 105]
    assert len(set(picks.tolist())) == 5
    assert picks.tolist() == build("probcover", delta=1.5, normalize=False, seed=3).select(outputs(pool), 5).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probcover_is_the_plain_greedy_on_random_points(seed):
    g = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, 6, (40, 2), generator=g).float()
    labeled = torch.randint(0, 6, (3, 2), generator=g).float()
    picks = build("probcover", delta=1.5, normalize=False).select(outputs(pool, labeled), 6)
    plain = plain_probcover(pool, labeled, 1.5, 6)
    assert picks.tolist()[: len(plain)] == [p + 100 for p in plain]


def test_probcover_purity_picks_the_largest_delta_with_enough_pure_balls(caplog):
    # Two tight groups 10 apart: k-means into 2 finds them; every ball is pure while δ ≤ 10.
    pool = line(0, 0.5, 1, 10, 10.5, 11)
    strategy = build("probcover", normalize=False, alpha=0.95)
    from al_lightning.strategies.probcover import coverage_points

    grid = coverage_points(pool, None, False)[0]
    radius_sq, _ = strategy.radius_sq(grid, None, 2)
    assert float(grid.from_grid_sq(torch.tensor(radius_sq))) == 81.0  # nearest other label: 11 − 1 = 9 at 1 and 10
    picks = strategy.select(outputs(pool, num_classes=2), 2)
    assert picks.tolist() == [100, 103]  # δ = 9: each ball holds its own group; lowest position first


def test_probcover_refuses_a_delta_that_covers_nothing_or_everything():
    pool = line(0, 1, 2, 10, 11, 20)
    with pytest.raises(ConfigurationError, match=r"only self-loops.*quantiles.*larger `delta`"):
        build("probcover", delta=0.5, normalize=False).select(outputs(pool), 2)
    with pytest.raises(ConfigurationError, match=r"whole pool with one ball.*quantiles"):
        build("probcover", delta=100.0, normalize=False).select(outputs(pool), 2)
    with pytest.raises(ConfigurationError, match=r"more than 6 pairs.*max_mean_degree=1.*`delta`"):
        build("probcover", delta=5.0, normalize=False, max_mean_degree=1).select(outputs(pool), 2)
    with pytest.raises(ConfigurationError, match="purity_clusters"):
        build("probcover").select(outputs(pool), 2)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("with_labeled", [False, True])
@pytest.mark.parametrize("block", [7, 4096], ids=["blocks-of-7", "one-block"])
def test_maxherding_exact_and_truncated_are_the_plain_dense_greedy(seed, with_labeled, block, monkeypatch):
    # Blocks of 7 rows and columns: the initial gains come from diagonal and off-diagonal blocks, both ways.
    monkeypatch.setattr(neighbours, "_blocks", lambda n_rows, n_cols, dim: (min(block, n_rows), min(block, n_cols)))
    g = torch.Generator().manual_seed(seed)
    pool = torch.randint(-8, 9, (30, 3), generator=g) / 4.0  # on the grid: the plain loop sees the same values
    labeled = torch.randint(-8, 9, (2, 3), generator=g) / 4.0 if with_labeled else torch.empty(0, 3)
    exact = build("maxherding", gamma=2.0, normalize=False).select(outputs(pool, labeled), 6)
    assert exact.tolist() == [p + 100 for p in plain_maxherding(pool, labeled, 2.0, 6)]
    truncated = build("maxherding", gamma=2.0, normalize=False, max_dense=0, neighbours=29)
    assert truncated.select(outputs(pool, labeled), 6).tolist() == exact.tolist()
    assert truncated.select(outputs(pool, labeled), 6).tolist() == exact.tolist()  # determinism


def test_maxherding_on_a_line_covers_both_groups():
    pool = line(0, 0.1, 0.2, 5, 5.1)
    picks = build("maxherding", gamma=1.0, normalize=False).select(outputs(pool), 2)
    assert picks.tolist() == [101, 103]  # the middle of the big group, then the lower of the pair


def test_maxherding_normalises_like_scikit_activeml():
    pool = torch.randn(25, 4, generator=torch.Generator().manual_seed(5)) * 3
    unit = pool / pool.norm(dim=1, keepdim=True)
    picks = build("maxherding", gamma=1.5).select(outputs(pool), 5)
    assert picks.tolist() == [p + 100 for p in plain_maxherding(unit, [], 1.5, 5)]
