"""benchmarks/fashion_mnist.sh's small slice (SLICE=1) end to end on the real Fashion-MNIST files:
pretraining, the two all-label probes, both sweeps on the cached features, both reports."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

REAL = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FIGURES = ("top1.png", "top5.png", "imbalance.png", "entropy.png", "class_counts.png")


@pytest.fixture(scope="module")
def real() -> Path:
    """Debian's files; skipped where they are not installed, except under CI (env ``CI``), where that fails."""
    if not all((REAL / f"{name}.gz").is_file() or (REAL / name).is_file() for name in FILES):
        message = f"Fashion-MNIST is not in {REAL}: apt-get install dataset-fashion-mnist (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REAL


def final_rows(sweep: Path) -> dict[str, dict[str, str]]:
    """Each run's last rounds.csv row, by its folder name (``random-seed0``)."""
    rows = {}
    for rounds in sweep.glob("*/lightning_logs/version_*/rounds.csv"):
        with rounds.open() as f:
            rows[rounds.parents[2].name] = list(csv.DictReader(f))[-1]
    return rows


def check_outputs(work: Path) -> None:
    """The slice's files: the trunk, the probe table, each setting's runs, figures and summary."""
    results = work / "results"
    assert (work / "simclr_resnet18.pt").stat().st_size > 40e6  # a ResNet-18 trunk's weights

    probe = (results / "probe.md").read_text()
    accuracies = [float(a) for a in re.findall(r"\| ([01]\.\d{4})(?= \|)", probe)]
    assert "raw pixels (784)" in probe and "SimCLR ResNet-18 trunk (512)" in probe
    assert len(accuracies) == 4 and all(0.1 < a <= 1 for a in accuracies[::2])  # top-1 above chance (10 classes)

    for setting in ("balanced", "lt10"):
        rows = final_rows(work / f"sweep_{setting}")
        assert sorted(rows) == ["base-seed0", "random-seed0"]
        assert all(int(r["num_labeled"]) == 60 and 0 < float(r["test_acc_top1"]) <= 1 for r in rows.values())
        # Each run keeps only its last.ckpt: round checkpoints hold the 44 MB trunk each.
        kept = sorted(p.name for p in (work / f"sweep_{setting}").glob("*/lightning_logs/*/checkpoints/*"))
        assert kept == ["last.ckpt", "last.ckpt"], kept
        report = results / setting
        assert all((report / name).stat().st_size > 0 for name in FIGURES)
        assert "2 run(s)" in (report / "five" / "summary.md").read_text()  # the docs' five, of which the slice has 2
        summary = (report / "summary.md").read_text()
        top1 = summary.split("### Test top-1 accuracy")[1].split("###")[0]
        assert re.search(r"\| 60 \| 0\.\d{3} \(n=1\) \| 0\.\d{3} \(n=1\) \|", top1), top1
        imbalance = summary.split("### Imbalance ratio")[1].split("###")[0]
        ratios = re.findall(r"\| 60 \| (\S+) \(n=1\) \| (\S+) \(n=1\) \|", imbalance)
        assert ratios and all(float(r) >= 1 or math.isinf(float(r)) for r in ratios[0]), imbalance
    # The long-tailed sweep read its own, smaller cache of the trunk's features.
    assert (work / "cache_lt10" / "train.npy").stat().st_size < (work / "cache_balanced" / "train.npy").stat().st_size


@pytest.mark.slow
@pytest.mark.timeout(420)  # ~3 min on a busy 2-core machine (load 3), far less on a quiet one
def test_the_slice_runs_every_stage_and_reports_real_numbers(real, tmp_path):
    env = {**os.environ, "SLICE": "1", "WORK": str(tmp_path / "work"), "DATA": str(real), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "fashion_mnist.sh")], env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(tmp_path / "work")
    assert "pretraining" in result.stderr and "done:" in result.stderr
