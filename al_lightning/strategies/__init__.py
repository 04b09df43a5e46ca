"""Query strategies: ``build(name, seed=...)`` → ``strategy.select(outputs, budget)``.

Pure functions of model outputs on the pool (no Lightning, no data loading), so users who
already have logits and embeddings can call them on their own arrays::

    from al_lightning.strategies import PoolOutputs, build

    outputs = PoolOutputs(index=pool_ids, logits=logits, weight=head.weight, bias=head.bias)
    chosen = build("base").select(outputs, budget=1000)   # pool ids, in selection order

Each strategy lives in its own module and registers itself with :func:`register`.
"""

from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import available, build, get, register
from al_lightning.strategies.strategy import RankedStrategy, Strategy, StreamingStrategy, TrainsWithClassifier

# Importing the modules registers the strategies.
from al_lightning.strategies import (  # noqa: E402,F401  isort: skip
    badge,
    bald,
    balanced_random,
    balanced_selection,
    balancing,
    cluster_margin,
    confidence,
    coreset,
    dropquery,
    entropy,
    kmeans_sampling,
    margin,
    margin_selection,
    maxherding,
    partitioned_badge,
    partitioned_coreset,
    power_bald,
    power_margin,
    probcover,
    random_sampling,
    typiclust,
    vaal,
)

__all__ = [
    "PoolOutputs",
    "RankedStrategy",
    "Strategy",
    "StreamingStrategy",
    "TrainsWithClassifier",
    "available",
    "build",
    "get",
    "register",
]
