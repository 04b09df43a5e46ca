"""Strategies written outside the package: ``build("my_plugin.IdOrder")`` and ``--al.strategy=my_plugin.IdOrder``."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

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
