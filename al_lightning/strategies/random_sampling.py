"""Random sampling: the baseline every active learner must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


@register("random")
class RandomSampling(Strategy):
    """Uniformly random points from the pool, without replacement.

    The paper's baseline (i); with SSP it is hard to beat. Reads only ``outputs.index``.

    Cost: O(N) time and memory (one permutation).

    Example:
        >>> from al_lightning.strategies import PoolOutputs, build
        >>> build("random", seed=0).select(PoolOutputs(index=torch.arange(10)), 3).shape
        torch.Size([3])
    """

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        return torch.randperm(len(outputs), generator=self.generator())[:budget]
