"""The run's checkpoints: ``checkpoints/last.ckpt`` (the latest state) and ``round-XX.ckpt`` per round.

``last.ckpt`` is Lightning's name for the latest state (``--ckpt_path=last`` resumes from it).
It is rewritten atomically at every round boundary, so a run killed at any moment continues
from the start of the round it was in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl

from al_lightning.run_files import CHECKPOINTS_DIR, LAST_CHECKPOINT, round_checkpoint_name


def checkpoint_dir(trainer: pl.Trainer) -> Path:
    """``log_dir/checkpoints``. ``trainer.log_dir`` is a collective under DDP: every rank must ask."""
    return Path(trainer.log_dir or trainer.default_root_dir) / CHECKPOINTS_DIR


def last_checkpoint(trainer: pl.Trainer) -> Path:
    """``log_dir/checkpoints/last.ckpt`` (every rank must ask, see :func:`checkpoint_dir`)."""
    return checkpoint_dir(trainer) / LAST_CHECKPOINT


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


def save_state(trainer: pl.Trainer, finished_round: Optional[int] = None) -> Path:
    """Write ``last.ckpt``; for a finished round also ``round-XX.ckpt`` (the same file, linked). Returns ``last.ckpt``."""
    directory = checkpoint_dir(trainer)
    last = directory / LAST_CHECKPOINT
    if finished_round is None:
        save_checkpoint_atomic(trainer, last)
        return last
    round_file = directory / round_checkpoint_name(finished_round)
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
    return last
