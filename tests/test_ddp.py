"""Two CPU processes (gloo DDP) run the same experiment and agree with one process."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN, log_dirs, read_csv

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

#: No initial pool: round 0 is chosen by BASE with the untrained model, so a 1-rank and a
#: 2-rank run must pick exactly the same points (sharded scoring, gathered, rank 0 selects).
ARGS = ["fit", *TINY_RUN, "--data.initial_pool_size=0", "--al.budget=30", "--al.rounds=1", "--al.strategy=base"]


def test_two_ranks_select_what_one_rank_selects(cli, tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir(), double.mkdir()
    assert cli(ARGS, cwd=single).returncode == 0
    result = cli([*ARGS, "--trainer.strategy=ddp", "--trainer.devices=2"], cwd=double)
    assert result.returncode == 0, result.stderr[-3000:]

    (run_one,), (run_two,) = log_dirs(single), log_dirs(double)
    pool_one, pool_two = read_csv(run_one / "pool.csv"), read_csv(run_two / "pool.csv")
    round0 = lambda rows: [r["index"] for r in rows if r["round"] == "0"]  # noqa: E731
    assert round0(pool_two) == round0(pool_one) and len(round0(pool_one)) == 30
    assert [sum(r["round"] == k for r in pool_two) for k in ("0", "1")] == [30, 30]
    assert len({r["index"] for r in pool_two}) == 60
    assert [int(r["num_labeled"]) for r in read_csv(run_two / "rounds.csv")] == [30, 60]


def test_pretraining_runs_on_two_ranks(cli, tmp_path):
    from al_lightning.models import build_backbone
    from al_lightning.models.checkpoints import load_backbone_weights
    from tests.test_pretrain import TINY_PRETRAIN

    out = tmp_path / "backbone.pt"
    args = ["fit", *TINY_PRETRAIN, "--model.method=moco_v2", f"--model.backbone_out={out}",
            "--trainer.strategy=ddp", "--trainer.devices=2"]
    result = cli(args, cwd=tmp_path, script="pretrain.py")
    assert result.returncode == 0, result.stderr[-3000:]
    backbone, _ = build_backbone("resnet18", cifar_stem=True)
    load_backbone_weights(backbone, out)
