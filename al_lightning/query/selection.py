"""Where a strategy runs: on every rank (streamed), in each rank's partitions, or on rank 0 (gathered).

Whatever the world size, the same pool and weights give the same selection on every path.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from al_lightning.distributed import gather_rows, on_every_rank, rank, world_size
from al_lightning.query.scoring import SCORED_FIELDS, PoolScorer
from al_lightning.strategies import PoolOutputs, Strategy
from al_lightning.strategies.partitions import Partition, PartitionedStrategy
from al_lightning.strategies.reducers import Reducer
from al_lightning.strategies.strategy import StreamingStrategy

#: Makes an unsharded loader over the given pool indices, yielding ``(image, pool_index)``.
SubsetLoader = Callable[[Tensor], DataLoader]


def select_from_pool(
    strategy: Strategy,
    budget: int,
    scorer: PoolScorer,
    pool_loader: DataLoader,
    pool_indices: Tensor,
    labeled_loader: DataLoader,
    labels: Tensor,
    true_targets: Optional[Tensor],
    subset_loader: Optional[SubsetLoader] = None,
    labeled_indices: Optional[Tensor] = None,
) -> Tensor:
    """Pool indices chosen by ``strategy``: on every rank for streaming and partitioned strategies, on rank 0 otherwise.

    Every chunk or whole :class:`PoolOutputs` a strategy gets carries the head (``weight``,
    ``bias``) and ``num_classes``, plus the fields it ``requires`` and those it ``accepts``
    that the caller can give (``targets`` when ``true_targets`` is given; ``labeled_features``
    always: TypiClust's labeled set, empty before the first labels). Streaming strategies
    reduce batch by batch (memory O(b) or O(C·b)) and every rank finishes the merged
    reduction identically. Partitioned strategies, given ``subset_loader`` and
    ``labeled_indices``, run each partition on one rank (:func:`select_by_partition`). The others get
    whole outputs gathered on rank 0 only, which selects (other ranks return nothing: the
    caller broadcasts rank 0's answer); no other rank holds more than its shard.

    Args:
        pool_loader: this rank's shard of the pool to score, yielding ``(image, pool_index)``.
        pool_indices: all pool indices to choose from (sorted; used as is when no forward
            pass is needed).
        labeled_loader: this rank's shard of the labeled set, same form.
        labels: (N_train,) labels by training index (-1 where unknown).
        true_targets: (N_train,) the pool's true labels, for the ``targets`` field, from an
            oracle that knows them (:meth:`~al_lightning.oracles.Oracle.true_labels`: the
            simulated one); None when the oracle cannot answer during the query (people). A
            strategy that accepts them (``balancing``'s per-pick label feedback) then does
            without; one that requires them (``balanced_random``) is refused before the run
            starts (:class:`~al_lightning.rounds.QueryCallback`).
        subset_loader: an unsharded loader over any given pool indices, same form.
        labeled_indices: the labeled indices ``labeled_loader`` covers (sorted).
    """
    fields = set(strategy.requires)
    if "targets" in strategy.accepts and true_targets is not None:
        fields.add("targets")
    if "labeled_features" in strategy.accepts:
        fields.add("labeled_features")
    per_point = fields & set(SCORED_FIELDS)
    if isinstance(strategy, StreamingStrategy):
        reducer = strategy.reducer(scorer.head(), budget)
        scorer.stream(reducer, pool_loader, per_point)

        def rescan(fresh: Reducer) -> None:
            scorer.stream(fresh, pool_loader, per_point)

        return reducer.finish(rescan).cpu()
    if isinstance(strategy, PartitionedStrategy) and subset_loader is not None and labeled_indices is not None:
        return select_by_partition(strategy, budget, scorer, subset_loader, pool_indices, labeled_indices, labels)

    head = scorer.head()
    scored = scorer.gather(pool_loader, per_point, to=0) if per_point else {"index": pool_indices}
    labeled = scorer.gather(labeled_loader, ["features"], to=0) if "labeled_features" in fields else None

    def select_on_rank_zero() -> Tensor:
        if rank() != 0:
            return torch.empty(0, dtype=torch.long)
        outputs = PoolOutputs(**scored, weight=head.weight.cpu(), bias=head.bias.cpu(), num_classes=head.num_classes)
        if labeled is not None:
            outputs.labeled_features = labeled["features"]
            outputs.labeled_targets = labels[labeled["index"]]
        else:
            outputs.labeled_targets = labels[labels >= 0]
        if "targets" in fields and true_targets is not None:
            outputs.targets = true_targets[outputs.index]
        return strategy.select(outputs, budget)

    return on_every_rank(select_on_rank_zero, "selecting on rank 0")


def select_by_partition(
    strategy: PartitionedStrategy,
    budget: int,
    scorer: PoolScorer,
    subset_loader: SubsetLoader,
    pool_indices: Tensor,
    labeled_indices: Tensor,
    labels: Tensor,
) -> Tensor:
    """A partitioned strategy's picks, the same on every rank and for any number of ranks.

    Every rank makes the same plan (:meth:`PartitionedStrategy.plan`, from the seed and the
    set sizes); rank r runs the partitions i with i mod world_size = r, one at a time: it
    scores only that partition's unlabeled and labeled points and selects in it. No rank
    holds more than one partition's features, and with p ≥ world_size every rank works.
    The picks (b indices) are gathered and put in partition order.

    Args:
        pool_indices: the scored unlabeled points (sorted), which the plan's positions index.
        labeled_indices: the labeled points (sorted), which its labeled positions index.
        labels: (N_train,) labels by training index, for ``labeled_targets``.
    """
    fields = [f for f in SCORED_FIELDS if f in strategy.requires]
    num_labeled = labeled_indices.numel() if strategy.reads_labeled else 0
    plan = strategy.plan(pool_indices.numel(), num_labeled, budget)
    mine = [p for p in plan if p.quota and p.number % world_size() == rank()]

    def select_in_mine() -> Tensor:
        rows = [torch.empty(0, 3, dtype=torch.long)]
        for partition in mine:
            outputs = _partition_outputs(scorer, subset_loader, fields, pool_indices, labeled_indices, labels, partition, strategy.reads_labeled)
            quota = min(partition.quota, len(outputs))  # fewer only where unreadable images were skipped
            picks = strategy.select_in_partition(outputs, dataclasses.replace(partition, quota=quota)).cpu()
            rows.append(torch.stack([torch.full_like(picks, partition.number), torch.arange(picks.numel()), picks], dim=1))
        return torch.cat(rows)

    picked = gather_rows(on_every_rank(select_in_mine, "selecting in this rank's partitions"), scorer.device)
    order = torch.argsort(picked[:, 0] * (budget + 1) + picked[:, 1])
    return picked[order, 2]


def _partition_outputs(
    scorer: PoolScorer,
    subset_loader: SubsetLoader,
    fields: list[str],
    pool_indices: Tensor,
    labeled_indices: Tensor,
    labels: Tensor,
    partition: Partition,
    with_labeled: bool,
) -> PoolOutputs:
    """One partition's points scored on this rank, in the plan's order: its unlabeled points and (``with_labeled``) its labeled part."""
    head = scorer.head()
    members = pool_indices[partition.unlabeled]
    scored = _in_order(scorer.collect(subset_loader(members), fields), members)
    outputs = PoolOutputs(**scored, weight=head.weight.cpu(), bias=head.bias.cpu(), num_classes=head.num_classes)
    if with_labeled:
        labeled_members = labeled_indices[partition.labeled]
        labeled = _in_order(scorer.collect(subset_loader(labeled_members), ["features"]), labeled_members)
        outputs.labeled_features = labeled["features"]
        outputs.labeled_targets = labels[labeled["index"]]
    return outputs


def _in_order(scored: dict[str, Tensor], members: Tensor) -> dict[str, Tensor]:
    """``scored``'s rows in the order of ``members`` (those scored: an unreadable image may have been skipped)."""
    ordered, position = members.sort()
    rank_in_members = position[torch.searchsorted(ordered, scored["index"])]
    order = torch.argsort(rank_in_members)
    return {f: v[order] for f, v in scored.items()}
