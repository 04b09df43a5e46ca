"""ActiveDataModule: validation split, initial pool, loaders and checkpoint state."""

import pytest
import torch

from al_lightning.data import ActiveDataModule
from al_lightning.errors import ConfigurationError


def setup_dm(**kwargs) -> ActiveDataModule:
    dm = ActiveDataModule(**{"dataset": "digits", "image_size": 16, "seed": 0, **kwargs})
    dm.setup("fit")
    return dm


def test_validation_split_is_stratified_and_out_of_the_pool():
    dm = setup_dm(val_fraction=0.1, initial_pool_size=30)
    holdout = dm.pool.holdout_indices()
    counts = dm.train_targets[holdout].bincount(minlength=10)
    per_class = dm.train_targets.bincount(minlength=10)
    assert torch.all((counts - 0.1 * per_class).abs() <= 0.5 + 1e-9)
    assert not set(holdout.tolist()) & set(dm.pool.unlabeled_indices().tolist())
    assert not set(holdout.tolist()) & set(dm.pool.labeled_indices().tolist())


def test_a_per_class_validation_split_holds_out_the_same_number_of_every_class():
    dm = setup_dm(val_per_class=12, initial_pool_size=30)
    holdout = dm.pool.holdout_indices()
    assert dm.train_targets[holdout].bincount(minlength=10).tolist() == [12] * 10
    assert not set(holdout.tolist()) & (set(dm.pool.unlabeled_indices().tolist()) | set(dm.pool.labeled_indices().tolist()))
    # the smallest digit class has 139 training images: holding out all of them is refused
    smallest = int(dm.train_targets.bincount().min())
    with pytest.raises(ConfigurationError, match=f"val_per_class={smallest} would hold out all {smallest} points of class"):
        setup_dm(val_per_class=smallest)


def test_initial_pool_is_seeded():
    first, again, other = setup_dm(initial_pool_size=40), setup_dm(initial_pool_size=40), setup_dm(initial_pool_size=40, seed=1)
    assert torch.equal(first.pool.labeled_indices(), again.pool.labeled_indices())
    assert not torch.equal(first.pool.labeled_indices(), other.pool.labeled_indices())
    assert first.pool.num_labeled == 40 and (first.pool.rounds[first.pool.labeled_mask] == 0).all()


def test_balanced_initial_pool_has_equal_class_counts():
    dm = setup_dm(initial_pool_size=43, initial_pool="balanced")
    assert dm.pool.class_counts(10).tolist() == [5, 5, 5, 4, 4, 4, 4, 4, 4, 4]


def test_loaders_serve_the_right_items():
    dm = setup_dm(initial_pool_size=20, batch_size=8)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 16, 16) and labels.shape == (8,)
    assert sum(len(b[1]) for b in dm.train_dataloader()) == 20
    assert sum(len(b[1]) for b in dm.val_dataloader()) == dm.pool.holdout_indices().numel()
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 359
    pool_indices = torch.cat([index for _, index in dm.pool_dataloader()])
    assert torch.equal(pool_indices, dm.pool.unlabeled_indices())


def test_training_labels_come_from_the_pool_not_the_dataset():
    dm = setup_dm(initial_pool_size=10, batch_size=10)
    dm.pool.labels[dm.pool.labeled_mask] = 7  # what a (wrong) annotator answered
    _, labels = next(iter(dm.train_dataloader()))
    assert (labels == 7).all()


def test_state_dict_restores_the_pool():
    dm = setup_dm(initial_pool_size=20)
    queried = dm.pool.unlabeled_indices()[:5]
    dm.pool.label(queried, dm.train_targets[queried], round=1)
    fresh = ActiveDataModule(dataset="digits", image_size=16, seed=5, initial_pool_size=20)
    fresh.load_state_dict(dm.state_dict())  # before setup, as Lightning may do
    fresh.setup("fit")
    assert torch.equal(fresh.pool.labeled_indices(), dm.pool.labeled_indices())
    assert fresh.pool.last_round == 1


def test_bad_settings_are_named():
    with pytest.raises(ConfigurationError, match="unknown dataset 'mnist'; choose one of: .*digits"):
        ActiveDataModule(dataset="mnist")
    with pytest.raises(ConfigurationError, match="dataset 'image_folder': path '/no/such/dir' does not exist"):
        ActiveDataModule(dataset="image_folder", path="/no/such/dir")
    with pytest.raises(ConfigurationError, match="initial_pool_size=5000 is larger than the"):
        setup_dm(initial_pool_size=5000)


def test_image_folder_layout(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    dm = ActiveDataModule(dataset="image_folder", path=str(tmp_path), image_size=16, initial_pool_size=4, val_fraction=0.2)
    assert dm.num_classes == 2
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog"]
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 16, 16)


def test_corrupt_images_are_named_or_skipped_on_request(tmp_path):
    from PIL import Image

    from al_lightning.data.images import CorruptImageError

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (i * 50, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    broken = tmp_path / "test" / "b" / "2.png"
    broken.write_bytes(broken.read_bytes()[:20])  # truncated file

    strict = ActiveDataModule(dataset="image_folder", path=str(tmp_path), image_size=8, initial_pool_size=2, val_fraction=0.0)
    strict.setup("fit")
    with pytest.raises(CorruptImageError, match="2.png"):
        list(strict.test_dataloader())

    lenient = ActiveDataModule(dataset="image_folder", path=str(tmp_path), image_size=8, initial_pool_size=2, val_fraction=0.0, dataset_args={"skip_corrupt": True})
    lenient.setup("fit")
    with pytest.warns(UserWarning, match="2.png"):
        batches = list(lenient.test_dataloader())
    assert sum(len(targets) for _, targets in batches) == 7


def test_a_sources_own_options_reach_it_through_dataset_args():
    dm = ActiveDataModule(dataset="fake", image_size=8, dataset_args={"num_classes": 3, "train_size": 40, "test_size": 8}, initial_pool_size=6)
    dm.setup("fit")
    assert dm.num_classes == 3 and len(dm.splits.train) == 40 and len(dm.splits.test) == 8
    assert dm.source_options == {"num_classes": 3, "train_size": 40, "test_size": 8, "path": None, "image_size": 8, "labels": None}
