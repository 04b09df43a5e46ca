"""The fixed-point grid and its exact distances: the rule as documented, exactness at the edge, and the promise.

The promise (issue 19): a row's values do not depend on the rows, centres, block, thread count
or BLAS they are computed with, because every one of them is an exact integer in float64. The
references here are plain: the rule written out (tests/strategies/plain_selection.py), one
float64 matrix product on the grid values, Python integers.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import al_lightning.strategies.distances as distances_module
from al_lightning.strategies.badge import d2_sample
from al_lightning.strategies.distances import (
    GROUPED_FROM,
    dots,
    grid_bits,
    grid_exponent,
    nearest_centre_sq_distances,
    nearest_centre_upper_bounds,
    nearest_centres,
    on_grid,
    sq_distances_to,
    sq_norms,
    squared_distances,
)
from al_lightning.strategies.gradient_embedding import (
    gradient_factors,
    gradient_grids,
    gradient_sq_distances_to,
    nearest_gradient_sq_distances,
)
from tests.strategies.plain_selection import (
    plain_draw,
    plain_grid,
    plain_grid_bits,
    plain_grid_exponent,
    plain_sq_distances,
)


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}threads")
def threads(request):
    """Run the test with torch on 1, then 2 CPU threads (BLAS splits its sums by both)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def grid_pair(n: int, k: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points and ``k`` centres on one grid (float32 integers), with duplicates and near-duplicates of centres."""
    g = torch.Generator().manual_seed(seed)
    x, c = torch.randn(n, dim, generator=g), torch.randn(k, dim, generator=g)
    x[:5] = c[:5]  # duplicates: distance exactly 0
    x[5:10] = c[5:10] * (1 + 1e-6)  # near-duplicates: a few grid steps away
    exponent = grid_exponent([x, c], dim)
    return on_grid(x, exponent), on_grid(c, exponent)


# ---------------------------------------------------------------- the grid rule


@pytest.mark.parametrize("dim", [1, 2, 7, 8, 9, 100, 512, 1024, 2047, 2048, 2049, 4096])
def test_grid_bits_are_the_documented_rule(dim):
    assert grid_bits(dim) == plain_grid_bits(dim)
    # The largest squared distance between grid values, 4·d·2^(2B), stays within 2^53.
    assert 4 * dim * 2 ** (2 * grid_bits(dim)) <= 2**53
    assert grid_bits(dim) == 24 or 4 * dim * 2 ** (2 * grid_bits(dim) + 2) > 2**53  # and B is the largest such
    assert {1: 24, 7: 24, 100: 22, 512: 21, 2048: 20}.get(dim, grid_bits(dim)) == grid_bits(dim)


@pytest.mark.parametrize("scale", [1e-30, 3e-3, 0.75, 1.0, 2.0, 1234.5, 3e20])
@pytest.mark.parametrize("dim", [1, 7, 512, 2048])
def test_grid_exponent_and_values_are_the_documented_rule(scale, dim):
    g = torch.Generator().manual_seed(dim)
    x, c = torch.randn(20, dim, generator=g) * scale, torch.randn(3, dim, generator=g) * scale * 4
    exponent = grid_exponent([x, None, c[:0], c], dim)
    assert exponent == plain_grid_exponent([x, c], dim)
    m, bits = float(torch.cat([x, c]).abs().max()), grid_bits(dim)
    assert 2.0 ** (bits - 1) <= m * 2.0**exponent < 2.0**bits
    q = on_grid(x, exponent)
    expected = plain_grid([x, c], dim)[0]
    assert q.dtype == torch.float32 and torch.equal(q.double(), expected)
    assert float(on_grid(c, exponent).abs().max()) <= 2.0**bits
    # float64 inputs: the same values give the same grid.
    assert torch.equal(on_grid(x.double(), exponent), q)


def test_grid_exponent_edge_cases():
    assert grid_exponent([torch.zeros(3, 4), None], 4) == 0
    assert torch.equal(on_grid(torch.zeros(3, 4), 0), torch.zeros(3, 4))
    # A power of two is the bottom of the range: m·2^e = 2^(B−1).
    assert grid_exponent([torch.tensor([[0.25, -1.0]])], 2) == 24 - 1
    # Ties round to even.
    assert on_grid(torch.tensor([[0.5, 1.5, 2.5, -0.5, 2.0**24]]), 0).tolist() == [[0.0, 2.0, 2.0, -0.0, 2.0**24]]
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            grid_exponent([torch.tensor([[1.0, bad]])], 2)


def test_exact_at_the_edge_of_the_grid():
    # d = 2048, B = 20: the largest float32 mantissa rounds up to |q| = 2^20; the distance between
    # q and −q is 2048·(2^21)² = 2^53, the largest squared distance the grid allows, still exact.
    dim = 2048
    top = (2 - 2.0**-23) * 2.0**5
    x = torch.full((2, dim), top)
    x[1] = -top
    exponent = grid_exponent([x], dim)
    q = on_grid(x, exponent)
    assert float(q.abs().max()) == 2.0**20 == 2.0 ** grid_bits(dim)
    assert float(squared_distances(q[:1], q[1:])[0, 0]) == 2.0**53
    assert float(nearest_centre_sq_distances(q[:1], q[1:])[0]) == 2.0**53
    assert float(sq_distances_to(q, sq_norms(q), q[1], sq_norms(q[1:])[0])[0]) == 2.0**53
    # Random values near the top of the grid, against Python's integers.
    g = torch.Generator().manual_seed(0)
    values = torch.randint(2**20 - 3000, 2**20 + 1, (6, dim), generator=g).float()
    values *= torch.randint(0, 2, (6, dim), generator=g).float() * 2 - 1
    points, centres = values[:3], values[3:]
    rows = [[int(v) for v in row] for row in values.tolist()]
    exact = [[sum((a - b) ** 2 for a, b in zip(rows[i], rows[3 + j])) for j in range(3)] for i in range(3)]
    assert squared_distances(points, centres).tolist() == [[float(v) for v in row] for row in exact]
    assert all(v == float(v) and float(v) == v for row in exact for v in row)  # exact integers in float64
    assert nearest_centre_sq_distances(points, centres).tolist() == [float(min(row)) for row in exact]
    assert sq_norms(values).tolist() == [float(sum(a * a for a in row)) for row in rows]


# ---------------------------------------------------------------- the promise


@pytest.mark.parametrize("dim", [1, 7, 100, 512, 2048])
def test_a_rows_distances_do_not_depend_on_the_rows_computed_with_it(dim, threads, monkeypatch):
    points, centres = grid_pair(512 + 13, 300 + 5, dim, seed=dim)
    expected = plain_sq_distances(points.double(), centres.double())  # one plain product: exact
    full, index = nearest_centres(points, centres)
    assert torch.equal(full, expected.amin(1)) and torch.equal(index, expected.argmin(1))
    assert bool((full[:5] == 0).all())
    assert torch.equal(squared_distances(points, centres), expected)
    sq = sq_norms(points)
    to_centre = sq_distances_to(points, sq, centres[7], sq_norms(centres[7:8])[0])
    assert torch.equal(to_centre, expected[:, 7])
    g = torch.Generator().manual_seed(dim)
    for count in (1, 3, 64, 200):
        some = torch.randperm(len(points), generator=g)[:count]
        alone, alone_index = nearest_centres(points[some], centres)
        assert torch.equal(alone, full[some]) and torch.equal(alone_index, index[some])
        assert torch.equal(sq_distances_to(points, sq, centres[7], sq_norms(centres[7:8])[0], some), to_centre[some])
        assert torch.equal(squared_distances(points[some], centres), expected[some])
        assert torch.equal(dots(points, centres[7], some), (points.double() @ centres[7].double())[some])
    # Centres alone or in blocks, and tiny blocks of rows and centres: the same values.
    for count in (1, 5, 130):
        some = torch.randperm(len(centres), generator=g)[:count]
        assert torch.equal(nearest_centre_sq_distances(points, centres[some]), expected[:, some].amin(1))
    monkeypatch.setattr(distances_module, "BLOCK_BYTES", 8 * 3 * max(dim, 2))  # 3 rows and 2 centres at a time
    monkeypatch.setattr(distances_module, "CONVERT_BYTES", 8 * 2 * dim)
    blocked, blocked_index = nearest_centres(points[:40], centres[:9])
    assert torch.equal(blocked, expected[:40, :9].amin(1)) and torch.equal(blocked_index, expected[:40, :9].argmin(1))
    assert torch.equal(dots(points, centres[7]), points.double() @ centres[7].double())


@pytest.mark.parametrize("dim", [1, 7, 100, 512, 2048])
def test_a_rows_gradient_distances_do_not_depend_on_the_rows_computed_with_it(dim, threads):
    g = torch.Generator().manual_seed(dim)
    classes = 1 + dim % 37
    logits, features = torch.randn(300, classes, generator=g) * 3, torch.randn(300, dim, generator=g)
    pool, centres = gradient_grids(
        gradient_factors(logits[:250], features[:250]), gradient_factors(logits[250:], features[250:])
    )
    full = nearest_gradient_sq_distances(pool, centres)
    one_centre = gradient_sq_distances_to(pool, 17)
    for count in (1, 3, 64, 200):
        some = torch.randperm(250, generator=g)[:count]
        subset = type(pool)(pool.delta[some], pool.h[some], pool.sq[some], pool.exponent)
        assert torch.equal(nearest_gradient_sq_distances(subset, centres), full[some])
        # The pick's distances from a subset: the same documented operations on the same exact inner products.
        a = subset.delta.double() @ pool.delta[17].double()
        b = subset.h.double() @ pool.h[17].double()
        assert torch.equal(((subset.sq + pool.sq[17]) - 2 * (a * b)).clamp_min(0), one_centre[some])
    assert float(one_centre[17]) == 0.0


@pytest.mark.parametrize("threads_", [1, 2])
def test_the_d2_draw_sums_sequentially_on_the_cpu(threads_):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads_)
    try:
        g = torch.Generator().manual_seed(3)
        weights = torch.rand(100_000, generator=g, dtype=torch.float64) * torch.randint(
            0, 2**40, (100_000,), generator=g
        )
        sums = list(itertools.accumulate(weights.tolist()))  # one addition after another, in float64
        assert torch.cumsum(weights, dim=0).tolist() == sums
    finally:
        torch.set_num_threads(previous)
    small = torch.tensor([0.0, 3.0, 0.0, 1.0, 5.0], dtype=torch.float64)
    for seed in range(20):
        for weights, taken in ((small, [0]), (torch.zeros(6, dtype=torch.float64), [1, 4])):
            ours = d2_sample(weights, taken, torch.Generator().manual_seed(seed))
            assert ours == plain_draw(weights, taken, torch.Generator().manual_seed(seed))
            assert weights.sum() == 0 or weights[ours] > 0
            assert ours not in taken


@pytest.mark.parametrize("clustered", [False, True])
def test_upper_bounds_are_at_least_the_nearest_distances_and_tight_on_clusters(clustered):
    g = torch.Generator().manual_seed(1)
    dim, n, m = 64, 4000, 600
    assert m >= GROUPED_FROM
    if clustered:  # 30 tight clusters far apart: the nearest labeled point is in the point's own cluster
        means = torch.randn(30, dim, generator=g) * 3
        points = means[torch.randint(30, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)
        centres = means[torch.randint(30, (m,), generator=g)] + 0.3 * torch.randn(m, dim, generator=g)
    else:
        points, centres = torch.randn(n, dim, generator=g), torch.randn(m, dim, generator=g)
    exponent = grid_exponent([points, centres], dim)
    points, centres = on_grid(points, exponent), on_grid(centres, exponent)
    bounds = nearest_centre_upper_bounds(points, centres)
    exact = nearest_centre_sq_distances(points, centres)
    assert bool((bounds >= exact).all())
    if clustered:
        assert float((bounds == exact).double().mean()) > 0.9
    few = centres[: GROUPED_FROM - 1]  # below GROUPED_FROM: the distances themselves
    assert torch.equal(nearest_centre_upper_bounds(points, few), nearest_centre_sq_distances(points, few))
