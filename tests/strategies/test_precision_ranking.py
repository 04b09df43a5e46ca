"""Ranking keeps the input's precision and refuses what it cannot order, for every strategy that ranks.

float64 pools are scored and ranked in float64 (dense and streamed, merged across ranks) and
match a plain numpy reference; NaN of either sign and ids outside [0, 2**32) are refused.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.strategy import RankedStrategy
from tests.strategies.streams import stream

RANKED = ["margin", "confidence", "entropy", "mase", "base"]


def signed_nan(sign: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A NaN with the sign bit clear (Python's) or set (x86's default, what 0/0 gives there)."""
    nan = torch.tensor(float("nan"), dtype=dtype)
    if sign == "positive":
        return nan
    ints = torch.int64 if dtype == torch.float64 else torch.int32
    negative = (nan.view(ints) | torch.tensor(torch.iinfo(ints).min, dtype=ints)).view(dtype)
    assert torch.isnan(negative) and torch.signbit(negative)
    return negative


# --- a float64 pool where float32 rounding changes the order ------------------------------------


def float64_pool(n: int = 3000, num_classes: int = 1000, dim: int = 32, pairs: int = 200, seed: int = 0) -> PoolOutputs:
    """Logits ~ N(0, 3) (C = 1000) in float64, with near-duplicates that only float64 tells apart.

    The last ``pairs`` rows copy earlier rows and lower the top logit by an eighth of a
    float32 ulp: equal in float32 (a tie, to the smaller id: the original), while in float64
    the copy is strictly more uncertain and closer to every boundary, so it comes first.
    A few exact copies tie in float64 too (to the smaller id).
    """
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, num_classes, generator=g) * 3).double()  # float32 values, held in float64
    weight = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    originals = torch.randperm(n - pairs, generator=g)[:pairs]
    copies = logits[originals].clone()
    top = copies.argmax(1)
    peak = copies.gather(1, top[:, None]).float()
    ulp = (torch.nextafter(peak, torch.tensor(float("inf"))) - peak).double()
    copies.scatter_(1, top[:, None], peak.double() - ulp / 8)
    copies[:10] = logits[originals[:10]]  # exact duplicates
    logits = torch.cat([logits, copies])
    assert torch.equal(logits[-pairs + 10 :].float(), logits[originals[10:]].float())
    index = torch.arange(len(logits)) * 3 + 1
    return PoolOutputs(index=index, logits=logits, weight=weight, bias=torch.zeros(num_classes, dtype=torch.float64))


def plain_softmax(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shifted = z - z.max(1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(1, keepdims=True))
    return np.exp(shifted - log_norm), shifted - log_norm


def plain_boundary_distances(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, C) (z_p − z_c)/‖w_p − w_c‖ with norms of the weight differences themselves, inf at c = p."""
    norms = np.stack([np.linalg.norm(w[p] - w, axis=1) for p in range(len(w))])
    p = z.argmax(1)
    rows = np.arange(len(z))
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = (z[rows, p][:, None] - z) / norms[p]
    distances[rows, p] = np.inf
    return distances


def plain_rank(scores: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Pool indices by ascending (score, index)."""
    return index[np.lexsort((index, scores))]


def reference(name: str, outputs: PoolOutputs, budget: int) -> list[int]:
    """What ``name`` selects by its definition, computed plainly in float64."""
    z, index = outputs.logits.numpy(), outputs.index.numpy()
    probs, log_probs = plain_softmax(z)
    if name == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:]
        return plain_rank(top2[:, 1] - top2[:, 0], index)[:budget].tolist()
    if name == "confidence":
        return plain_rank(probs.max(1), index)[:budget].tolist()
    if name == "entropy":
        return plain_rank((probs * log_probs).sum(1), index)[:budget].tolist()
    distances = plain_boundary_distances(z, outputs.weight.numpy())
    nearest = distances.min(1)
    if name == "mase":
        return plain_rank(nearest, index)[:budget].tolist()
    predicted, num_classes = z.argmax(1), z.shape[1]
    chosen: list[int] = []
    taken: set[int] = set()
    for c in range(num_classes):
        quota = budget // num_classes + (c < budget % num_classes)
        for i in plain_rank(np.where(predicted == c, nearest, distances[:, c]), index):
            if quota == 0:
                break
            if i not in taken:
                taken.add(int(i))
                chosen.append(int(i))
                quota -= 1
    return chosen


@pytest.fixture(scope="module")
def pool64() -> PoolOutputs:
    return float64_pool()


BUDGET = 1500  # BASE: quotas of 2 and 1


@pytest.fixture(scope="module")
def expected(pool64) -> dict[str, list[int]]:
    return {name: reference(name, pool64, BUDGET) for name in RANKED}


@pytest.mark.parametrize("name", RANKED)
def test_float64_pool_ranks_in_float64(name, pool64, expected):
    chosen = build(name).select(pool64, BUDGET).tolist()
    assert chosen == expected[name]
    # the pool is one where rounding to float32 would change the selection
    rounded = PoolOutputs(index=pool64.index, logits=pool64.logits.float(), weight=pool64.weight.float())
    assert build(name).select(rounded, BUDGET).tolist() != expected[name]


@pytest.mark.parametrize("name", RANKED)
def test_float64_streaming_merged_across_ranks_equals_the_reference(name, pool64, expected):
    assert stream(build(name), pool64, BUDGET, ranks=3, seed=7, cuts=11, idle_rank=True).tolist() == expected[name]


def test_float64_base_widening_rescan_is_exact(pool64, expected):
    narrow = build("base", depth_factor=1, min_depth=0)  # lists as short as the quota: widening on most classes
    assert stream(narrow, pool64, BUDGET, ranks=3, seed=3, cuts=11, idle_rank=True).tolist() == expected["base"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", RANKED)
def test_half_precision_inputs_rank_in_float32(name, dtype):
    g = torch.Generator().manual_seed(1)
    logits, weight = torch.randn(400, 10, generator=g).to(dtype), torch.randn(10, 6, generator=g).to(dtype)
    half = build(name).select(PoolOutputs(index=torch.arange(400), logits=logits, weight=weight), 50)
    widened = build(name).select(PoolOutputs(index=torch.arange(400), logits=logits.float(), weight=weight.float()), 50)
    assert torch.equal(half, widened)


# --- what cannot be ranked ---------------------------------------------------------------------


def small_pool(dtype: torch.dtype = torch.float32, n: int = 40, index: torch.Tensor | None = None) -> PoolOutputs:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(n, 5, generator=g).to(dtype)
    weight = torch.randn(5, 3, generator=g).to(dtype)
    return PoolOutputs(index=torch.arange(n) if index is None else index, logits=logits, weight=weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sign", ["positive", "negative"])
@pytest.mark.parametrize("name", RANKED)
def test_nan_logits_are_refused_dense_and_streamed(name, sign, dtype):
    outputs = small_pool(dtype)
    outputs.logits[7, 2] = signed_nan(sign, dtype)
    with pytest.raises(ConfigurationError, match="NaN"):
        build(name).select(outputs, 5)
    reducer = build(name).reducer(PoolOutputs(index=torch.empty(0, dtype=torch.long), weight=outputs.weight), 5)
    with pytest.raises(ConfigurationError, match="NaN"):
        reducer.update(outputs)


class NaNScorer(RankedStrategy):
    """A user's ranked strategy whose score turns NaN on finite logits."""

    def __init__(self, sign: str, seed: int = 0) -> None:
        super().__init__(seed)
        self.sign = sign

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], torch.Tensor]:
        def score(chunk: PoolOutputs) -> torch.Tensor:
            scores = chunk.logits[:, 0].clone()
            scores[chunk.index == 7] = signed_nan(self.sign, scores.dtype)
            return scores

        return score


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sign", ["positive", "negative"])
def test_nan_scores_are_refused_for_any_ranked_strategy(sign, dtype):
    outputs = small_pool(dtype)
    with pytest.raises(ConfigurationError, match=r"scores hold NaN for 1 points \(ids \[7\]"):
        NaNScorer(sign).select(outputs, 5)
    with pytest.raises(ConfigurationError, match=r"scores hold NaN for 1 points \(ids \[7\]"):
        stream(NaNScorer(sign), outputs, 5, ranks=2, seed=0, cuts=11, idle_rank=True)


@pytest.mark.parametrize("bad", [2**32, -1])
@pytest.mark.parametrize("name", [*RANKED, "random", "coreset", "badge"])
def test_indices_outside_32_bits_are_refused_by_every_strategy(name, bad):
    outputs = small_pool(index=torch.cat([torch.arange(39), torch.tensor([bad])]))
    g = torch.Generator().manual_seed(3)
    outputs.features = torch.randn(40, 3, generator=g)
    outputs.bias = torch.zeros(5)
    outputs.labeled_features = torch.randn(4, 3, generator=g)
    with pytest.raises(ConfigurationError, match=r"PoolOutputs.index must lie in \[0, 2\*\*32\).*renumber"):
        build(name).select(outputs, 5)


@pytest.mark.parametrize("bad", [2**32, -1])
@pytest.mark.parametrize("name", RANKED)
def test_streamed_ids_outside_32_bits_are_refused(name, bad):
    outputs = small_pool(index=torch.cat([torch.arange(39), torch.tensor([bad])]))
    with pytest.raises(ConfigurationError, match=r"ids must lie in \[0, 2\*\*32\)"):
        build(name).reducer(outputs, 5).update(outputs)


@pytest.mark.parametrize(
    ("name", "field"),
    [("mase", "weight"), ("base", "weight"), ("coreset", "features"), ("coreset", "labeled_features"), ("badge", "bias")],
)
def test_non_finite_required_fields_are_refused(name, field):
    g = torch.Generator().manual_seed(4)
    outputs = small_pool()
    outputs.features = torch.randn(40, 3, generator=g)
    outputs.bias = torch.zeros(5)
    outputs.labeled_features = torch.randn(4, 3, generator=g)
    getattr(outputs, field).view(-1)[1] = float("inf")
    with pytest.raises(ConfigurationError, match=rf"PoolOutputs.{field} holds NaN or infinite values"):
        build(name).select(outputs, 5)
