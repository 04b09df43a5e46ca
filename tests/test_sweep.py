"""``python -m al_lightning.sweep``: a grid of real ``train.py`` runs on tiny data, skipped when
finished, resumed when interrupted, printed for a scheduler, and refused on bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from al_lightning import sweep
from tests.conftest import REPO, log_dirs, read_csv

#: train.py overrides for a whole experiment in seconds (round 0 + one query round of 1 epoch);
#: ``--al.pool_subset 200`` in the ``--flag value`` form, the others as ``--flag=value``.
TINY = [
    "--data.image_size=16",
    "--data.initial_pool_size=20",
    "--data.batch_size=16",
    "--al.budget=20",
    "--al.rounds=1",
    "--al.max_epochs=1",
    "--al.min_epochs=0",
    "--trainer.accelerator=cpu",
    "--al.pool_subset",
    "200",
]
STRATEGIES, SEED = ["base", "margin"], 3  # not the config's seed_everything (0): it must reach the runs


def call_sweep(*argv: str) -> tuple[int, str, str]:
    """``sweep.main(argv)`` in this process: its exit code, stdout and stderr (the runs log to files)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            sweep.main(list(argv))
            code = 0
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def grid_args(out: Path) -> list[str]:
    return [
        "--config",
        "demo.yaml",
        "--strategies",
        ",".join(STRATEGIES),
        "--seeds",
        str(SEED),
        "--out",
        str(out),
        *TINY,
    ]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """One real sweep of 2 strategies x 1 seed, shared by the tests that read, rerun and resume it."""
    out = tmp_path_factory.mktemp("sweep") / "grid"
    code, stdout, stderr = call_sweep(*grid_args(out))
    assert code == 0, stdout + stderr + "".join((p / "run.log").read_text()[-3000:] for p in out.glob("*-seed*"))
    return out, stdout


@pytest.mark.slow
def test_sweep_runs_every_cell_with_its_own_strategy_and_seed(grid):
    out, stdout = grid
    names = [f"{s}-seed{SEED}" for s in STRATEGIES]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    # What every run shares, for refusing another grid in this folder.
    assert json.loads((out / "sweep.json").read_text()) == {"grid": None, "config": str(REPO / "configs" / "demo.yaml"), "overrides": TINY}
    for i, (strategy, name) in enumerate(zip(STRATEGIES, names), 1):
        run = out / name
        assert f"[sweep] {i}/2 {name}: started, finished in " in stdout
        (log_dir,) = log_dirs(run)
        assert [int(r["round"]) for r in read_csv(log_dir / "rounds.csv")] == [0, 1]  # rounds + 1 rows
        # The run's own saved config: the independent check of what reached it.
        config = yaml.safe_load((log_dir / "config.yaml").read_text())
        assert config["al"]["strategy"] == strategy and config["seed_everything"] == SEED
        assert config["trainer"]["default_root_dir"] == str(run)
        assert config["al"]["pool_subset"] == 200 and config["al"]["budget"] == 20  # both override forms
        marker = json.loads((run / "finished.json").read_text())
        assert marker["returncode"] == 0 and marker["log_dir"] == str(log_dir) and marker["seconds"] > 0
        assert f"--al.strategy={strategy}" in marker["command"]
        assert "[al] round 1:" in (run / "run.log").read_text()  # the run's output, streamed to its log


@pytest.mark.slow
def test_rerun_skips_finished_runs(grid, monkeypatch):
    out, _ = grid
    monkeypatch.setattr(sweep, "execute", lambda *a: pytest.fail(f"a finished run was run again: {a}"))
    code, stdout, stderr = call_sweep(*grid_args(out))
    assert code == 0, stderr
    for i, strategy in enumerate(STRATEGIES, 1):
        assert f"[sweep] {i}/2 {strategy}-seed{SEED}: skipped: finished earlier in " in stdout
        assert len(log_dirs(out / f"{strategy}-seed{SEED}")) == 1  # no new version folder


@pytest.mark.slow
def test_interrupted_run_resumes_in_place_with_ckpt_path_last(grid):
    out, _ = grid
    run = out / f"margin-seed{SEED}"
    (first,) = log_dirs(run)
    before = read_csv(first / "rounds.csv")
    # An attempt killed during round 1: no marker, round 0's records, and last.ckpt at the start of round 1
    # (the state saved after round 0's query, which is round-00.ckpt).
    (run / "finished.json").unlink()
    shutil.copyfile(first / "checkpoints" / "round-00.ckpt", first / "checkpoints" / "last.ckpt")
    (first / "checkpoints" / "round-01.ckpt").unlink()
    lines = (first / "rounds.csv").read_text().splitlines(keepends=True)
    (first / "rounds.csv").write_text("".join(lines[:2]))

    code, stdout, stderr = call_sweep(*grid_args(out))
    assert code == 0, stdout + stderr + (run / "run.log").read_text()[-3000:]
    assert f"[sweep] 1/2 base-seed{SEED}: skipped" in stdout
    assert f"[sweep] 2/2 margin-seed{SEED}: resumed from version_0, finished in " in stdout
    assert log_dirs(run) == [first]  # the CLI's own resume: the same log directory
    after = read_csv(first / "rounds.csv")
    assert [r["round"] for r in after] == ["0", "1"]
    assert [r["test_acc_top1"] for r in after] == [r["test_acc_top1"] for r in before]  # resume is exact
    marker = json.loads((run / "finished.json").read_text())
    assert marker["log_dir"] == str(first)
    assert marker["resumed_from"] == str(first / "checkpoints" / "last.ckpt")
    assert "--ckpt_path=last" in marker["command"]
    assert (run / "run.log").read_text().count("=== ") == 2  # both attempts' output kept


def test_print_gives_one_command_per_cell_and_runs_nothing(tmp_path):
    out = tmp_path / "printed"
    code, stdout, stderr = call_sweep(
        "--config", "demo.yaml", "--strategies", "base,margin", "--seeds", "0,1", "--out", str(out), *TINY, "--print"
    )
    assert code == 0, stderr
    commands = [shlex.split(line) for line in stdout.splitlines()]
    cells = [(s, k) for s in ("base", "margin") for k in (0, 1)]
    assert len(commands) == len(cells)
    for command, (strategy, seed) in zip(commands, cells):
        assert command[:3] == [sys.executable, str(REPO / "train.py"), "fit"]
        assert command[3:5] == ["--config", str(REPO / "configs" / "demo.yaml")]  # found in configs/, absolute
        assert f"--al.strategy={strategy}" in command and f"--seed_everything={seed}" in command
        assert f"--trainer.default_root_dir={out / f'{strategy}-seed{seed}'}" in command
        assert command[-len(TINY) :] == TINY  # the overrides, in order, the two-word form kept
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, overrides, message",
    [
        ({}, ["--al.nonsense=1"], "error: unrecognized arguments: --al.nonsense=1"),
        ({}, ["--al.budget=abc"], 'Parser key "al.budget"'),
        ({}, ["--al.strategy=margin"], "--al.strategy is set by the sweep for each run; use --strategies"),
        (
            {},
            ["--trainer.default_root_dir", "elsewhere"],
            "--trainer.default_root_dir is set by the sweep for each run; use --out",
        ),
        ({}, ["--ckpt_path=x.ckpt"], "--ckpt_path is set by the sweep"),
        (
            {},
            ["--al", "{strategy: margin}"],
            "set al.strategy to 'margin' instead of the sweep's 'base'; use --strategies",
        ),
        ({}, ["--print_config"], "use --print"),
        ({"--strategies": "base,bogus"}, [], "unknown strategy 'bogus'; choose from: badge, "),
        ({"--seeds": ""}, [], "--seeds is empty"),
        ({"--seeds": "1,x"}, [], "--seeds takes comma-separated integers, got '1,x'"),
        ({"--seeds": "1,1"}, [], "--seeds lists 1 more than once"),
        ({"--config": "nosuch.yaml"}, [], "config file 'nosuch.yaml' not found"),
        ({"--out": None}, [], "the following arguments are required: --out"),
        ({"--config": None}, [], "give --config, or --grid NAME for one of the paper's experiments"),
        ({"--grid": "e3"}, [], "unknown grid 'e3'; choose from: a1, b1, c1, c2, d, table1, table2"),
        ({"--sbatch": "qos"}, ["--launcher", "slurm"], "--sbatch takes KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_before_any_run(tmp_path, monkeypatch, flags, overrides, message):
    monkeypatch.setattr(sweep, "execute", lambda *a: pytest.fail("a run started"))
    given = {
        "--config": "demo.yaml",
        "--strategies": "base,margin",
        "--seeds": "0",
        "--out": str(tmp_path / "out"),
        **flags,
    }
    argv = [x for flag, value in given.items() if value is not None for x in (flag, value)]
    code, stdout, stderr = call_sweep(*argv, *overrides, *TINY)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out").exists()


def test_module_entry_point_refuses_a_sweep_owned_override(tmp_path):
    """``python -m al_lightning.sweep`` as a user runs it; the ``--flag value`` form is caught too."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "al_lightning.sweep", "--config", "demo.yaml", "--strategies", "base", "--seeds", "0",
         "--out", str(out), "--seed_everything", "5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: --seed_everything is set by the sweep for each run; use --seeds" in result.stderr
    assert not out.exists()


#: Stands in for train.py: base succeeds (writes rounds.csv), margin crashes, random exits 0 with nothing.
FAKE_TRAIN = """
import shutil
import sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
if args["--al.strategy"] == "margin":
    print("boom: the run broke")
    sys.exit(3)
if args["--al.strategy"] == "base":
    version = Path(args["--trainer.default_root_dir"]) / "lightning_logs" / "version_0"
    version.mkdir(parents=True)
    (version / "rounds.csv").write_text("round,num_labeled,test_acc_top1\\n0,20,0.5\\n")
"""


def test_failed_runs_are_reported_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "entry_command", lambda: [sys.executable, "-c", FAKE_TRAIN])
    out = tmp_path / "out"
    argv = ["--config", "demo.yaml", "--strategies", "margin,base,random", "--seeds", "0", "--out", str(out), *TINY]
    code, stdout, stderr = call_sweep(*argv)
    assert code == 1
    assert "[sweep] 1/3 margin-seed0: started, FAILED (exit code 3) after " in stdout
    assert "    boom: the run broke" in stdout  # the last lines of its run.log
    assert "[sweep] 2/3 base-seed0: started, finished in " in stdout  # the sweep went on
    assert "[sweep] 3/3 random-seed0: started, FAILED (exit code 0 but no rounds.csv)" in stdout
    assert "error: 2 of 3 runs failed: margin-seed0, random-seed0" in stderr
    assert sorted(p.parent.name for p in out.glob("*/finished.json")) == ["base-seed0"]

    code, stdout, _ = call_sweep(*argv)  # again: the failed runs are retried, the finished one is not
    assert code == 1
    assert "[sweep] 2/3 base-seed0: skipped" in stdout and "[sweep] 1/3 margin-seed0: started, FAILED" in stdout


def test_run_done_but_without_marker_is_not_run_again(tmp_path, monkeypatch):
    """A sweep killed between a run's exit and its marker: the last round's checkpoint and records are there."""
    monkeypatch.setattr(sweep, "execute", lambda *a: pytest.fail("a finished run was run again"))
    version = tmp_path / "out" / "base-seed0" / "lightning_logs" / "version_0"  # TINY has --al.rounds=1
    version.mkdir(parents=True)
    (version / "rounds.csv").write_text("round,num_labeled,test_acc_top1\n0,20,0.5\n1,40,0.25\n")
    argv = ["--config", "demo.yaml", "--strategies", "base", "--seeds", "0", "--out", str(tmp_path / "out"), *TINY]
    code, stdout, stderr = call_sweep(*argv)
    assert code == 0, stderr
    assert "[sweep] 1/1 base-seed0: skipped: all rounds were done (marker written now); round 1, 40 labels" in stdout
    assert json.loads((version.parents[1] / "finished.json").read_text())["log_dir"] == str(version)


@pytest.mark.parametrize(
    "grid, config, strategies, seeds",
    [
        # Figure 2 (C-I, C-II) leaves out coreset, BADGE and the balancing sampler (Section 5).
        ("c2", "imagenet_c2.yaml", ["random", "balanced_random", "partitioned_coreset", "partitioned_badge", "confidence",
                                    "margin", "vaal", "mase", "base"], [0, 1, 2]),
        ("A-I", "cifar10_a1.yaml", ["random", "balanced_random", "coreset", "partitioned_coreset", "badge",
                                    "partitioned_badge", "confidence", "margin", "vaal", "balancing", "mase", "base"],
         [0, 1, 2, 3, 4]),  # Figure 5: 5 runs
        ("Table 2", "imagenet_esvit_table2.yaml", ["base", "random"], [0]),
    ],
)  # fmt: skip
def test_a_paper_grid_by_name_expands_to_its_config_strategies_and_seeds(tmp_path, grid, config, strategies, seeds):
    code, stdout, stderr = call_sweep("--grid", grid, "--out", str(tmp_path / "g"), "--print")
    assert code == 0, stderr
    commands = [shlex.split(line) for line in stdout.splitlines()]
    assert [(c[c.index("--config") + 1]) for c in commands] == [str(REPO / "configs" / config)] * len(commands)
    picked = [(next(a.split("=")[1] for a in c if a.startswith("--al.strategy=")),
               int(next(a.split("=")[1] for a in c if a.startswith("--seed_everything=")))) for c in commands]  # fmt: skip
    assert picked == [(s, k) for s in strategies for k in seeds]


def test_a_grid_is_overridable_like_any_sweep(tmp_path):
    code, stdout, stderr = call_sweep(
        "--grid", "b1", "--strategies", "base,random", "--seeds", "7", "--out", str(tmp_path / "g"), "--al.budget=500", "--print"
    )
    assert code == 0, stderr
    commands = [shlex.split(line) for line in stdout.splitlines()]
    assert len(commands) == 2 and all(c[-1] == "--al.budget=500" and "--seed_everything=7" in c for c in commands)
    assert str(REPO / "configs" / "cifar10_lt_b1.yaml") in commands[0]


def test_a_folder_of_another_sweep_is_refused_with_the_difference(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "execute", lambda *a: pytest.fail("a run started"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"grid": "c2", "config": str(REPO / "configs" / "imagenet_c2.yaml"), "overrides": []}))
    code, _, stderr = call_sweep("--config", "demo.yaml", "--strategies", "base", "--seeds", "0", "--out", str(out), *TINY)
    assert code == 2
    assert f"error: {out} holds a sweep with other settings (grid: 'c2' there, None now; config: " in stderr
    assert "use another --out, or the same settings" in stderr
