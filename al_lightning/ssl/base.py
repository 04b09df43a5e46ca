"""``SelfSupervisedModule``: the loop, optimiser, schedule and backbone export shared by every SSL method."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import cosine_schedule
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from al_lightning.io import atomic_torch_save
from al_lightning.models.backbones import build_backbone


class SelfSupervisedModule(pl.LightningModule, abc.ABC):
    """A backbone trained by a self-supervised loss on two views of each image.

    Subclasses add their projector and implement :meth:`loss`; this class owns the training
    step, the optimiser (Adam or SGD) with a per-step cosine decay of the learning rate to 0
    over the whole fit, and writing the trained trunk where ``train.py --model.pretrained``
    reads it.

    Args:
        backbone: trunk name for :func:`~al_lightning.models.build_backbone`; the same name
            (and ``cifar_stem``) must be given to ``train.py`` to load the weights.
        cifar_stem: 3×3 stride-1 stem without max-pool, for 32×32 images.
        optimizer: ``adam`` (uses ``betas``) or ``sgd`` (uses ``momentum``).
        lr: peak learning rate, reached at step 0 and decayed by a cosine to 0.
        weight_decay: L2 penalty of the optimiser.
        momentum: SGD momentum.
        betas: Adam's (β1, β2).
        backbone_out: where :meth:`on_train_end` writes the trunk's ``state_dict``
            (default: ``<trainer.log_dir>/backbone.pt``).
    """

    #: The lightly view transform of the method's paper (``SSLDataModule`` uses it unless told otherwise).
    view_transform: ClassVar[Literal["simclr", "moco_v2"]]

    def __init__(
        self,
        optimizer: Literal["adam", "sgd"],
        lr: float,
        weight_decay: float = 0.0,
        backbone: str = "resnet18",
        cifar_stem: bool = False,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        backbone_out: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # records the subclass's arguments too: Lightning walks the __init__ chain
        self.backbone, self.feature_dim = build_backbone(backbone, cifar_stem)
        self.backbone_out = backbone_out

    @abc.abstractmethod
    def loss(self, views: list[Tensor]) -> Tensor:
        """The method's loss on a batch of two augmented views of the same images."""

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, _ = batch
        loss = self.loss(views)
        self.log("train/loss", loss, prog_bar=True, batch_size=views[0].shape[0])
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]  # not a momentum encoder's
        if hp.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total_steps = int(self.trainer.estimated_stepping_batches)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_schedule(step, total_steps, 1.0, 0.0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def on_train_end(self) -> None:
        # Every rank resolves the path (trainer.log_dir is a collective call under DDP); rank zero writes.
        path = Path(self.backbone_out or Path(self.trainer.log_dir or self.trainer.default_root_dir) / "backbone.pt")
        if self.trainer.is_global_zero:
            self.save_backbone(path)
            rank_zero_info(f"backbone weights written to {path} (use: train.py ... --model.pretrained={path})")

    def save_backbone(self, path: str | Path) -> None:
        """Write the trunk's plain ``state_dict`` (CPU tensors) to ``path``, atomically:
        a long pretraining run must not end in a corrupt checkpoint."""
        atomic_torch_save({k: v.detach().to("cpu", copy=True) for k, v in self.backbone.state_dict().items()}, path)
