"""benchmarks/feature_cache_speed.py end to end at a tiny size: the three CLI runs, their timings and the results files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY = [
    "--backbone=resnet18", "--image-size=32", "--train-per-class=3", "--test-per-class=1", "--val-per-class=1",
    "--initial=10", "--budget=5", "--rounds=1", "--epochs=1", "--name=tiny",
]  # fmt: skip


@pytest.mark.slow
def test_the_benchmark_times_every_mode_and_an_augmented_head_picks_what_an_uncached_one_does(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "feature_cache_speed.py"), *TINY,
         f"--workdir={tmp_path / 'work'}", f"--results={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["mode"]: r for r in map(json.loads, (tmp_path / "feature_cache_speed_tiny.jsonl").read_text().splitlines())}
    assert list(rows) == ["none", "cached", "augmented"]
    assert all(len(r["round_s"]) == 2 and min(r["round_s"]) > 0 for r in rows.values())
    assert [r["extracted"] for r in rows.values()] == [False, True, False]  # augmented reuses the cached run's folder
    assert rows["cached"]["extraction_s"] > 0 and rows["none"]["num_labeled"] == [10, 15]
    # Training on augmented images through the frozen trunk is what the uncached run does.
    assert rows["augmented"]["same_picks_as_first"] is True
    assert rows["augmented"]["test_acc_top1"] == rows["none"]["test_acc_top1"]
    assert "| cached |" in (tmp_path / "feature_cache_speed_tiny.md").read_text()
