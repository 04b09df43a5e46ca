"""Sweeps on SLURM: every run a job, submitted through submitit (``--launcher slurm``).

A run's job executes the same step as the local launcher (:func:`al_lightning.sweep.run_one`:
``train.py fit ... --ckpt_path=last`` into ``run.log``, then ``finished.json``), so the two
launchers give the same pools. Running the sweep command again reads each run's state —
finished (its marker), queued or running (``squeue``), failed (the job left the queue without
a marker) or missing (never submitted) — and submits only the failed and missing ones; a
resubmitted run resumes from the start of the round it was in. A job SLURM preempts or times
out is requeued by submitit (the job is a ``Checkpointable``) and resumes the same way.

Files, in each run's folder: ``slurm_job.json`` (the job id and when it was submitted) and
``slurm/`` (submitit's sbatch script, the job's own output and result). The sweep folder must
be on a filesystem every node shares, as must the config, checkpoints and feature caches.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import submitit

from al_lightning.errors import ConfigurationError
from al_lightning.io import atomic_write_text
from al_lightning.sweep import RUN_LOG, Cell, completed_earlier, execute, read_marker, resume_command, run_one, summary

#: In a run's folder: the id of its latest job.
JOB_FILE = "slurm_job.json"
#: In a run's folder: submitit's files for its jobs (sbatch script, output, result pickles).
JOBS_FOLDER = "slurm"

#: squeue's job states, by what the sweep does with them.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED", "STOPPED"}


@dataclass
class Resources:
    """What each job asks SLURM for; ``None`` leaves the partition's default."""

    partition: Optional[str] = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None
    time_min: int = 60
    account: Optional[str] = None
    sbatch: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    max_requeues: int = 3

    def submitit_parameters(self, job_name: str) -> dict[str, Any]:
        given = {
            "job_name": job_name,
            "partition": self.partition,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem": None if self.mem_gb is None else f"{int(self.mem_gb * 1024)}M",
            "time": self.time_min,
            "account": self.account,
            "additional_parameters": dict(self.sbatch) or None,
            "setup": list(self.setup) or None,
        }
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class RunState:
    """Where one run stands: ``finished``, ``running``, ``queued``, ``failed`` or ``missing``."""

    state: str
    job_id: Optional[str]
    detail: str


class RunJob(submitit.helpers.Checkpointable):
    """What a run's job executes on every task; requeued as it is when preempted or timed out.

    Task 0 runs :func:`run_one` (the local launcher's step). In a multi-task (DDP) job the other
    tasks start the same command, which Lightning's SLURM environment makes ranks 1..n-1; they
    log to ``run.rank<k>.log``.
    """

    def __call__(self, run: Cell, entry: list[str], args: list[str], rounds: int) -> str:
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        if rank == 0:
            finished, text = run_one(run, entry, args, rounds)
            if not finished:
                raise RuntimeError(f"{run.name}: {text}")
            return text
        if read_marker(run.dir) is not None or completed_earlier(run.dir, rounds) is not None:
            return "finished earlier"
        code = execute(resume_command(entry, args), run.dir / f"run.rank{rank}.log")
        if code != 0:
            raise RuntimeError(f"{run.name}: rank {rank} exited with code {code}; see {run.dir / f'run.rank{rank}.log'}")
        return "finished"


def check_slurm() -> None:
    """One line before anything is submitted when SLURM's clients or controller are not there."""
    missing = [p for p in ("sbatch", "squeue", "scontrol", "srun") if shutil.which(p) is None]
    if missing:
        raise ConfigurationError(
            f"--launcher slurm needs SLURM's {', '.join(missing)} on PATH and found none; run the sweep on a "
            "machine of the cluster (a login node) or use --launcher local"
        )
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
        answer = (ping.stdout + ping.stderr).strip()
        up = ping.returncode == 0 and "UP" in answer
    except subprocess.TimeoutExpired:
        answer, up = "no answer in 60 s", False
    if not up:
        raise ConfigurationError(
            f"the SLURM controller does not answer (scontrol ping: {' '.join(answer.split()) or 'no output'}); "
            "check SLURM_CONF and that slurmctld runs, or use --launcher local"
        )


def check_processes(resources: Resources, trainer: dict[str, Any]) -> None:
    """A DDP run's processes are SLURM's tasks: Lightning needs ``devices`` = tasks per node and
    ``num_nodes`` = nodes, and refuses the job otherwise — say so before submitting."""
    devices, num_nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1)
    if isinstance(devices, int) and devices != resources.tasks_per_node:
        raise ConfigurationError(
            f"--tasks-per-node {resources.tasks_per_node} starts {resources.tasks_per_node} process(es) per node but the "
            f"runs set --trainer.devices={devices}; make them equal (a DDP run: --tasks-per-node N "
            f"--trainer.devices=N --trainer.strategy=ddp)"
        )
    if num_nodes != resources.nodes:
        raise ConfigurationError(
            f"--nodes {resources.nodes} but the runs set --trainer.num_nodes={num_nodes}; make them equal"
        )


def queue() -> dict[str, tuple[str, str]]:
    """Every job of this user that squeue still knows, ended ones included: id -> (state, reason or time)."""
    done = subprocess.run(
        ["squeue", "-h", "--states=all", f"--user={getpass.getuser()}", "-o", "%i|%T|%r|%M"],
        capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"squeue failed: {done.stderr.strip()}")
    jobs = {}
    for line in done.stdout.splitlines():
        job_id, state, reason, elapsed = line.strip().split("|")
        jobs[job_id] = (state, reason if state in QUEUED else elapsed)
    return jobs


def read_job(run: Cell) -> Optional[dict[str, Any]]:
    try:
        return json.loads((run.dir / JOB_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def job_error(run: Cell, job_id: str) -> Optional[str]:
    """The first line of the error a job's task 0 ended with (submitit keeps its traceback)."""
    paths = submitit.core.utils.JobPaths(run.dir / JOBS_FOLDER, job_id=job_id, task_id=0)
    try:
        outcome, value = submitit.core.utils.pickle_load(paths.result_pickle)
    except Exception:  # no result: the job was killed, or has not written it
        return None
    if outcome != "error":
        return None
    lines = [line for line in str(value).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Interrupt): ", line)]
    return (raised or lines or ["an error"])[0].split(": ", 1)[-1]


def attempts_of(run: Cell) -> int:
    """How many times the run was started: ``execute`` heads ``run.log`` with a line per attempt."""
    try:
        return sum(line.startswith("=== ") for line in (run.dir / RUN_LOG).read_text(errors="replace").splitlines())
    except FileNotFoundError:
        return 0


def state_of(run: Cell, rounds: int, jobs: dict[str, tuple[str, str]]) -> RunState:
    """Where ``run`` stands, from its marker, its job file and the queue."""
    job = read_job(run)
    job_id = None if job is None else str(job["job_id"])
    marker = read_marker(run.dir)
    if marker is not None:
        attempts = attempts_of(run)
        tries = f" (the last of {attempts} attempts)" if attempts > 1 else ""
        return RunState("finished", job_id, f"in {marker.get('seconds', 0):.1f} s{tries}; {summary(Path(marker['log_dir']))}")
    if job_id is None:
        if completed_earlier(run.dir, rounds) is not None:
            return RunState("failed", None, "all rounds done but no finished.json: resubmitted, it only writes the marker")
        return RunState("missing", None, "never submitted")
    slurm_state, more = jobs.get(job_id, ("", ""))
    if slurm_state in QUEUED:
        return RunState("queued", job_id, f"{slurm_state.lower()} ({more})")
    if slurm_state in RUNNING:
        return RunState("running", job_id, f"{slurm_state.lower()} for {more}")
    why = job_error(run, job_id) or (
        f"job {slurm_state}" if slurm_state else "the job left the queue without finishing (cancelled, killed or out of time)"
    )
    return RunState("failed", job_id, f"{why}; see {run.dir / RUN_LOG} and {run.dir / JOBS_FOLDER}/{job_id}_0_log.*")


def submit(run: Cell, entry: list[str], args: list[str], rounds: int, resources: Resources, sweep_name: str) -> str:
    """Submit ``run`` as one job; its id. SLURM's refusal raises ``RuntimeError`` with its first line."""
    executor = submitit.SlurmExecutor(folder=run.dir / JOBS_FOLDER, max_num_timeout=resources.max_requeues)
    executor.update_parameters(**resources.submitit_parameters(f"{sweep_name}/{run.name}"))
    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal):  # submitit prints sbatch's stderr as well
            job = executor.submit(RunJob(), run, entry, args, rounds)
    except submitit.core.utils.FailedJobError as error:
        lines = [line for line in str(error).splitlines() if line.strip()] or ["sbatch failed"]
        raise RuntimeError(lines[-1].strip()) from None
    atomic_write_text(
        run.dir / JOB_FILE,
        json.dumps({"job_id": job.job_id, "submitted_at": datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n",
    )
    return job.job_id


def launch(
    runs: list[Cell],
    entry: list[str],
    args_of: Callable[[Cell], list[str]],
    rounds: int,
    resources: Resources,
    sweep_name: str,
    wait: bool,
    poll_s: float = 30.0,
) -> int:
    """Report every run's state, submit the failed and missing ones; with ``wait``, report again
    once no run is queued or running. The exit code: 1 if a run failed or was refused, else 0."""
    jobs = queue()
    states = {run.name: state_of(run, rounds, jobs) for run in runs}
    refused = []
    for i, run in enumerate(runs, 1):
        now = states[run.name]
        line = f"[sweep] {i}/{len(runs)} {run.name}: {_describe(now)}"
        if now.state in ("failed", "missing"):
            try:
                job_id = submit(run, entry, args_of(run), rounds, resources, sweep_name)
            except RuntimeError as refusal:
                refused.append(run.name)
                print(f"{line}; SLURM refused it: {refusal}", flush=True)
                continue
            states[run.name] = RunState("queued", job_id, "submitted")
            line += f"; submitted as job {job_id}"
        print(line, flush=True)
    if wait:
        while any(s.state in ("queued", "running") for s in states.values()):
            time.sleep(poll_s)
            jobs = queue()
            states = {run.name: state_of(run, rounds, jobs) for run in runs}
        print("[sweep] no job left in the queue:", flush=True)
        for i, run in enumerate(runs, 1):
            print(f"[sweep] {i}/{len(runs)} {run.name}: {_describe(states[run.name])}", flush=True)
    counts = {k: sum(s.state == k for s in states.values()) for k in ("finished", "running", "queued", "failed", "missing")}
    print("[sweep] " + ", ".join(f"{n} {k}" for k, n in counts.items() if n), flush=True)
    if refused or (wait and counts["failed"]):
        names = refused + [n for n, s in states.items() if s.state == "failed" and n not in refused]
        print(f"error: {len(names)} of {len(runs)} runs failed or were refused: {', '.join(names)}", file=sys.stderr)
        return 1
    return 0


def _describe(state: RunState) -> str:
    job = f"job {state.job_id} " if state.job_id else ""
    return f"{job}{state.state}, {state.detail}"
