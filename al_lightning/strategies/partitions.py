"""Random partitions of the pool, the trick that scales Coreset and BADGE (Citovsky et al. 2021).

Partitions are independent work: :class:`PartitionedStrategy` plans them from the seed and
the set sizes alone, and each one draws from its own generator, so partition i picks the
same points whether one process runs all of them in turn or DDP rank ``i mod world_size``
runs it with only that partition's features in memory.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.quotas import even_shares
from al_lightning.seeding import derive_seed
from al_lightning.strategies.outputs import PER_POINT_FIELDS, SHARED_FIELDS, PoolOutputs
from al_lightning.strategies.strategy import Strategy


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


@dataclass(frozen=True)
class Partition:
    """One partition's share of the work.

    Attributes:
        number: i, its place in the plan; its picks come i-th in the selection.
        unlabeled: positions of its points among the scored unlabeled points.
        labeled: positions of its points among the labeled set.
        quota: how many points it picks.
    """

    number: int
    unlabeled: Tensor
    labeled: Tensor
    quota: int


class PartitionedStrategy(Strategy):
    """A strategy run independently on p random partitions of the pool and the labeled set.

    :meth:`plan` shuffles the unlabeled and the labeled positions with the strategy's seeded
    generator and cuts each into p parts (:func:`paired_partitions`), with
    ``even_shares(b, p)`` picks; partition i then picks with a generator of its own, seeded
    with ``derive_seed(seed, "partition", i)``. :meth:`select` runs the partitions one after
    the other; the query callback instead gives DDP rank r the partitions i with
    i mod world_size = r, scores only their points and gathers the picks
    (:meth:`select_in_partition`), which are the same.

    Subclasses implement :meth:`_select_in_partition` on one partition's outputs.

    Args:
        seed: seeds the partitions and each partition's generator.
        partitions: p, the number of partitions (10 in the paper's ImageNet runs).
    """

    pairwise = True

    def __init__(self, seed: int = 0, partitions: int = 10) -> None:
        super().__init__(seed)
        if partitions < 1:
            raise ConfigurationError(f"{self.name or type(self).__name__} needs partitions >= 1, got {partitions}")
        self.partitions = partitions

    @property
    def reads_labeled(self) -> bool:
        """Whether partitions have labeled parts (the strategy reads ``labeled_features``)."""
        return "labeled_features" in self.requires

    def plan(self, num_unlabeled: int, num_labeled: int, budget: int) -> list[Partition]:
        """The p partitions of ``num_unlabeled`` scored points and ``num_labeled`` labeled ones, for ``budget`` picks in all.

        ``budget`` is at most ``num_unlabeled``: the parts differ in size by at most one,
        larger first, as the shares do, so no part is short of its share.
        """
        pairs = paired_partitions(num_unlabeled, num_labeled if self.reads_labeled else 0, self.partitions, self.generator())
        quotas = even_shares(budget, self.partitions)
        return [Partition(i, unlabeled, labeled, quota) for i, ((unlabeled, labeled), quota) in enumerate(zip(pairs, quotas))]

    def partition_generator(self, number: int) -> torch.Generator:
        """Partition ``number``'s own generator: its draws do not depend on the other partitions' work."""
        return torch.Generator().manual_seed(derive_seed(self.seed, "partition", number))

    def select_in_partition(self, outputs: PoolOutputs, partition: Partition) -> Tensor:
        """Pool indices (from ``outputs.index``) of ``partition.quota`` picks, in selection order.

        ``outputs`` holds the partition's points only: its unlabeled points in the order of
        ``partition.unlabeled`` and, in ``labeled_features``, its labeled points in the order of
        ``partition.labeled``.
        """
        self.check_outputs(outputs)
        return self._pick_in_partition(outputs, partition)

    def _pick_in_partition(self, outputs: PoolOutputs, partition: Partition) -> Tensor:
        """:meth:`select_in_partition` on outputs already checked."""
        if len(outputs) < partition.quota:
            raise ConfigurationError(
                f"partition {partition.number} has {len(outputs)} points, fewer than its quota of {partition.quota}"
            )
        if partition.quota == 0:
            return torch.empty(0, dtype=torch.long)
        positions = self._select_in_partition(outputs, partition.quota, self.partition_generator(partition.number))
        return outputs.index[positions.to(outputs.index.device)]

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        # ``select`` has checked the whole outputs: each partition's slice needs no second check.
        num_labeled = outputs.labeled_features.shape[0] if self.reads_labeled else 0
        picks = [
            self._pick_in_partition(partition_outputs(outputs, partition), partition)
            for partition in self.plan(len(outputs), num_labeled, budget)
            if partition.quota
        ]
        return torch.cat(picks)

    @abc.abstractmethod
    def _select_in_partition(self, outputs: PoolOutputs, budget: int, generator: torch.Generator) -> Tensor:
        """Positions (into one partition's ``outputs``) of ``budget`` distinct points, drawing from ``generator``."""


def partition_outputs(outputs: PoolOutputs, partition: Partition) -> PoolOutputs:
    """The rows of ``outputs`` in ``partition``, with its labeled part; ``index`` holds positions in ``outputs``.

    Positions, so that :meth:`PartitionedStrategy.select_in_partition` on it returns positions.
    Per-point fields are sliced as :func:`~al_lightning.strategies.strategy.iter_chunks` slices them.
    """
    rows = partition.unlabeled
    sliced = {f: getattr(outputs, f)[rows.to(getattr(outputs, f).device)] for f in PER_POINT_FIELDS if getattr(outputs, f) is not None}
    shared = {f: getattr(outputs, f) for f in SHARED_FIELDS}
    if outputs.labeled_features is not None:
        for f in ("labeled_features", "labeled_targets"):
            if shared[f] is not None:
                shared[f] = shared[f][partition.labeled.to(shared[f].device)]
    return PoolOutputs(index=rows, **sliced, **shared)
