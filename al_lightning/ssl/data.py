"""``SSLDataModule``: every training image of a source, as two augmented views, labels unused."""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import pytorch_lightning as pl
import torch
from lightly.transforms import MoCoV2Transform, SimCLRTransform
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.transforms.functional import to_pil_image

from al_lightning.data.datasets import SubsetView
from al_lightning.data.sources import SOURCES, DatasetSplits
from al_lightning.errors import ConfigurationError

ViewTransformName = Literal["simclr", "moco_v2"]

VIEW_TRANSFORMS: dict[str, type[MultiViewTransform]] = {"simclr": SimCLRTransform, "moco_v2": MoCoV2Transform}

#: Sides up to this many pixels count as small (CIFAR-like) images.
SMALL_IMAGE = 64
#: lightly's CIFAR-10 benchmark settings for small images: no Gaussian blur (it wipes out a
#: 32-pixel image; SimCLR's CIFAR-10 runs also drop it) and, for SimCLR, colour strength 0.5.
SMALL_IMAGE_OPTIONS: dict[str, dict[str, float]] = {
    "simclr": {"gaussian_blur": 0.0, "cj_strength": 0.5},
    "moco_v2": {"gaussian_blur": 0.0},
}


class SSLDataModule(pl.LightningDataModule):
    """All training images of a dataset source, each turned into two views by lightly.

    The paper pretrains on all available unlabeled data, so the whole training split is used
    and labels are never read (items are ``([view0, view1], index)``). The test split is not
    used. The views are normalised with the source's own statistics, so the backbone sees the
    same input distribution when ``train.py`` fine-tunes it (with its BatchNorm statistics
    frozen).

    Args:
        dataset: source name (``digits``, ``cifar10``, ``imagenet``, ``image_folder``, ...) or
            the class path of a source of your own, as ``train.py --data.dataset``.
        path: dataset root, for sources that read one.
        image_size: side of the views (default: the source's own image size).
        dataset_args: the source's own options (``--data.dataset_args.download=true``).
        batch_size: images per batch (each gives two views); the last partial batch is dropped.
        num_workers: data-loading worker processes.
        view_transform: ``simclr`` or ``moco_v2`` augmentations (default: the model's own).
    """

    def __init__(
        self,
        dataset: str = "digits",
        path: Optional[str] = None,
        image_size: Optional[int] = None,
        dataset_args: Optional[dict[str, Any]] = None,
        batch_size: int = 256,
        num_workers: int = 0,
        view_transform: Optional[ViewTransformName] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source = SOURCES.build(dataset, dataset_args, path=path, image_size=image_size)
        self.image_size = image_size or self.source.image_size
        if not self.image_size:
            raise ConfigurationError(f"dataset '{dataset}' has no default image size; pass --data.image_size")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.view_transform = view_transform
        self.splits: Optional[DatasetSplits] = None
        self.train_set: Optional[SubsetView] = None

    def prepare_data(self) -> None:
        """Download once per node, before the ranks read the files."""
        if getattr(self.source, "download", False):
            self.source.load()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        self.splits = self.source.load()
        name = self.view_transform or self._model_view_transform()
        options = SMALL_IMAGE_OPTIONS[name] if self.image_size <= SMALL_IMAGE else {}
        views = VIEW_TRANSFORMS[name](
            input_size=self.image_size, normalize=normalization(self.splits.eval_transform), **options
        )
        train = self.splits.train
        if len(train) < self.batch_size:
            raise ConfigurationError(f"{len(train)} training images, fewer than one batch; lower --data.batch_size")
        self.train_set = SubsetView(train, torch.arange(len(train)), T.Compose([to_rgb_image, views]), with_index=True)

    def _model_view_transform(self) -> str:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.lightning_module is None:
            raise ConfigurationError("SSLDataModule needs view_transform when it is used without a trainer and model")
        return trainer.lightning_module.view_transform

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,  # a last batch of one image would break BatchNorm and give no negatives
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


def to_rgb_image(image: Any) -> Image.Image:
    """lightly's augmentations (colour jitter, blur) work on RGB PIL images; tensor sources
    (digits, values in [0, 1]) and grayscale files are converted first."""
    if isinstance(image, Tensor):
        image = to_pil_image(image)
    return image.convert("RGB")


def normalization(transform: Optional[Callable[[Any], Any]]) -> dict[str, list[float]]:
    """The mean and std of the ``Normalize`` inside a source's eval transform, in lightly's
    format; ImageNet's when there is none."""
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    for step in steps:
        if isinstance(step, T.Normalize):
            return {"mean": list(step.mean), "std": list(step.std)}
    return IMAGENET_NORMALIZE
