"""The feature cache: what makes it stale, and runs that use it (same picks as without, reused, rebuilt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from al_lightning.data.feature_cache import FeatureCache, digest, weights_digest
from al_lightning.errors import ConfigurationError
from tests.conftest import REPO, TINY_RUN, log_dirs, read_csv

DESCRIPTION = {"format": 1, "dataset": "digits", "backbone": "resnet18", "weights": "abc", "split": "train", "items": 3}


def write_split(cache: FeatureCache, rows: np.ndarray, description: dict = DESCRIPTION) -> None:
    cache.directory.mkdir(parents=True, exist_ok=True)
    np.save(cache.features_file("train"), rows.astype(np.float32))
    cache.description_file("train").write_text(json.dumps({**description, "dim": rows.shape[1]}))


def test_a_valid_cache_is_reused_and_read_as_it_was_written(tmp_path):
    cache = FeatureCache(tmp_path)
    rows = np.array([[1.0, 2.0], [np.nan, np.nan], [5.0, 6.0]])
    write_split(cache, rows)
    assert cache.stale_reason("train", DESCRIPTION) is None
    read = cache.read("train", torch.tensor([4, 5, 6]))
    assert read[0][0].tolist() == [1.0, 2.0] and read[0][1] == 4
    assert read[1] is None  # a row never computed (an unreadable image skipped)
    assert read[2][0].tolist() == [5.0, 6.0] and read[2][1] == 6


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"backbone": "resnet50"}, "built for another backbone (resnet18 → resnet50)"),
        ({"weights": "def", "items": 4}, "built for another weights (abc → def), items (3 → 4)"),
    ],
)
def test_a_cache_built_for_anything_else_is_stale_and_says_what_changed(tmp_path, change, reason):
    cache = FeatureCache(tmp_path)
    write_split(cache, np.zeros((3, 2)))
    assert cache.stale_reason("train", {**DESCRIPTION, **change}) == reason


def test_missing_unfinished_and_truncated_caches_are_stale(tmp_path):
    cache = FeatureCache(tmp_path)
    assert cache.stale_reason("train", DESCRIPTION) == "not extracted yet"
    np.save(cache.features_file("train"), np.zeros((3, 2), np.float32))  # rows written, description never
    assert cache.stale_reason("train", DESCRIPTION) == "its extraction never finished"
    write_split(cache, np.zeros((3, 2)))
    data = cache.features_file("train").read_bytes()
    cache.features_file("train").write_bytes(data[:-5])  # a copy cut short
    assert "train.npy is truncated or unreadable" in cache.stale_reason("train", DESCRIPTION)
    write_split(cache, np.zeros((2, 2)))  # fewer rows than described
    described = json.loads(cache.description_file("train").read_text())
    cache.description_file("train").write_text(json.dumps({**described, "items": 3}))
    assert "holds (2, 2) float32, not (3, 2) float32" in cache.stale_reason("train", DESCRIPTION)


def test_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="--data.feature_cache=.* is not a writable folder"):
        FeatureCache(blocker / "cache").check_writable()


def test_digests_follow_content_not_identity():
    a = {"w": torch.arange(4.0), "b": torch.zeros(2)}
    assert weights_digest(a) == weights_digest({"b": torch.zeros(2), "w": torch.arange(4.0)})
    assert weights_digest(a) != weights_digest({"w": torch.arange(4.0) + 1e-6, "b": torch.zeros(2)})
    assert digest(torch.tensor([1, 2]), None) != digest(torch.tensor([2, 1]), None)


# -- runs ------------------------------------------------------------------------------------
#: A frozen trunk and a head that does not move (lr 0): the features alone decide the picks.
#: Training cannot change anything, so one epoch and one query (of 20 among the ~1,275
#: unlabeled digits, after round 0's test) are enough to compare picks and accuracies.
FROZEN = [
    *TINY_RUN, "--model.freeze_backbone=true", "--model.lr=0", "--model.momentum=0", "--model.weight_decay=0",
    "--al.strategy=margin", "--al.rounds=1", "--al.max_epochs=1",
]  # fmt: skip


def pool_and_accuracy(run) -> tuple[list, list]:
    return read_csv(run / "pool.csv"), [r["test_acc_top1"] for r in read_csv(run / "rounds.csv")]


@pytest.mark.slow
def test_a_cached_run_selects_what_an_uncached_run_selects_and_a_second_run_reuses_the_cache(cli, tmp_path):
    """Same pool and test accuracies with and without the cache; a second run reuses it; another
    image size rebuilds it, naming the change; and the cache is then a ``features`` dataset."""
    plain, cached, again, changed = (tmp_path / d for d in ("plain", "cached", "again", "changed"))
    for d in (plain, cached, again, changed):
        d.mkdir()
    cache = tmp_path / "cache"
    results = {}
    for d, extra in ((plain, []), (cached, [f"--data.feature_cache={cache}"]), (again, [f"--data.feature_cache={cache}"])):
        result = cli(["fit", *FROZEN, *extra], cwd=d)
        assert result.returncode == 0, result.stderr[-3000:]
        results[d] = result
        (run,) = log_dirs(d)
        assert pool_and_accuracy(run) == pool_and_accuracy(log_dirs(plain)[0])
    assert "extracting train (1438 items)" in results[cached].stderr
    assert "reusing" in results[again].stderr and "extracting" not in results[again].stderr

    # Another image size: rebuilt, saying why; then the cache is a features dataset.
    resized = cli(["fit", *FROZEN, f"--data.feature_cache={cache}", "--data.image_size=20", "--al.rounds=0"], cwd=changed)
    assert resized.returncode == 0, resized.stderr[-3000:]
    assert "extracting train (1438 items)" in resized.stderr and "built for another source.image_size (16 → 20)" in resized.stderr
    features = cli(
        ["fit", "--config", str(REPO / "configs" / "features_linear.yaml"), "--data.dataset=features",
         f"--data.path={cache}", "--data.initial_pool_size=20", "--al.budget=20", "--al.rounds=1", "--trainer.accelerator=cpu"],
        cwd=changed,
    )  # fmt: skip
    assert features.returncode == 0, features.stderr[-3000:]


@pytest.mark.slow
def test_a_cache_needs_a_frozen_trunk(cli, tmp_path):
    result = cli(["fit", *TINY_RUN, f"--data.feature_cache={tmp_path / 'cache'}"], cwd=tmp_path)
    assert result.returncode == 2 and "set --model.freeze_backbone=true" in result.stderr


@pytest.mark.slow
def test_the_head_may_train_on_augmented_images_while_the_query_reads_the_cache(cli, tmp_path):
    """``--data.feature_cache_train=augmented``: the head trains on augmented images through the
    trunk (one epoch per round goes through that path) while the cache is built for the other
    splits and the query reads it; the round's labels are applied."""
    args = ["fit", *TINY_RUN, "--model.freeze_backbone=true", "--al.rounds=1", "--al.max_epochs=1", f"--data.feature_cache={tmp_path / 'cache'}"]
    result = cli([*args, "--data.feature_cache_train=augmented"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting train (1438 items)" in result.stderr
    (run,) = log_dirs(tmp_path)
    assert [r["num_labeled"] for r in read_csv(run / "rounds.csv")] == ["20", "40"]
