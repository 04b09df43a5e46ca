"""The distance primitives that let a skipping selection see the same values as a plain one."""

from __future__ import annotations

import pytest
import torch

from al_lightning.strategies.distances import (
    ALIGN_BYTES,
    GROUP_ROWS,
    GROUPED_FROM,
    RowDots,
    aligned_rows,
    is_aligned,
    nearest_centre_sq_distances,
    nearest_centre_upper_bounds,
    nearest_centres,
    row_sq_norms,
)


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}threads")
def threads(request):
    """Run the test with torch on 1, then 2 CPU threads (BLAS picks kernels by both)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.mark.parametrize("dim", [1, 5, 33, 100, 512, 2047, 2048])
def test_a_rows_product_does_not_depend_on_the_rows_computed_with_it(dim, threads):
    g = torch.Generator().manual_seed(dim)
    n = 3 * GROUP_ROWS + 37  # whole groups and a padded tail
    matrix = aligned_rows(torch.randn(n + 1, dim, generator=g)[1:])  # from a misaligned view
    vector = torch.randn(dim, generator=g)
    dots = RowDots(dim, matrix.device)
    full = dots(matrix, vector)
    assert torch.allclose(full.double(), matrix.double() @ vector.double(), rtol=1e-4, atol=1e-3)
    some = torch.randperm(n, generator=g)[: n // 5]
    assert torch.equal(dots(matrix, vector, some), full[some])
    for i in some[:10].tolist():
        assert torch.equal(dots(matrix, vector, torch.tensor([i])), full[i : i + 1])
        assert torch.equal(dots(matrix[i : i + 1], vector), full[i : i + 1])  # a one-row matrix
    # The roles of row and vector swapped: the same product.
    j = int(some[0])
    assert bool(dots(aligned_rows(vector[None].clone()), matrix[j])[0] == full[j])


def test_aligned_rows_copies_only_when_it_must():
    x = torch.randn(10, 32)
    assert aligned_rows(x) is x or aligned_rows(x).data_ptr() == x.data_ptr()
    odd = torch.randn(10, 5)
    aligned = aligned_rows(odd)
    assert torch.equal(aligned, odd) and is_aligned(aligned)
    assert (aligned.stride(0) * 4) % ALIGN_BYTES == 0 and all(
        aligned[i].data_ptr() % ALIGN_BYTES == 0 for i in range(10)
    )
    assert is_aligned(aligned_rows(torch.randn(7, 2048, dtype=torch.float64)))
    with pytest.raises(ValueError, match="aligned_rows"):
        RowDots(5, odd.device)(torch.randn(11, 5)[1:], torch.randn(5))


def test_row_norms_and_nearest_centres_are_the_plain_values():
    g = torch.Generator().manual_seed(0)
    points, centres = torch.randn(300, 17, generator=g), torch.randn(40, 17, generator=g)
    assert torch.equal(row_sq_norms(points), points.square().sum(1))
    nearest, index = nearest_centres(points, centres)
    assert torch.equal(nearest, nearest_centre_sq_distances(points, centres))
    expected = torch.cdist(points.double(), centres.double()).square()
    assert torch.allclose(nearest.double(), expected.amin(1), atol=1e-4)
    assert torch.equal(index, expected.argmin(1))


@pytest.mark.parametrize("dim", [1, 7, 100, 512, 2048])
def test_a_rows_nearest_centre_does_not_depend_on_the_rows_computed_with_it(dim, threads):
    g = torch.Generator().manual_seed(dim)
    # Rows and centres that are neither whole groups nor one block: tails of 13 rows and 5 centres.
    points, centres = torch.randn(2 * 1024 + 13, dim, generator=g), torch.randn(4096 + 5, dim, generator=g)
    full, index = nearest_centres(points, centres)
    expected = torch.cdist(points.double(), centres.double()).square().amin(1)
    # float32 expansion ‖x‖² + ‖c‖² − 2x·c: off by a few 1e-7 of ‖x‖² + ‖c‖² (small distances become 0)
    scale = points.double().square().sum(1) + centres.double().square().sum(1).max()
    assert bool(((full.double() - expected).abs() <= 2e-5 * scale).all())
    for count in (1, 3, 64, 200):
        some = torch.randperm(len(points), generator=g)[:count]
        alone, alone_index = nearest_centres(points[some], centres)
        assert torch.equal(alone, full[some]) and torch.equal(alone_index, index[some])


@pytest.mark.parametrize("dim", [3, 512, 2048])
def test_a_pairs_distance_does_not_depend_on_the_centres_computed_with_it(dim):
    g = torch.Generator().manual_seed(dim)
    points, centres = torch.randn(150, dim, generator=g), torch.randn(200, dim, generator=g)
    # Each centre on its own: one column of the (points, centres) distance matrix.
    columns = torch.stack([nearest_centre_sq_distances(points, centres[j : j + 1]) for j in range(len(centres))], 1)
    assert torch.equal(nearest_centre_sq_distances(points, centres), columns.amin(1))
    for count in (2, 5, 70, 130):
        some = torch.randperm(len(centres), generator=g)[:count]
        assert torch.equal(nearest_centre_sq_distances(points, centres[some]), columns[:, some].amin(1))


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
    bounds = nearest_centre_upper_bounds(points, centres)
    exact = nearest_centre_sq_distances(points, centres)
    assert bool((bounds >= exact).all())
    if clustered:
        assert float((bounds <= exact * 1.05).float().mean()) > 0.9
    few = centres[: GROUPED_FROM - 1]  # below GROUPED_FROM: the distances themselves
    assert torch.equal(nearest_centre_upper_bounds(points, few), nearest_centre_sq_distances(points, few))


def test_row_minima_in_three_passes_are_the_plain_ones():
    # Duplicates (distance 0), near-duplicates (within the ROUNDING cut-off), NaN-free far points.
    from al_lightning.strategies.distances import _nearest_in_block, expanded_sq_distances

    g = torch.Generator().manual_seed(0)
    for dim in (3, 64, 700):
        x, y = torch.randn(300, dim, generator=g), torch.randn(90, dim, generator=g)
        x[:30] = y[:30]
        x[30:60] = y[30:60] * (1 + 1e-4 * torch.randn(30, dim, generator=g))
        x[60:70] = y[:10] * 1e3  # large norms
        x[70:80] = 0.0
        sq_x, sq_y = x.square().sum(1), y.square().sum(1)
        expected = expanded_sq_distances(sq_x, sq_y, x @ y.T).amin(dim=1)
        got = _nearest_in_block(sq_x, sq_y, x @ y.T)
        assert torch.equal(got, expected) and bool((got[:30] == 0).all())
