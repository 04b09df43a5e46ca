"""Shared fixtures: tiny CLI runs in subprocesses, offline hub."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

#: A whole experiment in seconds: digits at 16 px, 2 epochs per round.
TINY_RUN = [
    "--config", str(REPO / "configs" / "demo.yaml"),
    "--data.image_size=16",
    "--data.initial_pool_size=20",
    "--data.batch_size=16",
    "--al.budget=20",
    "--al.rounds=2",
    "--al.max_epochs=2",
    "--al.patience=5",
    "--trainer.accelerator=cpu",
]


def run_cli(
    args: list[str], cwd: Path, script: str = "train.py", timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python <script> <args>`` in ``cwd`` the way a user would; ``env`` adds environment variables."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def log_dirs(root: Path) -> list[Path]:
    """``lightning_logs/version_*`` folders under ``root``, oldest first."""
    return sorted((root / "lightning_logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


@pytest.fixture
def cli():
    return run_cli
