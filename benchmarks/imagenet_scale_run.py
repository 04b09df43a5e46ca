"""An ImageNet-scale active-learning run on one CPU machine, through the real CLI.

Writes a synthetic 1000-class feature pool the size of ImageNet's training set
(N = 1,281,167, d = 2048, ImageNet's uneven class sizes 732..1300) as a feature-cache folder,
then runs ``train.py fit --config configs/features_linear.yaml`` on it with the paper's C-II
budgets and optimiser (30,000 initial labels, +10,000 per round, lr 15, wd 1e-4, batch 128,
12 validation points per class) for each strategy, with the epochs capped so that the whole
benchmark takes about an hour on two cores. Per round it reports training, scoring and
selection seconds and the training process's peak memory (resident and anonymous).

Classes are heterogeneous: h = s·(μ_y + σ_y·ε/√d), ε ~ N(0, I), with class means μ from
:func:`synthetic_pool.class_centres` and a per-class spread σ_c = 10 + 12·q_c, q_c ~ U(0, 1):
with 30 labels per class a nearest-centroid head gets ~98% of the easiest classes right and
~1% of the hardest (~40% overall), so labels spent on hard classes pay, as on ImageNet.
s = 1/4 puts ‖h‖ near 4, where the paper's lr of 15 trains a linear head (at ‖h‖ ≈ 1 it does
not move in a few epochs).

Scoring and selection are timed apart by running each strategy as a thin subclass
(``--al.strategy=benchmarks.imagenet_scale_run.TimedBASE``) that times the strategy's own
work and prints it; scoring is the query's time (rounds.csv ``query_seconds``) minus that.

    python benchmarks/imagenet_scale_run.py --scale 0.02            # a 2% try first
    python benchmarks/imagenet_scale_run.py --strategies base,random,margin
    python benchmarks/imagenet_scale_run.py --accelerator gpu --precision bf16-mixed   # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `benchmarks` is imported as a package below
    sys.path.insert(0, str(ROOT))

from al_lightning.strategies import PoolOutputs  # noqa: E402
from al_lightning.strategies.balanced_selection import BalancedSelection  # noqa: E402
from al_lightning.strategies.margin import MarginSampling  # noqa: E402
from al_lightning.strategies.random_sampling import RandomSampling  # noqa: E402
from al_lightning.strategies.reducers import Reducer  # noqa: E402
from benchmarks.synthetic_pool import class_centres  # noqa: E402

#: ImageNet-1k's training set: images, classes, and the smallest and largest class.
IMAGENET_TRAIN, IMAGENET_CLASSES, SMALLEST_CLASS, LARGEST_CLASS = 1_281_167, 1000, 732, 1300
#: ImageNet's val set (our test split) and the paper's validation split, per class.
TEST_PER_CLASS, VAL_PER_CLASS = 50, 12
#: Fraction of classes below the largest size (ImageNet: most classes have 1300 images).
RAMP_FRACTION = 0.066
#: The paper's C-II budgets.
INITIAL, BUDGET = 30_000, 10_000
#: Per-class spread: σ_c = SPREAD_EASY + SPREAD_RANGE·q_c; features scaled by FEATURE_SCALE.
SPREAD_EASY, SPREAD_RANGE, FEATURE_SCALE = 10.0, 12.0, 0.25
BLOCK = 32_768
SELECTION_LINE = "[bench] selection seconds:"


# -- the pool ---------------------------------------------------------------------------------
def class_counts(n: int, num_classes: int) -> np.ndarray:
    """(C,) class sizes summing to ``n`` with ImageNet's profile: a ramp of a few classes from
    732/1300 of the largest up, the rest full (largest-remainder rounding; at full size the
    sizes are 732..1301, ImageNet's 732..1300 give or take one image)."""
    ramp = max(1, round(RAMP_FRACTION * num_classes))
    profile = np.ones(num_classes)
    low = SMALLEST_CLASS / LARGEST_CLASS
    profile[:ramp] = low + (1 - low) * np.arange(ramp) / ramp
    exact = profile * n / profile.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    return counts


def class_spreads(num_classes: int, seed: int) -> Tensor:
    """(C,) per-class noise norms σ_c: a uniform mix of easy (small σ) and hard (large σ) classes."""
    g = torch.Generator().manual_seed(seed + 17)
    return SPREAD_EASY + SPREAD_RANGE * torch.rand(num_classes, generator=g)


def shuffled_labels(counts: np.ndarray, seed: int) -> np.ndarray:
    """Labels with these class ``counts`` in a seeded random order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return labels[np.random.default_rng(seed).permutation(len(labels))]


def write_split(directory: Path, split: str, labels: np.ndarray, centres: Tensor, spreads: Tensor, seed: int) -> None:
    """``<split>.npy`` (float32, written block by block through a memmap: never whole in memory),
    ``<split>_targets.npy`` and ``<split>.json``, as a finished feature-cache split."""
    n, dim = len(labels), centres.shape[1]
    features = np.lib.format.open_memmap(directory / f"{split}.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, BLOCK):
        y = torch.from_numpy(labels[start : start + BLOCK])
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        noise = torch.randn(len(y), dim, generator=g).mul_(spreads[y, None] / dim**0.5)
        features[start : start + len(y)] = noise.add_(centres[y]).mul_(FEATURE_SCALE).numpy()
    features.flush()
    del features
    np.save(directory / f"{split}_targets.npy", labels.astype(np.int64))
    description = {"items": n, "dim": dim, "source": "benchmarks/imagenet_scale_run.py", "seed": seed}
    (directory / f"{split}.json").write_text(json.dumps(description) + "\n")


def write_pool(directory: Path, n: int, num_classes: int, dim: int, test_per_class: int, seed: int = 0) -> Path:
    """The feature-cache folder for ``--data.path``; reused when ``pool.json`` says it has these settings."""
    settings = {"n": n, "classes": num_classes, "dim": dim, "test_per_class": test_per_class, "seed": seed}
    marker = directory / "pool.json"
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    centres, spreads = class_centres(num_classes, dim, seed), class_spreads(num_classes, seed)
    train = shuffled_labels(class_counts(n, num_classes), seed)
    test = shuffled_labels(np.full(num_classes, test_per_class), seed + 1)
    write_split(directory, "train", train, centres, spreads, seed)
    write_split(directory, "test", test, centres, spreads, seed + 7_919)
    (directory / "classes.json").write_text(json.dumps([f"class_{c:04d}" for c in range(num_classes)]) + "\n")
    marker.write_text(json.dumps(settings) + "\n")
    return directory


# -- strategies that time their own work ------------------------------------------------------
class TimedReducer(Reducer):
    """A reducer that adds up the seconds spent in the strategy's code, rescans excluded
    (a rescan scores the pool again), and prints them when the selection finishes."""

    def __init__(self, inner: Reducer) -> None:
        self.inner, self.seconds, self.rescans = inner, 0.0, 0

    def _timed(self, call: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = call()
        self.seconds += time.perf_counter() - started
        return result

    def update(self, chunk: PoolOutputs) -> None:
        self._timed(lambda: self.inner.update(chunk))

    def state(self) -> Tensor:
        return self._timed(self.inner.state)

    def merge_state(self, state: Tensor) -> None:
        self._timed(lambda: self.inner.merge_state(state))

    def finish(self, rescan: Optional[Callable[[Reducer], None]] = None) -> Tensor:
        rescan_seconds = 0.0

        def timed_rescan(fresh: Reducer) -> None:
            nonlocal rescan_seconds
            self.rescans += 1
            started = time.perf_counter()
            rescan(fresh)
            rescan_seconds += time.perf_counter() - started

        chosen = self._timed(lambda: self.inner.finish(None if rescan is None else timed_rescan))
        report_selection(self.seconds - rescan_seconds, self.rescans)
        return chosen


def report_selection(seconds: float, rescans: int = 0) -> None:
    """The line :func:`parse_selection` reads back from the training process's output."""
    print(f"{SELECTION_LINE} {seconds:.3f} rescans {rescans}", file=sys.stderr, flush=True)


class TimedBASE(BalancedSelection):
    """BASE, timing its streaming reduction."""

    name = "base"

    def reducer(self, head: PoolOutputs, budget: int) -> Reducer:
        return TimedReducer(super().reducer(head, budget))


class TimedMargin(MarginSampling):
    """Margin, timing its streaming reduction."""

    name = "margin"

    def reducer(self, head: PoolOutputs, budget: int) -> Reducer:
        return TimedReducer(super().reducer(head, budget))


class TimedRandom(RandomSampling):
    """Random, timing its permutation (it scores nothing)."""

    name = "random"

    def select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        started = time.perf_counter()
        chosen = super().select(outputs, budget)
        report_selection(time.perf_counter() - started)
        return chosen


TIMED = {"base": "TimedBASE", "margin": "TimedMargin", "random": "TimedRandom"}


# -- one run through the CLI ------------------------------------------------------------------
@dataclass
class Settings:
    """One benchmark's sizes, from ``--scale`` (fraction of N and of the budgets)."""

    scale: float
    classes: int
    dim: int
    epochs: int
    rounds: int

    @property
    def n(self) -> int:
        return round(IMAGENET_TRAIN * self.scale)

    def scaled(self, count: int) -> int:
        """``count`` at this scale, at least 1."""
        return max(1, round(count * self.scale))

    @property
    def initial(self) -> int:
        return self.scaled(INITIAL)

    @property
    def budget(self) -> int:
        return self.scaled(BUDGET)

    @property
    def val_per_class(self) -> int:
        return self.scaled(VAL_PER_CLASS)

    @property
    def test_per_class(self) -> int:
        return self.scaled(TEST_PER_CLASS)

    @property
    def step_size(self) -> int:
        """The paper's LR step (×0.1 every 20 of 60 epochs) compressed to the epoch cap."""
        return max(1, round(self.epochs / 3))


def cli_command(
    settings: Settings, strategy: str, data: Path, run_dir: Path, accelerator: str = "cpu", precision: str = "32-true"
) -> list[str]:
    """``train.py fit`` with the paper's C-II settings where they apply to a features pool."""
    return [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs" / "features_linear.yaml"),
        f"--data.path={data}", f"--data.val_per_class={settings.val_per_class}",
        f"--data.initial_pool_size={settings.initial}", "--data.batch_size=128", "--data.eval_batch_size=4096",
        f"--al.strategy=benchmarks.imagenet_scale_run.{TIMED[strategy]}", f"--al.budget={settings.budget}",
        f"--al.rounds={settings.rounds}", f"--al.max_epochs={settings.epochs}", "--al.patience=31", "--al.tie_improves=true",
        "--model.lr=15", "--model.weight_decay=0.0001", "--model.scheduler=step",
        f"--model.step_size={settings.step_size}", "--model.gamma=0.1",
        f"--trainer.accelerator={accelerator}", f"--trainer.precision={precision}", f"--trainer.default_root_dir={run_dir}",
    ]  # fmt: skip


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon and RssFile of ``pid`` in KiB (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found = re.findall(r"^(VmHWM|VmRSS|RssAnon|RssFile):\s+(\d+) kB", text, re.M)
    return {key: int(value) for key, value in found}


class MemoryWatch:
    """Peak memory of a process per window (a window ends at each round's summary line).

    The peak resident set is the kernel's VmHWM, reset at each window's start through
    ``/proc/PID/clear_refs`` (so no spike between polls is missed); anonymous memory
    (RssAnon: what cannot be dropped, unlike the memory-mapped features' pages) is polled.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_anon = self.peak_rss = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopped.wait(self.interval):
            now = memory_kib(self.pid)
            with self.lock:
                self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
                self.peak_rss = max(self.peak_rss, now.get("VmHWM", 0))

    def window(self) -> tuple[int, int]:
        """(peak RSS, peak anonymous) KiB since the last call, then start a new window."""
        now = memory_kib(self.pid)
        with self.lock:
            peaks = max(self.peak_rss, now.get("VmHWM", 0)), max(self.peak_anon, now.get("RssAnon", 0))
            try:
                Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            except OSError:
                pass  # not allowed: VmHWM then stays the peak since the start
            self.peak_rss = self.peak_anon = 0
        return peaks

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


@dataclass
class RunResult:
    """What one strategy's run measured."""

    strategy: str
    command: list[str]
    seconds: float
    rounds: list[dict[str, object]] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)


ROUND_LINE = re.compile(r"\[al\] round (\d+): (\d+) labels, test top-1")


def run_strategy(
    settings: Settings, strategy: str, data: Path, run_dir: Path, trainer: tuple[str, str] = ("cpu", "32-true")
) -> RunResult:
    """Run the CLI for ``strategy``, watching its memory per round; its output goes to ``run_dir/train.log``.

    ``trainer`` is the accelerator and precision given to the trainer (``("gpu", "bf16-mixed")`` on a GPU).
    """
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = cli_command(settings, strategy, data, run_dir, *trainer)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}  # lines as they happen: they close memory windows
    load_before, started = os.getloadavg()[0], time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch, memory, selection = MemoryWatch(process.pid), {}, []
    with open(run_dir / "train.log", "w") as log:
        for line in process.stdout:
            log.write(line)
            log.flush()
            if line.startswith(SELECTION_LINE):
                selection.append(float(line.split()[3]))
            elif match := ROUND_LINE.search(line):
                memory[int(match.group(1))] = watch.window()
    watch.stop()
    if process.wait() != 0:
        raise RuntimeError(f"{strategy}: train.py exited with {process.returncode}; see {run_dir / 'train.log'}")
    result = RunResult(strategy, command, time.perf_counter() - started, load=(load_before, os.getloadavg()[0]))
    result.rounds = round_rows(next(run_dir.rglob("rounds.csv")), memory, selection)
    return result


def round_rows(rounds_csv: Path, memory: dict[int, tuple[int, int]], selection: list[float]) -> list[dict[str, object]]:
    """rounds.csv joined with the selection seconds (the k-th query made round k's labels) and
    each round's memory window (its query, then its training and test evaluation)."""
    rows = []
    with open(rounds_csv) as f:
        for row in csv.DictReader(f):
            r = int(row["round"])
            query = float(row["query_seconds"] or 0)
            select = selection[r - 1] if r >= 1 else 0.0
            peak_rss, peak_anon = memory.get(r, (0, 0))
            rows.append({
                "round": r, "labels": int(row["num_labeled"]), "epochs": int(row["epochs"]),
                "train_s": float(row["train_seconds"]), "query_s": query,
                "scoring_s": max(0.0, query - select) if r >= 1 else 0.0, "selection_s": select,
                "top1": float(row["test_acc_top1"]), "peak_rss_gib": peak_rss / 2**20, "peak_anon_gib": peak_anon / 2**20,
            })  # fmt: skip
    return rows


# -- the report -------------------------------------------------------------------------------
def markdown_table(result: RunResult) -> str:
    """One strategy's rounds as a markdown table (round 0 has no query)."""
    lines = [
        f"**{result.strategy}** ({result.seconds / 60:.1f} min in all; load average {result.load[0]:.1f} before, {result.load[1]:.1f} after)",
        "",
        "| round | labels | epochs | train s | scoring s | selection s | test top-1 | peak RSS GiB | peak anon GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rounds:
        query = "—" if row["round"] == 0 else None
        lines.append(
            f"| {row['round']} | {row['labels']:,} | {row['epochs']} | {row['train_s']:.0f} | "
            f"{query or format(row['scoring_s'], '.1f')} | {query or format(row['selection_s'], '.2f')} | "
            f"{row['top1']:.4f} | {row['peak_rss_gib']:.2f} | {row['peak_anon_gib']:.2f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """The machine in one line: what the numbers depend on."""
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    return f"{os.cpu_count()}-core {platform.machine()} ({cpu}), {memory:.0f} GiB RAM, CPU only, PyTorch {torch.__version__}, Python {platform.python_version()}"


def report(settings: Settings, results: list[RunResult], generate_seconds: float, invocation: str) -> str:
    """The results file: machine, command, settings and one table per strategy."""
    parts = [
        f"Machine: {machine()}.",
        "",
        f"Command: `{invocation}`",
        "",
        f"Pool: N = {settings.n:,} (scale {settings.scale}), C = {settings.classes}, d = {settings.dim}; "
        f"{settings.val_per_class}/class validation held out, {settings.test_per_class}/class test; "
        f"initial {settings.initial:,}, +{settings.budget:,} per round, {settings.rounds} queries; "
        f"epoch cap {settings.epochs} (LR ×0.1 every {settings.step_size}); generated in {generate_seconds:.0f} s.",
        "",
        "CLI: `" + " ".join(results[0].command[1:]).replace(str(ROOT) + "/", "") + "` (strategy per table)" if results else "",
    ]
    return "\n".join(parts + [""] + [markdown_table(r) + "\n" for r in results])


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of N and of the budgets (try 0.02 first)")
    parser.add_argument("--strategies", default="base,random", help=f"comma-separated, of {', '.join(TIMED)}")
    parser.add_argument("--epochs", type=int, default=2, help="epoch cap per round (--al.max_epochs)")
    parser.add_argument("--rounds", type=int, default=3, help="queries after the initial training (--al.rounds)")
    parser.add_argument("--classes", type=int, default=IMAGENET_CLASSES)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/imagenet_scale"), help="pool and run folders")
    parser.add_argument("--results", type=Path, help="markdown file to write (default WORK_DIR/results.md)")
    parser.add_argument("--delete-pool", action="store_true", help="remove the generated pool at the end")
    parser.add_argument("--accelerator", default="cpu", help="--trainer.accelerator: cpu (default) or gpu")
    parser.add_argument("--precision", default="32-true", help="--trainer.precision, e.g. bf16-mixed on a GPU")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> list[RunResult]:
    args = parse_args(argv)
    settings = Settings(args.scale, args.classes, args.dim, args.epochs, args.rounds)
    data = args.work_dir / f"pool_s{args.scale}_c{args.classes}_d{args.dim}"
    started = time.perf_counter()
    write_pool(data, settings.n, settings.classes, settings.dim, settings.test_per_class)
    generate_seconds = time.perf_counter() - started
    print(f"pool ready in {generate_seconds:.0f} s: {data}", flush=True)
    results = []
    for strategy in args.strategies.split(","):
        run_dir = args.work_dir / f"run_{strategy}_s{args.scale}"
        results.append(run_strategy(settings, strategy, data, run_dir, (args.accelerator, args.precision)))
        print(markdown_table(results[-1]) + "\n", flush=True)
        text = report(settings, results, generate_seconds, " ".join(["python", "benchmarks/imagenet_scale_run.py", *(argv or sys.argv[1:])]))
        (args.results or args.work_dir / "results.md").write_text(text)
        (args.work_dir / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
    if args.delete_pool:
        shutil.rmtree(data)
    return results


if __name__ == "__main__":
    main()
