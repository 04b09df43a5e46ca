"""The exact neighbour engine against brute force written plainly: integer features, so ties are real and exact."""

from __future__ import annotations

import itertools

import pytest
import torch

from al_lightning.strategies import neighbours
from al_lightning.strategies.neighbours import (
    concat,
    kmeans,
    nearest_neighbours,
    nearest_other_label_sq,
    on_one_grid,
    radius_edges,
    row_order,
    sum_columns,
)


def integer_points(n, d, seed, high=4):
    return torch.randint(-high, high + 1, (n, d), generator=torch.Generator().manual_seed(seed)).float()


def plain_sq(a, b):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def scale(points):
    """The grid's scale of squared distances for integer inputs: 4^e."""
    (grid,) = on_one_grid(points)
    return 4.0**grid.exponent


@pytest.fixture(params=[(1, 1), (3, 5), (1 << 11, 1 << 12)], ids=["tiny-blocks", "small-blocks", "default-blocks"])
def blocks(request, monkeypatch):
    """Row and column block sizes: every result must be the same whatever the blocking."""
    step, cols = request.param
    monkeypatch.setattr(neighbours, "_blocks", lambda n_rows, n_cols, dim: (min(step, max(1, n_rows)), min(cols, n_cols)))


def test_nearest_neighbours_are_the_plain_sorted_lists_ties_to_the_lower_position(blocks):
    points = integer_points(40, 3, seed=0, high=2)
    grid, = on_one_grid(points)
    values, positions = nearest_neighbours(grid, k=6)
    for i in range(40):
        plain = sorted((plain_sq(points[i], points[j]), j) for j in range(40) if j != i)[:6]
        assert positions[i].tolist() == [j for _, j in plain]
        assert (values[i] / scale(points)).tolist() == [v for v, _ in plain]


def test_nearest_neighbours_of_some_rows_among_other_points(blocks):
    points, others = integer_points(30, 4, seed=1), integer_points(25, 4, seed=2)
    grid, among = on_one_grid(points, others)
    rows = torch.tensor([29, 3, 10])
    values, positions = nearest_neighbours(grid, k=25, rows=rows, among=among)
    for row, got in zip(rows.tolist(), positions.tolist()):
        assert got == [j for _, j in sorted((plain_sq(points[row], others[j]), j) for j in range(25))]


def test_radius_edges_are_the_pairs_closer_than_the_radius(blocks):
    points = integer_points(35, 2, seed=3, high=3)
    grid, = on_one_grid(points)
    edges = radius_edges(grid, grid.to_grid_sq(2.0))
    plain = [(i, j) for i, j in itertools.product(range(35), repeat=2) if plain_sq(points[i], points[j]) < 2.0]
    assert [tuple(e) for e in edges.tolist()] == plain


@pytest.mark.parametrize("screened", [True, False], ids=["float32-screen", "float64"])
def test_radius_edges_and_nearest_other_label_of_real_valued_points_are_exact(blocks, screened, monkeypatch):
    """Wide float features, where float32 products do err: the screen must still give the exact pairs,
    radius ties (a pair exactly at the radius is out) included. Reference: int64 products of the grid."""
    monkeypatch.setattr(neighbours, "_ieee_float32_products", lambda device: screened)
    points = torch.randn(120, 300, generator=torch.Generator().manual_seed(8))
    grid, = on_one_grid(points)
    q = grid.q.long()
    sq = (q * q).sum(1)
    exact = sq[:, None] + sq[None, :] - 2 * (q @ q.T)
    radius_sq = int(exact[3, 7])  # a pair exactly at the radius: not an edge
    edges = radius_edges(grid, float(radius_sq))
    plain = [(i, j) for i in range(120) for j in range(120) if exact[i, j] < radius_sq]
    assert (3, 7) not in plain and len(plain) > 120
    assert [tuple(e) for e in edges.tolist()] == plain
    labels = torch.arange(120) % 4
    nearest = neighbours.nearest_other_label_sq(grid, labels)
    assert nearest.tolist() == [float(exact[i][labels != labels[i]].min()) for i in range(120)]


@pytest.mark.parametrize("screened", [True, False], ids=["float32-screen", "float64"])
def test_nearest_other_label_distance(blocks, screened, monkeypatch):
    monkeypatch.setattr(neighbours, "_ieee_float32_products", lambda device: screened)
    points = integer_points(30, 2, seed=4)
    labels = torch.arange(30) % 3
    grid, = on_one_grid(points)
    got = grid.from_grid_sq(nearest_other_label_sq(grid, labels))
    for i in range(30):
        assert got[i] == min(plain_sq(points[i], points[j]) for j in range(30) if labels[j] != labels[i])


def plain_lloyd(points, centres, iterations):
    """Lloyd's algorithm on integer points with rounded-mean centres, as plain Python."""
    rows = points.tolist()
    centres = [list(c) for c in centres.tolist()]
    assign = None
    for _ in range(iterations + 1):
        new = [min(range(len(centres)), key=lambda c: (plain_sq(r, centres[c]), c)) for r in rows]
        if new == assign:
            break
        assign = new
        for c in range(len(centres)):
            members = [r for r, a in zip(rows, assign) if a == c]
            if members:
                centres[c] = [float(torch.tensor(sum(m[t] for m in members) / len(members)).round()) for t in range(len(rows[0]))]
    return assign


def test_kmeans_is_lloyd_from_its_seeds_on_the_grid(blocks, monkeypatch):
    # Points whose grid is themselves (e = 0 needs the largest |value| in [2^(B-1), 2^B)): scale them up.
    base = integer_points(60, 3, seed=5, high=8)
    points = base * 2**17  # B = 24 bits at d = 3: e = 0 when the largest |value| is 2^20..2^24
    grid, = on_one_grid(points)
    assert grid.exponent in (0, 1, 2, 3)
    seeds = neighbours.kmeans_plus_plus(grid, 5, torch.Generator().manual_seed(0))
    clusters = kmeans(grid, 5, torch.Generator().manual_seed(0))
    assert clusters.assignment.tolist() == plain_lloyd(grid.q.double(), grid.q[seeds].double(), 100)
    assert (clusters.sq_distance == ((grid.q.double() - clusters.centres.q.double()[clusters.assignment]) ** 2).sum(1)).all()


def test_kmeans_refuses_more_clusters_than_points():
    grid, = on_one_grid(integer_points(4, 2, seed=6))
    with pytest.raises(ValueError, match="at least as many points as clusters"):
        kmeans(grid, 5, torch.Generator())


def test_nearest_members_are_each_clusters_closest_point():
    grid, = on_one_grid(integer_points(50, 2, seed=7))
    clusters = kmeans(grid, 4, torch.Generator().manual_seed(1))
    members = clusters.nearest_members()
    for c in range(4):
        inside = [(float(clusters.sq_distance[i]), i) for i in range(50) if clusters.assignment[i] == c]
        assert int(members[c]) == min(inside)[1]


def test_radius_edges_stop_past_max_edges(blocks):
    points = integer_points(35, 2, seed=3, high=3)
    grid, = on_one_grid(points)
    plain = sum(plain_sq(points[i], points[j]) < 2.0 for i, j in itertools.product(range(35), repeat=2))
    assert len(radius_edges(grid, grid.to_grid_sq(2.0), max_edges=plain)) == plain
    with pytest.raises(neighbours.TooManyEdges) as caught:
        radius_edges(grid, grid.to_grid_sq(2.0), max_edges=plain - 1)
    assert caught.value.found > plain - 1


def test_unit_rows_are_the_rows_over_their_norms():
    points = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-1.0, 1.0]])
    others = torch.tensor([[0.0, -2.0]])
    unit, other = on_one_grid(points, None, others, unit=True)[::2]
    plain = [[3 / 5, 4 / 5], [0.0, 0.0], [-(0.5**0.5), 0.5**0.5]]
    step = 2.0 ** -unit.exponent
    assert unit.exponent == other.exponent
    for got, want in zip((unit.q * step).tolist(), plain):
        assert all(abs(g - w) <= step for g, w in zip(got, want))
    assert (other.q * step).tolist() == [[0.0, -1.0]]
    assert on_one_grid(None, unit=True) == [None]


def test_concat_keeps_one_grid_and_refuses_two():
    a, b = integer_points(5, 3, seed=8), integer_points(4, 3, seed=9, high=7)
    ga, gb = on_one_grid(a, b)
    joined = concat(gb, ga)
    assert joined.q.tolist() == gb.q.tolist() + ga.q.tolist()
    assert joined.sq.tolist() == [sum(v * v for v in row) for row in joined.q.tolist()]
    (alone,) = on_one_grid(a * 1000)
    with pytest.raises(ValueError, match="one grid"):
        concat(ga, alone)


def test_row_order_sorts_rows_lexicographically_ties_to_the_lower_position():
    points = integer_points(40, 3, seed=10, high=1)  # few distinct rows: real ties
    grid, = on_one_grid(points)
    plain = sorted(range(40), key=lambda i: (points[i].tolist(), i))
    assert row_order(grid).tolist() == plain


def test_sum_columns_adds_first_column_to_last():
    values = torch.tensor([[1.0, 2.0, 3.0], [2.0**53, 1.0, 1.0]], dtype=torch.float64)
    plain = []
    for row in values.tolist():
        total = 0.0
        for v in row:
            total = total + v
        plain.append(total)
    assert sum_columns(values).tolist() == plain


def test_exact_total_is_the_integer_sum_whatever_the_size_of_the_terms():
    values = torch.tensor([2.0**52 + 1, 2.0**52 - 1, 3.0, 0.0, 2.0**40 + 5], dtype=torch.float64)
    assert neighbours.exact_total(values) == (2**52 + 1) + (2**52 - 1) + 3 + 0 + (2**40 + 5)


def plain_greedy_seeds(q, clusters, seed):
    """Greedy k-means++ as plain Python: the best of 2 + floor(ln K) draws proportional to D², drawn by inverse CDF."""
    import math

    generator = torch.Generator().manual_seed(seed)
    rows = q.tolist()
    n = len(rows)
    first = int(torch.randint(n, (1,), generator=generator))
    picks = [first]
    nearest = [plain_sq(r, rows[first]) for r in rows]
    for _ in range(1, clusters):
        best = None
        for _ in range(2 + int(math.log(clusters))):
            u = float(torch.rand(1, generator=generator, dtype=torch.float64)) * sum(nearest)
            running, candidate = 0.0, None
            for i, w in enumerate(nearest):
                running += w
                if running > u:
                    candidate = i
                    break
            covered = [min(w, plain_sq(r, rows[candidate])) for w, r in zip(nearest, rows)]
            if best is None or sum(covered) < best[0]:
                best = (sum(covered), candidate, covered)
        picks.append(best[1])
        nearest = best[2]
    return picks


def test_kmeans_plus_plus_keeps_the_best_of_its_draws():
    points = integer_points(40, 3, seed=11, high=6)
    (grid,) = on_one_grid(points)
    got = neighbours.kmeans_plus_plus(grid, 6, torch.Generator().manual_seed(4))
    assert got.tolist() == plain_greedy_seeds(grid.q.double(), 6, 4)


def test_the_float32_screen_is_off_where_float32_products_are_not_ieee():
    """bf16/TF32 products (``torch.set_float32_matmul_precision("medium")``) would break the screen's error bound."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if matmul is None or not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has no per-backend float32 precision setting")
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "ieee"
        assert neighbours._ieee_float32_products(torch.device("cpu"))
        matmul.fp32_precision = "bf16"
        assert not neighbours._ieee_float32_products(torch.device("cpu"))
    finally:
        matmul.fp32_precision = before
