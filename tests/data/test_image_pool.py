"""``image_pool``: a folder of unlabeled images, a few labels, optional test and validation folders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import pytest
import torch
from PIL import Image

from al_lightning.data import ActiveDataModule
from al_lightning.data.images import CorruptImageError
from al_lightning.data.sources import build_source
from al_lightning.errors import ConfigurationError
from al_lightning.oracles import SimulatedOracle
from al_lightning.rounds.evaluation import _say_no_test_split, evaluate_test
from al_lightning.run_files import write_pool
from tests.conftest import TINY_RUN, log_dirs, read_csv

#: The pool's images in sorted id order; folders are not classes ("cats" holds cats, "more" a dog).
POOL_IDS = [
    "a.png",
    "b.png",
    "cats/c1.png",
    "cats/c2.png",
    "cats/c3.png",
    "cats/c4.png",
    "dogs/d1.png",
    "dogs/d2.png",
    "dogs/d3.png",
    "dogs/d4.png",
    "more/deep/e.png",
]
#: The seed labels: three cats, three dogs; ``a``, ``b``, ``c4``, ``d4`` and ``e`` are unlabeled.
LABELS = {"cats/c1.png": "cat", "cats/c2.png": "cat", "cats/c3.png": "cat", "dogs/d1.png": "dog", "dogs/d2.png": "dog", "dogs/d3.png": "dog"}
#: Hand-checked targets of POOL_IDS with classes [cat, dog].
TARGETS = [-1, -1, 0, 0, 0, -1, 1, 1, 1, -1, -1]


def write_png(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (shade, 255 - shade, 0)).save(path)
    return path


def write_labels(path: Path, rows: list[str], header: str = "path,label") -> Path:
    path.write_text("".join(f"{line}\n" for line in [header, *rows]))
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """``pool/`` (nested images, a hidden image, a hidden folder, a text file), ``labels.csv``,
    ``test/<class>/`` (dogs only: a class may be missing) and ``val/<class>/``."""
    for i, image in enumerate(POOL_IDS):
        write_png(tmp_path / "pool" / image, shade=20 * i)
    write_png(tmp_path / "pool" / "cats" / "._c1.png")  # macOS companion: hidden, not an item
    write_png(tmp_path / "pool" / ".ipynb_checkpoints" / "z.png")
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    write_labels(tmp_path / "labels.csv", [f"{path},{label}" for path, label in LABELS.items()])
    write_png(tmp_path / "test" / "dog" / "t1.png")
    write_png(tmp_path / "test" / "dog" / "t2.png", shade=200)
    write_png(tmp_path / "val" / "cat" / "v1.png")
    write_png(tmp_path / "val" / "dog" / "sub" / "v2.png", shade=200)
    return tmp_path


def pool_source(tree: Path, **options):
    return build_source("image_pool", path=str(tree / "pool"), image_size=16, **{"labels": str(tree / "labels.csv"), **options})


def pool_dm(tree: Path, labels: Optional[str] = "labels.csv", **source_options) -> ActiveDataModule:
    """The data module over the pool of ``tree``, with the labels file ``labels`` (in ``tree``) and the source's ``source_options``."""
    labels = None if labels is None else str(tree / labels)
    dm = ActiveDataModule(
        dataset="image_pool", path=str(tree / "pool"), image_size=16, labels=labels, dataset_args=source_options,
        val_fraction=0.34, batch_size=4, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    return dm


# -- the source ------------------------------------------------------------------------------
def test_every_image_at_any_depth_is_an_item_with_its_relative_path_as_id(tree):
    splits = pool_source(tree, test_path=str(tree / "test")).load()
    assert [f.decode() for f in splits.train.files] == POOL_IDS
    assert splits.train_targets.tolist() == TARGETS
    assert splits.class_names == ["cat", "dog"]
    image, target = splits.train[2]
    assert image.size == (12, 12) and target == 0
    assert splits.train[0][1] == -1
    assert splits.val is None
    assert [f.decode() for f in splits.test.files] == ["dog/t1.png", "dog/t2.png"]
    assert splits.test.targets.tolist() == [1, 1]  # the pool's class ids, though cat/ is missing


def test_classes_given_keep_their_order_and_may_add_unlabeled_classes(tree):
    source = pool_source(tree, classes=["dog", "cat", "bird"])
    assert source.num_classes == 3
    assert source.load().train_targets.tolist() == [{0: 1, 1: 0}.get(t, t) for t in TARGETS]


def test_classes_without_a_labels_file_leave_every_item_unlabeled(tree):
    source = build_source("image_pool", path=str(tree / "pool"), classes=["cat", "dog"])
    assert source.load().train_targets.tolist() == [-1] * len(POOL_IDS)


def test_a_validation_folder_is_its_own_split(tree):
    splits = pool_source(tree, val_path=str(tree / "val")).load()
    assert [f.decode() for f in splits.val.files] == ["cat/v1.png", "dog/sub/v2.png"]
    assert splits.val.targets.tolist() == [0, 1]


def test_pool_csv_is_a_labels_file(tree):
    """Extra columns are ignored and paths are normalised: ``./cats/c1.png`` is ``cats/c1.png``."""
    write_labels(tree / "pool.csv", ["0,0,./cats/c1.png,cat", "7,1,dogs/d2.png,dog"], header="index,round,path,label")
    assert pool_source(tree, labels=str(tree / "pool.csv")).load().train_targets.tolist() == [-1, -1, 0] + [-1] * 4 + [1] + [-1] * 3


@pytest.mark.parametrize(
    "rows, problem",
    [
        (["cats/c1.png,cat", "cats/x.jpg,cat", "dogs/d1.png,dog"], "labels.csv line 3: 'cats/x.jpg' is not an image under"),
        (["notes.txt,cat", "cats/c1.png,dog"], "labels.csv line 2: 'notes.txt' is not an image under"),
        (["cats/c1.png,cat", "dogs/d1.png,dog", "cats/c1.png,cat"], "labels.csv line 4: a second row for 'cats/c1.png' (first on line 2)"),
        (["cats/c1.png,cat", "dogs/d1.png,dog", "cats/c2.png,"], "labels.csv line 4: no label for 'cats/c2.png'"),
    ],
)
def test_bad_rows_are_named_with_their_line(tree, rows, problem):
    write_labels(tree / "labels.csv", rows)
    with pytest.raises(ConfigurationError, match="bad row") as error:
        pool_source(tree).load()
    assert problem in str(error.value)


def test_a_class_not_in_the_given_classes_is_named_with_its_line(tree):
    with pytest.raises(ConfigurationError) as error:
        pool_source(tree, classes=["cat", "bird"]).load()
    message = str(error.value)
    assert "3 bad row(s)" in message  # every bad row is reported at once
    assert "labels.csv line 5: class 'dog' is not one of --data.dataset_args.classes (cat, bird)" in message


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"labels": "{tree}/missing.csv"}, "labels file '{tree}/missing.csv' does not exist"),
        ({"labels": None}, "dataset 'image_pool' needs its class names: give --data.labels=FILE.csv"),
        ({"classes": ["cat"]}, "has only the class ['cat']; a classifier needs at least two"),
        ({"classes": ["cat", "dog", "cat"]}, "--data.dataset_args.classes names cat more than once"),
        ({"test_path": "{tree}/nowhere"}, "--data.dataset_args.test_path '{tree}/nowhere' is not a folder"),
        ({"val_path": "{tree}/pool/cats"}, "--data.dataset_args.val_path '{tree}/pool/cats' lies inside --data.path"),
    ],
)
def test_bad_options_are_named(tree, options, problem):
    options = {k: v.format(tree=tree) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ConfigurationError) as error:
        pool_source(tree, **options)
    assert problem.format(tree=tree) in str(error.value)


def test_a_wrong_header_is_named(tree):
    write_labels(tree / "labels.csv", ["cats/c1.png,cat"], header="file,class")
    with pytest.raises(ConfigurationError, match="has no path and label columns \\(its header is 'file,class'\\)"):
        pool_source(tree)
    (tree / "labels.csv").write_text("")
    with pytest.raises(ConfigurationError, match="has no path and label columns \\(it is empty\\)"):
        pool_source(tree)


def test_unknown_class_folders_in_the_test_folder_are_named(tree):
    write_png(tree / "test" / "horse" / "h.png")
    with pytest.raises(ConfigurationError, match="'.*test' has class folders that are not pool classes: horse"):
        pool_source(tree, test_path=str(tree / "test"))


def test_a_folder_without_images_is_named(tree):
    empty = tree / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(ConfigurationError, match="no image files .* under '.*empty'"):
        build_source("image_pool", path=str(empty), classes=["cat", "dog"]).load()


def test_unreadable_pool_images_are_named_or_skipped_on_request(tree):
    broken = tree / "pool" / "b.png"
    broken.write_bytes(broken.read_bytes()[:20])
    with pytest.raises(CorruptImageError, match="b.png"):
        pool_source(tree).load().train[1]
    with pytest.warns(UserWarning, match="b.png"):
        assert pool_source(tree, skip_corrupt=True).load().train[1] is None


# -- the data module ---------------------------------------------------------------------------
def test_seed_labels_are_round_0_minus_a_stratified_holdout(tree, caplog):
    with caplog.at_level(logging.INFO):
        dm = pool_dm(tree)  # initial_pool_size keeps its default of 100, more than the pool: it is not used
    holdout = dm.pool.holdout_indices()
    assert dm.train_targets[holdout].tolist() == [0, 1]  # round(0.34 · 3) = 1 of each class, all with labels
    seeds = {i for i, t in enumerate(TARGETS) if t >= 0}
    assert set(dm.pool.labeled_indices().tolist()) == seeds - set(holdout.tolist())
    assert (dm.pool.rounds[dm.pool.labeled_mask] == 0).all()
    assert torch.equal(dm.pool.labels[dm.pool.labeled_mask], dm.train_targets[dm.pool.labeled_mask])
    assert dm.pool.unlabeled_indices().tolist() == [0, 1, 5, 9, 10]
    assert "4 of 11 training items have labels and are round 0" in caplog.text
    assert "--data.initial_pool_size=100 is not used" in caplog.text
    assert sum(len(targets) for _, targets in dm.val_dataloader()) == 2
    assert sum(len(targets) for _, targets in dm.train_dataloader()) == 4


def test_a_validation_folder_replaces_the_holdout(tree):
    dm = pool_dm(tree, val_path=str(tree / "val"))
    assert dm.pool.holdout_indices().numel() == 0
    assert dm.pool.labeled_indices().tolist() == [2, 3, 4, 6, 7, 8]  # every seed label
    assert [targets.tolist() for _, targets in dm.val_dataloader()] == [[0, 1]]


def test_without_any_label_nothing_is_labeled_at_setup(tree):
    dm = pool_dm(tree, labels=None, classes=["cat", "dog"])
    assert dm.pool.num_labeled == 0 and dm.pool.holdout_indices().numel() == 0
    assert dm.pool.num_unlabeled == len(POOL_IDS)


def test_labels_from_a_human_oracle_are_recorded(tree):
    dm = pool_dm(tree)
    dm.pool.label(torch.tensor([10, 0]), torch.tensor([1, 0]), round=1)
    assert dm.pool.labels[[10, 0]].tolist() == [1, 0] and dm.pool.rounds[[10, 0]].tolist() == [1, 1]
    assert dm.pool.labeled_indices()[-2:].tolist() == [0, 10]
    # The dataset's own labels cannot answer a query here: the simulated oracle refuses the data.
    with pytest.raises(ConfigurationError, match=r"the simulated oracle reveals the dataset's own labels, but 5 of its 11 training items have none"):
        SimulatedOracle(dm.train_targets)


def test_pool_csv_has_paths_and_class_names(tree):
    dm = pool_dm(tree, val_path=str(tree / "val"))
    dm.pool.label(torch.tensor([0]), torch.tensor([1]), round=1)
    write_pool(tree, dm.pool.to_csv(dm.item_ids, dm.class_names))
    rows = read_csv(tree / "pool.csv")
    assert list(rows[0]) == ["index", "round", "path", "label"]
    expected = [(i, 0, POOL_IDS[i], ["cat", "dog"][TARGETS[i]]) for i in (2, 3, 4, 6, 7, 8)] + [(0, 1, "a.png", "dog")]
    assert [(int(r["index"]), int(r["round"]), r["path"], r["label"]) for r in rows] == expected
    # ... and it serves as the labels file of the next run
    assert pool_source(tree, labels=str(tree / "pool.csv")).load().train_targets[[0, 2, 6]].tolist() == [1, 0, 1]


def test_item_ids_and_files(tree):
    dm = pool_dm(tree)
    assert dm.item_ids(torch.tensor([10, 2])) == ["more/deep/e.png", "cats/c1.png"]
    assert dm.item_files(torch.tensor([10])) == [str(tree / "pool" / "more" / "deep" / "e.png")]
    digits = ActiveDataModule(dataset="digits", image_size=8, initial_pool_size=0)
    digits.setup("fit")
    assert digits.item_ids(torch.tensor([3, 1])) == ["3", "1"]
    assert digits.item_files(torch.tensor([3])) == [None]
    assert digits.has_test_split


def test_without_a_test_split_test_accuracy_is_none(tree, caplog):
    dm = pool_dm(tree)
    assert not dm.has_test_split
    with pytest.raises(ConfigurationError, match="has no test split; give one with --data.dataset_args.test_path"):
        dm.test_dataloader()
    _say_no_test_split.cache_clear()
    with caplog.at_level(logging.INFO):
        # No test split: neither the trainer nor the model is touched.
        results = [evaluate_test(None, None, dm) for _ in range(2)]
    assert results == [{"test_acc_top1": None, "test_acc_top5": None}] * 2
    assert caplog.text.count("test accuracy is not measured") == 1


# -- the CLI -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("with_test", [True, False])
def test_a_run_trains_round_0_on_the_seed_labels(cli, tree, with_test):
    test = [f"--data.dataset_args.test_path={tree / 'test'}"] if with_test else []
    args = [
        "fit", *TINY_RUN, "--data.dataset=image_pool", f"--data.path={tree / 'pool'}", f"--data.labels={tree / 'labels.csv'}",
        "--data.val_fraction=0.34", "--data.batch_size=4", "--al.rounds=0", "--al.max_epochs=1", *test,
    ]
    result = cli(args, cwd=tree)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tree)
    (row,) = read_csv(run / "rounds.csv")
    assert row["round"] == "0" and row["num_labeled"] == "4"
    if with_test:
        assert 0.0 <= float(row["test_acc_top1"]) <= 1.0
    else:
        assert row["test_acc_top1"] == "" and row["test_acc_top5"] == ""
    pool = read_csv(run / "pool.csv")
    assert len(pool) == 4 and {r["round"] for r in pool} == {"0"}
    assert all(LABELS[r["path"]] == r["label"] for r in pool)
