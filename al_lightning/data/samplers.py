"""Samplers that split work across DDP ranks exactly: no padding, no repeats, the same global batches.

The trainer must leave them as they are: ``Trainer(use_distributed_sampler=False)``, the CLI's
default (Lightning's own sampler would pad with repeated items and reshuffle with its own seed).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from al_lightning.errors import ConfigurationError


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th item starting at ``rank``: each item on exactly one rank.

    For evaluation and pool scoring, where a repeated item would be counted or scored twice.
    Ranks may get one item more or less than each other.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.num_replicas = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


class GlobalBatchSampler(Sampler[list[int]]):
    """A seeded shuffle cut into global batches of ``batch_size``; each rank takes its slice of each.

    Yields this rank's batches as lists of positions (for a DataLoader with
    ``batch_size=None`` over a :class:`~al_lightning.data.datasets.BatchView`).
    ``batch_size`` is the global batch, the same whatever the world size: with W ranks each
    rank holds ``batch_size / W`` items of a step, and together the ranks hold exactly the
    items one process takes in that step, so a 1-rank and a W-rank run follow the same
    optimisation (up to float reduction order, and to random augmentations, which each
    rank draws from its own stream).

    A last partial batch joins the one before it (a labeled set of 33 in batches of 16
    gives 16 + 17, never a batch of one, which breaks BatchNorm in training mode); a set
    smaller than one batch is one batch. A global batch of m items gives each rank
    ``m // W`` of them (the ``m mod W`` left over are skipped this epoch; the shuffle changes
    every epoch), and one that would give a rank fewer than two is skipped. Every rank runs
    the same number of steps, which DDP needs.
    """

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.num_replicas = length, rank, world_size
        if batch_size % world_size:
            raise ConfigurationError(
                f"--data.batch_size={batch_size} is the global batch and must be divisible by the "
                f"{world_size} ranks (devices × nodes); choose a multiple of {world_size}"
            )
        self.batch_size, self.seed = batch_size, seed

    def _global_bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of each global batch in the shuffled order, a partial last one merged."""
        bounds = [(start, min(start + self.batch_size, self.length)) for start in range(0, self.length, self.batch_size)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < self.batch_size:
            bounds[-2:] = [(bounds[-2][0], self.length)]
        return [(start, stop) for start, stop in bounds if (stop - start) // self.num_replicas >= 2]

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed)).tolist()
        for start, stop in self._global_bounds():
            share = (stop - start) // self.num_replicas
            offset = start + self.rank * share
            yield order[offset : offset + share]

    def __len__(self) -> int:
        return len(self._global_bounds())
