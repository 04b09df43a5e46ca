"""``QueryCallback``: turns one ``trainer.fit`` into a whole active-learning experiment."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from al_lightning.callbacks.scoring import PoolScorer, select_from_pool
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.distributed import broadcast_from_zero
from al_lightning.errors import ConfigurationError
from al_lightning.metrics import class_entropy, imbalance_ratio, write_csv
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.seeding import derive_seed, resolve_seed, seed_rngs
from al_lightning.strategies import Strategy, TrainsWithClassifier, build

log = logging.getLogger(__name__)

#: Columns of rounds.csv, one row per training round.
ROUND_COLUMNS = (
    "round",
    "num_labeled",
    "num_queried",
    "test_acc_top1",
    "test_acc_top5",
    "best_val",
    "epochs",
    "best_epoch",
    "imbalance_ratio",
    "class_entropy",
    "query_seconds",
    "train_seconds",
)


class QueryCallback(pl.Callback):
    """The active-learning loop, as a callback: train a round, query, label, reset, repeat.

    Round 0 trains on the initial pool. A round ends when the monitored validation metric
    has not improved for ``patience`` epochs or after ``max_epochs``; then the callback
    restores the round's best-validation weights, evaluates the test split, scores the
    unlabeled pool in eval mode, asks the strategy for ``budget`` indices, has the oracle
    label them, logs the round, and resets the model (backbone to its initial weights, a
    fresh head), the optimizer and the LR schedule. After round ``rounds`` it ends the fit.

    Every rank scores its shard of the pool; the outputs are gathered, rank 0 selects and
    broadcasts the indices, so all ranks label the same points.

    Files in ``trainer.log_dir``: ``rounds.csv`` (one row per round, see
    :data:`ROUND_COLUMNS`), ``pool.csv`` (``index,round`` per labeled index),
    ``class_counts.csv`` (labeled count per class per round), and
    ``checkpoints/round-XX.ckpt`` (the round's best model and the pool after its query;
    ``--ckpt_path`` resumes from it).

    Args:
        strategy: registry name (``base``, ``mase``, ``margin``, ``random``, ...).
        budget: labels acquired per query round.
        rounds: query rounds after round 0 (the run trains ``rounds + 1`` times).
        max_epochs: training epochs per round at most.
        patience: epochs without improvement of ``monitor`` before a round ends (``None``: never early).
        monitor: validation metric for early stopping and for picking the round's best weights.
        mode: ``max`` or ``min``: which direction of ``monitor`` is better.
        strategy_args: extra keyword arguments for the strategy's constructor.
        seed: seeds heads, rounds and strategies (default: ``seed_everything``'s seed).
        pool_subset: score a random subset of at most this many unlabeled points per query
            (the paper scored 80,000 on ImageNet); ``None``: the whole pool.
        labeled_subset: at most this many labeled points for strategies that read the
            labeled set's features (the paper: 50,000); ``None``: all.
        save_round_checkpoints: write ``checkpoints/round-XX.ckpt`` after every round.
    """

    def __init__(
        self,
        strategy: str = "base",
        budget: int = 1000,
        rounds: int = 5,
        max_epochs: int = 200,
        patience: Optional[int] = 50,
        monitor: str = "val/acc_top1",
        mode: Literal["max", "min"] = "max",
        strategy_args: Optional[dict[str, Any]] = None,
        seed: Optional[int] = None,
        pool_subset: Optional[int] = None,
        labeled_subset: Optional[int] = None,
        save_round_checkpoints: bool = True,
    ) -> None:
        if budget < 0 or rounds < 0 or max_epochs < 1:
            raise ConfigurationError(f"need budget >= 0, rounds >= 0, max_epochs >= 1; got {budget}, {rounds}, {max_epochs}")
        self.strategy_name = strategy
        self.strategy_args = dict(strategy_args or {})
        self.strategy = build(strategy, **self.strategy_args)
        self.budget = budget
        self.rounds = rounds
        self.max_epochs = max_epochs
        self.patience = patience
        self.monitor = monitor
        self.mode = mode
        self.seed = resolve_seed(seed)
        self.pool_subset = pool_subset
        self.labeled_subset = labeled_subset
        self.save_round_checkpoints = save_round_checkpoints

        # Experiment state (saved in checkpoints).
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.class_history: list[dict[str, Any]] = []
        self.last_query: dict[str, float] = {"query_seconds": 0.0}
        self.finished = False
        # Progress inside the current round (a resumed run replays the round from its start).
        self._needs_reset = True
        self._reset_round_progress()

    # -- helpers ---------------------------------------------------------------------------
    def _reset_round_progress(self) -> None:
        self.epochs_in_round = 0
        self.best_score: Optional[float] = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self._best_state: Optional[dict[str, Tensor]] = None
        self._round_started = time.perf_counter()

    def strategy_for_round(self, round: int) -> Strategy:
        """The strategy, seeded for ``round`` so each round draws fresh but reproducible randomness."""
        self.strategy.seed = derive_seed(self.seed, "strategy", round)
        return self.strategy

    @property
    def trains_with_classifier(self) -> bool:
        return isinstance(self.strategy, TrainsWithClassifier)

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> ActiveDataModule:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ActiveDataModule):
            raise ConfigurationError("QueryCallback needs an ActiveDataModule as the trainer's datamodule")
        return datamodule

    # -- Lightning hooks ---------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, ActiveClassifier):
            raise ConfigurationError("QueryCallback needs an ActiveClassifier model")
        if trainer.reload_dataloaders_every_n_epochs != 1:
            # The labeled set grows between rounds: the training loader must be rebuilt.
            trainer.reload_dataloaders_every_n_epochs = 1
        needed = (self.rounds + 1) * self.max_epochs
        if trainer.max_epochs not in (None, -1) and trainer.max_epochs < needed:
            rank_zero_warn(
                f"trainer.max_epochs={trainer.max_epochs} may end the fit before the last AL round "
                f"(up to {needed} epochs); set --trainer.max_epochs=-1 and let the query callback end it"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = self._datamodule(trainer)
        if self.finished:
            trainer.should_stop = True
            return
        if self.round == 0 and datamodule.pool.num_labeled == 0:
            if self.trains_with_classifier:
                raise ConfigurationError(
                    f"strategy '{self.strategy_name}' trains alongside the classifier, so it cannot choose the "
                    "initial pool; set --data.initial_pool_size to more than 0"
                )
            # No initial pool: round 0's labels are the strategy's pick with the untrained head.
            pl_module.reset_weights(derive_seed(self.seed, "head", 0))
            self._query(trainer, pl_module, datamodule, round=0)
        self._write_pool(trainer, datamodule)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run resumed from a checkpoint taken at an epoch's end skips the next
        # on_train_epoch_start, so the first round's reset happens here.
        self._start_round_if_needed(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_round_if_needed(trainer, pl_module)

    def _start_round_if_needed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._needs_reset:
            return
        # Start the round from the initial weights with fresh optimizer, schedule and random streams.
        datamodule = self._datamodule(trainer)
        pl_module.reset_weights(derive_seed(self.seed, "head", self.round))
        pl_module.update_class_weights(datamodule.pool.class_counts(datamodule.num_classes))
        seed_rngs(derive_seed(self.seed, "round", self.round))
        trainer.strategy.setup_optimizers(trainer)
        if self.trains_with_classifier:
            self.strategy.reset(derive_seed(self.seed, "strategy networks", self.round), pl_module.device)
            self._unlabeled_batches = datamodule.unlabeled_batches(derive_seed(self.seed, "unlabeled", self.round, trainer.global_rank))
        self._reset_round_progress()
        self._needs_reset = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.trains_with_classifier or batch is None:
            return
        unlabeled = next(self._unlabeled_batches, None)
        if unlabeled is None:  # the pool is exhausted, or the batch's images were all unreadable
            return
        losses = self.strategy.train_step(batch[0], unlabeled[0].to(pl_module.device))
        pl_module.log_dict({f"{self.strategy_name}/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True, batch_size=len(batch[0]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_in_round += 1
        score = trainer.callback_metrics.get(self.monitor)
        if score is None:
            if self.epochs_in_round == 1:
                rank_zero_warn(
                    f"'{self.monitor}' was not logged (no validation split?): every round trains "
                    f"{self.max_epochs} epochs and keeps its last weights"
                )
        else:
            score = float(score)
            improved = self.best_score is None or (score > self.best_score if self.mode == "max" else score < self.best_score)
            if improved:
                self.best_score, self.best_epoch, self.bad_epochs = score, self.epochs_in_round, 0
                self._best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            else:
                self.bad_epochs += 1
        patience_over = self.patience is not None and self.bad_epochs >= self.patience
        if self.epochs_in_round >= self.max_epochs or patience_over:
            self._end_round(trainer, pl_module)

    # -- the end of a round -----------------------------------------------------------------
    def _end_round(self, trainer: pl.Trainer, pl_module: ActiveClassifier) -> None:
        datamodule = self._datamodule(trainer)
        finished_round = self.round
        train_seconds = time.perf_counter() - self._round_started
        if self._best_state is not None:
            pl_module.load_state_dict(self._best_state)
        test = self._evaluate_test(trainer, pl_module, datamodule)
        self._record_round(trainer, datamodule, test, train_seconds)

        last = self.round >= self.rounds or datamodule.pool.num_unlabeled == 0
        if last:
            if self.round < self.rounds:
                rank_zero_info("The pool is exhausted: ending the experiment early.")
            self.finished = True
            trainer.should_stop = True
        else:
            self.round += 1
            self._query(trainer, pl_module, datamodule, round=self.round)
            self._write_pool(trainer, datamodule)
            self._needs_reset = True
        if self.save_round_checkpoints:
            trainer.save_checkpoint(Path(trainer.log_dir) / "checkpoints" / f"round-{finished_round:02d}.ckpt", weights_only=False)

    @torch.no_grad()
    def _evaluate_test(self, trainer: pl.Trainer, pl_module: ActiveClassifier, datamodule: ActiveDataModule) -> dict[str, float]:
        """Top-1/top-5 on the test split, each rank on its shard, metrics synced across ranks."""
        was_training = pl_module.training
        pl_module.eval()
        metrics = pl_module.test_metrics
        metrics.reset()
        try:
            for batch in datamodule.test_dataloader(sharded=True):
                if batch is None:  # all skipped as unreadable
                    continue
                images, targets = batch
                with trainer.precision_plugin.forward_context():
                    logits = pl_module(images.to(pl_module.device))
                metrics.update(logits.float(), targets.to(pl_module.device))
            results = {k.removeprefix("test/"): float(v) for k, v in metrics.compute().items()}
        finally:
            metrics.reset()
            pl_module.train(was_training)
        return results

    def _query(self, trainer: pl.Trainer, pl_module: ActiveClassifier, datamodule: ActiveDataModule, round: int) -> None:
        """Score the pool, select, and have the oracle label the selection as ``round``."""
        pool = datamodule.pool
        if self.budget > pool.num_unlabeled:
            rank_zero_warn(f"budget {self.budget} exceeds the {pool.num_unlabeled} unlabeled points left; labeling all of them")
        budget = min(self.budget, pool.num_unlabeled)
        strategy = self.strategy_for_round(round)
        candidates = self._subset(pool.unlabeled_indices(), self.pool_subset, "pool", round)
        labeled = self._subset(pool.labeled_indices(), self.labeled_subset, "labeled", round)
        budget = min(budget, candidates.numel())
        started = time.perf_counter()
        scorer = PoolScorer(pl_module, pl_module.device, trainer.precision_plugin.forward_context)
        chosen = select_from_pool(
            strategy,
            budget,
            scorer,
            pool_loader=datamodule.pool_dataloader(candidates),
            pool_indices=candidates,
            labeled_loader=datamodule.pool_dataloader(labeled),
            labels=torch.where(pool.labeled_mask, pool.labels, -1),
            true_targets=datamodule.train_targets,
        )
        chosen = broadcast_from_zero(chosen, pl_module.device)
        seconds = time.perf_counter() - started
        datamodule.label(chosen, round=round)
        self.last_query = {"query_seconds": seconds}
        rank_zero_info(
            f"[al] round {round}: {self.strategy_name} picked {chosen.numel()} of {candidates.numel()} "
            f"scored points in {seconds:.2f}s; {pool.num_labeled} labeled"
        )

    def _subset(self, indices: Tensor, size: Optional[int], what: str, round: int) -> Tensor:
        """A seeded random subset of at most ``size`` of ``indices`` (sorted), or all of them."""
        if size is None or indices.numel() <= size:
            return indices
        generator = torch.Generator().manual_seed(derive_seed(self.seed, what, round))
        return indices[torch.randperm(indices.numel(), generator=generator)[:size]].sort().values

    # -- records ------------------------------------------------------------------------------
    def _record_round(self, trainer: pl.Trainer, datamodule: ActiveDataModule, test: dict[str, float], train_seconds: float) -> None:
        pool = datamodule.pool
        counts = pool.class_counts(datamodule.num_classes)
        row = {
            "round": self.round,
            "num_labeled": pool.num_labeled,
            "num_queried": int((pool.rounds == self.round).sum()),
            **self.last_query,
            "test_acc_top1": test["acc_top1"],
            "test_acc_top5": test["acc_top5"],
            "best_val": self.best_score,
            "epochs": self.epochs_in_round,
            "best_epoch": self.best_epoch,
            "imbalance_ratio": imbalance_ratio(counts),
            "class_entropy": class_entropy(counts),
            "train_seconds": train_seconds,
        }
        self.history.append(row)
        self.class_history.append({"round": self.round, "num_labeled": pool.num_labeled, **dict(zip(datamodule.class_names, counts.tolist()))})
        rank_zero_info(
            f"[al] round {self.round}: {row['num_labeled']} labels, test top-1 {row['test_acc_top1']:.4f}, "
            f"top-5 {row['test_acc_top5']:.4f}, imbalance {row['imbalance_ratio']:.2f}, {self.epochs_in_round} epochs"
        )
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            self._write_history(log_dir, datamodule)
        for logger in trainer.loggers:
            logger.log_metrics({f"al/{k}": float(v) for k, v in row.items() if k != "round" and v is not None}, step=row["num_labeled"])
            if isinstance(logger, pl.loggers.TensorBoardLogger) and counts.sum() > 0:
                labels = pool.labels[pool.labeled_mask]
                class_edges = np.arange(datamodule.num_classes + 1) - 0.5
                logger.experiment.add_histogram(
                    "al/labeled_classes", labels.numpy(), global_step=row["num_labeled"], bins=class_edges
                )

    def _write_history(self, log_dir: Optional[str], datamodule: ActiveDataModule) -> None:
        directory = Path(log_dir or ".")
        write_csv(directory / "rounds.csv", self.history, ROUND_COLUMNS)
        write_csv(directory / "class_counts.csv", self.class_history, ["round", "num_labeled", *datamodule.class_names])

    def _write_pool(self, trainer: pl.Trainer, datamodule: ActiveDataModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            datamodule.save_pool_csv(log_dir or ".")
            if self.history:
                self._write_history(log_dir, datamodule)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "history": self.history,
            "class_history": self.class_history,
            "last_query": self.last_query,
            "finished": self.finished,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = state_dict["round"]
        self.history = list(state_dict["history"])
        self.class_history = list(state_dict["class_history"])
        self.last_query = dict(state_dict["last_query"])
        self.finished = state_dict["finished"]
        # Whatever epoch the checkpoint was taken at, the round replays from its start.
        self._needs_reset = True
