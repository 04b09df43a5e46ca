"""A grid of experiments, here one after another or as SLURM jobs: ``python -m al_lightning.sweep``.

::

    python -m al_lightning.sweep --config demo.yaml --strategies base,margin,random --seeds 0,1,2 \\
        --out sweeps/demo [any train.py override, e.g. --al.budget=100]
    python -m al_lightning.sweep --grid c2 --out sweeps/c2 --launcher slurm --tasks-per-node 8 ...

Every (strategy, seed) cell is one ``train.py fit`` run in a subprocess, in its own folder
``OUT/<strategy>-seed<seed>/`` (``--trainer.default_root_dir``), its output in ``run.log``
there. A run that exits 0 with its records gets ``finished.json`` and is skipped when the sweep
runs again; one without it is run with ``--ckpt_path=last``, the CLI's own resume: it continues
in its own log directory from the start of the round it was in, or starts when it has no
checkpoint yet. ``--print`` prints the commands and runs nothing; ``--launcher slurm`` submits
each run as a job (:mod:`al_lightning.sweep_slurm`); ``--grid`` names one of the paper's
experiments (:mod:`al_lightning.grids`). The arguments are checked once with the CLI's own
parser before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

from al_lightning.config_files import PROJECT_CONFIGS, resolve_config_args
from al_lightning.errors import ConfigurationError
from al_lightning.grids import grid_named
from al_lightning.io import atomic_write_text
from al_lightning.run_files import ROUNDS_CSV, latest_last_checkpoint, read_rounds

#: The marker a run gets once it has exited 0 with its records; its presence means "skip".
MARKER = "finished.json"
#: Every run's stdout and stderr, appended attempt after attempt.
RUN_LOG = "run.log"
#: In the sweep folder: the grid, config and overrides its runs share (a folder holds one sweep).
SWEEP_FILE = "sweep.json"

#: Configuration keys the sweep sets itself for every run → the sweep flag to use instead. The
#: reports leave them out when they decide which runs are comparable (they are what a sweep varies).
OWNED = {
    "al.strategy": "--strategies",
    "seed_everything": "--seeds",
    "trainer.default_root_dir": "--out",
    "ckpt_path": "nothing: the sweep resumes an unfinished run with --ckpt_path=last itself",
}


@dataclass(frozen=True)
class Cell:
    """One cell of the grid and the folder it owns (its run's log directory is inside)."""

    strategy: str
    seed: int
    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name


def parse_args(argv: Optional[Sequence[str]]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's own flags; everything else is passed through to every run, in order.

    ``allow_abbrev=False``: otherwise argparse would take a CLI override such as ``--seed`` for
    an abbreviation of ``--seeds`` instead of passing it through.
    """
    parser = argparse.ArgumentParser(
        prog="python -m al_lightning.sweep",
        description="Run train.py fit for every strategy x seed, here one after another or as SLURM jobs; "
        "unknown arguments are train.py overrides given to every run.",
        allow_abbrev=False,
    )
    parser.add_argument("--grid", help="one of the paper's experiments (a1, b1, c1, c2, d, table1, table2): its config, strategies and seeds")
    parser.add_argument("--config", "-c", help="train.py config (a path or a name in configs/); replaces the grid's")
    parser.add_argument("--strategies", help="comma-separated strategy names or class paths; replaces the grid's")
    parser.add_argument("--seeds", help="comma-separated integers (--seed_everything); replaces the grid's")
    parser.add_argument("--out", required=True, help="sweep folder: one run folder per cell inside")
    parser.add_argument("--print", action="store_true", dest="print_only", help="print the commands, run nothing")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local", help="local: one run after another here; slurm: one job per run")
    slurm = parser.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--partition")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes per run (and --trainer.num_nodes)")
    slurm.add_argument("--tasks-per-node", type=int, default=1, help="processes per node: a DDP run's --trainer.devices")
    slurm.add_argument("--gpus-per-node", type=int)
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--mem-gb", type=float, help="memory per node")
    slurm.add_argument("--time-min", type=int, default=60, help="time limit per job; a job that reaches it is requeued and resumes")
    slurm.add_argument("--account")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option, e.g. --sbatch qos=high (repeatable)")
    slurm.add_argument("--setup", action="append", default=[], metavar="COMMAND", help="a shell line the job runs first, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--max-requeues", type=int, default=3, help="times a job that timed out is requeued")
    slurm.add_argument("--wait", action="store_true", help="after submitting, wait until no run is queued or running and report")
    slurm.add_argument("--poll-s", type=float, default=30.0, help=argparse.SUPPRESS)
    return parser.parse_known_args(argv)


def check_overrides(overrides: list[str]) -> None:
    """Refuse overrides of what the sweep sets per run: they would make every cell the same run."""
    for arg in overrides:
        flag = arg.split("=", 1)[0]
        if flag.removeprefix("--") in OWNED:
            raise ConfigurationError(f"{flag} is set by the sweep for each run; use {OWNED[flag.removeprefix('--')]}")
        if flag == "--print_config":
            raise ConfigurationError("--print_config would make every run print its config and exit; use --print")


def parse_strategies(text: str) -> list[str]:
    """Registry names (lower-cased, as the registry matches them) or class paths, each once."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ConfigurationError("--strategies is empty; give e.g. --strategies base,margin")
    from al_lightning.strategies import available  # imports torch: only once the cheap checks passed

    unknown = [n for n in names if "." not in n and n.lower() not in available()]
    if unknown:
        raise ConfigurationError(
            f"unknown strategy {', '.join(map(repr, unknown))}; choose from: {', '.join(available())} "
            "(or give the class path of your own Strategy subclass, e.g. my_package.MyStrategy)"
        )
    names = [n if "." in n else n.lower() for n in names]
    _refuse_repeats(names, "--strategies")
    return names


def parse_seeds(text: str) -> list[int]:
    """Integer seeds, each once: a typo must not silently shrink or repeat the grid."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigurationError("--seeds is empty; give e.g. --seeds 0,1,2")
    try:
        seeds = [int(s) for s in items]
    except ValueError:
        raise ConfigurationError(f"--seeds takes comma-separated integers, got {text!r}") from None
    _refuse_repeats(seeds, "--seeds")
    return seeds


def _refuse_repeats(values: list[Any], flag: str) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigurationError(f"{flag} lists {', '.join(repeated)} more than once")


def resolve_config(value: str) -> str:
    """The config as an absolute path, found the way train.py finds it (``NAME.yaml`` in configs/).

    Absolute, so that printed commands run from any directory of a cluster node.
    """
    resolved = resolve_config_args(["--config", value], PROJECT_CONFIGS)[1]
    return os.path.abspath(resolved) if Path(resolved).expanduser().exists() else resolved


def entry_command() -> list[str]:
    """How a run starts: this interpreter and the repository's ``train.py`` (or the CLI module
    itself when the package is installed without the repository)."""
    script = PROJECT_CONFIGS.parent / "train.py"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from al_lightning.cli import main; main()"]


def run_args(config: str, run: Cell, overrides: list[str]) -> list[str]:
    """The ``train.py`` arguments of one cell; the overrides come last, as the user gave them."""
    return [
        "fit",
        "--config",
        config,
        f"--al.strategy={run.strategy}",
        f"--seed_everything={run.seed}",
        f"--trainer.default_root_dir={run.dir}",
        *overrides,
    ]


def validate(args: list[str], run: Cell) -> dict[str, Any]:
    """The full config of ``args`` from the CLI's own parser (``--print_config``), nothing trained.

    Runs in this process (one import of the CLI, not a second interpreter). A rejected argument
    raises :class:`ConfigurationError` with jsonargparse's message; so does a config file or a
    namespace override (``--al '{strategy: x}'``) that changes what the sweep sets per run.
    """
    import yaml

    from al_lightning.cli import ActiveLearningCLI, run_cli

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run_cli(ActiveLearningCLI, [*args, "--print_config"])
        except SystemExit as exit:
            code = exit.code
    if code not in (0, None):
        lines = err.getvalue().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
        message = "\n".join(lines[starts[0] :] if starts else lines[-20:])
        raise ConfigurationError(f"train.py rejects these arguments:\n  {shlex.join(args)}\n{message}")
    config = yaml.safe_load(out.getvalue())
    if not isinstance(config, dict):
        raise ConfigurationError(f"train.py --print_config printed no config for:\n  {shlex.join(args)}")
    given = {
        "al.strategy": (config["al"]["strategy"], run.strategy),
        "seed_everything": (config["seed_everything"], run.seed),
        "trainer.default_root_dir": (config["trainer"]["default_root_dir"], str(run.dir)),
        "ckpt_path": (config.get("ckpt_path"), None),
    }
    for key, (got, wanted) in given.items():
        if got != wanted:
            raise ConfigurationError(f"the overrides or config set {key} to {got!r} instead of the sweep's {wanted!r}; use {OWNED[key]}")
    return config


# -- a run's folder -------------------------------------------------------------------------------
def version_dirs(run_dir: Path) -> list[Path]:
    """``lightning_logs/version_N`` folders of a run, oldest first (every attempt adds one)."""
    found = [p for p in (run_dir / "lightning_logs").glob("version_*") if p.name.split("_")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("_")[-1]))


def read_marker(run_dir: Path) -> Optional[dict[str, Any]]:
    """The finished marker if it is believable: exit code 0 and its log_dir still has ``rounds.csv``."""
    try:
        marker = json.loads((run_dir / MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("returncode") != 0 or not marker.get("log_dir"):
        return None
    return marker if read_rounds(Path(marker["log_dir"])) else None


def write_marker(run_dir: Path, marker: dict[str, Any]) -> None:
    """Atomically: a sweep killed while writing leaves no half marker that reads as finished."""
    atomic_write_text(run_dir / MARKER, json.dumps(marker, indent=2) + "\n")


def summary(log_dir: Optional[Path]) -> str:
    """The run's last round in a few words, from its ``rounds.csv``."""
    rows = read_rounds(log_dir) if log_dir else []
    if not rows:
        return f"no {ROUNDS_CSV}"
    last = rows[-1]
    return f"round {last['round']}, {last['num_labeled']} labels, test top-1 {float(last['test_acc_top1']):.4f}"


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, indented, for a failure report."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        text = ["(no log)"]
    return "\n".join("    " + line for line in text)


def execute(command: list[str], log_path: Path) -> int:
    """Run ``command`` with its stdout and stderr streamed into ``log_path``; its exit code.

    The log is appended to, under a header per attempt, so an interrupted attempt's output stays.
    On Ctrl-C the run gets SIGINT too (Lightning shuts down and exits 1) and is waited for, then killed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"=== {datetime.now().isoformat(timespec='seconds')}: {shlex.join(command)}\n")
        log.flush()
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            return proc.wait()
        except BaseException:
            # Ctrl-C in a terminal reached the run as well; a signal sent to the sweep alone did not.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except BaseException:
                proc.kill()
                proc.wait()
            raise


def completed_earlier(run_dir: Path, rounds: int) -> Optional[Path]:
    """The log directory of a run whose last round is done although it has no marker.

    A sweep killed between a run's exit and its marker leaves a complete ``rounds.csv``:
    running it again would train nothing.
    """
    versions = version_dirs(run_dir)
    rows = read_rounds(versions[-1]) if versions else []
    return versions[-1] if rows and int(rows[-1]["round"]) >= rounds else None


def resume_command(entry: list[str], args: list[str]) -> list[str]:
    """A run's command: it continues from its last round checkpoint, or starts when it has none."""
    return [*entry, *args, "--ckpt_path=last"]


def run_one(run: Cell, entry: list[str], args: list[str], rounds: int) -> tuple[bool, str]:
    """Skip, resume or start one run; whether it finished, and its progress text."""
    marker = read_marker(run.dir)
    if marker is not None:
        note = "" if marker.get("args") == args else " (with other arguments, see its finished.json)"
        return (
            True,
            f"skipped: finished earlier{note} in {marker.get('seconds', 0):.1f}s; {summary(Path(marker['log_dir']))}",
        )
    log_dir = completed_earlier(run.dir, rounds)
    if log_dir is not None:
        write_marker(
            run.dir,
            {"command": [*entry, *args], "args": args, "returncode": 0, "seconds": 0.0, "log_dir": str(log_dir), "recovered": True},
        )
        return True, f"skipped: all rounds were done (marker written now); {summary(log_dir)}"
    resumed_from = latest_last_checkpoint(run.dir / "lightning_logs")
    how = "started" if resumed_from is None else f"resumed from {resumed_from.parent.parent.name}"
    command = resume_command(entry, args)
    started = time.perf_counter()
    code = execute(command, run.dir / RUN_LOG)
    seconds = time.perf_counter() - started
    versions = version_dirs(run.dir)
    log_dir = versions[-1] if versions else None
    if code == 0 and log_dir is not None and read_rounds(log_dir):
        write_marker(
            run.dir,
            {
                "command": command,
                "args": args,
                "returncode": 0,
                "seconds": round(seconds, 3),
                "log_dir": str(log_dir),
                "resumed_from": None if resumed_from is None else str(resumed_from),
                "finished_at": datetime.now().isoformat(timespec="seconds"),
            },
        )
        return True, f"{how}, finished in {seconds:.1f}s; {summary(log_dir)}"
    why = f"exit code {code}" if code != 0 else f"exit code 0 but no {ROUNDS_CSV}"
    return (
        False,
        f"{how}, FAILED ({why}) after {seconds:.1f}s; last lines of {run.dir / RUN_LOG}:\n{tail(run.dir / RUN_LOG)}",
    )


def grid_settings(options: argparse.Namespace) -> tuple[Optional[str], str, str, str]:
    """The grid's name, config, strategies and seeds, each flag given replacing the grid's own."""
    if options.grid is None:
        missing = [f"--{k}" for k in ("config", "strategies", "seeds") if getattr(options, k) is None]
        if missing:
            raise ConfigurationError(f"give {', '.join(missing)}, or --grid NAME for one of the paper's experiments")
        return None, options.config, options.strategies, options.seeds
    grid = grid_named(options.grid)
    return (
        grid.name,
        options.config or grid.config,
        options.strategies or ",".join(grid.strategies),
        options.seeds or ",".join(map(str, grid.seeds)),
    )


def check_folder(out: Path, record: dict[str, Any]) -> None:
    """Refuse to mix grids in one folder: its ``sweep.json`` must match ``record`` (runs may be added).

    Strategies and seeds may grow between invocations; the grid, config and overrides, which
    every run shares, may not.
    """
    try:
        earlier = json.loads((out / SWEEP_FILE).read_text())
    except FileNotFoundError:
        return
    except ValueError:
        raise ConfigurationError(f"{out / SWEEP_FILE} is not JSON; move it away or use another --out") from None
    differences = [f"{key}: {earlier.get(key)!r} there, {record[key]!r} now" for key in record if earlier.get(key) != record[key]]
    if differences:
        raise ConfigurationError(
            f"{out} holds a sweep with other settings ({'; '.join(differences)}); use another --out, or the same settings"
        )


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point: check everything, then print the commands, run the grid here or submit it to
    SLURM (exit 1 if a run failed)."""
    options, overrides = parse_args(argv)
    try:
        check_overrides(overrides)
        grid, config_name, strategies_text, seeds_text = grid_settings(options)
        seeds = parse_seeds(seeds_text)
        out = Path(os.path.abspath(options.out))
        if out.exists() and not out.is_dir():
            raise ConfigurationError(f"--out {options.out} is a file, not a folder")
        config = resolve_config(config_name)
        strategies = parse_strategies(strategies_text)
        runs = [Cell(s, k, out / f"{s}-seed{k}") for s in strategies for k in seeds]
        settings = validate(run_args(config, runs[0], overrides), runs[0])
        record = {"grid": grid, "config": config, "overrides": overrides}
        check_folder(out, record)
        if options.launcher == "slurm" and not options.print_only:
            from al_lightning import sweep_slurm  # imports submitit: only for SLURM sweeps

            resources = sweep_slurm.Resources(
                partition=options.partition,
                nodes=options.nodes,
                tasks_per_node=options.tasks_per_node,
                gpus_per_node=options.gpus_per_node,
                cpus_per_task=options.cpus_per_task,
                mem_gb=options.mem_gb,
                time_min=options.time_min,
                account=options.account,
                sbatch=parse_sbatch(options.sbatch),
                setup=options.setup,
                max_requeues=options.max_requeues,
            )
            sweep_slurm.check_processes(resources, settings["trainer"])
            sweep_slurm.check_slurm()
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    entry = entry_command()
    if options.print_only:
        for run in runs:
            print(shlex.join([*entry, *run_args(config, run, overrides)]))
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SWEEP_FILE, json.dumps(record, indent=2) + "\n")
    rounds = int(settings["al"]["rounds"])
    if options.launcher == "slurm":
        print(f"[sweep] {len(runs)} runs in {out}, one SLURM job each", flush=True)
        sys.exit(
            sweep_slurm.launch(
                runs, entry, lambda run: run_args(config, run, overrides), rounds, resources, out.name, options.wait, options.poll_s
            )
        )
    print(f"[sweep] {len(runs)} runs in {out}, each logging to <run>/{RUN_LOG}", flush=True)
    failed = []
    for i, run in enumerate(runs, 1):
        try:
            ok, text = run_one(run, entry, run_args(config, run, overrides), rounds)
        except KeyboardInterrupt:
            print(f"\n[sweep] interrupted during {run.name}; run the same command again to resume", file=sys.stderr)
            sys.exit(130)
        print(f"[sweep] {i}/{len(runs)} {run.name}: {text}", flush=True)
        if not ok:
            failed.append(run.name)
    if failed:
        print(
            f"error: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)} (see <run>/{RUN_LOG} in {out})",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"[sweep] all {len(runs)} runs finished", flush=True)


def parse_sbatch(items: list[str]) -> dict[str, str]:
    """``--sbatch KEY=VALUE`` options as submitit's ``additional_parameters``."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--sbatch takes KEY=VALUE (an sbatch option without its dashes), got {item!r}")
        options[key.strip().lstrip("-")] = value
    return options


if __name__ == "__main__":
    main()
