"""Two CPU processes (gloo DDP) run the same experiment as one process and agree with it."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_RUN, log_dirs, read_csv
from tests.standins import write_gaussian_features

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

TWO_RANKS = ["--trainer.strategy=ddp", "--trainer.devices=2"]

#: lr 0 on a frozen trunk: every round's weights are its reset weights (SSP trunk, seeded head),
#: the same on any number of ranks, so the selections must be identical round after round.
SAME_WEIGHTS = ["--model.freeze_backbone=true", "--model.lr=0", "--model.momentum=0", "--model.weight_decay=0", "--al.max_epochs=1"]


def run_pair(cli, tmp_path, args):
    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir(), double.mkdir()
    one = cli(["fit", *TINY_RUN, *args], cwd=single)
    assert one.returncode == 0, one.stderr[-3000:]
    two = cli(["fit", *TINY_RUN, *args, *TWO_RANKS], cwd=double)
    assert two.returncode == 0, two.stderr[-3000:]
    (run_one,), (run_two,) = log_dirs(single), log_dirs(double)
    return run_one, run_two


@pytest.mark.parametrize(
    "strategy",
    [
        ["--al.strategy=base"],  # streamed: per-rank reductions merged
        ["--al.strategy=coreset"],  # gathered: features of the pool and the labeled set from both ranks
        ["--al.strategy=partitioned_coreset", "--al.strategy_args={partitions: 3}"],  # partitioned
        ["--al.strategy=margin", "--data.feature_cache=cache"],  # each rank extracts its shard of every split
        ["--al.strategy=power_bald", "--al.strategy_args={samples: 4}"],  # streamed, dropout masks and noise by id
        # Shared: every rank its rows of the neighbour engine (k-means, typicality); probcover and
        # maxherding on two ranks: tests/strategies/test_neighbours_ranks.py.
        ["--al.strategy=typiclust"],
    ],
    ids=["base", "coreset", "partitioned_coreset", "feature_cache", "power_bald", "typiclust"],
)
def test_two_ranks_select_what_one_rank_selects_in_every_round(cli, tmp_path, strategy):
    run_one, run_two = run_pair(cli, tmp_path, [*SAME_WEIGHTS, *strategy])
    pool_one, pool_two = read_csv(run_one / "pool.csv"), read_csv(run_two / "pool.csv")
    assert pool_two == pool_one
    assert [sum(r["round"] == k for r in pool_two) for k in ("0", "1", "2")] == [20, 20, 20]
    rounds_one, rounds_two = read_csv(run_one / "rounds.csv"), read_csv(run_two / "rounds.csv")
    # Test and validation metrics are synced across the ranks' shards, without repeated items.
    for column in ("num_labeled", "test_acc_top1", "test_acc_top5", "best_val", "imbalance_ratio"):
        assert [r[column] for r in rounds_two] == [r[column] for r in rounds_one], column


def test_training_on_two_ranks_follows_one_rank(cli, tmp_path):
    """With the same global batches, training agrees up to the order of float reductions.

    On embeddings (no random augmentation, which each rank draws from its own stream, and
    no BatchNorm, whose statistics are per rank) with a global batch of 16, 8 per rank.
    """
    features = write_gaussian_features(tmp_path / "features.pt", train=400, test=200)
    args = [
        "--data.dataset=features", f"--data.path={features}", "--model.backbone=identity", "--model.lr=0.05",
        "--data.initial_pool_size=50", "--al.strategy=margin", "--al.rounds=1", "--al.max_epochs=4",
    ]
    run_one, run_two = run_pair(cli, tmp_path, args)
    rounds_one, rounds_two = read_csv(run_one / "rounds.csv"), read_csv(run_two / "rounds.csv")
    assert [r["num_labeled"] for r in rounds_two] == [r["num_labeled"] for r in rounds_one] == ["50", "70"]
    for one, two in zip(rounds_one, rounds_two):
        assert abs(float(one["test_acc_top1"]) - float(two["test_acc_top1"])) <= 1 / 200
        assert abs(float(one["best_val"]) - float(two["best_val"])) <= 1 / 40
    round1 = lambda run: {r["index"] for r in read_csv(run / "pool.csv") if r["round"] == "1"}  # noqa: E731
    assert len(round1(run_one) & round1(run_two)) >= 18  # of 20: margins may reorder only at near-ties


def test_two_ranks_pause_for_a_labels_file_and_continue_as_one_simulated_rank(cli, tmp_path):
    """Rank 0 writes the query and reads the labels; every rank labels the same points."""
    from tests.test_cli import digits_at

    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir(), double.mkdir()
    args = ["fit", *TINY_RUN, *SAME_WEIGHTS, "--al.strategy=margin", "--al.rounds=1"]
    one = cli(args, cwd=single)
    assert one.returncode == 0, one.stderr[-3000:]
    human = [*args, *TWO_RANKS, "--al.oracle=file", "--al.label_dir=team"]
    paused = cli(human, cwd=double)
    assert paused.returncode == 0, paused.stderr[-3000:]
    targets, _, _ = digits_at(16)
    queried = read_csv(double / "team" / "queries" / "round_1.csv")
    (double / "team" / "labels" / "round_1.csv").write_text(
        "index,label\n" + "".join(f"{r['index']},{int(targets[int(r['index'])])}\n" for r in queried)
    )
    resumed = cli(human, cwd=double)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run_one,), (run_two,) = log_dirs(single), log_dirs(double)
    assert read_csv(run_two / "pool.csv") == read_csv(run_one / "pool.csv")
    assert [r["test_acc_top1"] for r in read_csv(run_two / "rounds.csv")] == [r["test_acc_top1"] for r in read_csv(run_one / "rounds.csv")]


def test_pretraining_runs_on_two_ranks(cli, tmp_path):
    from al_lightning.models import build_backbone
    from al_lightning.models.checkpoints import load_backbone_weights
    from tests.test_pretrain import TINY_PRETRAIN

    out = tmp_path / "backbone.pt"
    args = ["fit", *TINY_PRETRAIN, "--model.method=moco_v2", f"--model.backbone_out={out}", *TWO_RANKS]
    result = cli(args, cwd=tmp_path, script="pretrain.py")
    assert result.returncode == 0, result.stderr[-3000:]
    backbone, _ = build_backbone("resnet18", cifar_stem=True)
    load_backbone_weights(backbone, out)


def test_two_nodes_under_torchrun_select_what_one_process_selects(cli, tmp_path):
    """Multi-node as Lightning runs it: 2 "nodes" of 1 process each on 127.0.0.1, launched by ``torchrun``.

    Partitioned BADGE with 3 partitions: node 0 runs partitions 0 and 2, node 1 partition 1.
    Both nodes share the working directory, as nodes share a filesystem.
    """
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    args = [*TINY_RUN, *SAME_WEIGHTS, "--al.strategy=partitioned_badge", "--al.strategy_args={partitions: 3}"]
    single, nodes = tmp_path / "one", tmp_path / "nodes"
    single.mkdir(), nodes.mkdir()
    one = cli(["fit", *args], cwd=single)
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    launches = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
                "--master_addr=127.0.0.1", f"--master_port={port}", str(REPO / "train.py"),
                "fit", *args, "--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1",
            ],
            cwd=nodes, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for node in (0, 1)
    ]
    outputs = [launch.communicate(timeout=600) for launch in launches]
    for launch, (_, stderr) in zip(launches, outputs):
        assert launch.returncode == 0, stderr[-3000:]
    (run_one,), (run_nodes,) = log_dirs(single), log_dirs(nodes)
    assert read_csv(run_nodes / "pool.csv") == read_csv(run_one / "pool.csv")
    # Lightning saw one world of 2 ranks, one on each node.
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in "".join(outputs[1])


def test_a_rank_failing_to_extract_features_fails_the_run_with_its_number_and_cause(cli, tmp_path):
    """An unreadable photo in rank 1's shard: both ranks stop with one line naming rank 1 and the file.

    The cache is left unfinished (no description file), so the next run rebuilds it.
    """
    from tests.standins import PHOTO_RUN, write_colour_photos, write_seed_labels

    truth = write_colour_photos(tmp_path)
    write_seed_labels(tmp_path, truth)
    broken = sorted(truth)[1]  # item 1: the ShardSampler gives rank 1 the odd items
    (tmp_path / "photos" / broken).write_bytes(b"not a png")
    args = [*TINY_RUN, *PHOTO_RUN, "--al.oracle=file", "--al.label_dir=team", "--model.freeze_backbone=true", "--data.feature_cache=cache", *TWO_RANKS]
    result = cli(["fit", *args], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    line = next(line for line in result.stderr.splitlines() if line.startswith("error: extracting train features failed"))
    assert "on 1 of 2 ranks (rank 1: CorruptImageError:" in line and broken.split("/")[-1] in line, line
    assert not (tmp_path / "cache" / "train.json").exists()
