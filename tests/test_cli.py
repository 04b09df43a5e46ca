"""``train.py`` end to end in a subprocess, as a user runs it."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import TINY_RUN, log_dirs, read_csv

pytestmark = pytest.mark.slow


def test_fit_runs_every_round_and_writes_the_records(cli, tmp_path):
    result = cli(["fit", *TINY_RUN, "--al.strategy=base"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)

    rounds = read_csv(run / "rounds.csv")
    assert [int(r["round"]) for r in rounds] == [0, 1, 2]
    assert [int(r["num_labeled"]) for r in rounds] == [20, 40, 60]
    for r in rounds:
        assert 0.0 <= float(r["test_acc_top1"]) <= float(r["test_acc_top5"]) <= 1.0
        assert float(r["imbalance_ratio"]) >= 1.0 and 0.0 < float(r["class_entropy"]) <= 2.303
    assert float(rounds[0]["query_seconds"]) == 0.0 and float(rounds[1]["query_seconds"]) > 0.0

    pool = read_csv(run / "pool.csv")
    assert list(pool[0]) == ["index", "round"]
    assert [sum(r["round"] == str(k) for r in pool) for k in range(3)] == [20, 20, 20]
    assert len({r["index"] for r in pool}) == 60

    counts = read_csv(run / "class_counts.csv")
    assert [sum(int(r[str(c)]) for c in range(10)) for r in counts] == [20, 40, 60]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["round-00.ckpt", "round-01.ckpt", "round-02.ckpt"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()
    assert [e.step for e in events.Scalars("al/test_acc_top1")] == [20, 40, 60]
    assert {"al/imbalance_ratio", "al/class_entropy", "al/query_seconds", "al/num_labeled", "al/test_acc_top5"} <= set(events.Tags()["scalars"])
    assert "al/labeled_classes" in events.Tags()["histograms"]


def test_resumed_run_ends_with_the_same_pool(cli, tmp_path):
    assert cli(["fit", *TINY_RUN], cwd=tmp_path).returncode == 0
    (first,) = log_dirs(tmp_path)
    result = cli(["fit", *TINY_RUN, f"--ckpt_path={first / 'checkpoints' / 'round-00.ckpt'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = log_dirs(tmp_path)[1]
    assert (resumed / "pool.csv").read_text() == (first / "pool.csv").read_text()
    first_rows, resumed_rows = read_csv(first / "rounds.csv"), read_csv(resumed / "rounds.csv")
    assert [r["test_acc_top1"] for r in resumed_rows] == [r["test_acc_top1"] for r in first_rows]


def test_print_config_shows_every_namespace(cli, tmp_path):
    result = cli(["fit", "--config", str(TINY_RUN[1]), "--al.budget=7", "--print_config"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["al"]["budget"] == 7 and config["al"]["strategy"] == "base"
    assert {"dataset", "path", "initial_pool_size", "val_fraction"} <= set(config["data"])
    assert {"backbone", "freeze_backbone", "pretrained", "lr"} <= set(config["model"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("--al.strategy=bogus", "unknown strategy 'bogus'; choose one of: badge, balanced_random, "),
        ("--model.backbone=resnet51", "unknown backbone 'resnet51'; choose one of resnet18"),
        ("--data.dataset=image_folder --data.path=/no/such/folder", "dataset 'image_folder': path '/no/such/folder' does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(cli, tmp_path, override, message):
    result = cli(["fit", *TINY_RUN, *override.split()], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {message}" in result.stderr
