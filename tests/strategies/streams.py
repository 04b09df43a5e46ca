"""Driving a streaming strategy as the query callback does: batches on several ranks, merged, finished."""

from __future__ import annotations

import torch

from al_lightning.strategies import PoolOutputs
from al_lightning.strategies.reducers import Reducer
from al_lightning.strategies.strategy import StreamingStrategy


def stream(
    strategy: StreamingStrategy,
    outputs: PoolOutputs,
    budget: int,
    ranks: int,
    seed: int,
    cuts: int = 9,
    idle_rank: bool = False,
) -> torch.Tensor:
    """Feed ``cuts + 1`` random-sized batches to ``ranks`` reducers (plus one that saw nothing
    with ``idle_rank``), merge their states into the first, and finish."""
    g = torch.Generator().manual_seed(seed)
    bounds = [0, *sorted(torch.randint(1, len(outputs), (cuts,), generator=g).tolist()), len(outputs)]
    sliced = {f: getattr(outputs, f) for f in ("logits", "features") if getattr(outputs, f) is not None}
    batches = [
        PoolOutputs(
            index=outputs.index[a:b], **{f: v[a:b] for f, v in sliced.items()}, weight=outputs.weight, bias=outputs.bias
        )
        for a, b in zip(bounds, bounds[1:])
        if b > a
    ]
    shards = [batches[r::ranks] for r in range(ranks)] + ([[]] if idle_rank else [])

    def feed(reducer: Reducer, shard: list[PoolOutputs]) -> Reducer:
        for batch in shard:
            reducer.update(batch)
        return reducer

    def rescan(fresh: Reducer) -> None:
        # every rank rescans its shard (here all into one reducer: merging is order-free)
        for shard in shards:
            feed(fresh, shard)

    reducers = [feed(strategy.reducer(outputs, budget), shard) for shard in shards]
    assert len({r.state().shape for r in reducers}) == 1  # fixed shape: one all_gather
    main = reducers[0]
    for other in reducers[1:]:
        main.merge_state(other.state())
    return main.finish(rescan)
