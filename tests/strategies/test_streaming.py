"""Streaming selection (batch by batch, merged across ranks) picks exactly what dense selection picks."""

from __future__ import annotations

import pytest
import torch

from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.reducers import Reducer
from al_lightning.strategies.strategy import StreamingStrategy

STREAMING = ["margin", "confidence", "entropy", "mase", "base"]


def pool(n=700, num_classes=12, dim=6, seed=0, duplicates=True) -> PoolOutputs:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g)
    if duplicates:  # exact ties: the same image twice, as real pools have
        features[100:150] = features[:50]
    weight, bias = torch.randn(num_classes, dim, generator=g), torch.randn(num_classes, generator=g)
    index = torch.arange(n) * 7 + 3  # sorted pool indices, as the query callback passes them
    return PoolOutputs(index=index, logits=features @ weight.T + bias, weight=weight, bias=bias)


def stream(strategy: StreamingStrategy, outputs: PoolOutputs, budget: int, ranks: int, seed: int) -> torch.Tensor:
    """Feed random-sized batches to ``ranks`` reducers, merge their states, finish."""
    g = torch.Generator().manual_seed(seed)
    cuts = sorted(torch.randint(1, len(outputs), (9,), generator=g).tolist())
    bounds = [0, *cuts, len(outputs)]
    batches = [
        PoolOutputs(index=outputs.index[a:b], logits=outputs.logits[a:b], weight=outputs.weight, bias=outputs.bias)
        for a, b in zip(bounds, bounds[1:])
        if b > a
    ]
    shards = [batches[r::ranks] for r in range(ranks)]

    def feed(reducer: Reducer, shard) -> Reducer:
        for batch in shard:
            reducer.update(batch)
        return reducer

    def rescan(fresh: Reducer) -> None:
        # every rank rescans its shard (here all into one reducer: merging is order-free)
        for shard in shards:
            feed(fresh, shard)

    reducers = [feed(strategy.reducer(outputs, budget), shard) for shard in shards]
    main = reducers[0]
    for other in reducers[1:]:
        main.merge_state(other.state())
    return main.finish(rescan)


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("budget", [1, 13, 120, 700])
@pytest.mark.parametrize("ranks", [1, 3])
def test_streaming_equals_dense(name, budget, ranks):
    outputs = pool()
    strategy = build(name)
    assert torch.equal(stream(strategy, outputs, budget, ranks, seed=budget), strategy.select(outputs, budget))


@pytest.mark.parametrize("budget", [24, 120])
def test_streaming_base_widens_exactly(budget):
    outputs = pool(seed=1)
    narrow = build("base", depth_factor=1, min_depth=0)  # lists as short as the quota: widening on most classes
    assert torch.equal(stream(narrow, outputs, budget, ranks=2, seed=5), build("base").select(outputs, budget))


def test_state_has_fixed_shape():
    outputs = pool()
    for name in STREAMING:
        small = build(name).reducer(outputs, 30)
        full = build(name).reducer(outputs, 30)
        full.update(outputs)
        assert small.state().shape == full.state().shape
