"""The distance primitives that let a skipping selection see the same values as a plain one."""

from __future__ import annotations

import pytest
import torch

from al_lightning.strategies.distances import (
    ALIGN_BYTES,
    GROUP_ROWS,
    RowDots,
    aligned_rows,
    is_aligned,
    nearest_centre_sq_distances,
    nearest_centres,
    row_sq_norms,
)


@pytest.mark.parametrize("dim", [1, 5, 33, 100, 512, 2047, 2048])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_rows_product_does_not_depend_on_the_rows_computed_with_it(dim, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
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
    finally:
        torch.set_num_threads(previous)


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
