"""TypiClust and k-means through the real Trainer, from no labels: they pick round 0's labels themselves."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN, log_dirs, read_csv

#: One round after round 0, one epoch each, no initial labels.
FROM_NOTHING = [*TINY_RUN, "--data.initial_pool_size=0", "--al.rounds=1", "--al.max_epochs=1"]


@pytest.mark.parametrize(
    "args",
    [
        ["--al.strategy=typiclust", "--model.freeze_backbone=true", "--data.feature_cache=cache"],
        ["--al.strategy=kmeans"],
    ],
    ids=["typiclust-feature-cache", "kmeans"],
)
def test_a_run_from_zero_labels_labels_the_budget_every_round(cli, tmp_path, args):
    result = cli(["fit", *FROM_NOTHING, *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)
    rounds = read_csv(run / "rounds.csv")
    assert [(r["num_labeled"], r["num_queried"]) for r in rounds] == [("20", "20"), ("40", "20")]
    pool = read_csv(run / "pool.csv")
    assert len({r["index"] for r in pool}) == 40
    assert [sum(r["round"] == k for r in pool) for k in ("0", "1")] == [20, 20]
    for k in (0, 1):
        queried = read_csv(run / "queries" / f"round_{k}.csv")
        assert sorted(r["index"] for r in queried) == sorted(r["index"] for r in pool if r["round"] == str(k))


def test_a_coverage_cold_start_hands_round_1_to_dropquery(cli, tmp_path):
    """maxherding picks round 0 with no labels (cold start); dropquery, which needs the head, picks round 1."""
    result = cli(["fit", *FROM_NOTHING, "--al.cold_start=maxherding", "--al.strategy=dropquery"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)
    rounds = read_csv(run / "rounds.csv")
    assert [(r["num_labeled"], r["queried_by"]) for r in rounds] == [("20", "maxherding"), ("40", "dropquery")]
    assert len({r["index"] for r in read_csv(run / "pool.csv")}) == 40


def test_probcover_picks_round_0_for_people_and_the_run_waits_for_their_labels(cli, tmp_path):
    """The human path: with the file oracle, probcover's round-0 query goes out as a file and the run pauses."""
    command = ["fit", *FROM_NOTHING, "--al.strategy=probcover", "--al.oracle=file", "--al.label_dir=team"]
    result = cli(command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[al] probcover: delta = " in result.stderr  # the purity rule says what it chose
    queried = read_csv(tmp_path / "team" / "queries" / "round_0.csv")
    assert len({r["index"] for r in queried}) == 20
    assert not (tmp_path / "team" / "labels" / "round_0.csv").exists()
    (run,) = log_dirs(tmp_path)
    assert not (run / "rounds.csv").exists() or read_csv(run / "rounds.csv") == []
