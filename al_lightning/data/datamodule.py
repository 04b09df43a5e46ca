"""``ActiveDataModule``: the pool of an active-learning run and every loader over it."""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Iterator, Literal, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from al_lightning.data.datasets import BatchView, SubsetView, collate_skipping_none
from al_lightning.data.images import ImageFileDataset
from al_lightning.data.pool import ActivePool
from al_lightning.data.samplers import GlobalBatchSampler, ShardSampler
from al_lightning.data.sources import SOURCES, DatasetSource, DatasetSplits
from al_lightning.data.splits import balanced_subset, per_class_split, random_subset, stratified_split
from al_lightning.data.transforms import backbone_transforms, describe_input_config, resolve_input_config
from al_lightning.errors import ConfigurationError
from al_lightning.seeding import derive_seed, resolve_seed, seed_worker


class ActiveDataModule(pl.LightningDataModule):
    """The pool (labeled / unlabeled / held out) and every loader over it.

    The training set is split once, with a seed, into a class-stratified validation split
    (``val_fraction`` or ``val_per_class``; labels known, used for early stopping, never
    queried) and the pool. The initial pool of ``initial_pool_size`` points is drawn from the
    pool at random or class-balanced, with the dataset's own labels, as round 0. The pool's
    state is saved in Lightning checkpoints, so ``--ckpt_path`` resumes with the same labels.

    Partially labeled data (``image_pool``: some training targets are ``-1``, unknown) starts
    from the labels it has instead: the validation split is drawn from the known items only
    (none when the source has a validation split of its own), the other known items are
    round 0, and ``initial_pool_size`` is not used. With no known label at all, nothing is
    labeled at set-up and the query callback picks round 0.

    Where the items come from is the source's business (:mod:`al_lightning.data.sources`):
    ``dataset`` names it and ``dataset_args`` holds its own options
    (``--data.dataset_args.imbalance_ratio=20``; ``--print_config`` lists them all). With
    ``feature_cache``, the loaders serve a frozen trunk's cached features
    (:mod:`al_lightning.data.feature_cache`) once the query callback has prepared them.

    Args:
        dataset: the source: a registered name (``digits``, the default, bundled;
            ``image_folder``, ``image_pool``, ``cifar10``, ``cifar10_lt``, ``fashion_mnist``, ``imagenet``,
            ``imagenet_lt``, ``features``, ``fake``) or the class path of a
            :class:`~al_lightning.data.sources.DatasetSource` subclass of your own.
        path: the dataset's root folder or file (every source that reads one).
        image_size: side of the model's input images (default: the source's own).
        labels: ``image_pool``: CSV file ``path,label`` of the images already labeled.
        dataset_args: the source's own options (see its class).
        val_fraction: share of each class of the training set held out for early stopping.
        val_per_class: hold out exactly this many points of every class instead, a
            class-balanced split whatever the class sizes (the paper's code: 500 on CIFAR-10,
            204 on long-tailed CIFAR-10, 12 on ImageNet); overrides ``val_fraction``.
        initial_pool_size: points labeled before round 0 (0: the strategy picks them with
            the untrained head, see the query callback).
        initial_pool: ``random`` (uniform) or ``balanced`` (equal per class, reads labels).
        batch_size: the global training batch: images per optimizer step over all DDP ranks
            together (each rank takes ``batch_size / world_size``), as the paper's code
            divides it, so a run trains the same way on 1 or 8 devices. A last partial
            batch joins the one before it, so no batch holds a single image.
        eval_batch_size: images per forward pass on each rank for validation, test and pool
            scoring (default 2× batch_size); it changes speed and memory, not results.
        num_workers: data-loading worker processes.
        seed: seeds the validation split, the initial pool and the shuffling (default:
            ``seed_everything``'s seed).
        feature_cache: folder of a frozen trunk's features (linear evaluation,
            ``--model.freeze_backbone=true``): extracted once in the eval transform, then
            every loader serves them.
        feature_cache_train: ``cached``: the head trains on the cached (eval-transform)
            features, without the train-time augmentation; ``augmented``: it trains on
            augmented images through the trunk, while validation, test and the query read the cache.
        input_pipeline: whose transforms the images get. ``source``: the source's own (the
            paper's settings, see :mod:`al_lightning.data.transforms`); ``backbone``: the timm
            backbone's own (its pretrained config's input size, interpolation, mean/std and
            crop, timm's ``create_transform``); ``auto``: the backbone's when its weights come
            from the hub (``--model.pretrained=hub``), else the source's.
        mean, std, interpolation, crop_pct, crop_mode: set these parts of the backbone's
            pipeline instead of taking its pretrained config's (with ``image_size``, its input
            size); only with the backbone's pipeline.

    The data module asks the model for its pipeline at :meth:`setup` (inside ``trainer.fit``),
    as the model holds the backbone's pretrained config; the first log lines say which
    pipeline is used, and an image size the backbone cannot take fails there in one line.
    """

    def __init__(
        self,
        dataset: str = "digits",
        path: Optional[str] = None,
        image_size: Optional[int] = None,
        labels: Optional[str] = None,
        dataset_args: Optional[dict[str, Any]] = None,
        val_fraction: float = 0.1,
        val_per_class: Optional[int] = None,
        initial_pool_size: int = 100,
        initial_pool: Literal["random", "balanced"] = "random",
        batch_size: int = 128,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        seed: Optional[int] = None,
        feature_cache: Optional[str] = None,
        feature_cache_train: Literal["cached", "augmented"] = "cached",
        input_pipeline: Literal["auto", "backbone", "source"] = "auto",
        mean: Optional[tuple[float, float, float]] = None,
        std: Optional[tuple[float, float, float]] = None,
        interpolation: Optional[Literal["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"]] = None,
        crop_pct: Optional[float] = None,
        crop_mode: Optional[Literal["center", "squash", "border"]] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the query callback logs them once, with the results (RoundRecords.finish)
        if initial_pool_size < 0:
            raise ConfigurationError(f"initial_pool_size must be >= 0, got {initial_pool_size}")
        if labels is not None and not SOURCES.takes(dataset, "labels"):
            takers = ", ".join(n for n in SOURCES.names() if SOURCES.takes(n, "labels"))
            raise ConfigurationError(f"dataset '{dataset}' does not take --data.labels (an option of: {takers})")
        self.source: DatasetSource = SOURCES.build(dataset, dataset_args, path=path, image_size=image_size, labels=labels)
        self.val_fraction = val_fraction
        self.val_per_class = val_per_class
        self.initial_pool_size = initial_pool_size
        self.initial_pool = initial_pool
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.seed = resolve_seed(seed)
        self.feature_cache = feature_cache
        self.feature_cache_train = feature_cache_train
        self.input_pipeline = input_pipeline
        self.pipeline_overrides = {"mean": mean, "std": std, "interpolation": interpolation, "crop_pct": crop_pct, "crop_mode": crop_mode}
        self.input_config: Optional[dict[str, Any]] = None  # the backbone's pipeline, once set up with it
        self._source_transforms: tuple[Any, Any] = (None, None)
        self.cached: Optional[dict[str, Dataset]] = None  # the splits as cached features, once prepared
        self.splits: Optional[DatasetSplits] = None
        self.pool: Optional[ActivePool] = None
        self._pending_state: Optional[dict[str, Any]] = None

    # -- facts the model and callback need --------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes (linked to ``--model.num_classes`` by the CLI)."""
        return self.source.num_classes

    @property
    def input_dim(self) -> Optional[int]:
        """Embedding size when the dataset is precomputed features (linked to ``--model.input_dim``), else None."""
        return getattr(self.source, "input_dim", None)

    @property
    def source_options(self) -> dict[str, Any]:
        """Every option the source was built with, defaults included (what decides its items)."""
        hp = self.hparams
        return {**SOURCES.options(hp.dataset), **(hp.dataset_args or {}), "path": hp.path, "image_size": hp.image_size, "labels": hp.labels}

    @property
    def class_names(self) -> list[str]:
        assert self.splits is not None, "call setup() first"
        return self.splits.class_names

    @property
    def train_targets(self) -> Tensor:
        """(N,) the dataset's own labels of the training items; ``-1`` where it has none (the simulated oracle's answers)."""
        assert self.splits is not None, "call setup() first"
        return self.splits.train_targets

    @property
    def has_test_split(self) -> bool:
        """Whether there is a test split to measure accuracy on (``image_pool`` needs ``--data.dataset_args.test_path``)."""
        assert self.splits is not None, "call setup() first"
        return self.splits.test is not None

    def item_ids(self, indices: Tensor) -> list[str]:
        """The id of each training item: its path relative to the dataset root for image files, else its index."""
        dataset = self.splits.train
        if isinstance(dataset, ImageFileDataset):
            return [os.fsdecode(dataset.files[i]) for i in indices.tolist()]
        return [str(i) for i in indices.tolist()]

    def item_files(self, indices: Tensor) -> list[Optional[str]]:
        """The absolute path of each training item's image file (None for items not read from a file)."""
        dataset = self.splits.train
        if isinstance(dataset, ImageFileDataset):
            return [os.path.abspath(dataset.path(i)) for i in indices.tolist()]
        return [None] * indices.numel()

    # -- set-up -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download once per node (Lightning calls this on one process) before every rank loads."""
        if getattr(self.source, "download", False):
            self.source.load()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits is not None:
            return
        self.splits = self.source.load()
        self._source_transforms = (self.splits.train_transform, self.splits.eval_transform)
        if getattr(self, "trainer", None) is not None and self.trainer.lightning_module is not None:
            self.choose_input_pipeline(self.trainer.lightning_module)
        self.pool = ActivePool(len(self.train_targets), holdout=self._draw_holdout())
        if self._pending_state is not None:
            self.pool.load_state_dict(self._pending_state["pool"])
            self._pending_state = None
        elif bool((self.train_targets < 0).any()):
            self._label_known_items()
        elif self.initial_pool_size > 0:
            initial = self._draw_initial_pool()
            self.pool.label(initial, self.train_targets[initial], round=0)

    def choose_input_pipeline(self, model: pl.LightningModule) -> None:
        """Give the images ``model``'s backbone's own pipeline or the source's (``input_pipeline``), say which,
        and check that the backbone takes the images' size. :meth:`setup` calls it with the trainer's model;
        set up without a trainer, the data module keeps the source's transforms until this is called."""
        if self.splits.eval_transform is None:  # precomputed features: no images
            if self.input_pipeline == "backbone":
                raise ConfigurationError(f"--data.input_pipeline=backbone: dataset '{self.source.name}' holds features, not images")
            return
        backbone = getattr(model, "hparams", {}).get("backbone", "?")
        config = model.backbone_input_config() if hasattr(model, "backbone_input_config") else None
        use_backbone = backbone_pipeline_chosen(self.input_pipeline, getattr(model, "hub_weights", False))
        set_here = [f"--data.{k}" for k, v in self.pipeline_overrides.items() if v is not None]
        if use_backbone:
            if config is None:
                raise ConfigurationError(
                    f"--data.input_pipeline=backbone: backbone '{backbone}' has no pretrained config (torchvision or identity); "
                    "use --data.input_pipeline=source"
                )
            self.input_config = resolve_input_config(config, {"image_size": self.hparams.image_size, **self.pipeline_overrides})
            self.splits.train_transform, self.splits.eval_transform = backbone_transforms(self.input_config)
            size = self.input_config["input_size"][-1]
            rank_zero_info(f"[data] input pipeline: the backbone's ({backbone}, timm): {describe_input_config(self.input_config)}")
        else:
            if set_here:
                raise ConfigurationError(
                    f"{', '.join(set_here)} set the backbone's input pipeline, but this run uses the source's transforms "
                    f"(--data.input_pipeline={self.input_pipeline}); add --data.input_pipeline=backbone"
                )
            self.input_config = None
            self.splits.train_transform, self.splits.eval_transform = self._source_transforms
            size = self.source.image_size
            rank_zero_info(f"[data] input pipeline: the source's ({self.source.name}, {size} px): {_one_line(self.splits.eval_transform)}")
        if hasattr(model, "check_input_size") and size:
            model.check_input_size(size)

    def _draw_holdout(self) -> Tensor:
        """The validation split: a class-stratified draw from the items with known labels (none with ``splits.val``)."""
        if self.splits.val is not None:
            return torch.empty(0, dtype=torch.long)
        known = (self.train_targets >= 0).nonzero().squeeze(1)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "split"))
        if self.val_per_class is None:
            return known[stratified_split(self.train_targets[known], self.val_fraction, generator)]
        return known[per_class_split(self.train_targets[known], self.val_per_class, generator)]

    def _label_known_items(self) -> None:
        """Partially labeled data: the labels it has (minus the validation split) are round 0."""
        seed = self.pool.unlabeled_indices()
        seed = seed[self.train_targets[seed] >= 0]
        if seed.numel():
            self.pool.label(seed, self.train_targets[seed], round=0)
        unused = f"; --data.initial_pool_size={self.initial_pool_size} is not used" if self.initial_pool_size else ""
        rank_zero_info(
            f"[data] {seed.numel()} of {len(self.train_targets)} training items have labels and are round 0 "
            f"({self.pool.holdout_indices().numel()} more held out for validation){unused}"
        )

    def _draw_initial_pool(self) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "initial_pool"))
        candidates = self.pool.unlabeled_indices()
        if self.initial_pool == "balanced":
            return balanced_subset(candidates, self.train_targets, self.initial_pool_size, self.num_classes, generator)
        return random_subset(candidates, self.initial_pool_size, generator)

    def use_cached_features(self, cached: dict[str, Dataset]) -> None:
        """Serve ``cached`` (split name → the split's features, :class:`~al_lightning.data.feature_cache.FeatureCache`)
        from now on instead of the images: every loader but augmented training reads them."""
        self.cached = cached

    def _data(self, split: str, augmented: bool = False) -> tuple[Any, Optional[Any]]:
        """``split``'s dataset and transform: the cached features (no transform) once a cache is in
        use, except for training on ``augmented`` images; else the images with the train
        (``augmented``) or the eval transform."""
        if self.cached is not None and not (augmented and self.feature_cache_train == "augmented"):
            return self.cached[split], None
        return self.split(split), (self.splits.train_transform if augmented else self.splits.eval_transform)

    def split(self, name: str) -> Optional[Dataset]:
        """The source's ``train``, ``test`` or ``val`` dataset (items ``(image, target)``, no transform), or None."""
        return {"train": self.splits.train, "test": self.splits.test, "val": self.splits.val}[name]

    # -- loaders ------------------------------------------------------------------------
    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        """This rank's share of the labeled set, training transforms, the oracle's labels, shuffled.

        Lightning asks for it every epoch (the query callback reloads loaders every epoch,
        because the labeled set grows between rounds). Shuffling and worker seeds come from
        (seed, epoch), the epoch counted over the whole run and identical on every rank, so a
        run resumed at a round boundary replays exactly and the ranks together take the same
        global batches as one process (:class:`~al_lightning.data.samplers.GlobalBatchSampler`).
        """
        indices = self.pool.labeled_indices()
        dataset, transform = self._data("train", augmented=True)
        view = SubsetView(dataset, indices, transform, targets=self.pool.labels[indices])
        epoch = self.trainer.current_epoch if getattr(self, "trainer", None) is not None else 0
        seed = derive_seed(self.seed, "train", epoch)
        rank, world_size = self._rank_and_world()
        return self._loader(
            BatchView(view),
            batch_size=None,
            sampler=GlobalBatchSampler(len(view), self.batch_size, seed, rank, world_size),
            generator=torch.Generator().manual_seed(seed),  # the loader's own draws leave the global RNG alone
            worker_init_fn=partial(seed_worker, base_seed=(seed + rank) % 2**32),
        )

    def unlabeled_train_batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Endless shuffled batches of unlabeled images with training transforms, as ``(image, pool_index)``.

        For strategies with networks of their own that learn from the unlabeled pool
        alongside the classifier (:class:`~al_lightning.strategies.TrainsWithClassifier`).
        Batches hold this rank's share of a global batch, as the labeled ones do.
        """
        view = SubsetView(self.splits.train, self.pool.unlabeled_indices(), self.splits.train_transform, with_index=True)
        generator = torch.Generator().manual_seed(seed)
        _, world_size = self._rank_and_world()
        while len(view):
            yield from self._loader(
                view,
                batch_size=max(1, self.batch_size // world_size),
                sampler=RandomSampler(view, generator=generator),
                worker_init_fn=partial(seed_worker, base_seed=seed % 2**32),
                collate_fn=collate_skipping_none,
            )

    def val_dataloader(self) -> DataLoader:
        """This rank's share of the validation split (true labels), eval transforms: the source's
        own (``splits.val``) if it has one, else the held-out part of the training set.

        Sharded without repeats, so the synced validation accuracy is the same on any number of ranks.
        """
        if self.splits.val is not None:
            dataset, transform = self._data("val")
            view = SubsetView(dataset, torch.arange(len(dataset)), transform)
        else:
            dataset, transform = self._data("train")
            view = SubsetView(dataset, self.pool.holdout_indices(), transform)
        return self.eval_loader(view, sharded=True)

    def test_dataloader(self, sharded: bool = False) -> DataLoader:
        """The test split, eval transforms. ``sharded``: only this rank's share. Only with :attr:`has_test_split`."""
        if not self.has_test_split:
            raise ConfigurationError(f"dataset '{self.source.name}' has no test split; give one with --data.dataset_args.test_path=DIR")
        dataset, transform = self._data("test")
        view = SubsetView(dataset, torch.arange(len(dataset)), transform)
        return self.eval_loader(view, sharded)

    def pool_dataloader(self, indices: Optional[Tensor] = None, sharded: bool = True) -> DataLoader:
        """Pool indices (default: all unlabeled) with eval transforms; yields ``(image, pool_index)``.

        ``sharded``: under DDP each rank gets every world_size-th item, with no repeats.
        """
        indices = self.pool.unlabeled_indices() if indices is None else indices
        dataset, transform = self._data("train")
        view = SubsetView(dataset, indices, transform, with_index=True)
        return self.eval_loader(view, sharded)

    def eval_loader(self, view: Dataset, sharded: bool = False) -> DataLoader:
        """``view`` in eval batches, in order; ``sharded``: only this rank's every world_size-th item, no repeats."""
        rank, world_size = self._rank_and_world() if sharded else (0, 1)
        return self._loader(view, batch_size=self.eval_batch_size, sampler=ShardSampler(len(view), rank, world_size), collate_fn=collate_skipping_none)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """Every loader's common settings: the workers, and pinned memory when a GPU will read the batches."""
        return DataLoader(dataset, num_workers=self.num_workers, pin_memory=torch.cuda.is_available(), **kwargs)

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {} if self.pool is None else {"pool": self.pool.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.pool is None:
            self._pending_state = state_dict
        else:
            self.pool.load_state_dict(state_dict["pool"])


def backbone_pipeline_chosen(input_pipeline: str, hub_weights: bool) -> bool:
    """Whether ``--data.input_pipeline`` gives the images the backbone's own pipeline: ``backbone``, or
    ``auto`` with hub weights (published with the pipeline they were trained with)."""
    return input_pipeline == "backbone" or (input_pipeline == "auto" and hub_weights)


def _one_line(transform: Any) -> str:
    """A transform's repr on one line, for the log."""
    return " ".join(repr(transform).split())
