"""``python -m al_lightning.report``: loading runs by their saved configs, grouping, alignment, intervals, figures."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Optional

import pytest
import yaml

from al_lightning.report import (
    IGNORED_KEYS,
    ReportError,
    ReportWarning,
    group_runs,
    labels_to_reach_random,
    load_run,
    load_runs,
    main,
    t_interval,
)
from tests.conftest import REPO, TINY_RUN, log_dirs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def write_run(
    folder: Path,
    strategy: str,
    seed: int,
    top1: dict[int, float],
    *,
    top5: Optional[dict[int, float]] = None,
    al_seed: Optional[int] = None,
    config: Optional[dict] = None,
    class_counts: bool = True,
) -> Path:
    """A run dir as ``train.py fit`` leaves it: rounds.csv, class_counts.csv and LightningCLI's config.yaml.

    ``top1`` maps label counts to test top-1; the other columns are made up from the count.
    """
    folder.mkdir(parents=True)
    saved = {
        "seed_everything": seed,
        "trainer": {"accelerator": "cpu", "default_root_dir": str(folder.parent), "logger": None, "callbacks": None},
        "model": {"backbone": "resnet18", "freeze_backbone": False},
        "data": {"dataset": "digits", "path": None, "initial_pool_size": 20},
        "al": {"strategy": strategy, "budget": 20, "rounds": len(top1) - 1, "seed": al_seed, "strategy_args": None},
        "ckpt_path": None,
    }
    for dotted, value in (config or {}).items():
        *parents, leaf = dotted.split(".")
        node = saved
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (folder / "config.yaml").write_text("# pytorch_lightning==2.6.6\n" + yaml.safe_dump(saved))
    with open(folder / "rounds.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["round", "num_labeled", "num_queried", "num_scored", "test_acc_top1", "test_acc_top5", "best_val",
                         "epochs", "best_epoch", "imbalance_ratio", "class_entropy", "query_seconds", "train_seconds"])
        for k, (n, acc) in enumerate(sorted(top1.items())):
            five = "" if top5 is None else top5[n]
            imbalance = "inf" if k == 0 else 1 + 10 / n
            writer.writerow([k, n, 20, "" if k == 0 else 1000, acc, five, acc, 2, 1, imbalance, 2.0 + n / 1000, 0.1, 1.0])
    if class_counts:
        with open(folder / "class_counts.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["round", "num_labeled", *CLASSES])
            for k, n in enumerate(sorted(top1)):
                counts = [n // 10] * 10  # every class the same, but the ends drift apart
                counts[0], counts[9] = counts[0] - k, counts[9] + k
                writer.writerow([k, n, *counts])
    return folder


def run_report(args: list[str]) -> tuple[int, str]:
    """``main`` as the command line calls it, with its stderr."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(args)
    return status, err.getvalue()


# ---------------------------------------------------------------------------------- intervals


def test_the_interval_is_the_student_t_interval_computed_by_hand():
    interval = t_interval([0.5, 0.6, 0.7])
    # s = 0.1, t_{0.975, 2} = 4.302653: 4.302653 * 0.1 / sqrt(3) = 0.24841
    assert interval.n == 3
    assert interval.mean == pytest.approx(0.6)
    assert interval.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert interval.half_width == pytest.approx(0.2484, abs=1e-4)
    assert interval.format() == "0.600 ± 0.248 (n=3)"
    # two seeds: t_{0.975, 1} = 12.706205, s = 0.1 * sqrt(2) / 2 ... = |a - b| / sqrt(2)
    two = t_interval([0.8, 0.9])
    assert two.half_width == pytest.approx(12.706205 * (0.1 / math.sqrt(2)) / math.sqrt(2), abs=1e-6)


def test_one_seed_has_no_band_and_an_infinite_value_no_interval():
    single = t_interval([0.5])
    assert single.n == 1 and single.mean == 0.5 and math.isnan(single.half_width)
    assert single.format() == "0.500 (n=1)"
    infinite = t_interval([2.0, math.inf])
    assert infinite.mean == math.inf and math.isnan(infinite.half_width) and infinite.format(2) == "inf (n=2)"
    assert t_interval([math.nan, 0.4]).n == 1  # an empty record is left out
    assert t_interval([]).format() == "n/a"


# ---------------------------------------------------------------------------------- loading


def test_strategy_and_seed_come_from_the_saved_config_even_when_folder_names_lie(tmp_path):
    lying = write_run(tmp_path / "random-seed7" / "lightning_logs" / "version_0", "base", 3, {20: 0.5})
    al_seed = write_run(tmp_path / "margin-seed0" / "lightning_logs" / "version_0", "MASE", 0, {20: 0.5}, al_seed=11)
    assert (load_run(lying).strategy, load_run(lying).seed) == ("base", 3)
    assert (load_run(al_seed).strategy, load_run(al_seed).seed) == ("mase", 11)  # al.seed beats seed_everything; names are case-insensitive
    runs = load_runs([tmp_path])
    assert sorted((r.strategy, r.seed) for r in runs) == [("base", 3), ("mase", 11)]


def test_a_run_dir_without_records_is_named_in_a_warning_and_skipped(tmp_path):
    write_run(tmp_path / "lightning_logs" / "version_0", "base", 0, {20: 0.5, 40: 0.6})
    (tmp_path / "lightning_logs" / "version_1").mkdir()  # started, finished no round
    header_only = tmp_path / "lightning_logs" / "version_2"
    write_run(header_only, "base", 1, {20: 0.5})
    (header_only / "rounds.csv").write_text("round,num_labeled,test_acc_top1\n")
    with pytest.warns(ReportWarning) as caught:
        runs = load_runs([tmp_path])
    assert [r.path.name for r in runs] == ["version_0"]
    messages = " ".join(str(w.message) for w in caught)
    assert "version_1" in messages and "version_2" in messages and "no rows" in messages

    status, err = run_report([str(tmp_path), "--out", str(tmp_path / "report")])
    assert status == 0
    assert "version_1" in err and "version_2" in err
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "version_1" in summary and "version_2" in summary  # the summary lists what it left out


def test_nothing_left_is_a_clear_error_with_exit_status_2(tmp_path):
    empty = tmp_path / "lightning_logs" / "version_0"
    empty.mkdir(parents=True)
    missing = tmp_path / "nowhere"
    with pytest.raises(ReportError, match="no run with records"), pytest.warns(ReportWarning):
        load_runs([empty])
    status, err = run_report([str(tmp_path), str(missing), "--out", str(tmp_path / "report")])
    assert status == 2
    assert "error: no run with records" in err and str(tmp_path) in err and str(missing) in err
    assert f"warning: skipped {empty}: no rounds.csv" in err and f"warning: skipped {missing}: does not exist" in err
    assert not (tmp_path / "report" / "summary.md").exists()


# ---------------------------------------------------------------------------------- grouping


def test_paths_and_seeds_do_not_split_a_group_but_other_keys_do(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"a{seed}", "random", seed, {20: 0.5, 40: 0.6}, config={"data.path": f"/data/{seed}", "trainer.logger": True})
        write_run(tmp_path / f"b{seed}", "random", seed, {20: 0.4, 40: 0.5}, config={"model.freeze_backbone": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)  # nothing left out, nothing dropped
        groups = group_runs(load_runs([tmp_path]))
    assert len(groups) == 2
    assert [g.differing for g in groups] == [{"model.freeze_backbone": False}, {"model.freeze_backbone": True}]
    assert [len(g.curves["random"].runs) for g in groups] == [2, 2]
    with pytest.warns(ReportWarning, match="a repeat of"):  # --ignore-key: now the same strategy and seeds twice
        (merged,) = group_runs(load_runs([tmp_path]), (*IGNORED_KEYS, "model.freeze_backbone"))
    assert len(merged.curves["random"].runs) == 2 and len(merged.repeats) == 2 and not merged.differing

    assert run_report([str(tmp_path), "--out", str(tmp_path / "report")])[0] == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Group 1" in summary and "## Group 2" in summary
    assert "`model.freeze_backbone` = `False`" in summary and "`model.freeze_backbone` = `True`" in summary
    assert (tmp_path / "report" / "group1_top1.png").exists() and (tmp_path / "report" / "group2_top1.png").exists()


def test_strategy_args_make_a_separate_curve_not_a_separate_group(tmp_path):
    write_run(tmp_path / "r", "random", 0, {20: 0.5})
    write_run(tmp_path / "p", "partitioned_badge", 0, {20: 0.5}, config={"al.strategy_args": {"partitions": 5}})
    (group,) = group_runs(load_runs([tmp_path]))
    assert list(group.curves) == ["random", "partitioned_badge(partitions=5)"]


def test_attempts_of_one_run_count_once_the_most_complete_kept(tmp_path):
    # A resumed run writes a new version folder holding the whole history: one seed, not two.
    write_run(tmp_path / "base-seed0" / "lightning_logs" / "version_0", "base", 0, {20: 0.5, 40: 0.6}, config={"al.rounds": 2})
    write_run(tmp_path / "base-seed0" / "lightning_logs" / "version_1", "base", 0, {20: 0.5, 40: 0.6, 60: 0.7},
              config={"al.rounds": 2, "ckpt_path": "base-seed0/lightning_logs/version_0/checkpoints/round-01.ckpt"})
    write_run(tmp_path / "base-seed1" / "lightning_logs" / "version_0", "base", 1, {20: 0.7, 40: 0.8, 60: 0.9})
    with pytest.warns(ReportWarning, match="version_0 .2 label counts. left out, a repeat of .*version_1"):
        (group,) = group_runs(load_runs([tmp_path]))
    curves = group.curves["base"]
    assert [r.path.parts[-3:] for r in curves.runs] == [("base-seed0", "lightning_logs", "version_1"),
                                                        ("base-seed1", "lightning_logs", "version_0")]
    assert curves.labels == [20, 40, 60] and not curves.dropped and len(group.runs) == 2


# ---------------------------------------------------------------------------------- label schedules


def test_seeds_with_different_schedules_are_averaged_at_common_counts_and_the_rest_reported(tmp_path):
    write_run(tmp_path / "s0", "base", 0, {20: 0.5, 40: 0.6, 60: 0.7})
    write_run(tmp_path / "s1", "base", 1, {20: 0.7, 40: 0.8, 60: 0.9, 80: 0.95})
    write_run(tmp_path / "s2", "base", 2, {20: 0.6, 30: 0.65, 40: 0.7, 60: 0.8})
    (group,) = group_runs(load_runs([tmp_path]))
    curves = group.curves["base"]
    assert curves.labels == [20, 40, 60]
    assert curves.dropped == {30: ["base seed 2"], 80: ["base seed 1"]}
    assert curves.intervals("test_acc_top1")[0].format() == "0.600 ± 0.248 (n=3)"

    assert run_report([str(tmp_path), "--out", str(tmp_path / "report")])[0] == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| 20 | 0.600 ± 0.248 (n=3) |" in summary
    assert "label counts dropped because not every seed has them: 30 (only base seed 2); 80 (only base seed 1)" in summary
    assert "| 80 |" not in summary


def test_a_strategy_whose_seeds_share_no_count_is_refused_with_the_reason(tmp_path):
    write_run(tmp_path / "b0", "base", 0, {20: 0.5, 40: 0.6})
    write_run(tmp_path / "b1", "base", 1, {30: 0.5, 50: 0.6})
    write_run(tmp_path / "r0", "random", 0, {20: 0.5, 40: 0.6})
    with pytest.warns(ReportWarning, match="share no label count"):
        (group,) = group_runs(load_runs([tmp_path]))
    assert list(group.curves) == ["random"] and "base" in group.refused
    assert run_report([str(tmp_path), "--out", str(tmp_path / "report")])[0] == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "**base** refused: base: its seeds share no label count" in summary

    alone = tmp_path / "alone"
    write_run(alone / "b0", "base", 0, {20: 0.5})
    write_run(alone / "b1", "base", 1, {30: 0.5})
    status, err = run_report([str(alone), "--out", str(tmp_path / "report2")])
    assert status == 2 and "every strategy was refused" in err


# ---------------------------------------------------------------------------------- Table 2's question


def test_labels_to_reach_random_on_a_hand_checked_case(tmp_path):
    # random: final mean (0.68 + 0.72) / 2 = 0.70 at 60 labels
    write_run(tmp_path / "r0", "random", 0, {20: 0.50, 40: 0.60, 60: 0.68})
    write_run(tmp_path / "r1", "random", 1, {20: 0.52, 40: 0.62, 60: 0.72})
    # base: means 0.60, 0.70 (= random's final: reached), 0.80
    write_run(tmp_path / "b0", "base", 0, {20: 0.55, 40: 0.65, 60: 0.75})
    write_run(tmp_path / "b1", "base", 1, {20: 0.65, 40: 0.75, 60: 0.85})
    # margin: 0.69 at best, never reaches
    write_run(tmp_path / "m0", "margin", 0, {20: 0.5, 40: 0.6, 60: 0.69})
    (group,) = group_runs(load_runs([tmp_path]))
    reference, reaches, note = labels_to_reach_random(group)
    assert reference == (60, pytest.approx(0.70)) and note == ""
    got = {r.strategy: (r.labels, r.fraction) for r in reaches}
    assert got == {"random": (60, 1.0), "base": (40, pytest.approx(2 / 3)), "margin": (None, None)}

    assert run_report([str(tmp_path), "--out", str(tmp_path / "report")])[0] == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "Random sampling's final mean test top-1 accuracy: **0.700** at 60 labels." in summary
    assert "| base | 40 | 67% |" in summary and "| margin | not reached |  |" in summary


def test_without_random_the_summary_says_so_instead_of_guessing(tmp_path):
    write_run(tmp_path / "b0", "base", 0, {20: 0.5, 40: 0.6})
    (group,) = group_runs(load_runs([tmp_path]))
    assert labels_to_reach_random(group) == (None, [], "no `random` strategy in this group: nothing to compare with")
    assert run_report([str(tmp_path), "--out", str(tmp_path / "report")])[0] == 0
    assert "no `random` strategy in this group" in (tmp_path / "report" / "summary.md").read_text()


# ---------------------------------------------------------------------------------- figures


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, (path, len(data))  # axes, curves and text, not an empty canvas


def test_every_figure_is_a_png(tmp_path):
    for strategy in ("random", "base"):
        for seed in (0, 1):
            top1 = {20: 0.5 + seed / 20, 40: 0.6 + seed / 20, 60: 0.7 + seed / 20}
            write_run(tmp_path / f"{strategy}-{seed}", strategy, seed, top1, top5={n: a + 0.2 for n, a in top1.items()})
    write_run(tmp_path / "single", "mase", 0, {20: 0.5, 40: 0.6, 60: 0.7}, top5={20: 0.8, 40: 0.9, 60: 0.95})
    out = tmp_path / "report"
    assert run_report([str(tmp_path), "--out", str(out)])[0] == 0
    names = ["top1.png", "top5.png", "imbalance.png", "entropy.png", "class_counts.png"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(names)
    for name in names:
        assert_png(out / name)
    summary = (out / "summary.md").read_text()
    assert all(f"[`{name}`]({name})" in summary for name in names)
    assert "| mase | 0 | n=1: one seed, no interval |" in summary


def test_top5_is_skipped_when_empty_and_class_counts_when_missing(tmp_path):
    write_run(tmp_path / "r0", "random", 0, {20: 0.5, 40: 0.6}, class_counts=False)
    out = tmp_path / "report"
    assert run_report([str(tmp_path), "--out", str(out)])[0] == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["entropy.png", "imbalance.png", "top1.png"]
    assert "top-5" not in (out / "summary.md").read_text()


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_real_runs_then_the_report_command(cli, tmp_path):
    runs = tmp_path / "runs"
    for strategy, seed in (("random", 1), ("base", 2)):
        root = runs / f"{strategy}-{seed}"
        result = cli(["fit", *TINY_RUN, "--al.min_epochs=0", "--al.rounds=1", "--al.save_round_checkpoints=false",
                      f"--al.strategy={strategy}", f"--seed_everything={seed}", f"--trainer.default_root_dir={root}"],
                     cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert (log_dirs(root)[0] / "rounds.csv").exists()
    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "al_lightning.report", str(runs), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    summary = (out / "summary.md").read_text()
    assert "| random | 1 | n=1: one seed, no interval |" in summary
    assert "| base | 2 | n=1: one seed, no interval |" in summary
    assert "| 20 |" in summary and "| 40 |" in summary  # 20 initial labels, then one round of 20
    for name in ("top1.png", "top5.png", "imbalance.png", "entropy.png", "class_counts.png"):
        assert_png(out / name)
