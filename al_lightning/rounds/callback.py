"""``QueryCallback``: turns one ``trainer.fit`` into a whole active-learning experiment."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any, Literal, Optional

import pytorch_lightning as pl
from pytorch_lightning.core.mixins import HyperparametersMixin
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.feature_cache import FeatureCache
from al_lightning.distributed import on_rank_zero
from al_lightning.errors import ConfigurationError
from al_lightning.models.classifier import TOP5_MIN_CLASSES, ActiveClassifier
from al_lightning.oracles import ORACLES, Oracle
from al_lightning.query.pool_query import PoolQuery
from al_lightning.rounds.checkpoints import last_checkpoint, save_state
from al_lightning.rounds.companion import CompanionTraining
from al_lightning.rounds.early_stopping import RoundEarlyStopping
from al_lightning.rounds.evaluation import evaluate_test
from al_lightning.rounds.records import RoundRecords
from al_lightning.rounds.schedule import INITIAL_POOL, ScheduledStrategy, StrategySchedule
from al_lightning.rounds.state import Phase, RoundState
from al_lightning.run_files import read_run_json, write_run_json
from al_lightning.seeding import derive_seed, resolve_seed, seed_rngs
from al_lightning.strategies import TrainsWithClassifier, build


class QueryCallback(HyperparametersMixin, pl.Callback):
    """The active-learning loop, as a callback: train a round, query, label, reset, repeat.

    Round 0 trains on the initial pool. A round ends when the monitored validation metric
    has not improved for ``patience`` validation checks (once ``min_epochs`` have run) or
    after ``max_epochs``; then the callback restores the round's best-validation weights,
    evaluates the test split (:func:`~al_lightning.rounds.evaluation.evaluate_test`), records
    the round (:class:`~al_lightning.rounds.records.RoundRecords`), queries
    (:class:`~al_lightning.query.pool_query.PoolQuery`), has the oracle label the picks, and
    sets up the next round before its first epoch begins: backbone to its initial weights, a
    fresh head, fresh optimizer and LR schedule, so that every other callback
    (``LearningRateMonitor``, ...) already sees the new round. After round ``rounds`` it ends
    the fit. Where the experiment stands is one :class:`~al_lightning.rounds.state.RoundState`
    (a round counter and a phase), saved in checkpoints. A strategy with networks of its own
    trains alongside the classifier (:class:`~al_lightning.rounds.companion.CompanionTraining`).

    Labels come from the oracle (``oracle``, its options in ``oracle_args``): the dataset's
    own (``simulated``), or people (``file``, ``labelstudio``; see :mod:`al_lightning.oracles`).
    With people, the run pauses after each query (saving its state, exit code 0) and the same
    command run again collects the labels and goes on.

    Files in ``trainer.log_dir``: see :mod:`al_lightning.run_files`.

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
        strategy_args: the strategy's own options (``--al.strategy_args.partitions=10``).
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
        oracle: ``simulated``, ``file``, ``labelstudio``, or the class path of an
            :class:`~al_lightning.oracles.Oracle` subclass of your own.
        oracle_args: the oracle's own options (``--al.oracle_args.url=http://localhost:8080``).
        label_dir: for oracles that are people: where a paused run keeps its state
            (``run.json``), which the same command finds, and where the file oracle
            exchanges its files.
        cold_start: the strategy (registry name or class path) that picks round 0's labels of
            a run that starts with none (``--data.initial_pool_size=0``), on the trunk's
            features: a label-free one (no ``logits`` in its ``requires``: the head is
            untrained then; one that trains alongside the classifier is refused too). ``None``:
            ``strategy`` picks them, as it always did. Its seed derives from ``seed`` and the
            round like any query's. Given to a run that starts with labels, it is unused and the
            run warns once rather than refusing, so one config serves runs with and without an
            initial pool (a sweep over ``--data.initial_pool_size``). The run says which features
            round 0 is picked on, and warns when they come from a randomly initialised trunk
            (no ``--model.pretrained``, not a features file): almost surely a mistake.
        cold_start_args: the cold-start strategy's own options.
        handover_to: the strategy that queries instead of ``strategy`` once at least
            ``handover_at`` points are labeled: typicality first, then uncertainty (Hacohen et
            al., ICML 2022, "Active Learning on a Budget: Opposite Strategies Suit High and Low
            Budgets"). Give both or neither.
        handover_args: the handover strategy's own options.
        handover_at: the number of labeled points from which ``handover_to`` queries.

    Which strategy a query uses is a function of the labeled count alone
    (:class:`~al_lightning.rounds.schedule.StrategySchedule`), so a resumed or paused run
    chooses as an uninterrupted one; every check of ``strategy`` (the oracle, the feature
    cache, companion training, the pairwise subset) applies to each of them. ``rounds.csv``
    names the strategy that picked each round's new labels (``queried_by``).
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
        oracle_args: Optional[dict[str, Any]] = None,
        label_dir: Optional[str] = None,
        cold_start: Optional[str] = None,
        cold_start_args: Optional[dict[str, Any]] = None,
        handover_to: Optional[str] = None,
        handover_args: Optional[dict[str, Any]] = None,
        handover_at: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if budget < 0 or rounds < 0 or max_epochs < 1:
            raise ConfigurationError(f"need budget >= 0, rounds >= 0, max_epochs >= 1; got {budget}, {rounds}, {max_epochs}")
        if min_epochs < 0:
            raise ConfigurationError(f"min_epochs must be >= 0, got {min_epochs}")
        self.strategy = build(strategy, **(strategy_args or {}))
        self.schedule = StrategySchedule(
            ScheduledStrategy("--al.strategy", self.strategy.name or strategy, self.strategy),
            _scheduled("--al.cold_start", cold_start, "--al.cold_start_args", cold_start_args),
            _scheduled("--al.handover_to", handover_to, "--al.handover_args", handover_args),
            handover_at,
        )
        self.rounds = rounds
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.monitor = monitor
        self.seed = resolve_seed(seed)
        self.save_round_checkpoints = save_round_checkpoints
        oracle_class = ORACLES.get(oracle)
        if not oracle_class.answers_at_once and not label_dir:
            raise ConfigurationError(
                f"--al.oracle={oracle} needs --al.label_dir=DIR: where the paused run's state (and the file oracle's files) live"
            )
        for scheduled in self.schedule.all():
            if not oracle_class.answers_at_once and "targets" in scheduled.strategy.requires:
                raise ConfigurationError(
                    f"{scheduled.option}={scheduled.name} reads the pool's true labels during the query, which people cannot give "
                    f"(--al.oracle={oracle}); use it with --al.oracle=simulated"
                )
        self.label_dir = Path(label_dir).expanduser() if label_dir else None
        self.oracle: Optional[Oracle] = None  # made at setup, once the data is there
        self.query = PoolQuery(budget, self.seed, pool_subset, labeled_subset, pairwise_subset)
        self.early_stopping = RoundEarlyStopping(patience, mode, tie_improves)
        self.records = RoundRecords()
        #: Companion training of each strategy with networks of its own, by option.
        self.companions = {
            s.option: CompanionTraining(s.strategy, s.name) for s in self.schedule.all() if isinstance(s.strategy, TrainsWithClassifier)
        }
        #: The current round's: that of the strategy whose query ends the round (set as the round starts).
        self.companion: Optional[CompanionTraining] = None
        self.state = RoundState()  # saved in checkpoints
        # The round in progress (a resumed run replays it from its start): not saved.
        self.epochs_in_round = 0
        self._round_started = time.perf_counter()

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows of ``rounds.csv`` so far."""
        return self.records.history

    def paused_checkpoint(self) -> Optional[Path]:
        """The checkpoint of a run that paused for people's labels (``label_dir/run.json``), if there is one."""
        return read_run_json(self.label_dir) if self.label_dir is not None else None

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
            for scheduled in self.schedule.all():
                if "images" in scheduled.strategy.requires:
                    raise ConfigurationError(
                        f"{scheduled.option}={scheduled.name} reads the pool's images, which a feature cache replaces by "
                        "features; run it without --data.feature_cache"
                    )
        will_query = self.rounds > 0 or datamodule.pool.num_labeled == 0
        self.oracle = (
            ORACLES.build(self.hparams.oracle, self.hparams.oracle_args, targets=datamodule.train_targets, label_dir=self.label_dir)
            if will_query
            else None
        )
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
        if self.state.phase is Phase.FINISHED:
            rank_zero_info("[al] the experiment has finished all its rounds; nothing to do")
            trainer.should_stop = True
            return
        if datamodule.feature_cache is not None and datamodule.cached is None:
            # Before any loader is made.
            datamodule.use_cached_features(FeatureCache(datamodule.feature_cache).prepare(trainer, pl_module, datamodule))
        if self.state.phase is Phase.WAITING:
            # A run that paused for labels: they are applied now, or it pauses again.
            if not self._collect(trainer, datamodule):
                self._pause(trainer)
                return
        elif self.state.round == 0 and datamodule.pool.num_labeled == 0:
            scheduled = self.schedule.for_query(0)
            if isinstance(scheduled.strategy, TrainsWithClassifier):
                raise ConfigurationError(
                    f"{scheduled.option}={scheduled.name} trains alongside the classifier, so it cannot choose the "
                    "initial pool; set --data.initial_pool_size to more than 0, or --al.cold_start to a label-free strategy"
                )
            # No initial pool: round 0's labels are the cold start's (or the strategy's) pick with the untrained head.
            pl_module.reset_weights(derive_seed(self.seed, "head", 0))
            if scheduled.reads_features:
                _say_features(_features_source(trainer, pl_module, datamodule), scheduled)
            self._query(trainer, pl_module, datamodule)
        elif self.state.round == 0 and self.schedule.cold_start is not None and self.records.query["queried_by"] == INITIAL_POOL:
            rank_zero_warn(
                f"--al.cold_start={self.schedule.cold_start.name} is unused: the run starts with "
                f"{datamodule.pool.num_labeled} labels; set --data.initial_pool_size=0 to have it pick round 0's labels"
            )
        self.records.write(trainer, datamodule)
        if self.state.phase is Phase.WAITING:
            # Paused before any training: nothing for Lightning to restore, so it can be saved now.
            self._save_state(trainer)
            self._pause(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not at fit start: a resumed run's loops and optimizers are restored only after
        # on_fit_start, and a checkpoint taken before that would replay the round from epoch 0.
        # From here on --ckpt_path=last resumes this run in its own log directory.
        self._save_state(trainer)
        # The first round of this command (a resumed run replays its round from the start);
        # later rounds are set up as soon as the previous one ends.
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
            self.early_stopping.update(float(score), self.epochs_in_round + 1, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_in_round += 1
        stopped_early = self.epochs_in_round >= self.min_epochs and self.early_stopping.exhausted
        if self.epochs_in_round >= self.max_epochs or stopped_early:
            self._end_round(trainer, pl_module)

    # -- rounds -------------------------------------------------------------------------------
    def _start_round(self, trainer: pl.Trainer, pl_module: ActiveClassifier) -> None:
        """Initial weights, fresh head, optimizer, schedule and random streams for the current round."""
        datamodule = self._datamodule(trainer)
        round = self.state.round
        pl_module.reset_weights(derive_seed(self.seed, "head", round))
        pl_module.update_class_weights(datamodule.pool.class_counts(datamodule.num_classes))
        seed_rngs(derive_seed(self.seed, "round", round))
        trainer.strategy.setup_optimizers(trainer)
        # The labeled count does not change while the round trains: the query ending it is known now.
        self.companion = self.companions.get(self.schedule.for_query(datamodule.pool.num_labeled).option)
        if self.companion is not None:
            self.companion.start_round(
                pl_module,
                datamodule,
                network_seed=derive_seed(self.seed, "strategy networks", round),
                data_seed=derive_seed(self.seed, "unlabeled", round, trainer.global_rank),
            )
        self.early_stopping.reset()
        self.epochs_in_round = 0
        self._round_started = time.perf_counter()
        rank_zero_info(f"[al] round {round}: training on {datamodule.pool.num_labeled} labels{self._picked_by(datamodule, round)}")

    def _picked_by(self, datamodule: ActiveDataModule, round: int) -> str:
        """Where the round's new labels came from, for its first log line."""
        queried_by = self.records.query["queried_by"]
        if queried_by is None:  # a checkpoint from before the records kept it
            return ""
        if queried_by == INITIAL_POOL:
            return " (the initial pool)"
        return f", {int((datamodule.pool.rounds == round).sum())} of them picked by {queried_by}"

    def _end_round(self, trainer: pl.Trainer, pl_module: ActiveClassifier) -> None:
        datamodule = self._datamodule(trainer)
        finished_round = self.state.round
        train_seconds = time.perf_counter() - self._round_started
        if self.early_stopping.best_score is None:
            _say_never_monitored(self.monitor, self.max_epochs)
        self.early_stopping.restore_best(pl_module)
        self.records.add_round(
            trainer,
            datamodule,
            finished_round,
            **evaluate_test(trainer, pl_module, datamodule),
            best_val=self.early_stopping.best_score,
            epochs=self.epochs_in_round,
            best_epoch=self.early_stopping.best_epoch,
            train_seconds=train_seconds,
        )
        if finished_round >= self.rounds or datamodule.pool.num_unlabeled == 0:
            if finished_round < self.rounds:
                rank_zero_info("The pool is exhausted: ending the experiment early.")
            self.state.finish()
            trainer.should_stop = True
            self.records.finish(trainer, {**self.hparams, "seed": self.seed}, datamodule, pl_module)  # TensorBoard's HParams session
            self._save_state(trainer, finished_round)
            return
        self.state.round += 1
        self._query(trainer, pl_module, datamodule)
        self.records.write(trainer, datamodule)
        self._save_state(trainer, finished_round)
        if self.state.phase is Phase.WAITING:
            self._pause(trainer)
        else:
            self._start_round(trainer, pl_module)

    # -- queries and labels ----------------------------------------------------------------
    def _query(self, trainer: pl.Trainer, pl_module: ActiveClassifier, datamodule: ActiveDataModule) -> None:
        """The current round's query: select, record, hand it to the oracle, and label it if the oracle answers."""
        scheduled = self.schedule.for_query(datamodule.pool.num_labeled)
        result = self.query.run(
            trainer, pl_module, datamodule, scheduled.strategy, round=self.state.round, true_labels=self.oracle.true_labels()
        )
        result.query.run = _run_name(trainer.log_dir)  # every rank asks (a collective under DDP)
        self.records.note_query(result.scored, result.seconds, scheduled.name, asked=len(result.query))
        self.records.write_query(trainer, result.query)
        self.state.wait_for(result.query)
        on_rank_zero(lambda: self.oracle.request(result.query))
        self._collect(trainer, datamodule)

    def _collect(self, trainer: pl.Trainer, datamodule: ActiveDataModule) -> bool:
        """Label the pending query if the oracle has its answers (checked as a whole); whether it had.

        Items the oracle left unanswered (label -1, a partial round) stay unlabeled: back in the pool.
        """
        query = self.state.pending
        labels = on_rank_zero(lambda: self.oracle.collect(query))
        if labels is None:
            return False
        labels = labels.cpu()
        answered = labels >= 0
        datamodule.pool.label(query.indices.cpu()[answered], labels[answered], query.round)
        self.state.labeled()
        count = int(answered.sum())
        returned = f" of the {len(query)} queried ({len(query) - count} unanswered went back to the pool)" if count < len(query) else ""
        rank_zero_info(f"[al] round {query.round}: labeled {count} points{returned}; {datamodule.pool.num_labeled} labeled")
        return True

    def _pause(self, trainer: pl.Trainer) -> None:
        """End this command: the pending query waits for people; the same command continues it."""
        checkpoint = last_checkpoint(trainer)  # every rank asks (a collective under DDP)
        if trainer.is_global_zero:  # the message may ask the labeling server: once
            rank_zero_info(f"[al] {self.oracle.waiting_message(self.state.pending)}")
            rank_zero_info(f"[al] the run's state is saved (checkpoint: {checkpoint})")
        trainer.should_stop = True

    def _save_state(self, trainer: pl.Trainer, finished_round: Optional[int] = None) -> None:
        """``checkpoints/last.ckpt`` (and ``round-XX.ckpt`` for a finished round), written atomically;
        with people as the oracle also ``label_dir/run.json``, which points at it."""
        last = save_state(trainer, finished_round if self.save_round_checkpoints else None)
        if self.label_dir is not None:
            waiting = self.state.phase is Phase.WAITING
            on_rank_zero(lambda: write_run_json(self.label_dir, last, self.state.round, waiting))

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state.state_dict(), "records": self.records.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state.load_state_dict(state_dict["state"])
        self.records.load_state_dict(state_dict["records"])


def _run_name(log_dir: Optional[str]) -> str:
    """The run as people name it in a labeling tool's model versions: its log folder, relative to here where it can be."""
    folder = Path(log_dir or ".").absolute()
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


@cache
def _say_never_monitored(monitor: str, max_epochs: int) -> None:
    """Said once per process: every round would say it."""
    rank_zero_warn(f"'{monitor}' was never logged (no validation split?): every round trains {max_epochs} epochs and keeps its last weights")


def _scheduled(option: str, name: Optional[str], args_option: str, args: Optional[dict[str, Any]]) -> Optional[ScheduledStrategy]:
    """The strategy ``option`` names (its options ``args``, given as ``args_option``), built as ``--al.strategy`` is; None when not given."""
    if name is None:
        if args:
            raise ConfigurationError(f"{args_option} without {option}: name the strategy they are for")
        return None
    strategy = build(name, **(args or {}))
    return ScheduledStrategy(option, strategy.name or name, strategy)


def _features_source(trainer: pl.Trainer, module: ActiveClassifier, datamodule: ActiveDataModule) -> tuple[str, bool]:
    """What features a query reads, in words, and whether they come from trained weights
    (a features file, a feature cache of a pretrained trunk, a pretrained trunk) rather than a random initialisation."""
    if module.hparams.backbone == "identity":
        return f"the features file {datamodule.hparams.path}", True
    pretrained = module.hparams.pretrained
    weights = f"weights from {pretrained}" if pretrained else "randomly initialised weights"
    where = f"the feature cache {datamodule.feature_cache} of the trunk" if datamodule.feature_cache is not None else "the trunk"
    return f"{where} {module.hparams.backbone} with {weights}", bool(pretrained)


def _say_features(source: tuple[str, bool], scheduled: ScheduledStrategy) -> None:
    """Which features round 0 is picked on; a warning when they come from a randomly initialised trunk."""
    words, trained = source
    if trained:
        rank_zero_info(f"[al] round 0: {scheduled.name} picks on the features of {words}")
    else:
        rank_zero_warn(
            f"{scheduled.option}={scheduled.name} picks round 0's labels on the features of {words}, which say little "
            "about the images; give the trunk pretrained weights (--model.pretrained=FILE) or use a features file"
        )
