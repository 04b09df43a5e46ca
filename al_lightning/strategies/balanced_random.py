"""Balanced random sampling: the cheating reference that reads the pool's true labels."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.quotas import even_shares
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


def balanced_quotas(available: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """Picks per class: the paper's quotas, water-filled when a class has too few points.

    ``available`` (C,) counts the pool's points of each class and ``budget`` is at most their
    sum. If every class can fill ⌊b/C⌋ + [c < b mod C] (:func:`~al_lightning.quotas.even_shares`), those are
    the quotas. Otherwise each class gets min(n_c, L) for the largest level L that fits the
    budget, and the r points still missing go one each to r classes drawn at random (seeded)
    among those with points to spare: the most balanced allocation the pool allows.
    """
    num_classes = available.numel()
    quotas = torch.tensor(even_shares(budget, num_classes), dtype=torch.long)
    if bool((quotas <= available).all()):
        return quotas
    # sum(min(n_c, L)) grows with L; binary-search the largest L with sum <= budget.
    low, high = 0, int(available.max())
    while low < high:
        mid = (low + high + 1) // 2
        if int(available.clamp(max=mid).sum()) <= budget:
            low = mid
        else:
            high = mid - 1
    quotas = available.clamp(max=low)
    spare = (available > low).nonzero().squeeze(1)
    missing = budget - int(quotas.sum())
    quotas[spare[torch.randperm(spare.numel(), generator=generator)[:missing]]] += 1
    return quotas


@register("balanced_random")
class BalancedRandom(Strategy):
    """Random points, the same number from every class, chosen by the pool's TRUE labels.

    The paper's baseline (ii), "Balanced Random Sampler". It CHEATS: it reads
    ``outputs.targets``, the labels of points that have not been annotated, which no real
    active learner has. It is only a scientific reference (how much does perfect balance
    alone buy?), not a usable strategy.

    Classes are 0..C−1, C = ``outputs.num_classes`` (a class may have no point left).
    Class c takes ⌊b/C⌋ + [c < b mod C] random points of its own;
    a class with fewer points than that gives the shortfall to random other classes
    (:func:`balanced_quotas`), so exactly min(b, N) points are chosen. The selection order
    is round-robin over classes, so every prefix is balanced too. (The published code gave
    the extra b mod C points to the classes with the most points in the pool.)

    Cost: O(N log N) time (one permutation and a sort), O(N + C) memory.

    Args:
        seed: seeds the picks within each class and the classes that absorb a shortfall.
    """

    requires = ("targets", "num_classes")

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        targets = outputs.targets.long().cpu()
        num_classes = outputs.num_classes
        generator = self.generator()
        shuffled = torch.randperm(targets.numel(), generator=generator)
        # Group the shuffled positions by class; a class's first q points are its random pick.
        shuffled = shuffled[torch.argsort(targets[shuffled], stable=True)]
        classes = targets[shuffled]
        available = torch.bincount(targets, minlength=num_classes)
        starts = torch.cumsum(available, 0) - available
        rank = torch.arange(targets.numel()) - starts[classes]
        keep = rank < balanced_quotas(available, budget, generator)[classes]
        # Round-robin order: every class's first pick, then every class's second, ...
        order = torch.argsort(rank[keep] * num_classes + classes[keep], stable=True)
        return shuffled[keep][order]
