"""A run that starts with no labels (``--al.cold_start``) and one that hands over to another strategy (``--al.handover_to``)."""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch

from al_lightning.data import ActiveDataModule
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier
from al_lightning.report.groups import group_runs
from al_lightning.report.runs import ReportWarning, load_run
from al_lightning.rounds import QueryCallback
from al_lightning.rounds.schedule import INITIAL_POOL
from al_lightning.run_files import read_rounds
from al_lightning.seeding import derive_seed
from al_lightning.strategies import PoolOutputs, Strategy, build
from tests.conftest import TINY_RUN, log_dirs, read_csv
from tests.standins import write_random_features


def options(extra: list[str]) -> list[str]:
    """TINY_RUN with ``extra`` overriding its options of the same name, and one epoch per round."""
    names = {a.split("=", 1)[0] for a in extra}
    kept = [a for a in TINY_RUN if a.split("=", 1)[0] not in names]
    return ["fit", *kept, "--al.max_epochs=1", "--al.min_epochs=0", *extra]


def picks(log_dir, round: int) -> list[str]:
    return [row["index"] for row in read_csv(log_dir / "queries" / f"round_{round}.csv")]


def test_a_cold_start_picks_round_0_as_that_strategy_would_and_the_strategy_takes_over(cli, tmp_path):
    (tmp_path / "cold").mkdir()
    (tmp_path / "plain").mkdir()
    cold_start = ["--data.initial_pool_size=0", "--al.cold_start=coreset", "--al.strategy=margin", "--al.rounds=1"]
    cold = cli(options(cold_start), tmp_path / "cold", env={"PYTHONWARNINGS": "default"})  # the run's warnings shown
    assert cold.returncode == 0, cold.stderr[-3000:]
    # The same round 0 as a run whose own strategy is coreset: the same seed derives for it.
    plain = cli(options(["--data.initial_pool_size=0", "--al.strategy=coreset", "--al.rounds=0"]), tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    (cold_dir,), (plain_dir,) = log_dirs(tmp_path / "cold"), log_dirs(tmp_path / "plain")

    rows = read_rounds(cold_dir)
    assert [(r["num_labeled"], r["queried_by"]) for r in rows] == [("20", "coreset"), ("40", "margin")]
    assert len(picks(cold_dir, 0)) == 20 and picks(cold_dir, 0) == picks(plain_dir, 0)
    assert read_rounds(plain_dir)[0]["queried_by"] == "coreset"
    output = cold.stdout + cold.stderr
    assert "[al] round 0: training on 20 labels, 20 of them picked by coreset" in output
    assert "[al] round 1: training on 40 labels, 20 of them picked by margin" in output
    # The demo's trunk has no pretrained weights: coreset's round 0 reads random features, which the run says, once.
    warning = "--al.cold_start=coreset picks round 0's labels on the features of the trunk resnet18 with randomly initialised weights"
    assert output.count(warning) == 1 and "--model.pretrained=FILE" in output


def test_a_run_hands_over_once_it_has_handover_at_labels(cli, tmp_path):
    result = cli(options(["--al.strategy=random", "--al.handover_to=margin", "--al.handover_at=60", "--al.budget=20", "--al.rounds=3"]), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (log_dir,) = log_dirs(tmp_path)
    rows = read_rounds(log_dir)
    # Queries made with 20 and 40 labels are random's; with 60 on, margin's (round 3 trains on margin's picks).
    assert [(r["num_labeled"], r["queried_by"]) for r in rows] == [
        ("20", INITIAL_POOL), ("40", "random"), ("60", "random"), ("80", "margin"),
    ]
    assert read_csv(log_dir / "queries" / "round_3.csv")[0]["score"] != ""  # margin scores its picks; random does not
    assert read_csv(log_dir / "queries" / "round_2.csv")[0]["score"] == ""


def test_the_schedule_is_a_function_of_the_labeled_count_alone():
    # What kill-and-resume and a run paused for people rely on: the same count gives the same strategy, whatever came before.
    def choices(callback: QueryCallback, counts: list[int]) -> list[str]:
        return [callback.schedule.for_query(n).name for n in counts]

    counts = [0, 1, 39, 40, 41, 1000]
    first = QueryCallback(strategy="random", cold_start="coreset", handover_to="margin", handover_at=40, seed=1)
    second = QueryCallback(strategy="random", cold_start="coreset", handover_to="margin", handover_at=40, seed=2)
    assert choices(first, counts) == ["coreset", "random", "random", "margin", "margin", "margin"]
    assert choices(first, counts[::-1]) == choices(first, counts)[::-1] == choices(second, counts[::-1])
    # Without a cold start, --al.strategy picks a run's first labels, as before.
    assert choices(QueryCallback(strategy="random", handover_to="margin", handover_at=40), [0, 40]) == ["random", "margin"]
    # Each query's strategy gets the round's derived seed, whichever it is.
    assert [s.option for s in first.schedule.all()] == ["--al.strategy", "--al.cold_start", "--al.handover_to"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"cold_start": "margin"}, r"--al.cold_start=margin reads the head's outputs, which are untrained .*: balanced_random, .*coreset, .*random"),
        ({"cold_start": "vaal"}, r"--al.cold_start=vaal trains alongside the classifier, which needs labels; use a label-free strategy: "),
        ({"cold_start_args": {"partitions": 2}}, r"--al.cold_start_args without --al.cold_start"),
        ({"handover_to": "margin"}, r"--al.handover_to and --al.handover_at go together: give both"),
        ({"handover_at": 100}, r"--al.handover_to and --al.handover_at go together: give both"),
        ({"handover_to": "margin", "handover_at": 0}, r"--al.handover_at must be at least 1"),
        ({"handover_args": {"partitions": 2}}, r"--al.handover_args without --al.handover_to"),
        ({"cold_start": "cosret"}, r"unknown strategy 'cosret'; choose one of: "),
        ({"handover_to": "margin", "handover_at": 9, "handover_args": {"depth": 2}}, r"does not take these arguments"),
        # The oracle's check applies to every strategy the run may use, not just --al.strategy.
        (
            {"handover_to": "balanced_random", "handover_at": 9, "oracle": "file", "label_dir": "team"},
            r"--al.handover_to=balanced_random reads the pool's true labels .* use it with --al.oracle=simulated",
        ),
    ],
)
def test_bad_cold_start_and_handover_settings_fail_at_construction_in_one_line(settings, message):
    with pytest.raises(ConfigurationError, match=message) as error:
        QueryCallback(**settings)
    assert "\n" not in str(error.value)


def features_run(tmp_path, initial_pool_size: int, **al) -> QueryCallback:
    features = write_random_features(tmp_path / "features.pt", train=60, test=30, num_classes=3)
    datamodule = ActiveDataModule(dataset="features", path=str(features), initial_pool_size=initial_pool_size, batch_size=8, seed=0)
    model = ActiveClassifier(num_classes=3, backbone="identity", input_dim=4, lr=0.1)
    callback = QueryCallback(**{"strategy": "margin", "budget": 6, "rounds": 1, "max_epochs": 1, "seed": 0, "save_round_checkpoints": False, **al})
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path, logger=pl.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return callback


def test_a_cold_start_on_a_features_file_says_what_it_reads_and_matches_the_strategy(tmp_path, caplog, recwarn):
    with caplog.at_level(logging.INFO):
        callback = features_run(tmp_path, 0, cold_start="coreset")
    assert f"[al] round 0: coreset picks on the features of the features file {tmp_path / 'features.pt'}" in caplog.text
    assert not [w for w in recwarn if "randomly initialised" in str(w.message)]
    assert [row["queried_by"] for row in callback.history] == ["coreset", "margin"]
    (log_dir,) = {p.parent for p in tmp_path.rglob("rounds.csv")}
    # Round 0's picks are what coreset itself picks on the same features with the round's derived seed.
    data = torch.load(tmp_path / "features.pt")
    datamodule = ActiveDataModule(dataset="features", path=str(tmp_path / "features.pt"), initial_pool_size=0, batch_size=8, seed=0)
    datamodule.setup("fit")
    pool = datamodule.pool.unlabeled_indices()
    outputs = PoolOutputs(pool, features=data["train_features"][pool], labeled_features=data["train_features"][:0])
    expected = build("coreset", seed=derive_seed(0, "strategy", 0)).select(outputs, 6)
    assert [int(i) for i in picks(log_dir, 0)] == expected.tolist()


def test_an_unused_cold_start_is_said_once(tmp_path):
    with pytest.warns(UserWarning, match=r"--al.cold_start=coreset is unused: the run starts with \d+ labels; set --data.initial_pool_size=0"):
        callback = features_run(tmp_path, 9, cold_start="coreset")
    assert [row["queried_by"] for row in callback.history] == [INITIAL_POOL, "margin"]


class Companion(Strategy):
    """Trains "networks" alongside the classifier (counts its steps by the seed of each reset) and picks the first points."""

    steps: dict[int, int] = {}

    def reset(self, seed: int, device="cpu") -> None:
        self.current = seed
        Companion.steps[seed] = 0

    def train_step(self, labeled_images, unlabeled_images, lr_scale: float = 1.0) -> dict[str, float]:
        Companion.steps[self.current] += 1
        return {}

    def _select(self, outputs: PoolOutputs, budget: int) -> torch.Tensor:
        return torch.arange(budget)


def test_a_companion_strategy_trains_only_in_the_rounds_whose_query_it_makes(tmp_path):
    Companion.steps = {}
    callback = features_run(tmp_path, 9, strategy="random", handover_to=f"{__name__}.Companion", handover_at=15, rounds=2)
    assert [row["queried_by"] for row in callback.history] == [INITIAL_POOL, "random", f"{__name__}.Companion"]
    # Round 0's query (9 labels) is random's; from 15 labels on the companion's: it trains in rounds 1 and 2 only.
    assert list(Companion.steps) == [derive_seed(0, "strategy networks", round) for round in (1, 2)]
    assert all(Companion.steps.values())


def test_reports_tell_cold_starts_and_handovers_apart_and_read_rounds_csv_with_or_without_queried_by(tmp_path):
    config = "seed_everything: 0\nal:\n  strategy: random\n  cold_start: {cold}\n  handover_to: {to}\n  handover_at: {at}\n"
    runs = {}
    for name, cold, to, at, header in [
        ("plain", "null", "null", "null", "round,num_labeled,test_acc_top1"),  # a rounds.csv from before queried_by
        ("handover", "coreset", "MARGIN", "40", "round,num_labeled,queried_by,test_acc_top1"),
        ("own_cold_start", "random", "null", "null", "round,num_labeled,queried_by,test_acc_top1"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(config.format(cold=cold, to=to, at=at))
        queried_by = ["coreset,", "random,", "margin,"] if "queried_by" in header else ["", "", ""]
        rows = [f"{r},{20 * (r + 1)},{queried_by[r]}0.{r + 1}" for r in range(3)]
        (tmp_path / name / "rounds.csv").write_text("\n".join([header, *rows]) + "\n")
        runs[name] = load_run(tmp_path / name)
    assert runs["plain"].strategy == "random"
    assert runs["handover"].strategy == "coreset → random → margin@40"
    assert runs["own_cold_start"].strategy == "random"  # its own cold start is no cold start
    assert [runs[name].rows[40]["test_acc_top1"] for name in runs] == [0.2, 0.2, 0.2]
    # The cold start and handover name the curve; they do not split the runs into groups (and a
    # run whose cold start is its own strategy is a repeat of the plain run of that strategy).
    with pytest.warns(ReportWarning, match="own_cold_start .* left out, a repeat of .*plain"):
        (group,) = group_runs(list(runs.values()))
    assert sorted({run.strategy for run in group.runs}) == ["coreset → random → margin@40", "random"]
