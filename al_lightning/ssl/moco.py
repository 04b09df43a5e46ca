"""MoCo v2: the contrastive method of the paper's ImageNet experiments (appendix C.1)."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum
from lightly.utils import dist
from torch import Tensor

from al_lightning.ssl.base import SelfSupervisedModule


class MoCoV2(SelfSupervisedModule):
    """MoCo v2 (Chen et al., 2020, arXiv:2003.04297): a query encoder trained against keys from
    a momentum (EMA) copy of itself, with a queue of past keys as negatives.

    The queue is the memory bank of lightly's NT-Xent loss (``memory_bank_size`` keys, filled
    with the keys of every training step; with several GPUs the keys of all of them). The key
    encoder follows the query encoder with lightly's ``update_momentum`` at a fixed
    ``key_momentum`` (0.999, as MoCo's own code) and receives no gradients. Keys are computed
    with shuffled BatchNorm across GPUs (MoCo §3.3), so that BN statistics cannot reveal the
    positive; in a single process the shuffle changes nothing.

    Defaults follow the paper's appendix C.1 for ImageNet: SGD lr 0.03, momentum 0.9, weight
    decay 4e-4 (MoCo's own code uses 1e-4), batch 256, cosine schedule; temperature 0.2 and a
    2-layer 2048-d MLP head with 128-d output, as MoCo v2.

    Example::

        model = MoCoV2(backbone="resnet50")
        loss = model.loss([query_view, key_view])

    Args:
        temperature: softmax temperature of the InfoNCE loss.
        projection_dim: output size of the projection head (and of the queued keys).
        key_momentum: EMA factor m of the key encoder: θ_k ← m·θ_k + (1 − m)·θ_q every step.
        memory_bank_size: number of queued keys (negatives).
        optimizer, lr, weight_decay: as :class:`SelfSupervisedModule`, with the defaults above.
        **kwargs: the other arguments of :class:`SelfSupervisedModule`.
    """

    view_transform = "moco_v2"

    def __init__(
        self,
        temperature: float = 0.2,
        projection_dim: int = 128,
        key_momentum: float = 0.999,
        memory_bank_size: int = 65536,
        optimizer: Literal["adam", "sgd"] = "sgd",
        lr: float = 0.03,
        weight_decay: float = 4e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)
        self.projection_head = MoCoProjectionHead(self.feature_dim, 2048, projection_dim)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projection_head = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.key_backbone)
        deactivate_requires_grad(self.key_projection_head)
        self.criterion = NTXentLoss(
            temperature=temperature, memory_bank_size=(memory_bank_size, projection_dim), gather_distributed=True
        )
        self.key_momentum = key_momentum

    def loss(self, views: list[Tensor]) -> Tensor:
        query_view, key_view = views
        update_momentum(self.backbone, self.key_backbone, self.key_momentum)
        update_momentum(self.projection_head, self.key_projection_head, self.key_momentum)
        query = self.projection_head(self.backbone(query_view))
        with torch.no_grad():
            distributed = dist.world_size() > 1
            key_view, shuffle = batch_shuffle(key_view, distributed=distributed)
            key = self.key_projection_head(self.key_backbone(key_view))
            key = batch_unshuffle(key, shuffle, distributed=distributed)
        return self.criterion(query, key)
