"""The run's records: ``rounds.csv``, ``class_counts.csv``, ``pool.csv``, ``queries/round_K.csv``
(written through :mod:`al_lightning.run_files`) and TensorBoard's round-wise curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.metrics import class_entropy, imbalance_ratio
from al_lightning.oracles import Query, write_query_csv
from al_lightning.rounds.figures import sorted_class_counts_figure
from al_lightning.rounds.schedule import INITIAL_POOL
from al_lightning.run_files import query_file, write_class_counts, write_pool, write_rounds

#: TensorBoard image tag of each round's labeled class counts, sorted from least to most labeled.
SORTED_CLASSES_TAG = "al/labeled_classes_sorted"

#: The experiment's results in TensorBoard's HParams tab (also scalars at the last round's step):
#: the last round's values and the mean test top-1 over rounds (area under the learning curve).
FINAL_METRICS = {
    "al/final_test_acc_top1": "test_acc_top1",
    "al/final_test_acc_top5": "test_acc_top5",
    "al/final_num_labeled": "num_labeled",
    "al/final_imbalance_ratio": "imbalance_ratio",
    "al/final_class_entropy": "class_entropy",
}
MEAN_TOP1_METRIC = "al/mean_test_acc_top1"


class RoundRecords:
    """One row per finished round, kept in checkpoints and written after every round.

    Files go to ``trainer.log_dir`` (rank 0 writes them, atomically); the scalars go to every
    logger with the number of labels as the step, and TensorBoard also gets the labeled
    set's class histogram (``al/labeled_classes``) and the same counts as a figure, sorted
    from least to most labeled class (:data:`SORTED_CLASSES_TAG`). When the experiment ends,
    :meth:`finish` writes TensorBoard's HParams session: the run's settings with
    :data:`FINAL_METRICS` and :data:`MEAN_TOP1_METRIC`. TensorBoard shows the first HParams
    session of a run folder, so the model and the data module save their hyperparameters with
    ``logger=False``: Lightning then writes no session of its own at fit start (with its
    placeholder ``hp_metric``), whatever the logger.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.class_history: list[dict[str, Any]] = []
        #: What the query that made the current round's labels measured, and which strategy made it
        #: (round 0's labels came with the data: no count, ``queried_by`` :data:`INITIAL_POOL`).
        self.query: dict[str, Any] = {"num_scored": None, "num_asked": None, "query_seconds": 0.0, "queried_by": INITIAL_POOL}
        self.hparams_logged = False  # a resumed finished run does not log them again

    def note_query(self, scored: int, seconds: float, queried_by: str, asked: int) -> None:
        """The query that made the next round's labels: strategy ``queried_by`` scored ``scored`` points in
        ``seconds`` and asked for ``asked`` labels."""
        self.query = {"num_scored": scored, "num_asked": asked, "query_seconds": seconds, "queried_by": queried_by}

    def add_round(self, trainer: pl.Trainer, datamodule: ActiveDataModule, round: int, **values: Any) -> dict[str, Any]:
        """Record round ``round`` (``values``: test accuracy, epochs, timings, ...) and write the files."""
        pool = datamodule.pool
        counts = pool.class_counts(datamodule.num_classes)
        row = {
            "round": round,
            "num_labeled": pool.num_labeled,
            "num_queried": int((pool.rounds == round).sum()),
            "imbalance_ratio": imbalance_ratio(counts),
            "class_entropy": class_entropy(counts),
            **self.query,
            **values,
        }
        self.history.append(row)
        self.class_history.append({"round": round, "num_labeled": pool.num_labeled, **dict(zip(datamodule.class_names, counts.tolist()))})
        rank_zero_info(f"[al] round {round}: {_summary(row)}")
        self.write(trainer, datamodule)
        figure = None
        for logger in trainer.loggers:
            numbers = {f"al/{k}": float(v) for k, v in row.items() if k != "round" and v is not None and not isinstance(v, str)}
            logger.log_metrics(numbers, step=row["num_labeled"])
            if isinstance(logger, pl.loggers.TensorBoardLogger) and counts.sum() > 0:
                class_edges = np.arange(datamodule.num_classes + 1) - 0.5
                labels = pool.labels[pool.labeled_mask].numpy()
                logger.experiment.add_histogram("al/labeled_classes", labels, global_step=row["num_labeled"], bins=class_edges)
                # Other ranks' loggers write nothing (a dummy experiment): they draw nothing either.
                if trainer.is_global_zero:
                    if figure is None:
                        title = f"round {round}: {row['num_labeled']} labels"
                        figure = sorted_class_counts_figure(counts.tolist(), datamodule.class_names, title)
                    logger.experiment.add_figure(SORTED_CLASSES_TAG, figure, global_step=row["num_labeled"], close=True)
        return row

    def finish(self, trainer: pl.Trainer, settings: Mapping[str, Any], datamodule: ActiveDataModule, module: pl.LightningModule) -> None:
        """The experiment is over: its HParams session to every TensorBoardLogger, once per experiment.

        Hyperparameters: ``settings`` (the query callback's) with the datamodule's and the
        module's hyperparameters (:func:`run_hparams`); metrics: :func:`final_metrics` of the
        rounds, also logged as scalars at the last round's number of labels.
        """
        if self.hparams_logged or not self.history:
            return
        self.hparams_logged = True
        loggers = [logger for logger in trainer.loggers if isinstance(logger, pl.loggers.TensorBoardLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        data_hparams = dict(datamodule.hparams)
        data_hparams["seed"] = datamodule.seed  # resolved (``None`` in the hparams means seed_everything's seed)
        params = run_hparams(settings, data=data_hparams, model=dict(module.hparams))
        metrics = final_metrics(self.history)
        for logger in loggers:
            logger.log_hyperparams(params, metrics, step=self.history[-1]["num_labeled"])

    def write(self, trainer: pl.Trainer, datamodule: ActiveDataModule) -> None:
        """Rewrite ``pool.csv`` and, once a round has finished, ``rounds.csv`` and ``class_counts.csv``."""
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        directory = Path(log_dir or ".")
        write_pool(directory, datamodule.pool.to_csv(datamodule.item_ids, datamodule.class_names))
        if self.history:
            write_rounds(directory, self.history)
            write_class_counts(directory, self.class_history, datamodule.class_names)

    def write_query(self, trainer: pl.Trainer, query: Query) -> None:
        """Keep the query's items, predictions and scores as ``queries/round_K.csv`` (every oracle, for analysis)."""
        log_dir = trainer.log_dir
        if trainer.is_global_zero:
            write_query_csv(query_file(Path(log_dir or "."), query.round), query)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "class_history": self.class_history,
            "query": self.query,
            "hparams_logged": self.hparams_logged,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.class_history = list(state["class_history"])
        # None: a checkpoint from before they were kept.
        self.query = {"queried_by": None, "num_asked": None, **state["query"]}
        self.hparams_logged = bool(state["hparams_logged"])


def final_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """The experiment's results: :data:`FINAL_METRICS` from the last round (those it has) and
    :data:`MEAN_TOP1_METRIC`, the mean test top-1 over the rounds that have one."""
    last = history[-1]
    metrics = {name: float(last[column]) for name, column in FINAL_METRICS.items() if last.get(column) is not None}
    top1 = [row["test_acc_top1"] for row in history if row.get("test_acc_top1") is not None]
    if top1:
        metrics[MEAN_TOP1_METRIC] = float(np.mean(top1))
    return metrics


def run_hparams(settings: Mapping[str, Any], **namespaces: Mapping[str, Any]) -> dict[str, Any]:
    """One flat dict of TensorBoard-ready values: int, float and str; ``None``, bools and
    non-finite floats as their strings (``"None"``, ``"True"``, ``"inf"``), anything else as ``str``.

    ``settings`` keep their names; the ``namespaces`` (``data=...``, ``model=...``) add
    theirs, except private ones (``_class_path``), and a name already taken with another value
    is spelled ``namespace.name``. Nested dicts are flattened as ``outer/inner``.
    """
    params: dict[str, Any] = {}

    def add(name: str, value: Any, namespace: Optional[str]) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                add(f"{name}/{key}", inner, namespace)
            return
        value = _tensorboard_value(value)
        if name in params and params[name] != value:
            name = f"{namespace}.{name}"
        params.setdefault(name, value)

    for name, value in settings.items():
        add(name, value, None)
    for namespace, values in namespaces.items():
        for name, value in values.items():
            if not name.startswith("_"):
                add(name, value, namespace)
    return params


def _tensorboard_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        # Strings: torch's hparams summary would store a bool as the number 1.0 or 0.0.
        return str(value)
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _summary(row: dict[str, Any]) -> str:
    """One log line for a round: what a person watching the run wants to see."""

    def fmt(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"{row['num_labeled']} labels, test top-1 {fmt(row.get('test_acc_top1'))}, top-5 {fmt(row.get('test_acc_top5'))}, "
        f"imbalance {row['imbalance_ratio']:.2f}, {row.get('epochs')} epochs"
    )
