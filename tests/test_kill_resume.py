"""A run killed at any point continues with ``--ckpt_path=last``: no label lost, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, log_dirs, read_csv
from tests.reference_runs import MARGIN_RUN, finished_run

pytestmark = pytest.mark.slow

#: Rounds 0, 1 and 2: two queries, and round 2 still trains after the last kill.
COMMAND = MARGIN_RUN


def run_until(cwd, extra: list[str], trigger: str, delay: float = 0.0, sig: signal.Signals = signal.SIGKILL) -> str:
    """Start the run; send it ``sig`` ``delay`` seconds after a line containing ``trigger``. Its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *COMMAND, *extra],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if trigger in line:
                time.sleep(delay)
                process.send_signal(sig)
                break
        seen.extend(process.stderr)  # what a run that handles the signal says before it exits
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    expected = -signal.SIGKILL if sig == signal.SIGKILL else 128 + sig
    assert process.returncode == expected, f"exit {process.returncode} after '{trigger}':\n{''.join(seen)[-3000:]}"
    return "".join(seen)


def table(run, name: str, columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [tuple(r[c] for c in columns) for r in read_csv(run / name)]


def test_a_run_killed_again_and_again_ends_with_the_uninterrupted_runs_pool(cli, tmp_path, tmp_path_factory):
    """Killed three times (mid-query, mid-training, while a query is written out), then resumed to its
    end: the pool and the rounds are those of the same command run once without interruption."""
    reference_run = finished_run(COMMAND, tmp_path_factory)  # the uninterrupted run (shared)
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()

    # During round 1's query (the line after round 0's test), then as round 1's training starts
    # (its state saved, its first epoch running: a delay after it would race the round's end on
    # a fast machine), then while round 2's query is written out (query file, pool, records,
    # checkpoint); the last command resumes from there and trains round 2.
    run_until(killed_dir, [], trigger="[al] round 0: 20 labels")
    run_until(killed_dir, ["--ckpt_path=last"], trigger="[al] round 1: training on 40 labels")
    run_until(killed_dir, ["--ckpt_path=last"], trigger="[al] round 2: margin picked")
    finished = cli([*COMMAND, "--ckpt_path=last"], cwd=killed_dir)
    assert finished.returncode == 0, finished.stderr[-3000:]

    (run,) = log_dirs(killed_dir)  # every resume continued in the run's own folder
    assert table(run, "pool.csv", ("index", "round", "label")) == table(reference_run, "pool.csv", ("index", "round", "label"))
    rounds = ("round", "num_labeled", "num_queried", "test_acc_top1")
    assert table(run, "rounds.csv", rounds) == table(reference_run, "rounds.csv", rounds)


def test_a_run_stopped_by_sigterm_exits_143_and_resumes_to_the_uninterrupted_runs_pool(cli, tmp_path, tmp_path_factory):
    """SIGTERM (scancel, preemption, a time limit) is not a finished run: Lightning stops with
    exit status 0, train.py turns that into 143 so that sweeps and job scripts resume it."""
    reference_run = finished_run(COMMAND, tmp_path_factory)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    said = run_until(stopped, [], trigger="[al] round 1: training on", sig=signal.SIGTERM)
    assert "error: stopped by SIGTERM before the experiment ended" in said, said[-2000:]
    resumed = cli([*COMMAND, "--ckpt_path=last"], cwd=stopped)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run,) = log_dirs(stopped)
    assert read_csv(run / "pool.csv") == read_csv(reference_run / "pool.csv")
