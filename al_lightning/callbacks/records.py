"""The run's records: ``rounds.csv``, ``class_counts.csv``, ``pool.csv`` and TensorBoard's round-wise curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.metrics import class_entropy, imbalance_ratio, write_csv

#: Columns of rounds.csv, one row per training round. ``test_acc_top5`` is empty with five
#: classes or fewer (it would always be 1.0), and the test columns are empty without a test split.
ROUND_COLUMNS = (
    "round",
    "num_labeled",
    "num_queried",
    "num_scored",
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


class RoundRecords:
    """One row per finished round, kept in checkpoints and written after every round.

    Files go to ``trainer.log_dir`` (rank 0 writes them, atomically); the scalars go to every
    logger with the number of labels as the step, and TensorBoard also gets the labeled
    set's class histogram (``al/labeled_classes``).
    """

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.class_history: list[dict[str, Any]] = []

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
            **values,
        }
        self.history.append(row)
        self.class_history.append({"round": round, "num_labeled": pool.num_labeled, **dict(zip(datamodule.class_names, counts.tolist()))})
        rank_zero_info(f"[al] round {round}: {_summary(row)}")
        self.write(trainer, datamodule)
        for logger in trainer.loggers:
            logger.log_metrics({f"al/{k}": float(v) for k, v in row.items() if k != "round" and v is not None}, step=row["num_labeled"])
            if isinstance(logger, pl.loggers.TensorBoardLogger) and counts.sum() > 0:
                class_edges = np.arange(datamodule.num_classes + 1) - 0.5
                labels = pool.labels[pool.labeled_mask].numpy()
                logger.experiment.add_histogram("al/labeled_classes", labels, global_step=row["num_labeled"], bins=class_edges)
        return row

    def write(self, trainer: pl.Trainer, datamodule: ActiveDataModule) -> None:
        """Rewrite ``pool.csv`` and, once a round has finished, ``rounds.csv`` and ``class_counts.csv``."""
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        directory = Path(log_dir or ".")
        datamodule.save_pool_csv(directory)
        if self.history:
            write_csv(directory / "rounds.csv", self.history, ROUND_COLUMNS)
            write_csv(directory / "class_counts.csv", self.class_history, ["round", "num_labeled", *datamodule.class_names])

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "class_history": self.class_history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.class_history = list(state["class_history"])


def _summary(row: dict[str, Any]) -> str:
    """One log line for a round: what a person watching the run wants to see."""

    def fmt(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"{row['num_labeled']} labels, test top-1 {fmt(row.get('test_acc_top1'))}, top-5 {fmt(row.get('test_acc_top5'))}, "
        f"imbalance {row['imbalance_ratio']:.2f}, {row.get('epochs')} epochs"
    )
