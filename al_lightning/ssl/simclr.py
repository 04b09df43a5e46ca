"""SimCLR: the contrastive method of the paper's CIFAR-10 experiments (appendix C.1)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor

from al_lightning.ssl.base import SelfSupervisedModule


class SimCLR(SelfSupervisedModule):
    """SimCLR (Chen et al., 2020, arXiv:2002.05709): NT-Xent between two views of each image,
    the other 2(B−1) views of the batch as negatives.

    Defaults follow the paper's appendix C.1 for CIFAR-10 (Adam, lr 3e-4, betas (0.9, 0.999),
    cosine schedule) and SimCLR's CIFAR-10 temperature 0.5 (also lightly's default). The head
    is lightly's: feature_dim → feature_dim → ``projection_dim``, with BatchNorm. With several
    GPUs the negatives are gathered from all of them, as in SimCLR's large-batch training.

    Example::

        model = SimCLR(backbone="resnet18", cifar_stem=True)
        loss = model.loss([view0, view1])  # two (B, 3, H, W) batches of the same images

    Args:
        temperature: NT-Xent temperature.
        projection_dim: output size of the projection head.
        optimizer, lr, weight_decay: as :class:`SelfSupervisedModule`, with the defaults above.
        **kwargs: the other arguments of :class:`SelfSupervisedModule`.
    """

    view_transform = "simclr"

    def __init__(
        self,
        temperature: float = 0.5,
        projection_dim: int = 128,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)
        self.projection_head = SimCLRProjectionHead(self.feature_dim, self.feature_dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def loss(self, views: list[Tensor]) -> Tensor:
        # One pass over both views: BatchNorm sees all 2B images, as in SimCLR.
        z0, z1 = self.projection_head(self.backbone(torch.cat(views))).chunk(2)
        return self.criterion(z0, z1)
