"""Random partitions of the pool, the trick that scales Coreset and BADGE (Citovsky et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor


def random_partitions(size: int, parts: int, generator: torch.Generator) -> list[Tensor]:
    """Shuffle ``range(size)`` and cut it into ``parts`` near-equal pieces (sizes differ by at most one)."""
    order = torch.randperm(size, generator=generator)
    return list(torch.tensor_split(order, parts))


def paired_partitions(num_unlabeled: int, num_labeled: int, parts: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """``parts`` pairs (unlabeled positions, labeled positions), each set shuffled and split independently.

    As the paper's appendix A.3: partition i runs the selection on its unlabeled piece against
    its own labeled piece, with ``even_shares(b, p)[i]`` picks.
    """
    unlabeled = random_partitions(num_unlabeled, parts, generator)
    labeled = random_partitions(num_labeled, parts, generator)
    return list(zip(unlabeled, labeled))
