"""Sort keys order exactly like (score, id), for every float, and refuse what they cannot order."""

import numpy as np
import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.ranking import key_ids, key_scores, score_keys, smallest_k, smallest_keys, sort_keys

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def negative_nan(dtype: torch.dtype) -> torch.Tensor:
    """A NaN with its sign bit set (x86's default NaN, what 0/0 gives there)."""
    ints = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}[dtype]
    nan = torch.tensor(float("nan"), dtype=dtype)
    sign = torch.tensor(torch.iinfo(ints).min, dtype=ints)
    negative = (nan.view(ints) | sign).view(dtype)
    assert torch.isnan(negative) and torch.signbit(negative) and not torch.signbit(nan)
    return negative


def reference_order(scores: list[float], ids: list[int]) -> list[int]:
    """Positions sorted by (score, -0.0 before +0.0, id), in plain Python."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], 0 if str(scores[i]) == "-0.0" else 1, ids[i]))


@pytest.mark.parametrize("dtype", FLOATS)
def test_keys_order_like_scores_then_ids(dtype):
    scores = torch.tensor([3.0, -1.5, float("inf"), -0.0, 0.0, -float("inf"), 1e-3, -2.0, 3.0, -1.5], dtype=dtype)
    ids = torch.tensor([4, 9, 1, 0, 7, 3, 8, 2, 6, 5])
    keys = score_keys(scores, ids)
    assert keys.shape == (10, 2 if dtype == torch.float64 else 1)
    assert sort_keys(keys)[1].tolist() == reference_order(scores.tolist(), ids.tolist())


def test_float64_keys_keep_what_float32_rounds_away():
    a, b = 1.0, 1.0 + 2**-40  # equal in float32
    keys = score_keys(torch.tensor([b, a], dtype=torch.float64), torch.tensor([0, 1]))
    assert key_ids(smallest_keys(keys, 2)).tolist() == [1, 0]
    keys = score_keys(torch.tensor([b, a], dtype=torch.float32), torch.tensor([0, 1]))
    assert key_ids(smallest_keys(keys, 2)).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keys_round_trip(dtype):
    scores = torch.randn(100, dtype=dtype) * 1e3
    ids = torch.randint(0, 2**32 - 1, (100,))
    ids[:2] = torch.tensor([0, 2**32 - 1])
    keys = score_keys(scores, ids)
    assert torch.equal(key_ids(keys), ids)
    assert torch.equal(key_scores(keys), scores)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smallest_k_breaks_ties_by_position(dtype):
    scores = torch.tensor([2.0, 1.0, 1.0, 0.5, 1.0], dtype=dtype)
    assert smallest_k(scores, 3).tolist() == [3, 1, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smallest_keys_along_rows_match_lexsort(dtype):
    g = torch.Generator().manual_seed(0)
    scores = (torch.randint(0, 5, (6, 40), generator=g) / 4).to(dtype)  # many exact ties
    ids = torch.randperm(1000, generator=g)[:40]
    kept = key_ids(smallest_keys(score_keys(scores, ids[None, :]), 7, dim=1))
    for row in range(6):
        order = np.lexsort((ids.numpy(), scores[row].numpy()))[:7]
        assert kept[row].tolist() == ids.numpy()[order].tolist()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sign", ["positive", "negative"])
def test_nan_scores_are_refused(dtype, sign):
    nan = torch.tensor(float("nan"), dtype=dtype) if sign == "positive" else negative_nan(dtype)
    scores = torch.arange(6, dtype=dtype)
    scores[4] = nan
    with pytest.raises(ConfigurationError, match=r"scores hold NaN for 1 points \(ids \[14\]"):
        score_keys(scores, torch.arange(10, 16))
    with pytest.raises(ConfigurationError, match="NaN"):
        smallest_k(scores, 2)


@pytest.mark.parametrize("bad", [2**32, -1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ids_outside_32_bits_are_refused(bad, dtype):
    with pytest.raises(ConfigurationError, match=r"ids must lie in \[0, 2\*\*32\).*renumber"):
        score_keys(torch.zeros(3, dtype=dtype), torch.tensor([0, bad, 2]))
