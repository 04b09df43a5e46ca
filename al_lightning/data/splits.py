"""Seeded draws of index sets: the validation split and the initial pool."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.quotas import even_shares


def stratified_split(targets: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """Indices of a class-stratified random ``fraction`` of ``targets`` (sorted).

    Each class contributes round(fraction · n_c) points (at least one if it has two or
    more), so the split is as class-balanced as the data allows.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigurationError(f"val_fraction must be in [0, 1), got {fraction}")
    chosen = []
    for c in torch.unique(targets).tolist():
        members = (targets == c).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        take = round(fraction * members.numel())
        if fraction > 0 and take == 0 and members.numel() >= 2:
            take = 1
        chosen.append(members[:take])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)


def per_class_split(targets: Tensor, per_class: int, generator: torch.Generator) -> Tensor:
    """Indices of ``per_class`` random points of every class of ``targets`` (sorted): a class-balanced split.

    Every class must keep at least one point outside the split; the error names the first
    class that would not.
    """
    if per_class < 0:
        raise ConfigurationError(f"val_per_class must be >= 0, got {per_class}")
    chosen = []
    for c in torch.unique(targets).tolist():
        members = (targets == c).nonzero().squeeze(1)
        if members.numel() <= per_class:
            raise ConfigurationError(
                f"val_per_class={per_class} would hold out all {members.numel()} points of class {c}, leaving none "
                f"to label; lower val_per_class below {members.numel()} or use val_fraction"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)


def random_subset(candidates: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """``size`` distinct elements of ``candidates``, uniformly at random."""
    if size > candidates.numel():
        raise ConfigurationError(
            f"initial_pool_size={size} is larger than the {candidates.numel()} points in the pool; lower it"
        )
    return candidates[torch.randperm(candidates.numel(), generator=generator)[:size]]


def balanced_subset(candidates: Tensor, targets: Tensor, size: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """``size`` elements of ``candidates`` with ⌊size/C⌋ (+1 for the first size mod C classes) per class."""
    chosen = []
    for c, take in enumerate(even_shares(size, num_classes)):
        members = candidates[targets[candidates] == c]
        if take > members.numel():
            raise ConfigurationError(
                f"a class-balanced initial pool of {size} needs {take} points of class {c}, which has only "
                f"{members.numel()} in the pool; lower initial_pool_size or use initial_pool=random"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:take]])
    return torch.cat(chosen)
