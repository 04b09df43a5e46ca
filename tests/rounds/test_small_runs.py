"""Small runs don't trip: a last batch of one, a subset smaller than the budget, a pool of few classes."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from al_lightning.data import ActiveDataModule
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier
from al_lightning.rounds import QueryCallback
from al_lightning.strategies import PoolOutputs, Strategy
from tests.conftest import read_csv
from tests.standins import write_random_features


def fit(tmp_path, datamodule: ActiveDataModule, model: ActiveClassifier, **al) -> QueryCallback:
    callback = QueryCallback(**{"strategy": "random", "budget": 50, "rounds": 1, "max_epochs": 1, "seed": 0, "save_round_checkpoints": False, **al})
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path, logger=pl.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return callback


def test_a_labeled_set_one_above_a_multiple_of_the_batch_trains(tmp_path):
    # 33 labels in batches of 16: the last batch would hold one image, which BatchNorm in training mode refuses.
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=33, batch_size=16, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05)
    callback = fit(tmp_path, datamodule, model, budget=16)  # round 1 has 49 = 3·16 + 1 labels: the same case again
    assert [row["num_labeled"] for row in callback.history] == [33, 49]


def test_a_pool_subset_smaller_than_the_budget_says_so(tmp_path):
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=20, batch_size=16, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05)
    with pytest.warns(UserWarning, match=r"--al.pool_subset=30 scores 30 unlabeled points, fewer than the budget of 50: round 1 labels only 30"):
        callback = fit(tmp_path, datamodule, model, pool_subset=30)
    assert [row["num_labeled"] for row in callback.history] == [20, 50]


def test_top5_is_left_empty_with_five_classes_or_fewer(tmp_path):
    features = write_random_features(tmp_path / "features.pt", train=60, test=30, num_classes=3)
    datamodule = ActiveDataModule(dataset="features", path=str(features), initial_pool_size=9, batch_size=8, seed=0)
    model = ActiveClassifier(num_classes=3, backbone="identity", input_dim=4, lr=0.1)
    callback = fit(tmp_path, datamodule, model, budget=6)
    assert all(row["test_acc_top5"] is None for row in callback.history)
    assert all(0.0 <= row["test_acc_top1"] <= 1.0 for row in callback.history)
    (rounds_csv,) = tmp_path.rglob("rounds.csv")
    assert [row["test_acc_top5"] for row in read_csv(rounds_csv)] == ["", ""]


class PairwiseSpy(Strategy):
    """Records how many unlabeled and labeled points each query hands it; picks the first ones."""

    requires = ("features", "labeled_features")
    pairwise = True
    seen: list[tuple[int, int]] = []

    def _select(self, outputs: PoolOutputs, budget: int) -> torch.Tensor:
        PairwiseSpy.seen.append((len(outputs), outputs.labeled_features.shape[0]))
        return torch.arange(budget)


class PointwiseSpy(PairwiseSpy):
    pairwise = False
    seen: list[tuple[int, int]] = []

    def _select(self, outputs: PoolOutputs, budget: int) -> torch.Tensor:
        PointwiseSpy.seen.append((len(outputs), outputs.labeled_features.shape[0]))
        return torch.arange(budget)


@pytest.mark.parametrize(
    "spy, subsets, expected",
    [
        # pairwise: 100 in all = 15 labeled (of 20, then 30) + 85 unlabeled; the pool has 1,275 unlabeled.
        (PairwiseSpy, {"pairwise_subset": 100, "labeled_subset": 15}, [(85, 15), (85, 15)]),
        # without labeled_subset every labeled point counts: 100 - 20, then 100 - 30.
        (PairwiseSpy, {"pairwise_subset": 100}, [(80, 20), (70, 30)]),
        # pool_subset bounds every strategy, the tighter bound wins.
        (PairwiseSpy, {"pairwise_subset": 100, "pool_subset": 60}, [(60, 20), (60, 30)]),
        # a strategy that compares no points scores the whole pool whatever pairwise_subset says.
        (PointwiseSpy, {"pairwise_subset": 100, "labeled_subset": 15}, [(1275, 15), (1265, 15)]),
    ],
)
def test_pairwise_strategies_score_the_pairwise_subset_and_the_others_the_whole_pool(tmp_path, spy, subsets, expected):
    spy.seen.clear()
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=20, batch_size=16, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05)
    callback = fit(tmp_path, datamodule, model, strategy=f"{spy.__module__}.{spy.__qualname__}", budget=10, rounds=2, **subsets)
    assert spy.seen == expected
    assert [row["num_scored"] for row in callback.history] == [None, expected[0][0], expected[1][0]]
    (rounds_csv,) = tmp_path.rglob("rounds.csv")
    assert [row["num_scored"] for row in read_csv(rounds_csv)] == ["", str(expected[0][0]), str(expected[1][0])]


def test_a_pairwise_subset_must_leave_room_for_unlabeled_points():
    with pytest.raises(ConfigurationError, match=r"--al.pairwise_subset=50 counts labeled and unlabeled points together"):
        QueryCallback(strategy="coreset", pairwise_subset=50, labeled_subset=50)
