"""Coreset and partitioned Coreset: a 1-D case worked by hand, and a brute-force cdist reference."""

from __future__ import annotations

import pytest
import torch

import al_lightning.strategies.distances as distances
import al_lightning.strategies.partitioned_coreset  # noqa: F401
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.distances import nearest_centre_sq_distances
from tests.strategies.plain_partitions import plain_partitions, plain_shares


def outputs_of(pool: torch.Tensor, labeled: torch.Tensor, offset: int = 100) -> PoolOutputs:
    """Pool indices are positions + ``offset``, so a test can tell positions from indices."""
    return PoolOutputs(index=torch.arange(len(pool)) + offset, features=pool, labeled_features=labeled)


def random_set(n: int, m: int, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
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
    monkeypatch.setattr(distances, "BLOCK_BYTES", 16 * 2 * 3)  # 3 rows by 2 centres per block
    expected = torch.cdist(pool, labeled).min(1).values.square()
    assert torch.allclose(nearest_centre_sq_distances(pool, labeled), expected, atol=1e-5)


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
    for (unlabeled, centres), share in zip(plain_partitions(len(pool), len(labeled), parts, seed), plain_shares(budget, parts)):
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
