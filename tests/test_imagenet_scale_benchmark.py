"""benchmarks/imagenet_scale_run.py: its pool reads as a features dataset, and a tiny run goes end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from al_lightning.data.sources.features import FeatureSource

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmarks.imagenet_scale_run", ROOT / "benchmarks" / "imagenet_scale_run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_class_counts_follow_imagenet(bench):
    counts = bench.class_counts(bench.IMAGENET_TRAIN, bench.IMAGENET_CLASSES)
    assert counts.sum() == bench.IMAGENET_TRAIN
    assert counts.min() == bench.SMALLEST_CLASS and counts.max() - bench.LARGEST_CLASS in (0, 1)
    assert (counts >= bench.LARGEST_CLASS).mean() > 0.9
    small = bench.class_counts(2562, 10)
    assert small.sum() == 2562 and small.min() > 0.5 * small.max()


def test_the_pool_is_a_features_dataset_with_easy_and_hard_classes(bench, tmp_path):
    directory = bench.write_pool(tmp_path / "pool", n=3000, num_classes=4, dim=64, test_per_class=5)
    source = FeatureSource(str(directory))
    assert (source.num_classes, source.input_dim, len(source.train_targets), len(source.test_targets)) == (4, 64, 3000, 20)
    assert isinstance(source.train_features, torch.Tensor) and np.isfinite(source.train_features.numpy()).all()
    spreads = bench.class_spreads(4, seed=0)
    assert bench.SPREAD_EASY <= spreads.min() < spreads.max() <= bench.SPREAD_EASY + bench.SPREAD_RANGE


@pytest.mark.slow
def test_a_tiny_run_reports_every_round(bench, tmp_path):
    results = bench.main(
        ["--scale", "0.002", "--classes", "10", "--dim", "16", "--epochs", "1", "--rounds", "1",
         "--strategies", "base", "--work-dir", str(tmp_path), "--delete-pool"]
    )  # fmt: skip
    rounds = results[0].rounds
    assert [r["labels"] for r in rounds] == [60, 80]
    assert rounds[1]["selection_s"] > 0 and rounds[1]["peak_rss_gib"] > rounds[1]["peak_anon_gib"] > 0
    assert "| 1 | 80 |" in (tmp_path / "results.md").read_text()
