"""One query: score the pool with the current model, let the strategy choose, describe the choice."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.distributed import broadcast
from al_lightning.errors import ConfigurationError
from al_lightning.inference import InferenceLoop
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.oracles import Query
from al_lightning.query.scoring import PoolScorer
from al_lightning.query.selection import select_from_pool
from al_lightning.seeding import derive_seed
from al_lightning.strategies import PoolOutputs, Strategy


@dataclass
class QueryResult:
    """What one query did: the chosen points (a :class:`Query` for the oracle), how many points were scored, and how long it took."""

    query: Query
    scored: int
    seconds: float


class PoolQuery:
    """Scoring and selection for one round, identical on every DDP rank.

    Every rank scores its shard of the pool; streaming strategies merge their reductions on
    every rank, partitioned ones run each partition on one rank and gather the picks, the
    others are gathered on rank 0, which selects; rank 0's choice is broadcast with the
    trainer's own strategy, so all ranks label the same points.

    The strategy is an argument of :meth:`run`: a run may query with several (a cold start,
    a handover; :class:`~al_lightning.rounds.schedule.StrategySchedule`), and the subsets
    follow the strategy of each query.

    Args:
        budget: labels per query.
        seed: the experiment seed, from which each round's strategy and subset seeds derive.
        pool_subset: every strategy scores a seeded random subset of at most this many
            unlabeled points.
        labeled_subset: at most this many labeled points (seeded random) for strategies that
            read their features.
        pairwise_subset: strategies that compare points with each other
            (``Strategy.pairwise``: coreset, BADGE, their partitioned forms, cluster margin)
            score this many points in all: the labeled subset plus unlabeled points to fill up
            (the paper's code: 50,000 labeled + 80,000 unlabeled once 50,000 are labeled).
            The others score the whole pool (or ``pool_subset``).
    """

    def __init__(
        self,
        budget: int,
        seed: int,
        pool_subset: Optional[int] = None,
        labeled_subset: Optional[int] = None,
        pairwise_subset: Optional[int] = None,
    ) -> None:
        for name, size in (("pool_subset", pool_subset), ("labeled_subset", labeled_subset), ("pairwise_subset", pairwise_subset)):
            if size is not None and size < 1:
                raise ConfigurationError(f"--al.{name} must be at least 1 (or null for no subset), got {size}")
        if pairwise_subset is not None and labeled_subset is not None and pairwise_subset <= labeled_subset:
            raise ConfigurationError(
                f"--al.pairwise_subset={pairwise_subset} counts labeled and unlabeled points together, so it must be "
                f"larger than --al.labeled_subset={labeled_subset} to leave room for unlabeled points"
            )
        self.budget = budget
        self.seed = seed
        self.pool_subset = pool_subset
        self.labeled_subset = labeled_subset
        self.pairwise_subset = pairwise_subset

    def run(
        self,
        trainer: pl.Trainer,
        module: ActiveClassifier,
        datamodule: ActiveDataModule,
        strategy: Strategy,
        round: int,
        true_labels: Optional[Tensor] = None,
    ) -> QueryResult:
        """Select up to ``budget`` unlabeled points with ``strategy`` and ``module``'s weights, for round ``round``.

        ``true_labels``: the pool's true labels, from an oracle that knows them (the simulated
        one); strategies that read them get them (``PoolOutputs.targets``).
        """
        pool = datamodule.pool
        budget = self.budget
        if budget > pool.num_unlabeled:
            rank_zero_warn(f"budget {budget} exceeds the {pool.num_unlabeled} unlabeled points left; labeling all of them")
            budget = pool.num_unlabeled
        labeled = self._subset(pool.labeled_indices(), self.labeled_subset, "labeled", round)
        option, size = self._unlabeled_subset_size(strategy, labeled.numel())
        candidates = self._subset(pool.unlabeled_indices(), size, "pool", round)
        if budget > candidates.numel():
            rank_zero_warn(
                f"{option} scores {candidates.numel()} unlabeled points, fewer than the budget of {budget}: "
                f"round {round} labels only {candidates.numel()}; raise it so that at least the budget is scored"
            )
            budget = candidates.numel()
        strategy.seed = derive_seed(self.seed, "strategy", round)
        started = time.perf_counter()
        chosen = select_from_pool(
            strategy,
            budget,
            self._scorer(trainer, module, progress=f"[al] round {round}: scoring the pool"),
            pool_loader=datamodule.pool_dataloader(candidates),
            pool_indices=candidates,
            labeled_loader=datamodule.pool_dataloader(labeled),
            labels=torch.where(pool.labeled_mask, pool.labels, -1),
            true_targets=true_labels,
            subset_loader=lambda indices: datamodule.pool_dataloader(indices, sharded=False),
            labeled_indices=labeled,
        )
        chosen = broadcast(chosen)
        seconds = time.perf_counter() - started
        rank_zero_info(
            f"[al] round {round}: {strategy_name(strategy)} picked {chosen.numel()} of {candidates.numel()} scored points in {seconds:.2f}s"
        )
        return QueryResult(self.describe(trainer, module, datamodule, strategy, chosen, round), candidates.numel(), seconds)

    def describe(
        self, trainer: pl.Trainer, module: ActiveClassifier, datamodule: ActiveDataModule, strategy: Strategy, chosen: Tensor, round: int
    ) -> Query:
        """The chosen points with the model's prediction, its confidence and the strategy's score of each.

        One more forward pass, over the chosen points only (every rank its shard, gathered).
        """
        scorer = self._scorer(trainer, module)
        scored = scorer.gather(datamodule.pool_dataloader(chosen), ["logits", "features"])
        position = {index: i for i, index in enumerate(scored["index"].tolist())}
        # Selection order; a point whose image was skipped as unreadable has no row (-1).
        rows = torch.tensor([position.get(index, -1) for index in chosen.tolist()], dtype=torch.long)
        found = rows >= 0
        logits = torch.full((chosen.numel(), module.head.out_features), torch.nan)
        logits[found] = scored["logits"][rows[found]]
        features = torch.full((chosen.numel(), module.feature_dim), torch.nan)
        features[found] = scored["features"][rows[found]]
        head = scorer.head()
        outputs = PoolOutputs(chosen, logits=logits, features=features, weight=head.weight.cpu(), bias=head.bias.cpu(), num_classes=head.num_classes)
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        scores = strategy.point_scores(outputs) if bool(found.all()) else None
        return Query(
            round=round,
            indices=chosen,
            item_ids=datamodule.item_ids(chosen),
            predicted=torch.where(found, predicted, -1),
            confidence=confidence,
            scores=None if scores is None else scores.double().cpu(),
            class_names=list(datamodule.class_names),
            strategy=strategy_name(strategy),
            image_files=datamodule.item_files(chosen),
        )

    @staticmethod
    def _scorer(trainer: pl.Trainer, module: ActiveClassifier, progress: Optional[str] = None) -> PoolScorer:
        """Scoring as the trainer runs ``module`` (:meth:`InferenceLoop.of <al_lightning.inference.InferenceLoop.of>`)."""
        return PoolScorer(InferenceLoop.of(trainer, module, progress))

    def _unlabeled_subset_size(self, strategy: Strategy, num_labeled: int) -> tuple[str, Optional[int]]:
        """The option that bounds the unlabeled points ``strategy`` scores, and the bound (None: all)."""
        if self.pairwise_subset is None or not strategy.pairwise:
            return f"--al.pool_subset={self.pool_subset}", self.pool_subset
        size = self.pairwise_subset - num_labeled
        if size < 1:
            raise ConfigurationError(
                f"--al.pairwise_subset={self.pairwise_subset} leaves no room for unlabeled points next to the "
                f"{num_labeled} labeled ones; set --al.labeled_subset below it (the paper: 50,000 of 130,000)"
            )
        option = f"--al.pairwise_subset={self.pairwise_subset} with {num_labeled} labeled"
        if self.pool_subset is not None and self.pool_subset < size:
            return f"--al.pool_subset={self.pool_subset}", self.pool_subset
        return option, size

    def _subset(self, indices: Tensor, size: Optional[int], what: str, round: int) -> Tensor:
        """A seeded random subset of at most ``size`` of ``indices`` (sorted), or all of them."""
        if size is None or indices.numel() <= size:
            return indices
        generator = torch.Generator().manual_seed(derive_seed(self.seed, what, round))
        return indices[torch.randperm(indices.numel(), generator=generator)[:size]].sort().values


def strategy_name(strategy: Strategy) -> str:
    """The strategy's registry name, or its class name for an unregistered one."""
    return strategy.name or type(strategy).__name__
