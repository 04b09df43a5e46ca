"""k-means and TypiClust on hand-checked blobs, TypiClust's selection loop against a plain reference, determinism."""

from __future__ import annotations

import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.neighbours import concat, kmeans, on_one_grid, row_order
from al_lightning.strategies.typiclust import typiclust_picks


def square(side, at):
    """A side × side block of integer points with its lower corner at ``at``: its centre is the densest point."""
    return [(at[0] + i, at[1] + j) for i in range(side) for j in range(side)]


def blobs(*parts):
    """The points of every part, one after the other, as an (n, 2) float tensor, and each part's positions."""
    rows, members = [], []
    for part in parts:
        members.append(list(range(len(rows), len(rows) + len(part))))
        rows += part
    return torch.tensor(rows, dtype=torch.float32), members


def plain_sq(a, b):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def test_kmeans_picks_the_point_nearest_each_blobs_centre_largest_blob_first():
    # Squares of 25, 9 and 49 points far apart: k-means finds them, and each centre is the middle point.
    points, parts = blobs(square(5, (0, 0)), square(3, (200, 0)), square(7, (0, 200)))
    outputs = PoolOutputs(index=torch.arange(len(points)) + 100, features=points)
    chosen = build("kmeans", seed=0, normalize=False).select(outputs, 3)
    middle = {len(p): p[len(p) // 2] + 100 for p in parts}
    assert chosen.tolist() == [middle[49], middle[25], middle[9]]


def test_kmeans_works_from_zero_labels_and_without_a_head():
    points, _ = blobs(square(4, (0, 0)), square(4, (50, 50)))
    outputs = PoolOutputs(index=torch.arange(len(points)), features=points)
    assert build("kmeans").select(outputs, 2).numel() == 2


def test_typiclust_takes_the_densest_point_of_the_uncovered_largest_blobs():
    # Blobs of 49 (one labeled point in it), 25, 9 and 9 points; budget 3, so K = 1 + 3 = 4 clusters.
    points, parts = blobs(square(7, (0, 0)), square(5, (300, 0)), square(3, (0, 300)), square(3, (300, 300)))
    outputs = PoolOutputs(
        index=torch.arange(len(points)), features=points, labeled_features=torch.tensor([[3.0, 3.5]])
    )
    chosen = build("typiclust", seed=0, normalize=False).select(outputs, 3).tolist()
    middle = [p[len(p) // 2] for p in parts]
    assert chosen[0] == middle[1]  # the largest blob with no label: 25 points
    assert sorted(chosen[1:]) == sorted(middle[2:])  # then the two blobs of 9 (equal: in cluster order)
    assert middle[0] not in chosen  # the blob the labeled point covers comes last


def plain_typiclust(rows, assignment, labeled, budget, min_size, neighbours):
    """TypiClust's selection loop (the authors' ``select_samples``) in plain Python, with this package's fallback."""
    clusters = sorted(set(assignment))
    size = {c: sum(1 for a in assignment if a == c) for c in clusters}
    count = {c: sum(1 for a in assignment[:labeled] if a == c) for c in clusters}
    order = sorted((c for c in clusters if size[c] > min_size), key=lambda c: (count[c], -size[c], c))
    free = [i >= labeled for i in range(len(rows))]
    picks, turn = [], 0
    while len(picks) < budget and order:
        cluster = order[turn % len(order)]
        members = [i for i in range(len(rows)) if free[i] and assignment[i] == cluster]
        if not members:
            order.remove(cluster)
            continue
        k = min(neighbours, len(members) // 2)
        best, best_mean = members[0], None
        for i in members:
            if k == 0:
                break
            nearest = sorted(plain_sq(rows[i], rows[j]) for j in members if j != i)[:k]
            mean = sum(nearest) / k
            if best_mean is None or mean < best_mean:
                best, best_mean = i, mean
        picks.append(best)
        free[best] = False
        turn += 1
    return picks


@pytest.mark.parametrize("labeled, budget, neighbours", [(0, 12, 20), (15, 9, 3), (30, 40, 20)])
def test_typiclust_loop_is_the_plain_reference_given_the_same_clusters(labeled, budget, neighbours):
    g = torch.Generator().manual_seed(labeled)
    rows = torch.randint(-3, 4, (120, 3), generator=g).float()  # integers: real ties
    assignment = torch.randint(0, 9, (120,), generator=g)
    assignment[assignment == 8] = 7  # uneven sizes
    assignment[:4] = 8  # a cluster of 4: never visited
    (grid,) = on_one_grid(rows)
    got = typiclust_picks(grid, assignment, labeled, budget, 5, neighbours)
    assert got == plain_typiclust(rows.tolist(), assignment.tolist(), labeled, budget, 5, neighbours)
    # budget 40 runs the 7 visited clusters out of unlabeled points; the caller fills the rest.
    assert len(got) == min(budget, sum(1 for a in assignment[labeled:].tolist() if a != 8))


def test_typiclust_strategy_is_its_kmeans_then_the_plain_loop():
    g = torch.Generator().manual_seed(7)
    pool, labeled = torch.randn(150, 4, generator=g), torch.randn(12, 4, generator=g)
    index = torch.randperm(1000, generator=g)[:150]
    outputs = PoolOutputs(index=index, features=pool, labeled_features=labeled)
    chosen = build("typiclust", seed=5, normalize=False).select(outputs, 10)
    order = torch.argsort(index)
    grid, known = on_one_grid(pool[order], labeled)
    points = concat(known.take(row_order(known)), grid)
    clusters = kmeans(points, 22, torch.Generator().manual_seed(5), 100)
    plain = plain_typiclust(points.q.tolist(), clusters.assignment.tolist(), 12, 10, 5, 20)
    assert chosen.tolist() == index[order][torch.tensor(plain) - 12].tolist()


def clustered(n=300, d=8, seed=0, labeled=20):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, d, generator=g) * 4
    x = centres[torch.randint(0, 6, (n + labeled,), generator=g)] + torch.randn(n + labeled, d, generator=g)
    return PoolOutputs(index=torch.randperm(5000, generator=g)[:n], features=x[:n], labeled_features=x[n:])


def shuffled(outputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(outputs), generator=g)
    known = outputs.labeled_features
    labeled = None if known is None else known[torch.randperm(known.shape[0], generator=g)]
    return PoolOutputs(index=outputs.index[rows], features=outputs.features[rows], labeled_features=labeled)


@pytest.mark.parametrize("name", ["kmeans", "typiclust"])
def test_same_seed_same_picks_and_the_rows_order_does_not_matter(name):
    outputs = clustered()
    first = build(name, seed=3).select(outputs, 15)
    assert torch.equal(first, build(name, seed=3).select(outputs, 15))
    assert torch.equal(first, build(name, seed=3).select(shuffled(outputs), 15))
    assert not torch.equal(first, build(name, seed=4).select(outputs, 15))


def test_typiclust_without_labels_none_or_empty_is_the_same():
    outputs = clustered(labeled=0)
    none = PoolOutputs(index=outputs.index, features=outputs.features)
    a = build("typiclust", seed=2).select(outputs, 12)
    assert torch.equal(a, build("typiclust", seed=2).select(none, 12))
    assert a.unique().numel() == 12


def test_typiclust_falls_back_to_seeded_random_when_no_cluster_is_large_enough():
    outputs = clustered(n=12, labeled=0)  # K = 6 clusters of 12 points: none has more than 5
    picks = build("typiclust", seed=2, min_cluster_size=5).select(outputs, 6)
    assert picks.unique().numel() == 6
    assert torch.equal(picks, build("typiclust", seed=2, min_cluster_size=5).select(outputs, 6))


def test_options_change_what_typiclust_does():
    outputs = clustered(n=400, labeled=0)
    a = build("typiclust", seed=0).select(outputs, 20)
    b = build("typiclust", seed=0, max_clusters=5).select(outputs, 20)  # 5 clusters visited 4 times each
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", ["kmeans", "typiclust"])
def test_nan_features_are_refused(name):
    outputs = clustered(n=30)
    outputs.features[4, 1] = float("nan")
    with pytest.raises(ConfigurationError, match="NaN"):
        build(name).select(outputs, 3)


def dropquery_outputs(n=80, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return PoolOutputs(
        index=torch.randperm(1000, generator=g)[:n].sort().values,  # in index order, as the strategy works
        features=torch.randint(-3, 4, (n, d), generator=g).float(),  # integers: exact on the grid
        weight=torch.randint(-2, 3, (classes, d), generator=g).float(),
        bias=torch.randint(-2, 3, (classes,), generator=g).float(),
    )


def plain_argmax(values):
    return max(range(len(values)), key=lambda c: (values[c], -c))  # the first largest


def test_dropquery_candidates_are_the_points_most_masks_flip_by_a_plain_loop():
    from al_lightning.strategies.mc_dropout import dropout_masks

    outputs = dropquery_outputs()
    strategy = build("dropquery", seed=4, dropout=0.5, samples=5, candidate_factor=0)
    got = strategy.candidates(outputs, 3, torch.Generator().manual_seed(4)).tolist()
    mask_seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(4)))
    masks = dropout_masks(6, 5, 0.5, mask_seed).tolist()
    w, b = outputs.weight.tolist(), outputs.bias.tolist()
    plain = []
    for i, h in enumerate(outputs.features.tolist()):
        clean = plain_argmax([sum(wc[j] * h[j] for j in range(6)) + bc for wc, bc in zip(w, b)])
        flips = 0
        for m in masks:
            noisy = plain_argmax([sum(wc[j] * h[j] * m[j] * 2.0 for j in range(6)) + bc for wc, bc in zip(w, b)])
            flips += noisy != clean
        if flips > 5 // 2:
            plain.append(i)
    assert got == plain and 0 < len(plain) < 80


def test_dropquery_picks_candidates_and_falls_back_to_all_of_them_then_random():
    outputs = dropquery_outputs(n=200)
    strategy = build("dropquery", seed=1, dropout=0.5, samples=5, candidate_factor=0)
    position = {int(v): i for i, v in enumerate(outputs.index)}
    candidates = strategy.candidates(outputs, 1, torch.Generator().manual_seed(1))
    candidate_ids = set(outputs.index[candidates].tolist())
    few = strategy.select(outputs, 5)
    assert set(few.tolist()) <= candidate_ids and few.unique().numel() == 5
    many = strategy.select(outputs, len(candidate_ids) + 10)
    assert sorted(many[: len(candidate_ids)].tolist()) == sorted(candidate_ids)  # all candidates, then random others
    assert many.unique().numel() == len(candidate_ids) + 10 and all(int(v) in position for v in many)


def test_dropquery_same_seed_same_picks_rows_order_does_not_matter():
    outputs = dropquery_outputs(n=200)
    first = build("dropquery", seed=3).select(outputs, 10)
    rows = torch.randperm(200, generator=torch.Generator().manual_seed(9))
    shuffled_rows = PoolOutputs(index=outputs.index[rows], features=outputs.features[rows], weight=outputs.weight, bias=outputs.bias)
    assert torch.equal(first, build("dropquery", seed=3).select(outputs, 10))
    assert torch.equal(first, build("dropquery", seed=3).select(shuffled_rows, 10))
