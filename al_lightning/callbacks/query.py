"""``QueryCallback``: turns one ``trainer.fit`` into a whole active-learning experiment."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal, Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from al_lightning.callbacks.companion import CompanionTraining
from al_lightning.callbacks.early_stopping import RoundEarlyStopping
from al_lightning.callbacks.evaluation import evaluate_test
from al_lightning.callbacks.pool_query import PoolQuery
from al_lightning.callbacks.records import RoundRecords
from al_lightning.callbacks.run_state import RunState, on_rank_zero
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.errors import ConfigurationError
from al_lightning.models.classifier import TOP5_MIN_CLASSES, ActiveClassifier
from al_lightning.oracles import Oracle, Query, SimulatedOracle, build_human_oracle
from al_lightning.seeding import derive_seed, resolve_seed, seed_rngs
from al_lightning.strategies import TrainsWithClassifier, build


class QueryCallback(pl.Callback):
    """The active-learning loop, as a callback: train a round, query, label, reset, repeat.

    Round 0 trains on the initial pool. A round ends when the monitored validation metric
    has not improved for ``patience`` validation checks (once ``min_epochs`` have run) or
    after ``max_epochs``; then the
    callback restores the round's best-validation weights, evaluates the test split
    (:func:`~al_lightning.callbacks.evaluation.evaluate_test`), records the round
    (:class:`~al_lightning.callbacks.records.RoundRecords`), queries and labels
    (:class:`~al_lightning.callbacks.pool_query.PoolQuery`), and sets up the next round
    before its first epoch begins: backbone to its initial weights, a fresh head, fresh
    optimizer and LR schedule, so that every other callback (``LearningRateMonitor``, ...)
    already sees the new round. After round ``rounds`` it ends the fit. A strategy with
    networks of its own trains alongside the classifier
    (:class:`~al_lightning.callbacks.companion.CompanionTraining`).

    Labels come from the oracle (``oracle``): the dataset's own (``simulated``), or people
    (``file``, ``labelstudio``; see :mod:`al_lightning.oracles`). With people, the run
    pauses after each query (saving its state, exit code 0) and the same command run again
    collects the labels and goes on.

    Files in ``trainer.log_dir``: ``rounds.csv`` (one row per round, see
    :data:`~al_lightning.callbacks.records.ROUND_COLUMNS`), ``pool.csv`` (``index,round,path,label``
    per labeled index), ``class_counts.csv`` (labeled count per class per round),
    ``queries/round_K.csv`` (each query's items with prediction and score), and
    ``checkpoints/round-XX.ckpt`` (the round's best model and the pool after its query)
    with ``checkpoints/last.ckpt`` (the latest state: ``--ckpt_path=last`` resumes from it).

    Args:
        strategy: registry name (``base``, ``mase``, ``margin``, ``random``, ...) or the class
            path of a :class:`~al_lightning.strategies.Strategy` subclass (``my_package.MyStrategy``).
        budget: labels acquired per query round.
        rounds: query rounds after round 0 (the run trains ``rounds + 1`` times).
        max_epochs: training epochs per round at most.
        patience: validation checks without improvement of ``monitor`` before a round ends
            (``None``: never early).
        min_epochs: epochs every round trains before patience may end it (a grace period for
            the first epochs, when the validation score of a fresh head can sit still);
            ``max_epochs`` still ends a round, so a smaller ``--al.max_epochs`` override wins.
        tie_improves: count a validation score equal to the round's best as an improvement
            (the paper's code did; the round then keeps the latest of the tied weights).
        monitor: validation metric for early stopping and for picking the round's best weights.
        mode: ``max`` or ``min``: which direction of ``monitor`` is better.
        strategy_args: extra keyword arguments for the strategy's constructor.
        seed: seeds heads, rounds and strategies (default: ``seed_everything``'s seed).
        pool_subset: every strategy scores a random subset of at most this many unlabeled
            points per query; ``None``: the whole pool.
        labeled_subset: at most this many labeled points for strategies that read the
            labeled set's features (the paper's code: 50,000); ``None``: all.
        pairwise_subset: strategies that compare pool points with each other (coreset,
            BADGE, their partitioned forms, cluster margin) score this many points in all,
            labeled subset included (the paper's code: 130,000 on ImageNet); the others
            score the whole pool. ``None``: no such bound.
        save_round_checkpoints: write ``checkpoints/round-XX.ckpt`` after every round
            (``last.ckpt`` is written either way).
        oracle: ``simulated``, ``file`` or ``labelstudio``.
        label_dir: for the human oracles: where the file oracle exchanges its files, and
            where both keep the paused run's state (``run.json``), which the same command finds.
        labelstudio_url: the Label Studio server (``--al.oracle=labelstudio``); the API token
            comes from the environment variable ``LABEL_STUDIO_API_KEY``.
        labelstudio_project: the Label Studio project's id or title (created if missing).
    """

    def __init__(
        self,
        strategy: str = "base",
        budget: int = 1000,
        rounds: int = 5,
        max_epochs: int = 200,
        patience: Optional[int] = 50,
        min_epochs: int = 0,
        tie_improves: bool = False,
        monitor: str = "val/acc_top1",
        mode: Literal["max", "min"] = "max",
        strategy_args: Optional[dict[str, Any]] = None,
        seed: Optional[int] = None,
        pool_subset: Optional[int] = None,
        labeled_subset: Optional[int] = None,
        pairwise_subset: Optional[int] = None,
        save_round_checkpoints: bool = True,
        oracle: str = "simulated",
        label_dir: Optional[str] = None,
        labelstudio_url: Optional[str] = None,
        labelstudio_project: Optional[str] = None,
    ) -> None:
        if budget < 0 or rounds < 0 or max_epochs < 1:
            raise ConfigurationError(f"need budget >= 0, rounds >= 0, max_epochs >= 1; got {budget}, {rounds}, {max_epochs}")
        if min_epochs < 0:
            raise ConfigurationError(f"min_epochs must be >= 0, got {min_epochs}")
        self.strategy_name = strategy
        self.strategy_args = dict(strategy_args or {})
        self.strategy = build(strategy, **self.strategy_args)
        self.rounds = rounds
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.monitor = monitor
        self.seed = resolve_seed(seed)
        self.save_round_checkpoints = save_round_checkpoints
        self.oracle_name = oracle.strip().lower()
        self.human_oracle = build_human_oracle(oracle, label_dir, labelstudio_url, labelstudio_project)
        if self.human_oracle is not None and "targets" in self.strategy.requires:
            raise ConfigurationError(
                f"strategy '{strategy}' reads the pool's true labels during the query, which people cannot give "
                f"(--al.oracle={self.oracle_name}); use it with --al.oracle=simulated"
            )
        self.oracle: Optional[Oracle] = self.human_oracle  # the simulated one is made at setup, from the data
        self.run_state = RunState(label_dir) if self.human_oracle is not None else None
        self.query = PoolQuery(self.strategy, budget, self.seed, pool_subset, labeled_subset, pairwise_subset)
        self.early_stopping = RoundEarlyStopping(patience, mode, tie_improves)
        self.records = RoundRecords()
        self.companion = (
            CompanionTraining(self.strategy, self.strategy.name or strategy) if isinstance(self.strategy, TrainsWithClassifier) else None
        )

        # Experiment state (saved in checkpoints).
        self.round = 0
        self.last_query_seconds = 0.0
        self.last_query_scored: Optional[int] = None  # None: round 0's labels came with the data
        self.finished = False
        self.pending: Optional[Query] = None  # a query whose labels have not come back yet
        # Progress inside the current round (a resumed run replays the round from its start).
        self._needs_setup = True
        self._save_at_train_start = False  # last.ckpt is written when training starts (see on_train_start)
        self.epochs_in_round = 0
        self._monitor_seen = False
        self._round_started = time.perf_counter()

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows of ``rounds.csv`` so far."""
        return self.records.history

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
        datamodule = self._datamodule(trainer)
        if datamodule.feature_cache is not None:
            if not pl_module.freeze_backbone:
                raise ConfigurationError(
                    "--data.feature_cache stores a frozen trunk's features, but --model.freeze_backbone is false "
                    "(fine-tuning changes them every step); set --model.freeze_backbone=true or drop the cache"
                )
            if "images" in self.strategy.requires:
                raise ConfigurationError(
                    f"strategy '{self.strategy_name}' reads the pool's images, which a feature cache replaces by "
                    "features; run it without --data.feature_cache"
                )
        if self.human_oracle is None:
            targets = datamodule.train_targets
            unknown = int((targets < 0).sum())
            if unknown and self.rounds > 0:
                raise ConfigurationError(
                    f"the simulated oracle reveals the dataset's own labels, but {unknown} of its {targets.numel()} "
                    "training items have none; label the queries with people: --al.oracle=file --al.label_dir=DIR "
                    "(or --al.oracle=labelstudio)"
                )
            self.oracle = SimulatedOracle(targets)
        if trainer.reload_dataloaders_every_n_epochs != 1:
            # The labeled set grows between rounds: the training loader must be rebuilt.
            trainer.reload_dataloaders_every_n_epochs = 1
        needed = (self.rounds + 1) * self.max_epochs
        if trainer.max_epochs not in (None, -1) and trainer.max_epochs < needed:
            rank_zero_warn(
                f"trainer.max_epochs={trainer.max_epochs} may end the fit before the last AL round "
                f"(up to {needed} epochs); set --trainer.max_epochs=-1 and let the query callback end it"
            )
        if pl_module.hparams.num_classes < TOP5_MIN_CLASSES:
            rank_zero_info(
                f"[al] {pl_module.hparams.num_classes} classes: top-5 accuracy is not reported (it is always 1.0 "
                f"with {TOP5_MIN_CLASSES - 1} classes or fewer); rounds.csv leaves test_acc_top5 empty"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = self._datamodule(trainer)
        self.records.prepare_loggers(trainer)  # before Lightning logs the hyperparameters
        if self.finished:
            rank_zero_info("[al] the experiment has finished all its rounds; nothing to do")
            trainer.should_stop = True
            return
        if datamodule.feature_cache is not None and datamodule.cached is None:
            datamodule.use_feature_cache(trainer, pl_module)  # before any loader is made
        if self.pending is not None:
            # A run that paused for labels: they are applied now, or it pauses again.
            if not self._collect(trainer, datamodule):
                self._pause(trainer, saved=False)
                return
            self.records.write(trainer, datamodule)
            self._save_at_train_start = True
            return
        if self.round == 0 and datamodule.pool.num_labeled == 0:
            if self.companion is not None:
                raise ConfigurationError(
                    f"strategy '{self.strategy_name}' trains alongside the classifier, so it cannot choose the "
                    "initial pool; set --data.initial_pool_size to more than 0"
                )
            # No initial pool: round 0's labels are the strategy's pick with the untrained head.
            pl_module.reset_weights(derive_seed(self.seed, "head", 0))
            self._run_query(trainer, pl_module, datamodule, round=0)
        self.records.write(trainer, datamodule)
        if self.pending is not None:
            # Paused before any training: nothing for Lightning to restore, so it can be saved now.
            self._save_state(trainer)
            self._pause(trainer)
        else:
            # From then on --ckpt_path=last resumes this run in its own log directory.
            self._save_at_train_start = trainer.ckpt_path is None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not at fit start: a resumed run's loops and optimizers are restored only after
        # on_fit_start, and a checkpoint taken before that would replay the round from epoch 0.
        if self._save_at_train_start:
            self._save_state(trainer)
            self._save_at_train_start = False
        # The first round of a run, or the round a resumed run replays, starts here; later
        # rounds are set up as soon as the previous one ends.
        if self._needs_setup:
            self._start_round(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.companion is not None:
            self.companion.before_batch(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.companion is not None:
            self.companion.after_batch(pl_module, batch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None:
            self._monitor_seen = True
            self.early_stopping.update(float(score), self.epochs_in_round + 1, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_in_round += 1
        stopped_early = self.epochs_in_round >= self.min_epochs and self.early_stopping.exhausted
        if self.epochs_in_round >= self.max_epochs or stopped_early:
            self._end_round(trainer, pl_module)

    # -- rounds -------------------------------------------------------------------------------
    def _start_round(self, trainer: pl.Trainer, pl_module: ActiveClassifier) -> None:
        """Initial weights, fresh head, optimizer, schedule and random streams for ``self.round``."""
        datamodule = self._datamodule(trainer)
        pl_module.reset_weights(derive_seed(self.seed, "head", self.round))
        pl_module.update_class_weights(datamodule.pool.class_counts(datamodule.num_classes))
        seed_rngs(derive_seed(self.seed, "round", self.round))
        trainer.strategy.setup_optimizers(trainer)
        if self.companion is not None:
            self.companion.start_round(
                pl_module,
                datamodule,
                network_seed=derive_seed(self.seed, "strategy networks", self.round),
                data_seed=derive_seed(self.seed, "unlabeled", self.round, trainer.global_rank),
            )
        self.early_stopping.reset()
        self.epochs_in_round = 0
        self._round_started = time.perf_counter()
        self._needs_setup = False

    def _end_round(self, trainer: pl.Trainer, pl_module: ActiveClassifier) -> None:
        datamodule = self._datamodule(trainer)
        finished_round = self.round
        train_seconds = time.perf_counter() - self._round_started
        if not self._monitor_seen:
            rank_zero_warn(
                f"'{self.monitor}' was never logged (no validation split?): every round trains "
                f"{self.max_epochs} epochs and keeps its last weights"
            )
            self._monitor_seen = True  # once is enough
        self.early_stopping.restore_best(pl_module)
        self.records.add_round(
            trainer,
            datamodule,
            finished_round,
            **evaluate_test(trainer, pl_module, datamodule),
            best_val=self.early_stopping.best_score,
            epochs=self.epochs_in_round,
            best_epoch=self.early_stopping.best_epoch,
            num_scored=self.last_query_scored,
            query_seconds=self.last_query_seconds,
            train_seconds=train_seconds,
        )
        last = self.round >= self.rounds or datamodule.pool.num_unlabeled == 0
        if last:
            if self.round < self.rounds:
                rank_zero_info("The pool is exhausted: ending the experiment early.")
            self.finished = True
            trainer.should_stop = True
            self.records.finish(trainer, self.settings(), datamodule, pl_module)  # TensorBoard's HParams session
        else:
            self.round += 1
            self._run_query(trainer, pl_module, datamodule, round=self.round)
            self.records.write(trainer, datamodule)
        self._save_state(trainer, finished_round if self.save_round_checkpoints else None)
        if last:
            return
        if self.pending is None:
            self._start_round(trainer, pl_module)
        else:
            self._pause(trainer)

    def settings(self) -> dict[str, Any]:
        """The experiment's ``--al.*`` settings, for TensorBoard's HParams tab."""
        return {
            "strategy": self.strategy_name,
            "strategy_args": self.strategy_args,
            "budget": self.query.budget,
            "rounds": self.rounds,
            "max_epochs": self.max_epochs,
            "min_epochs": self.min_epochs,
            "patience": self.early_stopping.patience,
            "tie_improves": self.early_stopping.tie_improves,
            "monitor": self.monitor,
            "mode": self.early_stopping.mode,
            "seed": self.seed,
            "pool_subset": self.query.pool_subset,
            "labeled_subset": self.query.labeled_subset,
            "pairwise_subset": self.query.pairwise_subset,
            "oracle": self.oracle_name,
        }

    # -- queries and labels ----------------------------------------------------------------
    def _run_query(self, trainer: pl.Trainer, pl_module: ActiveClassifier, datamodule: ActiveDataModule, round: int) -> None:
        """Select round ``round``'s points, record them, hand them to the oracle and label them if it answers."""
        result = self.query.run(trainer, pl_module, datamodule, round=round, answers_at_once=self.oracle.answers_at_once)
        self.last_query_seconds, self.last_query_scored = result.seconds, result.scored
        self.pending = result.query
        self.records.write_query(trainer, result.query)
        on_rank_zero(trainer, lambda: self.oracle.request(result.query))
        self._collect(trainer, datamodule)

    def _collect(self, trainer: pl.Trainer, datamodule: ActiveDataModule) -> bool:
        """Label the pending query if the oracle has its answers (checked as a whole); whether it had."""
        query = self.pending
        labels = on_rank_zero(trainer, lambda: self.oracle.collect(query))
        if labels is None:
            return False
        datamodule.label(query.indices, round=query.round, labels=labels)
        self.pending = None
        rank_zero_info(f"[al] round {query.round}: labeled {len(query)} points; {datamodule.pool.num_labeled} labeled")
        return True

    def _pause(self, trainer: pl.Trainer, saved: bool = True) -> None:
        """End this command: the pending query waits for people; the same command continues it."""
        rank_zero_info(f"[al] {self.oracle.waiting_message(self.pending)}")
        if saved:
            rank_zero_info(f"[al] the run's state is saved (checkpoint: {self.run_state.checkpoint_path(trainer)})")
        trainer.should_stop = True

    def _save_state(self, trainer: pl.Trainer, finished_round: Optional[int] = None) -> None:
        """``checkpoints/last.ckpt`` (and ``round-XX.ckpt`` for a finished round), written atomically."""
        RunState.save_checkpoint(trainer, finished_round)
        if self.run_state is not None:
            checkpoint = RunState.checkpoint_path(trainer)  # on every rank: it asks for the log directory
            on_rank_zero(trainer, lambda: self.run_state.write(checkpoint, self.round, waiting=self.pending is not None))

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            **self.records.state_dict(),
            "last_query_seconds": self.last_query_seconds,
            "last_query_scored": self.last_query_scored,
            "finished": self.finished,
            "pending": None if self.pending is None else asdict(self.pending),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.round = state_dict["round"]
        self.records.load_state_dict(state_dict)
        self.last_query_seconds = float(state_dict["last_query_seconds"])
        self.last_query_scored = state_dict.get("last_query_scored")
        self.finished = state_dict["finished"]
        pending = state_dict.get("pending")
        self.pending = None if pending is None else Query(**pending)
        # Whatever epoch the checkpoint was taken at, the round replays from its start.
        self._needs_setup = True
