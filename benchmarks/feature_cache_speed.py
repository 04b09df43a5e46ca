"""Seconds per active-learning round with and without the feature cache, through the CLI (issue 12, item 2).

    python benchmarks/feature_cache_speed.py                          # 1,000 + 100 images at 224 px, 2 rounds
    python benchmarks/feature_cache_speed.py --train-per-class 300 --test-per-class 30 --rounds 2
    python benchmarks/feature_cache_speed.py --device cuda --train-per-class 1000 --num-workers 8
    python benchmarks/feature_cache_speed.py --workdir /tmp/fcs       # keep the stand-in and the runs' logs

One config, linear evaluation of a frozen ResNet-50 at 224 px with margin sampling, run
three ways by ``python train.py fit`` in a subprocess, as a user would:

* ``none``: no cache; every round forwards its training epochs, validation, the pool
  and the test split through the trunk;
* ``cached``: ``--data.feature_cache`` in a fresh folder: round 0 extracts the features,
  every round trains the head on them and scores the pool from them;
* ``augmented``: ``--data.feature_cache_train=augmented`` on the cache the ``cached`` run
  built (so its round 0 extracts nothing): the head trains on augmented images through the
  trunk, validation, test and the query read the cache.

A round's seconds are wall-clock, between the lines the run prints at the end of each round
(``[al] round K: ... labels, test top-1 ...``), each stamped as it arrives: round K > 0 is its
query, training, validation and test; round 0 starts at the Trainer's first line (the
imports and the model's construction before it are "startup") and includes the extraction,
which is timed on its own from the ``extracting train`` line to the last cache description
file written. ``train_seconds`` and ``query_seconds`` come from the run's ``rounds.csv``.

The stand-in (no downloads): 256-px JPEGs of 10 hue classes, striped, with per-image jitter
of hue, saturation, brightness, stripe direction, period and phase, and pixel noise. The trunk is a random-init ResNet-50 whose BatchNorm statistics are re-estimated on
64 stand-in training images (no labels), written as a torchvision state dict and loaded
with ``--model.pretrained``: with the initial statistics (mean 0, variance 1) activations
grow through the 16 blocks to features of size ~20-200, where an SGD head diverges.
Results go to benchmarks/results/feature_cache_speed_<name>.md and .jsonl.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Optional

import numpy as np
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("none", "cached", "augmented")
HUES = 10
CALIBRATION_IMAGES = 64
#: Printed by Lightning when the Trainer is built, right before fitting: round 0 starts here.
TRAINER_LINE = re.compile(r"^(GPU|TPU) available")
ROUND_END = re.compile(r"\[al\] round (\d+): \d+ labels, test top-1")


# -- the stand-in ---------------------------------------------------------------------------------
def class_names() -> list[str]:
    return [f"hue{h}" for h in range(HUES)]


def photo_side(image_size: int) -> int:
    """The eval transform's resize (``image_size / 0.875``: 256 for 224), so that its centre
    crop keeps most of the photo and training's random crops have room."""
    return round(image_size / 0.875)


def stripe_photo(rng: np.random.Generator, hue: float, side: int) -> Image.Image:
    """One noisy striped photo of the class's hue. Saturation, brightness, the stripes'
    direction, period and phase, and the pixel noise vary within a class, so that a linear
    head on a random trunk is far from perfect and more labels help (an earlier stand-in
    with stripe direction as part of the class left a random trunk's head near chance)."""
    h = (hue + rng.normal(0, 0.02)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9))) * 255
    coordinate = np.arange(side)[:, None] if rng.integers(2) else np.arange(side)[None, :]
    period = rng.uniform(10, 40) * side / 256
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * coordinate / period + rng.uniform(0, 2 * np.pi))
    shade = 1 - rng.uniform(0.2, 0.6) * np.broadcast_to(stripes, (side, side))
    pixels = colour * shade[..., None] + rng.normal(0, 30, (side, side, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_standin(root: Path, train_per_class: int, test_per_class: int, image_size: int, seed: int) -> Path:
    """``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg`` (an ``image_folder`` dataset)."""
    rng, side = np.random.default_rng(seed), photo_side(image_size)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(class_names()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo = stripe_photo(rng, c / HUES, side)
                photo.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def write_trunk(path: Path, standin: Path, backbone: str, image_size: int, seed: int) -> Path:
    """A random-init torchvision ``backbone`` with BatchNorm statistics averaged over stand-in training images
    in the eval transform, saved as a torchvision state dict (no ``fc``)."""
    from al_lightning.data.transforms import imagenet_transforms

    torch.manual_seed(seed)
    net = getattr(torchvision.models, backbone)(weights=None)
    net.fc = torch.nn.Identity()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average
    _, evaluate = imagenet_transforms(image_size)
    files = sorted((standin / "train").glob("*/*.jpg"))
    picks = np.random.default_rng(seed).choice(len(files), min(CALIBRATION_IMAGES, len(files)), replace=False)
    images = torch.stack([evaluate(Image.open(files[i]).convert("RGB")) for i in picks])
    net.train()
    with torch.no_grad():
        for batch in images.split(32):
            net(batch)
    torch.save(net.state_dict(), path)
    return path


# -- one run ---------------------------------------------------------------------------------------
@dataclass
class Settings:
    """What every mode shares, so that only the cache differs between the runs."""

    device: str
    backbone: str
    image_size: int
    train_per_class: int
    test_per_class: int
    val_per_class: int
    initial: int
    budget: int
    rounds: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    num_workers: int
    strategy: str
    seed: int


def cli_args(settings: Settings, standin: Path, trunk: Path, mode: str, cache: Path) -> list[str]:
    """``train.py fit`` arguments for ``mode``: a fixed number of epochs per round (min = max,
    patience above it), so every mode trains the same steps and only the time differs."""
    s = settings
    args = [
        "fit", f"--seed_everything={s.seed}",
        f"--trainer.accelerator={s.device}", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.backbone={s.backbone}", f"--model.pretrained={trunk}", "--model.freeze_backbone=true",
        f"--model.lr={s.lr}", "--model.momentum=0.9", "--model.weight_decay=0", "--model.scheduler=cosine",
        "--data.dataset=image_folder", f"--data.path={standin}", f"--data.image_size={s.image_size}",
        f"--data.val_per_class={s.val_per_class}", f"--data.initial_pool_size={s.initial}",
        f"--data.batch_size={s.batch_size}", f"--data.eval_batch_size={s.eval_batch_size}",
        f"--data.num_workers={s.num_workers}", f"--data.seed={s.seed}",
        f"--al.strategy={s.strategy}", f"--al.budget={s.budget}", f"--al.rounds={s.rounds}",
        f"--al.max_epochs={s.epochs}", f"--al.min_epochs={s.epochs}", f"--al.patience={s.epochs + 1}",
    ]  # fmt: skip
    if mode != "none":
        args.append(f"--data.feature_cache={cache}")
    if mode == "augmented":
        args.append("--data.feature_cache_train=augmented")
    return args


def run_stamped(args: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run ``train.py`` in ``cwd``; its launch time and its stderr lines, each with the
    wall-clock time it arrived (``time.time()``, comparable with file times). The lines also
    go to ``cwd/cli.log`` with their offsets."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    launched = time.time()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = [(time.time(), line.rstrip("\n")) for line in process.stderr]
    code = process.wait()
    (cwd / "cli.log").write_text("".join(f"{t - launched:9.2f}s {line}\n" for t, line in lines))
    if code != 0:
        tail = "\n".join(line for _, line in lines[-40:])
        raise RuntimeError(f"train.py exited with {code} in {cwd}:\n{tail}")
    return launched, lines


@dataclass
class ModeResult:
    """One mode's figures: wall seconds per round, the run's own timings and accuracies."""

    mode: str
    startup_s: float
    round_s: list[float]
    extraction_s: Optional[float]
    extracted: bool
    train_s: list[float] = field(default_factory=list)
    query_s: list[float] = field(default_factory=list)
    num_labeled: list[int] = field(default_factory=list)
    test_acc_top1: list[float] = field(default_factory=list)
    best_val: list[float] = field(default_factory=list)

    @property
    def later_s(self) -> float:
        """Mean seconds of the rounds after round 0: what the cache is for."""
        return mean(self.round_s[1:])


def first_time(lines: list[tuple[float, str]], pattern: re.Pattern) -> float:
    return next(t for t, line in lines if pattern.search(line))


def summarise(mode: str, launched: float, lines: list[tuple[float, str]], run_dir: Path, cache: Path) -> ModeResult:
    """Round boundaries from the stamped lines, the rest from ``rounds.csv``."""
    started = first_time(lines, TRAINER_LINE)
    ends = [t for t, line in lines if ROUND_END.search(line)]
    extracted = any("[al] feature cache: extracting" in line for _, line in lines)
    extraction = None
    if extracted:
        written = max(f.stat().st_mtime for f in cache.glob("*.json") if f.name != "classes.json")
        extraction = written - first_time(lines, re.compile(r"\[al\] feature cache: extracting train"))
    with open(run_dir / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return ModeResult(
        mode=mode,
        startup_s=started - launched,
        round_s=[b - a for a, b in zip([started, *ends], ends)],
        extraction_s=extraction,
        extracted=extracted,
        train_s=[float(r["train_seconds"]) for r in rows],
        query_s=[float(r["query_seconds"]) for r in rows],
        num_labeled=[int(r["num_labeled"]) for r in rows],
        test_acc_top1=[float(r["test_acc_top1"]) for r in rows],
        best_val=[float(r["best_val"]) for r in rows],
    )


def run_mode(settings: Settings, work: Path, standin: Path, trunk: Path, mode: str) -> tuple[ModeResult, list[str]]:
    """One mode's run in ``work/<mode>``; its figures and its picks (``pool.csv``'s rows)."""
    cache = work / "cache"
    if mode == "cached":
        shutil.rmtree(cache, ignore_errors=True)  # round 0 must extract
    cwd = work / mode
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    launched, lines = run_stamped(cli_args(settings, standin, trunk, mode, cache), cwd)
    (run_dir,) = (cwd / "lightning_logs").glob("version_*")
    result = summarise(mode, launched, lines, run_dir, cache)
    return result, (run_dir / "pool.csv").read_text().splitlines()


# -- the report ------------------------------------------------------------------------------------
def machine() -> str:
    """Processor, cores, memory, accelerator and versions, for the results' header."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU used"
    return (
        f"{platform.machine()} {model}, {os.cpu_count()} cores, {memory:.0f} GiB{gpu}; Python {platform.python_version()}, "
        f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def markdown(settings: Settings, results: dict[str, ModeResult], same_picks: dict[str, bool], header: dict[str, str]) -> str:
    """The results file: the setting, seconds per round, speedups and accuracies per round."""
    s = settings
    train, test, val = 10 * s.train_per_class, 10 * s.test_per_class, 10 * s.val_per_class
    base = results.get("none")
    lines = [
        f"# Feature cache: seconds per round ({s.device})",
        "",
        f"Machine: {header['machine']}.",
        f"Load average (1, 5, 15 min): {header['load_before']} before, {header['load_after']} after; {header['note']}",
        "",
        f"Command: `{header['command']}` (total {header['total_s']:.0f} s).",
        "",
        f"Stand-in: {train:,} training images ({val} of them the validation split) and {test} test images, "
        f"{photo_side(s.image_size)}-px JPEGs of 10 hue classes (striped, jittered). Frozen "
        f"random-init {s.backbone} (BatchNorm statistics re-estimated on {min(CALIBRATION_IMAGES, train)} training "
        f"images) at {s.image_size} px, {s.strategy} sampling, "
        f"{s.initial} initial labels, {s.budget} per round, {s.rounds} rounds after round 0, {s.epochs} epochs per "
        f"round (batch {s.batch_size}, lr {s.lr}), eval batch {s.eval_batch_size}, {s.num_workers} loader workers, seed {s.seed}.",
        "",
        "| mode | startup s | round 0 s | extraction s | rounds 1+ s (each) | rounds 1+ mean s | speedup vs none |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        extraction = f"{r.extraction_s:.1f}" if r.extracted else ("—" if mode == "none" else "— (reused)")
        speedup = f"{base.later_s / r.later_s:.1f}x" if base is not None else "—"
        each = ", ".join(f"{x:.1f}" for x in r.round_s[1:])
        lines.append(f"| {mode} | {r.startup_s:.1f} | {r.round_s[0]:.1f} | {extraction} | {each} | {r.later_s:.1f} | {speedup} |")
    lines += ["", "Per round: `train_seconds` / `query_seconds` from rounds.csv (training includes validation):", ""]
    lines += ["| mode | " + " | ".join(f"round {k}" for k in range(s.rounds + 1)) + " |", "|---|" + "---|" * (s.rounds + 1)]
    for mode, r in results.items():
        lines.append(f"| {mode} | " + " | ".join(f"{t:.1f} / {q:.1f}" for t, q in zip(r.train_s, r.query_s)) + " |")
    lines += ["", "Test top-1 per round (labels: " + ", ".join(str(n) for n in next(iter(results.values())).num_labeled) + "):", ""]
    lines += ["| mode | " + " | ".join(f"round {k}" for k in range(s.rounds + 1)) + " | mean |", "|---|" + "---|" * (s.rounds + 2)]
    for mode, r in results.items():
        lines.append(f"| {mode} | " + " | ".join(f"{a:.3f}" for a in r.test_acc_top1) + f" | {mean(r.test_acc_top1):.3f} |")
    lines += ["", "Same picks (pool.csv) as `none`: " + ", ".join(f"{m}: {'yes' if v else 'no'}" for m, v in same_picks.items()) + "."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backbone", choices=("resnet18", "resnet34", "resnet50"), default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-per-class", type=int, default=100, help="training images per class (10 classes)")
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--val-per-class", type=int, default=5, help="held out of the training images")
    parser.add_argument("--initial", type=int, default=50, help="labels of round 0")
    parser.add_argument("--budget", type=int, default=50, help="labels per round")
    parser.add_argument("--rounds", type=int, default=1, help="rounds after round 0")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per round, every mode")
    parser.add_argument("--batch-size", type=int, default=10, help="small: a linear head needs steps, not images")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="augmented needs cached before it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the stand-in, the cache and the runs here (default: a temporary folder)")
    parser.add_argument("--name", help="results file suffix (default: <device><cores>, e.g. cpu2)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results files")
    parser.add_argument("--note", default="", help="a line for the results file (e.g. what else ran)")
    args = parser.parse_args(argv)
    if "augmented" in args.modes and "cached" not in args.modes:
        parser.error("--modes augmented reuses the cache the cached run builds; add cached before it")
    return args


def benchmark(args: argparse.Namespace, work: Path) -> tuple[Settings, dict[str, ModeResult], dict[str, bool]]:
    """Stand-in, trunk, then each mode in order; the picks compared with the first mode's."""
    names = {f.name for f in Settings.__dataclass_fields__.values()}  # type: ignore[attr-defined]
    settings = Settings(**{k: v for k, v in vars(args).items() if k in names})
    standin = write_standin(work / "standin", args.train_per_class, args.test_per_class, args.image_size, args.seed)
    trunk = write_trunk(work / f"{args.backbone}_bn_calibrated.pt", standin, args.backbone, args.image_size, args.seed)
    results, picks = {}, {}
    ordered = [m for m in MODES if m in args.modes]
    for mode in ordered:
        print(f"[{time.strftime('%H:%M:%S')}] {mode} (load {load()})", flush=True)
        results[mode], picks[mode] = run_mode(settings, work, standin, trunk, mode)
        r = results[mode]
        print(f"  rounds s: {', '.join(f'{x:.1f}' for x in r.round_s)}; top-1: {', '.join(f'{a:.3f}' for a in r.test_acc_top1)}", flush=True)
    same = {m: picks[m] == picks[ordered[0]] for m in ordered[1:]}
    return settings, results, same


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    name = args.name or f"{args.device}{os.cpu_count()}"
    header = {"machine": machine(), "load_before": load(), "note": args.note, "command": shlex.join(["python", *sys.argv])}
    started = time.perf_counter()
    if args.workdir is None:
        with tempfile.TemporaryDirectory() as work:
            settings, results, same = benchmark(args, Path(work))
    else:
        settings, results, same = benchmark(args, args.workdir)
    header |= {"load_after": load(), "total_s": time.perf_counter() - started}
    args.results.mkdir(parents=True, exist_ok=True)
    report = markdown(settings, results, same, header)
    (args.results / f"feature_cache_speed_{name}.md").write_text(report)
    with open(args.results / f"feature_cache_speed_{name}.jsonl", "w") as f:
        for r in results.values():
            f.write(json.dumps({**asdict(settings), **asdict(r), **header, "same_picks_as_first": same.get(r.mode)}) + "\n")
    print(report)


if __name__ == "__main__":
    main()
