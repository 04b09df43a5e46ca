"""Where a run's latest state lives, so that it continues after a kill or a pause for labels.

``checkpoints/last.ckpt`` in the log directory is the latest state (Lightning's name for it:
``--ckpt_path=last`` resumes from it), rewritten atomically at every round boundary. A run
whose oracle is people also writes ``run.json`` in its ``--al.label_dir``, pointing at that
checkpoint, so the same command run again finds the paused run without ``--ckpt_path``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pytorch_lightning as pl

from al_lightning.io import atomic_write_text

T = TypeVar("T")

LAST_CHECKPOINT = "last.ckpt"


def on_rank_zero(trainer: pl.Trainer, fn: Callable[[], T]) -> T:
    """``fn()`` on global rank 0 only; every rank gets its result, or re-raises its exception.

    For work with side effects outside the process (files, a labeling server): done once,
    and an error on rank 0 stops every rank instead of leaving them waiting in a collective.
    ``fn`` itself must not take part in a collective (``trainer.log_dir`` is one): ask before.
    """
    outcome: Any = None
    if trainer.is_global_zero:
        try:
            outcome = (fn(), None)
        except Exception as err:  # noqa: BLE001  re-raised below, on every rank
            outcome = (None, err)
    if trainer.world_size > 1:
        outcome = trainer.strategy.broadcast(outcome, src=0)
    result, error = outcome
    if error is not None:
        raise error
    return result


def checkpoint_dir(trainer: pl.Trainer) -> Path:
    """``log_dir/checkpoints``. ``trainer.log_dir`` is a collective under DDP: every rank must ask."""
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


def save_checkpoint_atomic(trainer: pl.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, then renamed over it.

    A run killed while writing leaves the previous checkpoint intact. Every rank calls it
    (saving is a collective), rank 0 writes.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(temporary, weights_only=False)
    if trainer.is_global_zero:
        os.replace(temporary, path)
    trainer.strategy.barrier("al_checkpoint")


class RunState:
    """The paused run's pointer file, ``label_dir/run.json``: its checkpoint and what it waits for.

    Args:
        label_dir: the human oracle's folder.
    """

    FILE = "run.json"

    def __init__(self, label_dir: str | Path) -> None:
        self.path = Path(label_dir).expanduser() / self.FILE

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        return checkpoint_dir(trainer) / LAST_CHECKPOINT

    @staticmethod
    def save_checkpoint(trainer: pl.Trainer, finished_round: Optional[int] = None) -> None:
        """Write ``last.ckpt``; for a finished round also ``round-XX.ckpt`` (the same file, linked)."""
        directory = checkpoint_dir(trainer)
        last = directory / LAST_CHECKPOINT
        if finished_round is None:
            save_checkpoint_atomic(trainer, last)
            return
        round_file = directory / f"round-{finished_round:02d}.ckpt"
        save_checkpoint_atomic(trainer, round_file)
        if trainer.is_global_zero:
            temporary = last.with_name(f".{last.name}.link")
            temporary.unlink(missing_ok=True)
            try:
                os.link(round_file, temporary)  # a second name for the same bytes: no copy
            except OSError:  # a file system without hard links
                shutil.copyfile(round_file, temporary)
            os.replace(temporary, last)
        trainer.strategy.barrier("al_last_checkpoint")

    def write(self, checkpoint: Path, round: int, waiting: bool) -> None:
        state = {"checkpoint": str(checkpoint.resolve()), "round": round, "waiting_for_labels": waiting}
        atomic_write_text(self.path, json.dumps(state, indent=1) + "\n")

    def checkpoint(self) -> Optional[Path]:
        """The paused run's checkpoint, if this folder has one that still exists."""
        if not self.path.exists():
            return None
        checkpoint = Path(json.loads(self.path.read_text())["checkpoint"])
        return checkpoint if checkpoint.exists() else None


def latest_last_checkpoint(root: str | Path) -> Optional[Path]:
    """The most recently written ``*/checkpoints/last.ckpt`` under a logger's root folder."""
    candidates = [p for p in Path(root).glob(f"*/checkpoints/{LAST_CHECKPOINT}") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
