"""Coreset and partitioned Coreset: a 1-D case worked by hand, a brute-force cdist reference, and the plain greedy.

The plain greedy (tests/strategies/plain_selection.py) runs on the documented fixed-point grid
and updates every point after every pick; the strategies' picks must be its picks exactly.
"""

from __future__ import annotations

import pytest
import torch

import al_lightning.strategies.coreset as coreset_module
import al_lightning.strategies.distances as distances
import al_lightning.strategies.partitioned_coreset  # noqa: F401
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.coreset import k_center_greedy
from al_lightning.strategies.distances import grid_exponent, nearest_centre_sq_distances, on_grid
from tests.strategies.plain_partitions import plain_partitions, plain_shares
from tests.strategies.plain_selection import (
    count_measured_rows,
    plain_grid,
    plain_k_center,
    plain_partitioned_coreset,
    plain_sq_distances,
)


def outputs_of(pool: torch.Tensor, labeled: torch.Tensor, offset: int = 100) -> PoolOutputs:
    """Pool indices are positions + ``offset``, so a test can tell positions from indices."""
    return PoolOutputs(index=torch.arange(len(pool)) + offset, features=pool, labeled_features=labeled)


def random_set(n: int, m: int, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pool points and ``m`` labeled points, standard normal in ``dim`` dimensions."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(m, dim, generator=g)


def brute_force_greedy(pool: torch.Tensor, labeled: torch.Tensor, budget: int) -> list[int]:
    """Algorithm 1 as written: the minimum over every centre, recomputed at each step (float64)."""
    distances = torch.cdist(pool.double(), torch.cat([labeled, pool]).double())  # columns: labeled, then pool
    centres, picks = list(range(len(labeled))), []
    for _ in range(budget):
        nearest = distances[:, centres].min(1).values
        nearest[picks] = -1.0
        picks.append(int(nearest.argmax()))
        centres.append(len(labeled) + picks[-1])
    return picks


def covering_radii(pool: torch.Tensor, labeled: torch.Tensor, picks: list[int]) -> list[float]:
    """Max over the pool of the distance to the nearest centre, for labeled ∪ picks[:k], k = 0..len(picks)."""
    distances = torch.cdist(pool.double(), torch.cat([labeled, pool]).double())
    columns = list(range(len(labeled))) + [len(labeled) + p for p in picks]
    return [float(distances[:, columns[: len(labeled) + k]].min(1).values.max()) for k in range(len(picks) + 1)]


def test_one_dimensional_example_worked_by_hand():
    # Labeled {0}; pool 1, 2, 5, 10, 9. Distances to {0}: 1 2 5 10 9 → take 10.
    # Then to {0, 10}: 1 2 5 · 1 → take 5 (5 from both). Then to {0, 5, 10}: 1 2 · · 1 → take 2.
    # Then 1 and 9 are both 1 away: the tie goes to the lower position, 1, then 9.
    out = outputs_of(torch.tensor([[1.0], [2.0], [5.0], [10.0], [9.0]]), torch.tensor([[0.0]]), offset=0)
    assert build("coreset").select(out, 5).tolist() == [3, 2, 1, 0, 4]


def test_first_pick_is_the_point_farthest_from_the_labeled_set():
    pool, labeled = random_set(200, 15)
    farthest = torch.cdist(pool, labeled).min(1).values.argmax()
    assert build("coreset").select(outputs_of(pool, labeled), 1).tolist() == [int(farthest) + 100]


def test_each_pick_is_the_farthest_point_and_the_radius_never_grows():
    pool, labeled = random_set(200, 15)
    picks = (build("coreset").select(outputs_of(pool, labeled), 40) - 100).tolist()
    assert picks == brute_force_greedy(pool, labeled, 40)
    radii = covering_radii(pool, labeled, picks)
    assert all(later <= earlier for earlier, later in zip(radii, radii[1:]))
    distances = torch.cdist(pool.double(), torch.cat([labeled, pool]).double())
    for k, pick in enumerate(picks):  # the k-th pick sits at the covering radius of step k
        centres = list(range(len(labeled))) + [len(labeled) + p for p in picks[:k]]
        assert float(distances[pick, centres].min()) == pytest.approx(radii[k], rel=1e-6)


def test_initial_distances_in_many_small_blocks_match_cdist(monkeypatch):
    pool, labeled = random_set(50, 7)
    exponent = grid_exponent([pool, labeled], 5)
    q, c = on_grid(pool, exponent), on_grid(labeled, exponent)
    monkeypatch.setattr(distances, "BLOCK_BYTES", 8 * 5 * 3)  # 3 rows by 2 centres per block
    blocked = nearest_centre_sq_distances(q, c)
    assert torch.equal(blocked, plain_sq_distances(q.double(), c.double()).amin(1))  # exact
    expected = torch.cdist(pool.double(), labeled.double()).min(1).values.square()
    assert torch.allclose(blocked * 2.0 ** (-2 * exponent), expected, rtol=1e-5)  # the grid: 24 bits at d = 5


def test_without_labeled_points_the_first_pick_is_seeded_random():
    pool, _ = random_set(200, 0)
    no_labels = outputs_of(pool, torch.empty(0, pool.shape[1]))
    firsts = set()
    for seed in range(5):
        picks = (build("coreset", seed=seed).select(no_labels, 10) - 100).tolist()
        first = int(torch.randint(200, (1,), generator=torch.Generator().manual_seed(seed)))
        assert picks[0] == first
        assert picks[1:] == brute_force_greedy(pool, pool[[first]], 9)
        firsts.add(first)
    assert len(firsts) > 1


def test_duplicates_are_never_picked_twice():
    pool = torch.tensor([[1.0, 1.0]] * 4 + [[3.0, 0.0]])
    out = outputs_of(pool, torch.zeros(1, 2), offset=0)
    assert build("coreset").select(out, 5).tolist() == [4, 0, 1, 2, 3]


def partitioned_reference(pool: torch.Tensor, labeled: torch.Tensor, budget: int, parts: int, seed: int) -> list[int]:
    """Part i's ⌊b/p⌋ + [i < b mod p] picks by the brute-force greedy above, from its own labeled part, part by part."""
    picks = []
    for (unlabeled, centres), share in zip(
        plain_partitions(len(pool), len(labeled), parts, seed), plain_shares(budget, parts)
    ):
        picks += [unlabeled[p] for p in brute_force_greedy(pool[unlabeled], labeled[centres], share)]
    return picks


@pytest.mark.parametrize("budget", [1, 17, 103])
def test_partitioned_takes_each_partitions_share_by_plain_greedy(budget):
    pool, labeled = random_set(103, 20)  # 20 labeled: every one of the 4 parts has centres
    chosen = build("partitioned_coreset", seed=4, partitions=4).select(outputs_of(pool, labeled), budget) - 100
    assert chosen.tolist() == partitioned_reference(pool, labeled, budget, 4, seed=4)


def test_one_partition_is_plain_coreset():
    pool, labeled = random_set(80, 10)
    out = outputs_of(pool, labeled)
    assert torch.equal(build("partitioned_coreset", partitions=1).select(out, 12), build("coreset").select(out, 12))


def test_more_partitions_than_points_or_labels():
    pool, labeled = random_set(5, 3)
    chosen = build("partitioned_coreset", seed=1, partitions=10).select(outputs_of(pool, labeled), 5)
    assert sorted(chosen.tolist()) == list(range(100, 105))


# The lazy k-center against the plain one (every point updated after every pick), pick for pick.


def clustered_set(
    n: int, m: int, dim: int = 256, clusters: int = 12, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and labeled points around a few centres: a new centre changes only its own cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 4
    pool = centres[torch.randint(clusters, (n,), generator=g)] + torch.randn(n, dim, generator=g)
    labeled = centres[torch.randint(clusters, (m,), generator=g)] + torch.randn(m, dim, generator=g)
    return pool, labeled


@pytest.mark.parametrize(
    "n, m, dim, budget, seed",
    [(300, 20, 5, 60, 0), (500, 0, 33, 80, 1), (257, 9, 2048, 40, 2), (400, 3, 1, 120, 3), (150, 40, 7, 150, 4)],
)
def test_lazy_greedy_picks_what_the_plain_greedy_picks(n, m, dim, budget, seed):
    pool, labeled = random_set(n, m, dim, seed)
    generator = torch.Generator().manual_seed(seed)
    expected = plain_k_center(pool, labeled, budget, torch.Generator().manual_seed(seed))
    assert k_center_greedy(pool, labeled, budget, generator).tolist() == expected


@pytest.mark.parametrize("m", [0, 30, 200])
def test_lazy_greedy_on_clusters_looks_at_few_points_and_picks_the_same(m, monkeypatch):
    pool, labeled = clustered_set(3000, m)
    looks = count_measured_rows(coreset_module, monkeypatch)
    chosen = k_center_greedy(pool, labeled, 200, torch.Generator().manual_seed(5)).tolist()
    monkeypatch.undo()
    assert chosen == plain_k_center(pool, labeled, 200, torch.Generator().manual_seed(5))
    # Fewer (point, centre) products than the plain 200 passes over 3000 points: far fewer
    # once the labeled set covers every cluster; without, the first picks (one per cluster,
    # each changing a twelfth of the points) take some plain passes.
    assert sum(looks) < 200 * 3000 / (3 if m < 200 else 20)


# From a labeled set of GROUPED_FROM points or more, the distances to it start as upper bounds
# and are measured only for the points that come near the top.


@pytest.mark.parametrize("n, m, dim, clusters", [(1500, 300, 33, None), (3000, 400, 256, 12), (900, 256, 2, None)])
def test_from_a_large_labeled_set_the_greedy_picks_what_the_plain_greedy_picks(n, m, dim, clusters, monkeypatch):
    assert m >= coreset_module.GROUPED_FROM
    pool, labeled = random_set(n, m, dim, seed=n) if clusters is None else clustered_set(n, m, dim, clusters, seed=n)
    measured: list[int] = []
    original = coreset_module.nearest_centres

    def counting(points, centres, *args, **kwargs):
        measured.append(len(points))
        return original(points, centres, *args, **kwargs)

    monkeypatch.setattr(coreset_module, "nearest_centres", counting)
    chosen = k_center_greedy(pool, labeled, 150, torch.Generator()).tolist()
    monkeypatch.undo()
    assert chosen == plain_k_center(pool, labeled, 150, torch.Generator())
    if clusters is not None:  # on clusters the bounds are tight: few points measured against all labeled ones
        assert sum(measured) <= n // 3


def test_from_a_large_labeled_set_ties_and_the_fallback_pick_what_the_plain_greedy_picks(monkeypatch):
    # Integer points in 2-D, labeled on a 16 x 16 grid, the pool on a finer grid with every point
    # twice: many bounds and distances are exactly equal near the top.
    coarse = torch.stack(torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij"), -1).reshape(-1, 2)
    fine = torch.stack(torch.meshgrid(torch.arange(0.0, 16, 0.5), torch.arange(0.0, 16, 0.5), indexing="ij"), -1)
    pool = torch.cat([fine.reshape(-1, 2)] * 2) * 2  # even integers: exact squares
    labeled = coarse * 2 + 1 + (coarse > 7) * 2  # an uneven cover
    expected = plain_k_center(pool, labeled, 300, torch.Generator())
    assert k_center_greedy(pool, labeled, 300, torch.Generator()).tolist() == expected
    monkeypatch.setattr(coreset_module, "LAZY_LIMIT", 0.0)  # every distance measured at once, then plain passes
    assert k_center_greedy(pool, labeled, 300, torch.Generator()).tolist() == expected


def test_ties_go_to_the_lowest_position_as_in_the_plain_greedy():
    # A 6 x 6 integer grid with every point twice, labeled corners: many points are at exactly
    # the same distance at every step.
    grid = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij"), -1).reshape(-1, 2)
    pool = torch.cat([grid, grid])
    labeled = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    out = outputs_of(pool, labeled, offset=0)
    chosen = build("coreset").select(out, len(pool)).tolist()
    assert chosen == plain_k_center(pool, labeled, len(pool), torch.Generator())
    assert chosen == brute_force_greedy(
        pool, labeled, len(pool)
    )  # small integers lie on the grid: the float64 order too
    assert sorted(chosen) == list(range(len(pool)))


def test_the_fallback_to_plain_passes_picks_the_same(monkeypatch):
    pool, labeled = random_set(300, 10, 6, seed=3)
    expected = plain_k_center(pool, labeled, 90, torch.Generator())
    for limit in (0.0, 0.02):  # at once, and after some lazy steps
        monkeypatch.setattr(coreset_module, "LAZY_LIMIT", limit)
        assert k_center_greedy(pool, labeled, 90, torch.Generator()).tolist() == expected
    pool = torch.tensor([[1.0, 1.0]] * 6 + [[3.0, 0.0]] * 3)  # duplicates only
    monkeypatch.setattr(coreset_module, "LAZY_LIMIT", 0.0)
    expected = plain_k_center(pool, torch.zeros(1, 2), 9, torch.Generator())
    assert (
        k_center_greedy(pool, torch.zeros(1, 2), 9, torch.Generator()).tolist()
        == expected
        == [6, 0, 1, 2, 3, 4, 5, 7, 8]
    )


def test_float64_inputs_holding_float32_values_pick_as_the_float32_ones():
    pool, labeled = random_set(200, 12, 9, seed=6)
    as64 = k_center_greedy(pool.double(), labeled.double(), 50, torch.Generator())
    assert torch.equal(as64, k_center_greedy(pool, labeled, 50, torch.Generator()))
    assert as64.tolist() == plain_k_center(pool, labeled, 50, torch.Generator())


def test_the_picks_are_the_plain_greedys_on_the_grid_values_themselves():
    # Points that are grid values already (small integers, largest |value| 2^23 at d = 3) are
    # their own grid: the picks are those of the plain greedy on the points as given.
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(-(2**20), 2**20, (300, 3), generator=g).float()
    pool[0, 0], labeled = 2.0**23, torch.randint(-(2**20), 2**20, (10, 3), generator=g).float()
    q, c = plain_grid([pool, labeled], 3)
    assert torch.equal(q, pool.double()) and torch.equal(c, labeled.double())
    assert k_center_greedy(pool, labeled, 60, torch.Generator()).tolist() == brute_force_greedy(pool, labeled, 60)


@pytest.mark.parametrize("dim", [1, 7, 512, 2048])
def test_duplicates_and_near_duplicates_pick_what_the_plain_greedy_picks(dim):
    pool, labeled = random_set(300, 20, dim, seed=dim)
    pool[100:150] = pool[:50]  # exact duplicates: one is picked, then its copies are at 0
    pool[150:170] = labeled[:20]  # copies of labeled points: at 0 from the start
    pool[170:200] = pool[200:230] * (1 + 1e-7)  # near-duplicates: within a grid step or two
    chosen = k_center_greedy(pool, labeled, 300, torch.Generator()).tolist()
    assert chosen == plain_k_center(pool, labeled, 300, torch.Generator())
    assert sorted(chosen) == list(range(300))
    assert set(chosen[-20:]) == set(range(150, 170)) or dim == 1  # the copies of labeled points come last


@pytest.mark.parametrize(
    "n, m, parts, budget",
    [
        (103, 20, 4, 60),  # a budget larger than any partition's 26 points
        (103, 2, 4, 37),  # two partitions without labeled points: seeded random first picks
        (40, 0, 3, 40),  # no labeled set at all, every point picked
        (257, 25, 10, 100),
    ],
)
def test_partitioned_picks_what_the_plain_partitioned_greedy_picks(n, m, parts, budget):
    pool, labeled = random_set(n, m, dim=8, seed=n + m)
    chosen = build("partitioned_coreset", seed=3, partitions=parts).select(outputs_of(pool, labeled), budget) - 100
    assert chosen.tolist() == plain_partitioned_coreset(pool, labeled, budget, parts, seed=3)


@pytest.mark.parametrize("dim", [1, 100, 2048])
def test_partitioned_picks_what_the_plain_partitioned_greedy_picks_in_any_dimension(dim):
    pool, labeled = random_set(180, 30, dim=dim, seed=dim)
    pool[100:120] = pool[:20]  # duplicates, some in other partitions
    chosen = build("partitioned_coreset", seed=5, partitions=3).select(outputs_of(pool, labeled), 90) - 100
    assert chosen.tolist() == plain_partitioned_coreset(pool, labeled, 90, 3, seed=5)


def test_partitioned_on_clusters_with_duplicates_picks_what_the_plain_one_picks():
    pool, labeled = clustered_set(2000, 300, seed=9)
    pool[1000:1300] = pool[:300]  # exact duplicates
    pool[1300:1320] = labeled[:20]  # copies of labeled points
    chosen = build("partitioned_coreset", seed=2, partitions=5).select(outputs_of(pool, labeled), 400) - 100
    assert chosen.tolist() == plain_partitioned_coreset(pool, labeled, 400, 5, seed=2)
