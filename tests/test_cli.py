"""``train.py`` end to end in a subprocess, as a user runs it."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
import yaml

from tests.conftest import TINY_RUN, log_dirs, read_csv
from tests.reference_runs import finished_run

pytestmark = pytest.mark.slow

#: The embedded default's tiny run (BASE queries), run once for the two tests that read it.
BASE_RUN = ["fit", *TINY_RUN, "--al.strategy=base"]


def digits_at(image_size: int):
    """The digits source's splits at ``image_size``: the training targets that pool indices
    refer to, and the test split as model inputs (grey to three channels, (x − 0.5)/0.5)."""
    from al_lightning.data.sources.digits import DigitsSource

    splits = DigitsSource(image_size=image_size).load()
    test_images = (splits.test.images.expand(-1, 3, -1, -1) - 0.5) / 0.5
    return splits.train_targets, test_images, splits.test.targets


def accuracy_of_checkpoint(path, images: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 test accuracy of a round checkpoint's weights, in a plain torchvision ResNet-18."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    weights.update({"fc.weight": state["head.weight"], "fc.bias": state["head.bias"]})
    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(weights)
    with torch.no_grad():
        logits = net.eval()(images)
    top1 = (logits.argmax(1) == targets).double().mean().item()
    top5 = (logits.topk(5, dim=1).indices == targets[:, None]).any(1).double().mean().item()
    return top1, top5


def plain_balance(labels: list[int], num_classes: int) -> tuple[list[int], float, float]:
    """Per-class counts, largest/smallest count (inf with an empty class), entropy in nats."""
    counts = [labels.count(c) for c in range(num_classes)]
    imbalance = math.inf if min(counts) == 0 else max(counts) / min(counts)
    entropy = -sum(n / len(labels) * math.log(n / len(labels)) for n in counts if n)
    return counts, imbalance, entropy


def test_fit_runs_every_round_and_writes_the_records(tmp_path_factory):
    """pool.csv, rounds.csv, class_counts.csv, checkpoints and TensorBoard curves of a whole run,
    checked against the dataset's own labels and the round checkpoints evaluated outside the project."""
    run = finished_run(BASE_RUN, tmp_path_factory)  # exit 0, one run folder
    train_targets, test_images, test_targets = digits_at(16)  # TINY_RUN's --data.image_size

    # pool.csv: 20 initial indices (round 0), then 20 new ones per query, none of them held out.
    pool = read_csv(run / "pool.csv")
    assert {"index", "round"} <= set(pool[0])
    by_round = [[int(r["index"]) for r in pool if int(r["round"]) == k] for k in range(3)]
    assert [len(indices) for indices in by_round] == [20, 20, 20]
    assert len(set().union(*by_round)) == 60  # each query picked points unlabeled so far
    final = torch.load(run / "checkpoints" / "round-02.ckpt", map_location="cpu", weights_only=True)["ActiveDataModule"]["pool"]
    assert not final["holdout"][torch.tensor(by_round[0] + by_round[1] + by_round[2])].any()
    assert torch.equal(final["labels"][torch.tensor(by_round[2])], train_targets[by_round[2]])  # simulated oracle

    rounds = read_csv(run / "rounds.csv")
    counts = read_csv(run / "class_counts.csv")
    assert [int(r["round"]) for r in rounds] == [int(r["round"]) for r in counts] == [0, 1, 2]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "round-00.ckpt", "round-01.ckpt", "round-02.ckpt"]
    assert (run / "checkpoints" / "last.ckpt").samefile(run / "checkpoints" / "round-02.ckpt")  # the latest state, not a copy
    for k, (row, count_row) in enumerate(zip(rounds, counts)):
        labeled = [i for indices in by_round[: k + 1] for i in indices]
        assert int(row["num_labeled"]) == int(count_row["num_labeled"]) == len(labeled)
        # Balance of the labeled set, from pool.csv and the dataset's own labels.
        per_class, imbalance, entropy = plain_balance(train_targets[labeled].tolist(), 10)
        assert [int(count_row[str(c)]) for c in range(10)] == per_class
        assert float(row["imbalance_ratio"]) == pytest.approx(imbalance)
        assert float(row["class_entropy"]) == pytest.approx(entropy)
        # Test accuracy: the round's saved weights, evaluated again outside the project's code.
        top1, top5 = accuracy_of_checkpoint(run / "checkpoints" / f"round-{k:02d}.ckpt", test_images, test_targets)
        assert float(row["test_acc_top1"]) == pytest.approx(top1, abs=1e-6), k
        assert float(row["test_acc_top5"]) == pytest.approx(top5, abs=1e-6), k
    assert float(rounds[0]["query_seconds"]) == 0.0 and float(rounds[1]["query_seconds"]) > 0.0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()
    curve = events.Scalars("al/test_acc_top1")
    assert [e.step for e in curve] == [20, 40, 60]
    assert [e.value for e in curve] == pytest.approx([float(r["test_acc_top1"]) for r in rounds])
    assert {"al/imbalance_ratio", "al/class_entropy", "al/query_seconds", "al/num_labeled", "al/test_acc_top5"} <= set(events.Tags()["scalars"])
    assert "al/labeled_classes" in events.Tags()["histograms"]


def test_resumed_run_ends_with_the_same_pool(cli, tmp_path, tmp_path_factory):
    """A run started again from its round-0 checkpoint (a new run folder) queries the same points
    and measures the same accuracies as the uninterrupted run, and leaves that run's files alone."""
    first = finished_run(BASE_RUN, tmp_path_factory)  # the uninterrupted run (shared)
    first_pool = (first / "pool.csv").read_text()
    result = cli([*BASE_RUN, f"--ckpt_path={first / 'checkpoints' / 'round-00.ckpt'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (resumed,) = log_dirs(tmp_path)  # an explicit checkpoint: a new run folder, here
    assert (first / "pool.csv").read_text() == first_pool
    assert (resumed / "pool.csv").read_text() == first_pool
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
        # Options that moved under their plug-in's name: the old spelling names the new one.
        ("--data.imbalance_ratio=3", "data.imbalance_ratio has moved: it is now data.dataset_args.imbalance_ratio"),
        ("--al.labelstudio_url=http://localhost:8080", "al.labelstudio_url has moved: it is now al.oracle_args.url"),
        ("--al.oracle_args.image_url=s3://b/{path}", "al.oracle_args.image_url has moved: it is now al.oracle_args.images"),
    ],
)
def test_bad_input_is_one_clear_line(cli, tmp_path, override, message):
    result = cli(["fit", *TINY_RUN, *override.split()], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {message}" in result.stderr


def test_a_config_file_with_a_moved_option_is_one_clear_line(cli, tmp_path):
    (tmp_path / "old.yaml").write_text("data:\n  dataset: cifar10\n  download: true\n")
    result = cli(["fit", *TINY_RUN, "--config", "old.yaml"], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: data.download has moved: it is now data.dataset_args.download" in result.stderr
