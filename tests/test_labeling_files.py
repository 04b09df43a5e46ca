"""Labeling with people through files: the run pauses for labels, checks them, and goes on."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN, log_dirs, read_csv
from tests.reference_runs import MARGIN_RUN, finished_run
from tests.standins import PHOTO_RUN, write_colour_photos, write_seed_labels
from tests.test_cli import digits_at

pytestmark = pytest.mark.slow


def pool_rows(run) -> list[tuple[str, str, str]]:
    return [(r["index"], r["round"], r["label"]) for r in read_csv(run / "pool.csv")]


def test_a_file_oracle_run_pauses_for_labels_refuses_bad_ones_and_ends_as_the_simulated_run(cli, tmp_path, tmp_path_factory):
    """The file oracle pauses at each query, waits, refuses a bad labels file (every problem named,
    nothing applied), and once given the true labels ends with the simulated run's very pool."""
    reference_run = finished_run(MARGIN_RUN, tmp_path_factory)  # the same command, simulated oracle (shared)
    human_dir = tmp_path / "human"
    human_dir.mkdir()
    targets, _, _ = digits_at(16)  # what a careful annotator would answer
    command = [*MARGIN_RUN, "--al.oracle=file", "--al.label_dir=team"]
    team = human_dir / "team"

    # Round 0 trains on the initial pool, then the first query goes out and the run stops, exit 0.
    first = cli(command, cwd=human_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"{team / 'labels' / 'round_1.csv'}" in first.stderr
    (run,) = log_dirs(human_dir)
    assert [r["round"] for r in read_csv(run / "rounds.csv")] == ["0"]
    queried = read_csv(team / "queries" / "round_1.csv")
    assert len(queried) == 20 and [r["rank"] for r in queried] == [str(k) for k in range(1, 21)]
    assert all(r["score"] != "" and r["predicted"] in {str(c) for c in range(10)} for r in queried)
    assert (team / "queries" / "round_1.labelstudio.json").exists()
    assert read_csv(run / "queries" / "round_1.csv") == queried  # the run keeps its own record too

    # The same command again, before the labels exist: it says what it waits for and changes nothing.
    checkpoint = run / "checkpoints" / "last.ckpt"
    saved = checkpoint.read_bytes()
    waiting = cli(command, cwd=human_dir)
    assert waiting.returncode == 0, waiting.stderr[-3000:]
    assert "round 1: 20 items to label" in waiting.stderr
    assert len(log_dirs(human_dir)) == 1

    # A bad labels file: every problem named with its line, and nothing applied.
    indices = [int(r["index"]) for r in queried]
    bad = ["index,label", *(f"{i},{int(targets[i])}" for i in indices[:17]), f"{indices[0]},3", f"{indices[17]},giraffe", "99999,1"]
    (team / "labels").mkdir(exist_ok=True)
    (team / "labels" / "round_1.csv").write_text("\n".join(bad) + "\n")
    pool_before = (run / "pool.csv").read_text()
    refused = cli(command, cwd=human_dir)
    assert refused.returncode == 2
    assert "line 19: a second row for" in refused.stderr
    assert "line 20: unknown class 'giraffe'" in refused.stderr
    assert "line 21: '99999' was not queried in round 1" in refused.stderr
    assert "no row for 2 queried item(s)" in refused.stderr
    assert (run / "pool.csv").read_text() == pool_before and checkpoint.read_bytes() == saved

    # The fixed file: labels applied, round 1 trains, round 2's query goes out (labels by path this time).
    (team / "labels" / "round_1.csv").write_text("index,label\n" + "".join(f"{i},{int(targets[i])}\n" for i in indices))
    second = cli(command, cwd=human_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    queried = read_csv(team / "queries" / "round_2.csv")
    (team / "labels" / "round_2.csv").write_text("path,label\n" + "".join(f"{r['path']},{int(targets[int(r['index'])])}\n" for r in queried))
    last = cli(command, cwd=human_dir)
    assert last.returncode == 0, last.stderr[-3000:]

    # One run folder, every round recorded, and the very pool the simulated oracle gave.
    assert log_dirs(human_dir) == [run]
    assert [r["round"] for r in read_csv(run / "rounds.csv")] == ["0", "1", "2"]
    assert pool_rows(run) == pool_rows(reference_run)
    assert [r["num_labeled"] for r in read_csv(run / "rounds.csv")] == [r["num_labeled"] for r in read_csv(reference_run / "rounds.csv")]
    done = cli(command, cwd=human_dir)
    assert done.returncode == 0 and "finished all its rounds" in done.stderr


def test_a_folder_of_unlabeled_images_is_labeled_round_by_round_through_files(cli, tmp_path):
    truth = write_colour_photos(tmp_path)
    seeds = write_seed_labels(tmp_path, truth)
    command = [
        "fit", *TINY_RUN, *PHOTO_RUN, "--al.oracle=file", "--al.label_dir=team",
    ]  # fmt: skip

    first = cli(command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    queried = read_csv(tmp_path / "team" / "queries" / "round_1.csv")
    assert len(queried) == 6 and not {r["path"] for r in queried} & set(seeds)
    (tmp_path / "team" / "labels" / "round_1.csv").write_text(
        "path,label\n" + "".join(f"{r['path']},{truth[r['path']]}\n" for r in queried)
    )
    second = cli(command, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]

    (run,) = log_dirs(tmp_path)
    pool = read_csv(run / "pool.csv")
    # 8 seeds minus 2 held out for validation (a quarter of each class), then the 6 labeled through the file.
    assert [r["round"] for r in pool].count("0") == 6 and [r["round"] for r in pool].count("1") == 6
    assert all(r["label"] == truth[r["path"]] for r in pool)  # pool.csv is the team's labels file
    assert [r["round"] for r in read_csv(run / "rounds.csv")] == ["0", "1"]
