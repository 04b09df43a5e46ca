"""A real one-node SLURM for tests: munged, slurmctld and slurmd on 127.0.0.1, as root.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) provide the daemons; every file
they write (key, sockets, state, spool, logs) is in a temporary folder, and the clients find the
cluster through ``SLURM_CONF``. The node has this machine's CPUs; memory is not a consumable
resource, so jobs are limited by CPUs only, as on a small cluster partition. Two settings are
shortened for tests: a requeued job may start again after ``cred_expire`` (5 s, SLURM's default
120 s), and the scheduler looks at pending jobs every second (default 60 s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

#: The daemons and clients the fixture needs, from Debian's slurm-wlm and munge.
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def write_config(folder: Path, cpus: int, memory_mb: int) -> Path:
    """slurm.conf for one node named ``localhost`` on 127.0.0.1, every path inside ``folder``."""
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""ClusterName=altest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder / 'munge.socket'},cred_expire=5
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
SlurmdLogFile={folder / 'log' / 'slurmd.log'}
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
EnforcePartLimits=ALL
MinJobAge=3600
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


@contextlib.contextmanager
def one_node_slurm(folder: Path, start_timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd in ``folder``; yield the clients' environment; stop them."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = write_config(folder, cpus=os.cpu_count() or 1, memory_mb=4000)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons: list[subprocess.Popen] = []
    logs = folder / "log"
    try:
        daemons.append(
            subprocess.Popen(
                [_program("munged"), "--foreground", "--force", f"--socket={folder / 'munge.socket'}",
                 f"--key-file={key}", f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'munged.seed'}",
                 f"--log-file={logs / 'munged.log'}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )
        )
        _wait_for(lambda: (folder / "munge.socket").exists(), start_timeout, "munged", logs / "munged.log")
        for daemon, extra in (("slurmctld", ["-i"]), ("slurmd", ["-N", "localhost"])):
            daemons.append(
                subprocess.Popen(
                    [_program(daemon), "-D", "-f", str(conf), *extra], env=env,
                    stdout=open(logs / f"{daemon}.out", "w"), stderr=subprocess.STDOUT,
                )
            )
        _wait_for(lambda: _node_idle(env), start_timeout, "slurmd", logs / "slurmd.log")
        yield env
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([_program("scancel"), "--full", "--user=root"], env=env, timeout=20, capture_output=True)
        for daemon in reversed(daemons):
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _node_idle(env: dict[str, str]) -> bool:
    done = subprocess.run(
        [_program("sinfo"), "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20
    )
    return done.returncode == 0 and done.stdout.strip() in ("idle", "mix", "alloc")


def _wait_for(ready, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{what} did not come up in {timeout:.0f} s; its log ends:\n{text}")
        time.sleep(0.5)
