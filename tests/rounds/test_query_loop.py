"""The query callback driving real rounds in-process: pool growth, clamping, records."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from al_lightning.data import ActiveDataModule
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier
from al_lightning.rounds import ROUND_COLUMNS, QueryCallback
from al_lightning.rounds import callback as callback_module
from al_lightning.strategies import PoolOutputs, Strategy, StreamingStrategy, available, build
from al_lightning.strategies.partitions import PartitionedStrategy
from tests.conftest import read_csv


def record_inputs(strategy: Strategy) -> list[PoolOutputs]:
    """Wrap ``strategy`` so that every PoolOutputs it receives (whole, chunk by chunk, or partition by partition) is recorded."""
    received: list[PoolOutputs] = []
    if isinstance(strategy, StreamingStrategy):
        make_reducer = strategy.reducer

        def reducer(head, budget):
            made = make_reducer(head, budget)
            update = made.update
            made.update = lambda chunk: (received.append(chunk), update(chunk))[1]
            return made

        strategy.reducer = reducer
    elif isinstance(strategy, PartitionedStrategy):
        select_in_partition = strategy.select_in_partition
        strategy.select_in_partition = lambda outputs, part: (received.append(outputs), select_in_partition(outputs, part))[1]
    else:
        select = strategy.select
        strategy.select = lambda outputs, budget: (received.append(outputs), select(outputs, budget))[1]
    return received


def run(tmp_path, initial_pool_size=100, **al) -> tuple[ActiveDataModule, QueryCallback, pl.Trainer]:
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=initial_pool_size, batch_size=64, eval_batch_size=512, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05)
    callback = QueryCallback(**{"strategy": "margin", "budget": 500, "rounds": 3, "max_epochs": 1, "seed": 0, "save_round_checkpoints": False, **al})
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return datamodule, callback, trainer


def test_rounds_grow_the_pool_by_min_budget_unlabeled(tmp_path):
    with pytest.warns(UserWarning, match=r"budget 500 exceeds the \d+ unlabeled points"):
        datamodule, callback, trainer = run(tmp_path)
    pool = datamodule.pool
    pool_size = pool.size - int(pool.holdout.sum())
    last = pool_size - 1100
    assert 0 < last < 500
    per_round = torch.bincount(pool.rounds[pool.labeled_mask].long()).tolist()
    assert per_round == [100, 500, 500, last]  # the last round clamps to what is left
    assert pool.num_unlabeled == 0
    assert not (pool.labeled_mask & pool.holdout).any()  # validation indices are never queried
    assert torch.equal(pool.labels[pool.labeled_mask], datamodule.train_targets[pool.labeled_mask])  # the oracle told the truth

    rows = read_csv(tmp_path / "lightning_logs" / "version_0" / "rounds.csv")
    assert list(rows[0]) == list(ROUND_COLUMNS)
    assert [int(r["num_labeled"]) for r in rows] == [100, 600, 1100, pool_size]
    assert [int(r["num_queried"]) for r in rows] == [100, 500, 500, last]
    pool_rows = read_csv(tmp_path / "lightning_logs" / "version_0" / "pool.csv")
    assert len(pool_rows) == pool_size and len({r["index"] for r in pool_rows}) == pool_size
    assert trainer.current_epoch == 4  # one epoch per round, then the fit ended


def test_empty_initial_pool_is_chosen_by_the_strategy(tmp_path):
    datamodule, callback, _ = run(tmp_path, initial_pool_size=0, strategy="base", budget=30, rounds=1)
    pool = datamodule.pool
    assert torch.bincount(pool.rounds[pool.labeled_mask].long()).tolist() == [30, 30]
    assert callback.history[0]["num_labeled"] == 30 and callback.history[0]["query_seconds"] > 0


def test_bad_callback_settings():
    with pytest.raises(ConfigurationError, match="unknown strategy 'bass'; choose one of: badge, .*base"):
        QueryCallback(strategy="bass")
    with pytest.raises(ConfigurationError, match="does not take these arguments"):
        QueryCallback(strategy="margin", strategy_args={"depth": 3})
    # People cannot answer during a query: a strategy that reads the true labels then is refused before the run.
    with pytest.raises(ConfigurationError, match="--al.strategy=balanced_random reads the pool's true labels .* use it with --al.oracle=simulated"):
        QueryCallback(strategy="balanced_random", oracle="file", label_dir="team")
    with pytest.raises(ConfigurationError, match="--al.oracle=labelstudio needs --al.label_dir=DIR"):
        QueryCallback(oracle="labelstudio")


@pytest.mark.parametrize("strategy", available())
def test_every_strategy_runs_a_round_through_the_callback_and_gets_what_it_requires(tmp_path, strategy, monkeypatch):
    args = {"width": 8, "crop_size": 16} if strategy == "vaal" else {}
    spied: list[list[PoolOutputs]] = []

    def build_and_spy(name, **kwargs):
        made = build(name, **kwargs)
        spied.append(record_inputs(made))
        return made

    monkeypatch.setattr(callback_module, "build", build_and_spy)
    datamodule, callback, _ = run(tmp_path, initial_pool_size=30, strategy=strategy, budget=25, rounds=1, strategy_args=args)
    pool = datamodule.pool
    assert torch.bincount(pool.rounds[pool.labeled_mask].long()).tolist() == [30, 25]
    assert not (pool.labeled_mask & pool.holdout).any()
    assert [row["num_labeled"] for row in callback.history] == [30, 55]

    (inputs,) = spied
    assert inputs, "the strategy was never called"
    assert sum(len(o) for o in inputs) == pool.num_unlabeled + 25  # the whole unlabeled pool, once
    labeled_round0 = (pool.rounds == 0).nonzero().squeeze(1)
    for outputs in inputs:
        missing = [f for f in callback.strategy.requires if getattr(outputs, f) is None]
        assert not missing, f"{strategy} did not get {missing}"
        if "targets" in callback.strategy.accepts:  # the simulated oracle answers at once: label feedback
            assert outputs.targets is not None, f"{strategy} did not get the targets it accepts"
            assert torch.equal(outputs.targets, datamodule.train_targets[outputs.index])
        assert outputs.num_classes == 10
        assert not set(outputs.index.tolist()) & set(labeled_round0.tolist())
        if outputs.images is not None:
            assert tuple(outputs.images.shape[1:]) == (3, 16, 16)
    # The labeled set, whole or cut among the partitions, with each labeled point's true class.
    with_labeled = [o for o in inputs if o.labeled_features is not None]
    if with_labeled:
        assert sum(o.labeled_features.shape[0] for o in with_labeled) == 30
        assert all(o.labeled_features.shape[1] == 512 for o in with_labeled)
        labeled_targets = [t for o in with_labeled for t in o.labeled_targets.tolist()]
        assert sorted(labeled_targets) == sorted(datamodule.train_targets[labeled_round0].tolist())
    elif any(o.labeled_targets is not None for o in inputs):
        assert all(o.labeled_targets.numel() == 30 for o in inputs if o.labeled_targets is not None)


def test_vaal_cannot_pick_the_initial_pool(tmp_path):
    with pytest.raises(ConfigurationError, match="set --data.initial_pool_size to more than 0"):
        run(tmp_path, initial_pool_size=0, strategy="vaal", budget=10, rounds=1)


class _ShuffleSeeds(pl.Callback):
    """Records the seed of the training loader's shuffle at every epoch."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seeds.append(trainer.train_dataloader.sampler.seed)


def test_rounds_without_new_labels_still_count_and_shuffle_anew(tmp_path):
    """``--al.budget=0``: the round counter advances with no labels added, every epoch shuffles with its own seed."""
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=20, batch_size=10, seed=0)
    callback = QueryCallback(strategy="random", budget=0, rounds=2, max_epochs=2, seed=0)
    seeds = _ShuffleSeeds()
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback, seeds], default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05), datamodule=datamodule)
    rows = read_csv(tmp_path / "lightning_logs" / "version_0" / "rounds.csv")
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert [int(r["num_labeled"]) for r in rows] == [20, 20, 20] and [int(r["num_queried"]) for r in rows] == [20, 0, 0]
    assert len(seeds.seeds) == 6 and len(set(seeds.seeds)) == 6  # 3 rounds of 2 epochs, no shuffle repeated
    saved = torch.load(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if k.startswith("QueryCallback")]
    assert state["state"] == {"round": 2, "phase": "finished", "pending": None}
