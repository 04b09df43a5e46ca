"""Plug-ins written outside the package: strategies (``build("my_plugin.IdOrder")``,
``--al.strategy=my_plugin.IdOrder``), dataset sources and oracles, by one idiom."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, Strategy, build, get
from tests.conftest import TINY_RUN, log_dirs, read_csv

PLUGIN = textwrap.dedent(
    '''
    """A user's strategy module, outside al_lightning."""
    import json

    import torch

    from al_lightning.strategies import Strategy


    class IdOrder(Strategy):
        """The smallest pool ids first (the largest with ``largest=True``); logs its input to ``record``."""

        requires = ("logits",)

        def __init__(self, record: str = "", largest: bool = False, seed: int = 0) -> None:
            super().__init__(seed)
            self.record, self.largest = record, largest

        def _select(self, outputs, budget):
            if self.record:
                with open(self.record, "a") as f:
                    seen = {"index": outputs.index.tolist(), "logits": list(outputs.logits.shape), "budget": budget}
                    f.write(json.dumps(seen) + "\\n")
            return torch.argsort(outputs.index, descending=self.largest)[:budget]


    class Unfinished(Strategy):
        requires = ()


    class NotAStrategy:
        pass


    not_a_class = 3


    from al_lightning.data.datasets import TensorImageDataset
    from al_lightning.data.sources import DatasetSource, DatasetSplits
    from al_lightning.oracles import Oracle


    class Squares(DatasetSource):
        """``size`` grey images whose class is their brightness bin (``classes`` of them)."""

        def __init__(self, path=None, image_size=None, size: int = 40, classes: int = 2) -> None:
            super().__init__(path, image_size)
            self.size, self.classes = size, classes

        @property
        def num_classes(self) -> int:
            return self.classes

        def load(self) -> DatasetSplits:
            targets = torch.arange(self.size) % self.classes
            images = (targets.float() / self.classes)[:, None, None, None].expand(-1, 3, 8, 8).clone()
            return DatasetSplits(
                train=TensorImageDataset(images, targets), test=TensorImageDataset(images[:8], targets[:8]),
                train_targets=targets, class_names=[f"c{c}" for c in range(self.classes)],
                train_transform=None, eval_transform=None,
            )


    class Contrarian(Oracle):
        """Answers every query at once, each point the class ``answer`` (not the dataset's)."""

        answers_at_once = True

        def __init__(self, answer: int = 0) -> None:
            self.answer = answer

        def request(self, query) -> None:
            pass

        def collect(self, query):
            return torch.full((len(query),), self.answer, dtype=torch.long)
    '''
)


def write_plugin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_plugin.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "plugins")))
    yield
    sys.modules.pop("my_plugin", None)


def test_class_path_builds_the_plugin_with_its_arguments(plugin_on_path):
    strategy = build("my_plugin.IdOrder", largest=True, seed=3)
    assert isinstance(strategy, Strategy) and strategy.seed == 3
    assert get("my_plugin.IdOrder") is type(strategy)
    assert strategy.name == "my_plugin.IdOrder"
    outputs = PoolOutputs(index=torch.tensor([5, 2, 9, 7]), logits=torch.zeros(4, 3))
    assert strategy.select(outputs, 2).tolist() == [9, 7]
    assert build("my_plugin.IdOrder").select(outputs, 3).tolist() == [2, 5, 7]


def test_plugin_gets_the_contract_checks(plugin_on_path):
    with pytest.raises(
        ConfigurationError, match=r"strategy 'my_plugin.IdOrder' needs PoolOutputs.logits, which is None"
    ):
        build("my_plugin.IdOrder").select(PoolOutputs(index=torch.arange(4)), 2)
    with pytest.raises(
        ConfigurationError, match=r"strategy 'my_plugin.IdOrder' does not take these arguments \['colour'\]"
    ):
        build("my_plugin.IdOrder", colour="red")


@pytest.mark.parametrize(
    "path, reason",
    [
        (
            "no_such_plugin_pkg.MyStrategy",
            "cannot import module 'no_such_plugin_pkg' (No module named 'no_such_plugin_pkg')",
        ),
        (
            "my_plugin.Missing",
            "module 'my_plugin' has no attribute 'Missing'; Strategy subclasses it defines: IdOrder, Unfinished",
        ),
        ("my_plugin.not_a_class", "is not a class (it is of type int)"),
        ("my_plugin.NotAStrategy", "class NotAStrategy is not a subclass of al_lightning.strategies.Strategy"),
        ("my_plugin.Unfinished", "class Unfinished is abstract; implement _select"),
    ],
)
@pytest.mark.parametrize("front_door", [get, build])
def test_bad_class_path_names_the_path_and_the_reason(plugin_on_path, front_door, path, reason):
    with pytest.raises(ConfigurationError) as err:
        front_door(path)
    message = str(err.value)
    assert message.startswith(f"strategy class path '{path}'")
    assert reason in message


@pytest.mark.slow
def test_cli_runs_a_plugin_strategy_from_outside_the_package(cli, tmp_path):
    plugins = write_plugin(tmp_path / "plugins")
    record = tmp_path / "received.jsonl"
    pythonpath = os.pathsep.join(p for p in [str(plugins), os.environ.get("PYTHONPATH", "")] if p)
    args = json.dumps({"record": str(record), "largest": True})
    result = cli(
        ["fit", *TINY_RUN, "--al.strategy=my_plugin.IdOrder", f"--al.strategy_args={args}"],
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)
    pool = read_csv(run / "pool.csv")
    labeled = [sorted(int(r["index"]) for r in pool if r["round"] == str(k)) for k in range(3)]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 2  # one query per round after round 0

    # Round k's candidates: everything not labeled before it (the validation split is never offered).
    first, second = (set(c["index"]) for c in calls)
    assert not first & set(labeled[0]) and second == first - set(labeled[1])
    for call, picked in zip(calls, labeled[1:]):
        assert call["budget"] == 20 and call["logits"] == [len(call["index"]), 10]
        assert picked == sorted(call["index"])[-20:]  # largest=True came through --al.strategy_args


@pytest.mark.slow
def test_cli_reports_a_class_path_it_cannot_import(cli, tmp_path):
    result = cli(["fit", *TINY_RUN, "--al.strategy=no_such_plugin_pkg.MyStrategy"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "error: strategy class path 'no_such_plugin_pkg.MyStrategy': cannot import module 'no_such_plugin_pkg'"
        in result.stderr
    )


def test_a_source_and_an_oracle_by_class_path_run_a_round_under_the_real_trainer(plugin_on_path, tmp_path):
    import pytorch_lightning as pl

    from al_lightning.data import ActiveDataModule
    from al_lightning.models import ActiveClassifier
    from al_lightning.rounds import QueryCallback

    datamodule = ActiveDataModule(
        dataset="my_plugin.Squares", dataset_args={"size": 60, "classes": 3}, initial_pool_size=6, batch_size=6, seed=0
    )
    assert datamodule.num_classes == 3 and datamodule.source.size == 60
    callback = QueryCallback(
        strategy="random", budget=5, rounds=1, max_epochs=1, seed=0, oracle="my_plugin.Contrarian", oracle_args={"answer": 2}
    )
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(ActiveClassifier(num_classes=3, backbone="resnet18"), datamodule=datamodule)
    pool = datamodule.pool
    round_one = pool.rounds == 1
    assert int(round_one.sum()) == 5 and pool.labels[round_one].tolist() == [2] * 5  # the oracle's answers, not the data's
    assert len(datamodule.splits.train) == 60


def test_a_plugins_unknown_option_is_refused_with_the_options_it_takes(plugin_on_path):
    from al_lightning.data import ActiveDataModule
    from al_lightning.oracles import ORACLES
    from al_lightning.rounds import QueryCallback

    with pytest.raises(ConfigurationError, match=r"dataset 'my_plugin.Squares' does not take these arguments \['colour'\] \(--data.dataset_args\); it takes: classes, size"):
        ActiveDataModule(dataset="my_plugin.Squares", dataset_args={"colour": "red"})
    with pytest.raises(ConfigurationError, match=r"oracle 'file' does not take these arguments \['url'\] \(--al.oracle_args; url is an option of: labelstudio\)"):
        ORACLES.build("file", {"url": "http://x"}, label_dir="team")  # what the query callback does at set-up
    with pytest.raises(ConfigurationError, match=r"oracle class path 'my_plugin.IdOrder': class IdOrder is not a subclass of al_lightning.oracles.Oracle"):
        QueryCallback(oracle="my_plugin.IdOrder")


@pytest.mark.slow
def test_print_config_shows_every_option_of_the_chosen_plugins(cli, tmp_path):
    result = cli(
        [
            "fit", "--config", str(TINY_RUN[1]), "--data.dataset=fake", "--data.dataset_args.train_size=64",
            "--al.strategy=partitioned_badge", "--al.strategy_args.partitions=3",
            "--al.oracle=labelstudio", "--al.label_dir=team", "--print_config",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    assert config["data"]["dataset_args"] == {"num_classes": 10, "train_size": 64, "test_size": 128}
    assert config["al"]["strategy_args"] == {"partitions": 3, "pooled_dim": 512, "labeled_centres": True, "pooled_rows": 16}
    assert config["al"]["oracle_args"] == {
        "url": None, "project": None, "api_key": None, "images": "inline", "annotators": None,
        "agreement": "majority", "min_answered": 1.0, "timeout": 60.0,
    }  # fmt: skip
