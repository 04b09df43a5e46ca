"""A run's folder: the names of its files, their writers and readers, and :class:`Run`.

A run writes into its log directory (``trainer.log_dir``, ``lightning_logs/version_N/``):

- ``rounds.csv``: one row per finished round (:data:`ROUND_COLUMNS`);
- ``class_counts.csv``: the labeled count of every class after every round;
- ``pool.csv``: ``index,round,path,label`` per labeled training index, a labels file too;
- ``queries/round_K.csv``: each query's items in selection order (see
  :data:`~al_lightning.oracles.QUERY_COLUMNS`);
- ``checkpoints/round-XX.ckpt`` and ``checkpoints/last.ckpt``: the state after each round and
  the latest state (``--ckpt_path=last`` resumes from it);
- ``config.yaml``: the whole configuration, as LightningCLI saves it.

A run paused for people's labels also keeps ``run.json`` in its ``--al.label_dir``, pointing at
its checkpoint. The records (:mod:`al_lightning.rounds.records`), the sweep
(:mod:`al_lightning.sweep`) and the reports (:mod:`al_lightning.report`) all go through here.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from al_lightning.io import atomic_write_text

ROUNDS_CSV = "rounds.csv"
CLASS_COUNTS_CSV = "class_counts.csv"
POOL_CSV = "pool.csv"
QUERIES_DIR = "queries"
CONFIG_YAML = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
#: The paused run's pointer, in ``--al.label_dir``.
RUN_JSON = "run.json"

#: Columns of rounds.csv, one row per training round. ``test_acc_top5`` is empty with five
#: classes or fewer (it would always be 1.0), and the test columns are empty without a test split.
#: ``queried_by``: the strategy whose query added the round's new labels (``initial_pool``: they
#: came with the data); files written before it existed lack the column. ``num_queried``: the
#: round's new labels; ``num_asked``: how many the query asked for (more when people left some
#: unanswered in a partial round, ``min_answered`` < 1; empty for round 0).
ROUND_COLUMNS = (
    "round",
    "num_labeled",
    "num_queried",
    "num_asked",
    "queried_by",
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


def round_checkpoint_name(round: int) -> str:
    """``round-XX.ckpt``: the state after round ``round``."""
    return f"round-{round:02d}.ckpt"


# -- writers ----------------------------------------------------------------------------------
def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rewrite ``path`` atomically with ``rows`` under the header ``columns``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_rounds(log_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``rounds.csv`` atomically."""
    write_csv(log_dir / ROUNDS_CSV, rows, ROUND_COLUMNS)


def write_class_counts(log_dir: Path, rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> None:
    """Rewrite ``class_counts.csv`` atomically: ``round, num_labeled`` and one column per class."""
    write_csv(log_dir / CLASS_COUNTS_CSV, rows, ["round", "num_labeled", *class_names])


def write_pool(log_dir: Path, text: str) -> None:
    """Rewrite ``pool.csv`` atomically with ``text`` (:meth:`~al_lightning.data.ActivePool.to_csv`:
    ``index,round,path,label``), so that it serves as an ``image_pool`` labels file."""
    atomic_write_text(log_dir / POOL_CSV, text)


def query_file(folder: Path, round: int) -> Path:
    """``folder/queries/round_K.csv``: a query's items, in a run's folder and in a file oracle's."""
    return folder / QUERIES_DIR / f"round_{round}.csv"


def write_run_json(label_dir: Path, checkpoint: Path, round: int, waiting: bool) -> None:
    """The paused run's pointer: its checkpoint, its round, and whether it waits for labels."""
    state = {"checkpoint": str(checkpoint.resolve()), "round": round, "waiting_for_labels": waiting}
    atomic_write_text(label_dir / RUN_JSON, json.dumps(state, indent=1) + "\n")


# -- readers ----------------------------------------------------------------------------------
def read_rounds(log_dir: Path) -> list[dict[str, str]]:
    """``rounds.csv`` of a run's folder as text rows; [] when there is none yet."""
    try:
        with open(log_dir / ROUNDS_CSV, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def read_class_counts(log_dir: Path) -> tuple[list[str], dict[int, np.ndarray]]:
    """``class_counts.csv``: the class names and, by number of labels, the count of each class; empty without the file."""
    try:
        with open(log_dir / CLASS_COUNTS_CSV, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            counts = {int(float(line[1])): np.asarray([float(v) for v in line[2:]]) for line in reader if line}
    except FileNotFoundError:
        return [], {}
    return header[2:], counts


def read_run_json(label_dir: Path) -> Optional[Path]:
    """The paused run's checkpoint named in ``label_dir/run.json``, if both exist."""
    try:
        checkpoint = Path(json.loads((label_dir / RUN_JSON).read_text())["checkpoint"])
    except FileNotFoundError:
        return None
    return checkpoint if checkpoint.exists() else None


def latest_last_checkpoint(root: Path) -> Optional[Path]:
    """The most recently written ``*/checkpoints/last.ckpt`` under a logger's root folder."""
    candidates = [p for p in Path(root).glob(f"*/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


@dataclass
class Run:
    """One run's folder and what a report needs of it: its rows of ``rounds.csv`` by number of
    labels, its class counts and its flattened configuration, with the strategy and seed read
    from that configuration (see :func:`al_lightning.report.runs.load_run`)."""

    path: Path
    strategy: str
    seed: Optional[int]
    config: dict[str, Any]
    rows: dict[int, dict[str, float]]
    class_names: list[str] = field(default_factory=list)
    class_counts: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``strategy seed K``, for messages."""
        return f"{self.strategy} seed {self.seed if self.seed is not None else '?'}"

    @property
    def labels(self) -> list[int]:
        """The label counts this run has records for, ascending."""
        return sorted(self.rows)
