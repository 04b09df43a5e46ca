"""Dataset sources on small stand-ins of each real layout: CIFAR-10 (and its long tail),
ImageNet, ImageNet-LT, feature files, and corrupt images."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from al_lightning.data.datasets import SubsetView, collate_skipping_none
from al_lightning.data.images import CorruptImageError, ImageFileDataset, load_image
from al_lightning.data.sources import build_source
from al_lightning.data.sources.cifar10_lt import long_tail_counts
from al_lightning.errors import ConfigurationError
from tests.standins import CIFAR_CLASSES, WNIDS, write_cifar, write_features, write_jpeg, write_lt_splits


def check_items(splits, shape: tuple[int, ...]) -> None:
    """Every item has ``shape`` after the transforms, and ``train_targets`` are the items' labels."""
    labels = []
    for transform, dataset in ((splits.train_transform, splits.train), (splits.eval_transform, splits.test)):
        view = SubsetView(dataset, range(len(dataset)), transform)
        items = [view[i] for i in range(len(view))]
        assert all(x.shape == shape and x.dtype == torch.float32 for x, _ in items)
        labels.append(torch.tensor([y for _, y in items]))
    assert torch.equal(labels[0], splits.train_targets)


def test_an_option_the_dataset_does_not_take_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match=r"dataset 'cifar10' does not take these arguments \['imbalance_ratio'\] \(--data.dataset_args; imbalance_ratio is an option of: cifar10_lt, fashion_mnist\); it takes: download"):
        build_source("cifar10", path=str(write_cifar(tmp_path)), imbalance_ratio=10)


# -- CIFAR-10 ------------------------------------------------------------------------------
def test_cifar10_loads_the_python_batches(tmp_path):
    source = build_source("cifar10", path=str(write_cifar(tmp_path)), image_size=16)
    assert source.num_classes == 10
    splits = source.load()
    assert splits.class_names == CIFAR_CLASSES
    assert len(splits.train) == 50 and len(splits.test) == 20
    assert splits.train_targets.bincount().tolist() == [5] * 10
    check_items(splits, (3, 16, 16))
    image, _ = splits.train[7]
    assert image.size == (32, 32) and np.asarray(image)[0, 0, 0] == 7  # channel-major rows decoded right
    # ``path`` may also be the batches folder itself.
    assert len(build_source("cifar10", path=str(tmp_path / "cifar-10-batches-py")).load().train) == 50


def test_cifar10_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(ConfigurationError, match=r"dataset 'cifar10': no CIFAR-10 data in '.*empty' \(missing "
                       r"cifar-10-batches-py/data_batch_1, .*test_batch.*--data.dataset_args.download=true"):
        build_source("cifar10", path=str(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match="dataset 'cifar10' needs --data.path .* or --data.dataset_args.download=true"):
        build_source("cifar10")
    # With download=True and no path the data goes to ./data/cifar10; nothing is fetched before load().
    assert build_source("cifar10", download=True).path == Path("data/cifar10")


def test_cifar10_unreadable_batch_is_named(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    source = build_source("cifar10", path=str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"cannot read '.*data_batch_3'.*--data.dataset_args.download=true"):
        source.load()


def test_long_tail_counts_are_the_papers():
    assert long_tail_counts(n_max=5000, num_classes=10, ratio=10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert sum(long_tail_counts()) == 20431
    assert long_tail_counts(ratio=100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # Cao et al.'s CIFAR-10-LT
    assert long_tail_counts(ratio=1) == [5000] * 10


def test_cifar10_lt_keeps_the_profile_and_the_reference_draw(tmp_path):
    n_max = 20
    source = build_source("cifar10_lt", path=str(write_cifar(tmp_path, per_class=n_max)), image_size=16, imbalance_ratio=10)
    splits = source.load()
    counts = long_tail_counts(n_max, 10, 10)
    assert counts == [int(n_max * 10 ** (-c / 9)) for c in range(10)]
    assert splits.train_targets.bincount(minlength=10).tolist() == counts
    assert len(splits.test) == 20 and splits.class_names == CIFAR_CLASSES  # test split untouched
    check_items(splits, (3, 16, 16))
    # The same images, in the same order, as Cao et al.'s / the paper's code: np.random.seed(0),
    # then for each class a shuffle of its indices, keeping the first n_c.
    np.random.seed(0)
    labels = np.tile(np.arange(10), n_max)
    expected = []
    for c in range(10):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected += idx[: counts[c]].tolist()
    red = splits.train.images[:, 0, :2, 0].astype(int)  # data[:, 0] and data[:, 1]: the first two red pixels
    kept = (red[:, 0] + 256 * red[:, 1]).tolist()
    assert kept == expected


def test_cifar10_lt_rejects_an_inverted_ratio(tmp_path):
    with pytest.raises(ConfigurationError, match=r"imbalance_ratio must be >= 1 .*got 0.1"):
        build_source("cifar10_lt", path=str(write_cifar(tmp_path)), imbalance_ratio=0.1)


# -- ImageNet and ImageNet-LT -----------------------------------------------------------------
@pytest.fixture
def imagenet(tmp_path) -> Path:
    """Three classes; three training and two validation JPEGs each, in class folders."""
    root = tmp_path / "imagenet"
    for c, wnid in enumerate(WNIDS):
        for i in range(3):
            write_jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", 40 * c + i)
        for i in range(2):
            write_jpeg(root / "val" / wnid / f"ILSVRC2012_val_{c}{i}.JPEG", 40 * c + i)
    return root


def test_imagenet_loads_class_folders(imagenet):
    source = build_source("imagenet", path=str(imagenet), image_size=16)
    assert source.num_classes == 3
    splits = source.load()
    assert splits.class_names == WNIDS
    assert len(splits.train) == 9 and len(splits.test) == 6
    assert splits.train_targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert splits.train.path(4).endswith(f"train/{WNIDS[1]}/{WNIDS[1]}_1.JPEG")
    check_items(splits, (3, 16, 16))


def test_imagenet_opens_no_image_before_an_item_is_read(imagenet):
    (imagenet / "train" / WNIDS[0] / "broken.JPEG").write_bytes(b"\xff\xd8 truncated")
    splits = build_source("imagenet", path=str(imagenet), image_size=16).load()
    assert len(splits.train) == 10  # listed, not opened


def test_imagenet_with_a_flat_val_folder_points_to_valprep(imagenet):
    for image in (imagenet / "val").rglob("*.JPEG"):
        image.rename(imagenet / "val" / image.name)
    for wnid in WNIDS:
        (imagenet / "val" / wnid).rmdir()
    with pytest.raises(ConfigurationError, match=r"'.*val' has no class folders; it holds 6 images directly: sort them into "
                       r"val/<wnid>/ by running, inside val/, the valprep.sh .*; expected an ImageNet folder with train/<wnid>/\*.JPEG"):
        build_source("imagenet", path=str(imagenet))


def test_imagenet_with_different_classes_in_val_names_them(imagenet):
    (imagenet / "val" / WNIDS[2]).rename(imagenet / "val" / "n99999999")
    with pytest.raises(ConfigurationError, match=rf"differ .*missing from val/: {WNIDS[2]}; only in val/: n99999999\); "
                       "both splits need the same class folders"):
        build_source("imagenet", path=str(imagenet))


def test_imagenet_layout_errors(imagenet, tmp_path):
    with pytest.raises(ConfigurationError, match="dataset 'imagenet' needs --data.path"):
        build_source("imagenet")
    for image in (imagenet / "val" / WNIDS[1]).iterdir():
        image.unlink()
    with pytest.raises(ConfigurationError, match=rf"no image files .* in 1 class folder\(s\) of '.*val': {WNIDS[1]};"):
        build_source("imagenet", path=str(imagenet)).load()
    (imagenet / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigurationError, match=r"dataset 'imagenet': no val/ folder in"):
        build_source("imagenet", path=str(imagenet))


def test_imagenet_lt_reads_the_split_files(imagenet, tmp_path):
    write_lt_splits(imagenet)
    source = build_source("imagenet_lt", path=str(imagenet), image_size=16)
    assert source.num_classes == 3
    splits = source.load()
    assert splits.class_names == WNIDS
    assert splits.train_targets.tolist() == [0, 0, 0, 1, 1, 2] and len(splits.test) == 6
    check_items(splits, (3, 16, 16))
    write_lt_splits(tmp_path / "splits")  # split files kept outside the ImageNet tree
    assert build_source("imagenet_lt", path=str(imagenet), split_dir=str(tmp_path / "splits")).num_classes == 3


def test_imagenet_lt_errors_name_the_split_files(imagenet):
    missing = r"no ImageNet_LT_train.txt or ImageNet_LT_test.txt in '.*imagenet'.*--data.dataset_args.split_dir"
    with pytest.raises(ConfigurationError, match=missing):
        build_source("imagenet_lt", path=str(imagenet))
    write_lt_splits(imagenet)
    test_file = imagenet / "ImageNet_LT_test.txt"
    test_file.write_text(test_file.read_text() + "val/n01440764/x.JPEG zero\n")
    with pytest.raises(ConfigurationError, match=r"line 7 of '.*ImageNet_LT_test.txt' is 'val/n01440764/x.JPEG zero'; expected"):
        build_source("imagenet_lt", path=str(imagenet))
    write_lt_splits(imagenet)
    with pytest.raises(ConfigurationError, match=r"'.*train/n01440764/n01440764_0.JPEG' \(line 1 of ImageNet_LT_train.txt\) "
                       r"does not exist; --data.path should be the ImageNet root"):
        build_source("imagenet_lt", path=str(imagenet / "train"), split_dir=str(imagenet))


# -- Feature files ----------------------------------------------------------------------------
def test_features_load_as_vectors(tmp_path):
    source = build_source("features", path=str(write_features(tmp_path / "f.pt")), image_size=224)
    assert source.num_classes == 4 and source.input_dim == 5
    splits = source.load()
    assert splits.class_names == ["a", "b", "c", "d"]
    assert splits.train_transform is None and splits.eval_transform is None
    check_items(splits, (5,))  # float16 test features come back as float32
    unnamed = build_source("features", path=str(write_features(tmp_path / "g.pt", class_names=None)))
    assert unnamed.load().class_names == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"test_targets": None, "train_targets": None}, "missing key(s) train_targets, test_targets; expected a .pt file"),
        ({"train_targets": torch.arange(11) % 4}, "train_features has 12 rows but train_targets has 11"),
        ({"test_features": torch.randn(6, 7)}, "train_features has 5 columns but test_features has 7"),
        ({"train_targets": torch.zeros(12)}, "train_targets is a (12,) float32 tensor; expected a 1-D integer tensor"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but the targets have 4 classes"),
        ({"train_features": torch.arange(12)}, "train_features is a (12,) int64 tensor; expected a 2-D float tensor"),
    ],
)
def test_feature_file_errors_say_what_is_wrong(tmp_path, overrides, problem):
    path = write_features(tmp_path / "f.pt", **overrides)
    with pytest.raises(ConfigurationError, match="dataset 'features': '.*f.pt': ") as error:
        build_source("features", path=str(path))
    assert problem in str(error.value)


def test_feature_file_that_is_not_a_tensor_dict(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConfigurationError, match=r"torch.load\(weights_only=True, mmap=True\) failed: .*; expected a .pt file"):
        build_source("features", path=str(tmp_path / "junk.pt"))
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ConfigurationError, match="it holds a list, not a dict"):
        build_source("features", path=str(tmp_path / "list.pt"))


# -- Corrupt images ---------------------------------------------------------------------------
@pytest.fixture
def truncated_jpeg(tmp_path) -> Path:
    path = tmp_path / "broken.JPEG"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_corrupt_image_is_reported_with_its_path(truncated_jpeg):
    with pytest.raises(CorruptImageError, match=rf"cannot read image '{truncated_jpeg}' .*--data.dataset_args.skip_corrupt=true") as error:
        load_image(truncated_jpeg)
    assert isinstance(error.value, ConfigurationError) and error.value.path == str(truncated_jpeg)
    assert pickle.loads(pickle.dumps(error.value)).path == str(truncated_jpeg)  # survives worker processes
    assert load_image(write_jpeg(truncated_jpeg.parent / "ok.jpg", 9)).mode == "RGB"


def test_corrupt_images_are_skipped_only_when_asked(truncated_jpeg):
    good = write_jpeg(truncated_jpeg.parent / "good.jpg", 9)
    files = [good.name, truncated_jpeg.name, good.name]
    with pytest.raises(CorruptImageError, match=str(truncated_jpeg)):
        ImageFileDataset(good.parent, files, [0, 1, 2])[1]
    dataset = ImageFileDataset(good.parent, files, [0, 1, 2], skip_corrupt=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[i] for i in (0, 1, 2, 1)]
    assert len(caught) == 1 and str(caught[0].message).startswith(f"skipping unreadable image '{truncated_jpeg}' (")
    assert items[1] is None and items[3] is None
    batch = collate_skipping_none([(torch.zeros(3), 0), None, (torch.ones(3), 2)])
    assert batch[0].shape == (2, 3) and batch[1].tolist() == [0, 2]
    assert collate_skipping_none([None, None]) is None


def test_image_sources_read_through_load_image(imagenet, truncated_jpeg):
    truncated_jpeg.rename(imagenet / "train" / WNIDS[0] / "zz_broken.JPEG")
    strict = build_source("imagenet", path=str(imagenet), image_size=16).load()
    with pytest.raises(CorruptImageError, match="zz_broken.JPEG"):
        strict.train[3]
    lenient = build_source("image_folder", path=str(imagenet), image_size=16, skip_corrupt=True).load()
    with pytest.warns(UserWarning, match="zz_broken.JPEG"):
        assert lenient.train[3] is None
