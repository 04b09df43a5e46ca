"""Fashion-MNIST: tiny idx files in both layouts (gzipped or not), the long tail, bad files; then
the real files of Debian's ``dataset-fashion-mnist``, and a CLI run on a slice of them."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from al_lightning.data.datasets import SubsetView
from al_lightning.data.sources import build_source
from al_lightning.data.sources.fashion_mnist import CLASS_NAMES, MEAN, STD
from al_lightning.errors import ConfigurationError
from tests.conftest import REPO, log_dirs, read_csv
from tests.standins import write_cifar

REAL = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

pytestmark = pytest.mark.timeout(60)  # the tests that start no CLI take under 2 s


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file: 0x0000, 0x08 (unsigned bytes), the number of dimensions, each size big-endian, the bytes."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_files(folder: Path, per_class: int = 5, test_per_class: int = 2, gz: bool = True) -> Path:
    """The four files, classes interleaved as in the real ones. Training image i carries i in its
    first two pixels (i % 256, i // 256), so tests can tell which images were kept."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(10), per_class)
    images = np.random.default_rng(0).integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(labels.size) % 256, np.arange(labels.size) // 256
    test_labels = np.tile(np.arange(10), test_per_class)
    test_images = np.full((test_labels.size, 28, 28), 7, np.uint8)
    for name, array in zip(FILES, (images, labels, test_images, test_labels)):
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return folder


def kept_indices(splits) -> list[int]:
    """Training images' own indices, read back from their first two pixels."""
    pixels = splits.train.images[:, 0, 0, :2].long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def check_items(splits, size: int) -> None:
    for transform, dataset in ((splits.train_transform, splits.train), (splits.eval_transform, splits.test)):
        view = SubsetView(dataset, range(len(dataset)), transform)
        x, _ = view[0]
        assert x.shape == (3, size, size) and x.dtype == torch.float32


# -- tiny files ------------------------------------------------------------------------------
def test_debian_layout_gzipped(tmp_path):
    source = build_source("fashion_mnist", path=str(write_idx_files(tmp_path / "fashion-mnist")))
    assert source.num_classes == 10 and source.image_size == 28
    splits = source.load()
    assert splits.class_names == NAMES
    assert len(splits.train) == 50 and len(splits.test) == 20
    assert splits.train_targets.tolist() == list(range(10)) * 5
    assert kept_indices(splits) == list(range(50))
    assert (splits.test.images == 7).all()
    check_items(splits, 28)
    image, target = splits.train[3]
    assert image.shape == (3, 28, 28) and image.dtype == torch.uint8 and target == 3
    assert torch.equal(image[0], image[2])  # the gray channel repeated for 3-channel backbones
    check_items(build_source("fashion_mnist", path=str(tmp_path / "fashion-mnist"), image_size=32).load(), 32)


def test_eval_transform_normalises_with_fashion_mnists_own_statistics(tmp_path):
    splits = build_source("fashion_mnist", path=str(write_idx_files(tmp_path))).load()
    x = splits.eval_transform(torch.full((3, 28, 28), 255, dtype=torch.uint8))
    assert torch.allclose(x, torch.full_like(x, (1 - 0.2860) / 0.3530))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_torchvision_layout_from_its_root_or_its_raw_folder(tmp_path, gz):
    write_idx_files(tmp_path / "FashionMNIST" / "raw", per_class=3, gz=gz)
    for path in (tmp_path, tmp_path / "FashionMNIST", tmp_path / "FashionMNIST" / "raw"):
        splits = build_source("fashion_mnist", path=str(path)).load()
        assert len(splits.train) == 30 and len(splits.test) == 20


def test_the_unzipped_file_is_read_when_both_are_there(tmp_path):
    # torchvision keeps the .gz beside what it extracted; the plain file needs no gunzip.
    folder = write_idx_files(tmp_path, per_class=4, gz=False)
    for name in FILES:
        (folder / f"{name}.gz").write_bytes(b"never read")
    assert len(build_source("fashion_mnist", path=str(folder)).load().train) == 40


def test_long_tail_keeps_the_cifar10_lt_profile_and_draw(tmp_path):
    splits = build_source("fashion_mnist", path=str(write_idx_files(tmp_path, per_class=20)), imbalance_ratio=10).load()
    # int(20 · 10^(−c/9)) for c = 0..9, worked out by hand: 20, 15.49, 11.99, 9.28, 7.19, 5.57, 4.31, 3.34, 2.58, 2.
    assert splits.train_targets.bincount(minlength=10).tolist() == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert len(splits.test) == 20  # untouched
    # Cao et al.'s draw: one RandomState(0), a shuffle of each class's indices in class order, the first n_c kept.
    labels, rng, expected = np.tile(np.arange(10), 20), np.random.RandomState(0), []
    for c, n in enumerate([20, 15, 11, 9, 7, 5, 4, 3, 2, 2]):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        expected += members[:n].tolist()
    assert kept_indices(splits) == expected
    # The same images as cifar10_lt keeps from a CIFAR set with the same labels: one rule, one draw.
    cifar = build_source("cifar10_lt", path=str(write_cifar(tmp_path / "cifar", per_class=20)), imbalance_ratio=10).load()
    red = cifar.train.images[:, 0, :2, 0].astype(int)
    assert (red[:, 0] + 256 * red[:, 1]).tolist() == expected
    # Deterministic: a second load keeps the same images.
    again = build_source("fashion_mnist", path=str(tmp_path), imbalance_ratio=10).load()
    assert kept_indices(again) == expected
    assert torch.equal(again.train.images, splits.train.images)


def test_an_inverted_imbalance_ratio_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match=r"dataset 'fashion_mnist': imbalance_ratio must be >= 1 .*got 0.1"):
        build_source("fashion_mnist", path=str(write_idx_files(tmp_path)), imbalance_ratio=0.1)


# -- bad files: one line each, naming the file and where to get it ----------------------------
def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_no_files_names_the_package_and_torchvision_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(ConfigurationError) as err:
            build_source("fashion_mnist", path=str(path))
        message = one_line(err)
        assert f"no Fashion-MNIST files in '{path}' or '{path}/FashionMNIST/raw'" in message
        assert "apt-get install dataset-fashion-mnist" in message and "FashionMNIST/raw/" in message


def test_a_missing_file_is_named(tmp_path):
    folder = write_idx_files(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigurationError) as err:
        build_source("fashion_mnist", path=str(folder))
    message = one_line(err)
    assert f"missing '{folder}/t10k-labels-idx1-ubyte.gz'" in message and "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize(
    "damage, message",
    [
        # a download cut short: gzip's end-of-stream marker is missing
        (lambda f: f.write_bytes(f.read_bytes()[:-200]), r"train-images-idx3-ubyte.gz' \(truncated or corrupt gzip data"),
        # the same cut in an unzipped file: fewer pixels than the header says
        (lambda f: f.with_suffix("").write_bytes(gzip.decompress(f.read_bytes())[:-100]) or f.unlink(),
         r"train-images-idx3-ubyte' \(truncated: the header says 50×28×28, 39,216 bytes in all, the file has 39,116\)"),
        # the labels file under the images' name
        (lambda f: f.write_bytes(f.with_name("train-labels-idx1-ubyte.gz").read_bytes()),
         r"train-images-idx3-ubyte.gz' \(magic number 0x00000801, expected 0x00000803\)"),
        (lambda f: f.write_bytes(gzip.compress(b"\x00\x00")), r"train-images-idx3-ubyte.gz' \(2 bytes, shorter than an idx header\)"),
    ],
    ids=["truncated_gz", "truncated_plain", "wrong_magic", "empty"],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, damage, message):
    folder = write_idx_files(tmp_path)
    damage(folder / "train-images-idx3-ubyte.gz")
    source = build_source("fashion_mnist", path=str(folder))
    with pytest.raises(ConfigurationError, match=f"dataset 'fashion_mnist': cannot read '{folder}/{message}") as err:
        source.load()
    assert "apt-get install --reinstall dataset-fashion-mnist" in one_line(err)


def test_labels_that_do_not_fit_the_images_are_one_line(tmp_path):
    folder = write_idx_files(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(49, np.uint8))))
    with pytest.raises(ConfigurationError, match=r"train-labels-idx1-ubyte.gz' \(49 labels for the 50 images of '.*train-images-idx3-ubyte.gz'\)") as err:
        build_source("fashion_mnist", path=str(folder)).load()
    one_line(err)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(50, 10, np.uint8))))
    with pytest.raises(ConfigurationError, match=r"\(label 10, outside 0..9\)"):
        build_source("fashion_mnist", path=str(folder)).load()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((50, 32, 32), np.uint8))))
    with pytest.raises(ConfigurationError, match=r"\(32×32 images, Fashion-MNIST's are 28×28\)"):
        build_source("fashion_mnist", path=str(folder)).load()


# -- the real files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real() -> Path:
    """Debian's files; skipped where they are not installed, except under CI (env ``CI``), where that fails."""
    if not all((REAL / f"{name}.gz").is_file() for name in FILES):
        message = f"Fashion-MNIST is not in {REAL}: apt-get install dataset-fashion-mnist (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REAL


@pytest.fixture(scope="module")
def real_splits(real):
    return build_source("fashion_mnist").load()  # Debian's folder is the default path


def test_the_real_files_load_whole(real_splits):
    splits = real_splits
    assert len(splits.train) == 60_000 and len(splits.test) == 10_000
    assert splits.class_names == NAMES == CLASS_NAMES
    assert splits.train_targets.bincount().tolist() == [6000] * 10
    assert splits.test.targets.bincount().tolist() == [1000] * 10
    assert splits.train_targets[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # as upstream's README shows them
    assert splits.test.targets[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    images, test_images = splits.train.images, splits.test.images
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.uint8
    # Pixel sums, computed once from the files with gzip and numpy alone.
    assert [int(images[0].sum()), int(images[-1].sum()), int(test_images[0].sum())] == [76247, 16684, 33456]
    assert int(images.sum(dtype=torch.int64)) == 3_431_114_169 and int(test_images.sum(dtype=torch.int64)) == 573_469_082
    pixels = images.float() / 255
    assert abs(pixels.mean().item() - MEAN) < 1e-4 and abs(pixels.std().item() - STD) < 1e-4
    check_items(splits, 28)


def test_the_real_long_tail(real):
    splits = build_source("fashion_mnist", path=str(real), imbalance_ratio=10).load()
    # int(6000 · 10^(−c/9)): 6000, 4645.6, 3596.4, 2784.9, 2156.0, 1669.1, 1292.6, 1000.0, 774.3, 600.
    assert splits.train_targets.bincount().tolist() == [6000, 4645, 3596, 2784, 2156, 1669, 1292, 1000, 774, 600]
    assert len(splits.train) == 24_516 and len(splits.test) == 10_000


@pytest.mark.slow
@pytest.mark.timeout(300)  # 25 s alone on our 2 cores, 77 s beside other tests
def test_a_cached_features_run_on_a_slice_of_the_real_data(cli, real_splits, tmp_path):
    """The linear-evaluation protocol through the CLI: a frozen random ResNet-18's features,
    cached once, a linear head on 50 then 100 then 150 labels, BASE picking; on the first
    2,000 training and 1,000 test images of the real files, written in torchvision's layout."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    splits = real_splits
    for name, array in zip(FILES, (splits.train.images[:2000, 0], splits.train_targets[:2000],
                                   splits.test.images[:1000, 0], splits.test.targets[:1000])):  # fmt: skip
        (raw / name).write_bytes(idx_bytes(array.numpy()))
    result = cli(
        ["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--data.dataset=fashion_mnist", f"--data.path={tmp_path / 'data'}",
         "--data.image_size=null", "--model.freeze_backbone=true", f"--data.feature_cache={tmp_path / 'cache'}",
         "--data.initial_pool_size=50", "--al.budget=50", "--al.rounds=2", "--al.max_epochs=20", "--al.min_epochs=5",
         "--model.lr=0.1", "--trainer.accelerator=cpu"],
        cwd=tmp_path, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting train (2000 items)" in result.stderr and "extracting test (1000 items)" in result.stderr
    (run,) = log_dirs(tmp_path)
    rounds = read_csv(run / "rounds.csv")
    assert [(r["num_labeled"], r["queried_by"], r["num_scored"]) for r in rounds] == [
        ("50", "initial_pool", ""), ("100", "base", "1749"), ("150", "base", "1699")]  # 2,000 − 200 held out − labeled
    accuracy = [float(r["test_acc_top1"]) for r in rounds]
    assert all(a > 0.35 for a in accuracy), accuracy  # chance is 0.1; measured 0.51, 0.64, 0.71 on our 2-core CPU
    assert accuracy[-1] > accuracy[0], accuracy
    pool = read_csv(run / "pool.csv")
    assert len(pool) == 150 and all(row["label"] == NAMES[splits.train_targets[int(row["index"])]] for row in pool)


@pytest.mark.slow
@pytest.mark.timeout(150)  # 13 s alone, 30 s beside other tests: the CLI's imports
def test_the_cli_says_where_to_get_the_files_in_one_line(cli, tmp_path):
    result = cli(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--data.dataset=fashion_mnist",
                  f"--data.path={tmp_path}", "--trainer.accelerator=cpu"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: dataset 'fashion_mnist': no Fashion-MNIST files in '{tmp_path}'" in result.stderr
    assert "apt-get install dataset-fashion-mnist" in result.stderr
