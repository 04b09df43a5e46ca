"""TensorBoard dashboards: each round's sorted class-count figure and the experiment's HParams session.

The event files are read back with TensorBoard's own readers and compared with rounds.csv,
independently of the logging code.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import pytorch_lightning as pl
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from al_lightning.data import ActiveDataModule
from al_lightning.models import ActiveClassifier
from al_lightning.rounds import QueryCallback
from al_lightning.rounds import records as records_module
from al_lightning.rounds.figures import sorted_class_counts_figure
from al_lightning.rounds.records import RoundRecords
from tests.conftest import read_csv

FIGURE_TAG = "al/labeled_classes_sorted"
SESSION_START_TAG = "_hparams_/session_start_info"
FINAL_COLUMNS = {
    "al/final_test_acc_top1": "test_acc_top1",
    "al/final_test_acc_top5": "test_acc_top5",
    "al/final_num_labeled": "num_labeled",
    "al/final_imbalance_ratio": "imbalance_ratio",
    "al/final_class_entropy": "class_entropy",
}


def fit(save_dir: Path, ckpt_path: Path | None = None) -> Path:
    """The brief's tiny run (digits at 16 px, 20 labels + 1 random round of 20, 1 epoch a round)
    with a real TensorBoardLogger (Lightning's defaults: ``default_hp_metric=True``); its run folder."""
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=20, batch_size=16, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05)
    callback = QueryCallback(strategy="random", budget=20, rounds=1, max_epochs=1, seed=0, save_round_checkpoints=True)
    logger = pl.loggers.TensorBoardLogger(save_dir)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=save_dir, logger=logger,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return Path(logger.log_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return fit(tmp_path_factory.mktemp("tensorboard"))


def sessions(run_dir: Path) -> list[plugin_data_pb2.HParamsPluginData]:
    """Every HParams session start written into ``run_dir``'s event files (all of them, not just the first)."""
    found = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == SESSION_START_TAG:
                    found.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
    return found


def hparam_value(session: plugin_data_pb2.HParamsPluginData, name: str):
    value = session.session_start_info.hparams[name]
    return getattr(value, value.WhichOneof("kind"))


# -- the figure ------------------------------------------------------------------------------
def test_the_figure_sorts_classes_from_least_to_most_labeled():
    figure = sorted_class_counts_figure([5, 0, 3], ["a", "b", "c"], title="round 2: 8 labels")
    (axes,) = figure.axes
    assert [bar.get_height() for bar in axes.patches] == [0, 3, 5]
    assert [bar.get_x() + bar.get_width() / 2 for bar in axes.patches] == pytest.approx([0, 1, 2])  # x = rank
    assert [label.get_text() for label in axes.get_xticklabels()] == ["b", "c", "a"]
    assert axes.get_title() == "round 2: 8 labels"


def test_the_figure_keeps_class_order_among_ties_and_names_no_bars_beyond_30_classes():
    counts = [3, 1, 3, 1] * 10  # 40 classes
    figure = sorted_class_counts_figure(counts, [f"class {i}" for i in range(40)])
    (axes,) = figure.axes
    assert [bar.get_height() for bar in axes.patches] == [1] * 20 + [3] * 20
    assert [label.get_text() for label in axes.get_xticklabels()] == []
    tied = sorted_class_counts_figure([2, 1, 2], ["x", "y", "z"])
    assert [label.get_text() for label in tied.axes[0].get_xticklabels()] == ["y", "x", "z"]


# -- the figures of a real run ------------------------------------------------------------------
def test_every_round_logs_its_sorted_class_figure_at_its_label_count(run):
    import matplotlib.pyplot as plt

    rounds = read_csv(run / "rounds.csv")
    events = EventAccumulator(str(run), size_guidance={IMAGES: 0}).Reload()
    assert FIGURE_TAG in events.Tags()["images"]
    assert "al/labeled_classes" in events.Tags()["histograms"]  # the histogram stays beside it
    images = events.Images(FIGURE_TAG)
    assert [image.step for image in images] == [int(row["num_labeled"]) for row in rounds] == [20, 40]
    picture = matplotlib.image.imread(io.BytesIO(images[-1].encoded_image_string), format="png")
    assert picture.shape[:2] == (images[-1].height, images[-1].width) == (360, 640)
    assert picture.shape[2] in (3, 4) and picture[..., :3].std() > 0.05  # drawn, not a blank canvas
    assert plt.get_fignums() == []  # nothing left open in pyplot


# -- HParams ----------------------------------------------------------------------------------------
def test_the_experiment_ends_with_one_hparams_session_of_its_settings_and_results(run):
    rounds = read_csv(run / "rounds.csv")
    last = rounds[-1]
    events = EventAccumulator(str(run)).Reload()
    content = events.PluginTagToContent("hparams")

    # What TensorBoard shows (the first experiment summary of the folder): our metrics, no placeholder.
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    assert metric_tags == {*FINAL_COLUMNS, "al/mean_test_acc_top1"}
    assert "hp_metric" not in events.Tags()["scalars"]

    (session,) = sessions(run)
    assert plugin_data_pb2.HParamsPluginData.FromString(content[SESSION_START_TAG]) == session
    expected = {
        "strategy": "random", "budget": 20, "rounds": 1, "initial_pool_size": 20, "seed": 0, "backbone": "resnet18",
        "lr": 0.05, "batch_size": 16, "dataset": "digits", "max_epochs": 1, "patience": 50, "freeze_backbone": "False",
        "pretrained": "None", "num_classes": 10,
    }
    assert {name: hparam_value(session, name) for name in expected} == expected
    assert not any(name.startswith("_") for name in session.session_start_info.hparams)

    # The metrics are scalars at the last round's label count, with the values of rounds.csv's last row.
    for tag, column in FINAL_COLUMNS.items():
        (point,) = events.Scalars(tag)
        assert point.step == int(last["num_labeled"]), tag
        assert point.value == pytest.approx(float(last[column]), rel=1e-6), tag
    (mean,) = events.Scalars("al/mean_test_acc_top1")
    assert mean.value == pytest.approx(np.mean([float(row["test_acc_top1"]) for row in rounds]), rel=1e-6)


def test_a_resumed_run_logs_its_hparams_once_at_its_own_end(run, tmp_path):
    resumed = fit(tmp_path, ckpt_path=run / "checkpoints" / "round-00.ckpt")
    rounds = read_csv(resumed / "rounds.csv")
    assert [row["round"] for row in rounds] == ["0", "1"]  # the history came back with the checkpoint
    (session,) = sessions(resumed)
    assert hparam_value(session, "strategy") == "random"
    events = EventAccumulator(str(resumed)).Reload()
    (top1,) = events.Scalars("al/final_test_acc_top1")
    assert top1.value == pytest.approx(float(rounds[-1]["test_acc_top1"]), rel=1e-6)
    (mean,) = events.Scalars("al/mean_test_acc_top1")
    assert mean.value == pytest.approx(np.mean([float(row["test_acc_top1"]) for row in rounds]), rel=1e-6)


def test_a_resumed_finished_run_does_not_log_its_hparams_again(run, tmp_path):
    resumed = fit(tmp_path, ckpt_path=run / "checkpoints" / "round-01.ckpt")  # the last round's checkpoint
    assert len(sessions(run)) == 1
    assert sessions(resumed) == []
    tags = EventAccumulator(str(resumed)).Reload().Tags()
    assert tags["scalars"] == [] and tags["images"] == []  # no hp_metric placeholder, no round logged again


# -- the guards, at the records' level -----------------------------------------------------------
def stub_trainer(log_dir: Path, is_global_zero: bool = True):
    logger = pl.loggers.TensorBoardLogger(log_dir, name="", version="")
    return SimpleNamespace(loggers=[logger], is_global_zero=is_global_zero, log_dir=str(log_dir)), logger


def test_finish_logs_once_and_the_checkpointed_flag_keeps_it_so(tmp_path):
    trainer, logger = stub_trainer(tmp_path)
    # The datamodule's seed resolved to another value than the callback's: both kept, the second spelled data.seed.
    datamodule = SimpleNamespace(hparams={"dataset": "digits", "seed": None, "_class_path": "x"}, seed=5)
    module = SimpleNamespace(hparams={"lr": 0.1, "pretrained": None, "freeze_backbone": True})
    records = RoundRecords()
    records.history = [{"round": 0, "num_labeled": 10, "test_acc_top1": 0.5, "test_acc_top5": None, "imbalance_ratio": 2.0, "class_entropy": 1.0}]
    records.finish(trainer, {"strategy": "base", "seed": 3, "strategy_args": {"alpha": 1}}, datamodule, module)
    records.finish(trainer, {"strategy": "base", "seed": 3}, datamodule, module)
    restored = RoundRecords()
    restored.load_state_dict(records.state_dict())
    restored.finish(trainer, {"strategy": "base", "seed": 3}, datamodule, module)
    logger.experiment.flush()
    (session,) = sessions(tmp_path)
    hparams = {name: hparam_value(session, name) for name in session.session_start_info.hparams}
    assert hparams == {
        "strategy": "base", "seed": 3, "strategy_args/alpha": 1, "dataset": "digits", "data.seed": 5, "lr": 0.1,
        "pretrained": "None", "freeze_backbone": "True",
    }
    scalars = EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"]
    assert "al/final_test_acc_top5" not in scalars and "al/final_test_acc_top1" in scalars  # no top-5: no metric


def test_other_ranks_draw_no_figure(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a figure drawn on a rank that logs nothing")

    monkeypatch.setattr(records_module, "sorted_class_counts_figure", refuse)
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=20, batch_size=16, seed=0)
    datamodule.setup("fit")
    trainer, logger = stub_trainer(tmp_path, is_global_zero=False)
    records = RoundRecords()
    records.add_round(trainer, datamodule, 0, test_acc_top1=0.5)
    records.finish(trainer, {"strategy": "random"}, datamodule, SimpleNamespace(hparams={}))
    assert records.hparams_logged  # the flag is set on every rank, so every rank's checkpoint state agrees
    logger.experiment.flush()
    assert EventAccumulator(str(tmp_path)).Reload().Tags()["images"] == [] and sessions(tmp_path) == []
