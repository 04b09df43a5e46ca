"""Sweeps as SLURM jobs (``--launcher slurm``) against a real one-node SLURM started here.

The same grid through SLURM and through the local launcher gives the same pools; a cancelled
job is resubmitted by the next run of the sweep command and resumes; a job signalled the way
SLURM warns of a time limit or preemption is requeued by submitit and resumes; a 2-task DDP job
selects what one process selects; bad input is one line before anything is submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from al_lightning.report.command import main as report_main
from tests.conftest import REPO, read_csv
from tests.slurm_cluster import missing_programs, one_node_slurm
from tests.standins import write_gaussian_features

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: A features pool in seconds per run: 3 rounds (20 + 20 + 20 labels), 8 epochs each, so that a
#: job can be stopped between its first round and its last.
RUN = [
    "--config", "features_linear.yaml",
    "--data.initial_pool_size=20", "--al.budget=20", "--al.rounds=2",
    "--al.max_epochs=8", "--al.min_epochs=8", "--data.batch_size=16", "--trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM for this module's tests: the environment its clients need."""
    missing = missing_programs()
    if missing:
        message = f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with one_node_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield {**env, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """400 training and 100 test points of 4 Gaussian classes in 16 dimensions."""
    return write_gaussian_features(tmp_path_factory.mktemp("features") / "features.pt", train=400, test=100)


def sweep(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "al_lightning.sweep", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def pools(out: Path) -> dict[str, list[dict[str, str]]]:
    """Each run's final pool (``pool.csv`` of the log directory its marker names)."""
    found = {}
    for marker in sorted(out.glob("*/finished.json")):
        found[marker.parent.name] = read_csv(Path(json.loads(marker.read_text())["log_dir"]) / "pool.csv")
    return found


def squeue(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True, check=True)
    return dict(line.split() for line in done.stdout.splitlines())


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def first_round_done(run_dir: Path) -> bool:
    """Round 0 trained and its round checkpoint written: the run is between its first round and its last."""
    return any(run_dir.glob("lightning_logs/version_*/checkpoints/round-00.ckpt"))


def test_slurm_sweep_gives_the_local_pools_resubmits_a_cancelled_run_and_requeues_a_preempted_one(slurm, features, tmp_path):
    grid = ["--strategies", "base,margin", "--seeds", "0,1", *RUN, f"--data.path={features}"]
    local = sweep(slurm, *grid, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stdout + local.stderr
    out = tmp_path / "slurm"
    first = sweep(slurm, *grid, "--out", str(out), "--launcher", "slurm", "--cpus-per-task", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("missing, never submitted; submitted as job") == 4, first.stdout
    job_of = {p.parent.name: json.loads(p.read_text())["job_id"] for p in out.glob("*/slurm_job.json")}

    # base-seed0 and base-seed1 start first (2 CPUs): cancel one and warn the other of preemption,
    # each between its first round and its last.
    cancelled, preempted = out / "base-seed0", out / "base-seed1"
    wait_for(lambda: first_round_done(cancelled) and first_round_done(preempted), "the first round of two runs")
    subprocess.run(["scancel", job_of["base-seed0"]], env=slurm, check=True)
    # What SLURM sends before a time limit or a preemption (--signal=USR2@90): submitit checkpoints
    # the job (RunJob is Checkpointable) and requeues it under the same id.
    subprocess.run(["scancel", "--signal=USR2", job_of["base-seed1"]], env=slurm, check=True)
    wait_for(lambda: job_of["base-seed0"] not in squeue(slurm), "the cancelled job to leave the queue")

    again = sweep(slurm, *grid, "--out", str(out), "--launcher", "slurm", "--cpus-per-task", "1", "--wait", "--poll-s", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    lines = again.stdout.splitlines()
    assert any(f"base-seed0: job {job_of['base-seed0']} failed" in line and "submitted as job" in line for line in lines), again.stdout
    assert not any("base-seed1" in line and "submitted as job" in line for line in lines), again.stdout
    assert again.stdout.count(" finished, in ") == 4 and "[sweep] 4 finished" in again.stdout, again.stdout
    assert json.loads((preempted / "slurm_job.json").read_text())["job_id"] == job_of["base-seed1"]  # requeued, not resubmitted
    for run_dir in (cancelled, preempted):
        assert "(the last of 2 attempts)" in next(line for line in lines[-5:] if run_dir.name in line)
    assert pools(out) == pools(tmp_path / "local")
    assert len(pools(out)) == 4

    status = sweep(slurm, *grid, "--out", str(out), "--launcher", "slurm")
    assert status.returncode == 0 and "submitted" not in status.stdout and status.stdout.count(" finished, in ") == 4, status.stdout

    # Collecting: the report reads the SLURM sweep's folder as a local one (4 runs, 2 strategies).
    assert report_main([str(out), "--out", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "base" in summary and "margin" in summary and "(n=2)" in summary


def test_a_two_task_ddp_job_selects_the_one_process_pool(slurm, features, tmp_path):
    # lr 0: every round's head is its seeded reset head on any number of ranks, so the picks must agree.
    same = [*RUN, f"--data.path={features}", "--model.lr=0", "--model.momentum=0", "--strategies", "margin", "--seeds", "0"]
    one = sweep(slurm, *same, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stdout + one.stderr
    two = sweep(
        slurm, *same, "--out", str(tmp_path / "two"), "--launcher", "slurm", "--tasks-per-node", "2", "--cpus-per-task", "1",
        "--trainer.strategy=ddp", "--trainer.devices=2", "--wait", "--poll-s", "1",
    )
    assert two.returncode == 0, two.stdout + two.stderr
    log = (tmp_path / "two" / "margin-seed0" / "run.log").read_text()
    assert "world_size=2" in log or "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in log, log[-3000:]
    assert (tmp_path / "two" / "margin-seed0" / "run.rank1.log").exists()
    assert pools(tmp_path / "two") == pools(tmp_path / "one")


def test_bad_slurm_input_is_one_line_before_anything_is_submitted(slurm, features, tmp_path):
    grid = ["--strategies", "base,margin", "--seeds", "0", *RUN, f"--data.path={features}", "--launcher", "slurm"]

    # No SLURM clients on PATH.
    bare = {**slurm, "PATH": os.path.dirname(sys.executable)}
    done = sweep(bare, *grid, "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "needs SLURM's sbatch" in done.stderr and not (tmp_path / "a").exists(), done.stderr

    # A controller that does not answer: a config naming a port nobody listens on.
    dead = tmp_path / "dead.conf"
    conf = Path(slurm["SLURM_CONF"]).read_text().splitlines()
    dead.write_text("\n".join("SlurmctldPort=9" if line.startswith("SlurmctldPort=") else line for line in conf) + "\n")
    done = sweep({**slurm, "SLURM_CONF": str(dead)}, *grid, "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "the SLURM controller does not answer" in done.stderr, done.stderr

    # Processes per node that do not match the runs' devices.
    done = sweep(slurm, *grid, "--out", str(tmp_path / "c"), "--tasks-per-node", "2")
    assert done.returncode == 2 and "--trainer.devices=1" in done.stderr, done.stderr

    # A request the partition cannot satisfy: SLURM's refusal, one line per run.
    done = sweep(slurm, *grid, "--out", str(tmp_path / "d"), "--nodes", "2", "--trainer.num_nodes=2")
    refusals = [line for line in done.stdout.splitlines() if "SLURM refused it:" in line]
    assert done.returncode == 1 and len(refusals) == 2, done.stdout + done.stderr
    assert all("Node count specification invalid" in line for line in refusals), refusals
    assert not list((tmp_path / "d").glob("*/slurm_job.json"))

    # A run that fails in its job (a data file that is not there): failed, with the run's own error.
    done = sweep(slurm, "--strategies", "margin", *grid[2:], "--out", str(tmp_path / "e"), "--data.path=/nonexistent/features.pt", "--wait", "--poll-s", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("[sweep] 1/1 margin-seed0: job ") and " failed, " in line]
    assert "started, FAILED (exit code 2)" in line, line
    assert "/nonexistent/features.pt" in (tmp_path / "e" / "margin-seed0" / "run.log").read_text()

    # A sweep folder made by another grid.
    other = sweep(slurm, *grid, "--out", str(tmp_path / "d"), "--al.budget=10", "--nodes", "2", "--trainer.num_nodes=2")
    assert other.returncode == 2 and "holds a sweep with other settings (overrides:" in other.stderr, other.stderr
