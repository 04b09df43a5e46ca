"""``ActiveClassifier``: a backbone and a linear head, fine-tuned or linearly evaluated."""

from __future__ import annotations

from typing import Any, Iterator, Literal, Optional

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from al_lightning.errors import ConfigurationError
from al_lightning.models.backbones import HUB, build_backbone, hub_location
from al_lightning.models.checkpoints import load_backbone_weights

#: Top-5 accuracy is reported from this many classes on: with C <= 5 it is always 1.0.
TOP5_MIN_CLASSES = 6


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 accuracy, and top-5 when there are more than five classes (else it would always be 1.0)."""
    metrics = {"acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= TOP5_MIN_CLASSES:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ActiveClassifier(pl.LightningModule):
    """Backbone + linear head, trained from the same initial weights in every AL round.

    The two training setups of the paper are one flag: ``freeze_backbone=False`` fine-tunes
    end to end, ``freeze_backbone=True`` is linear evaluation (trunk in eval mode, no
    gradients, only the head is optimised). :meth:`reset_weights` puts the backbone back to
    its initial (SSP) weights and draws a fresh head; the query callback calls it at the
    start of every round.

    Frozen parts (the trunk in linear evaluation, the BatchNorm layers with
    ``freeze_bn_stats``) are put back in eval mode before every training batch: Lightning
    sets each submodule's ``training`` flag itself (it restores the captured flags after
    every validation, and never calls :meth:`train`), so overriding ``train()`` alone would
    leave BatchNorm updating its running statistics.

    The head always runs in float32, outside any autocast region: under ``bf16-mixed`` the
    trunk runs in bfloat16, but the logits that rank the pool keep float32 precision
    (bfloat16 logits tie thousands of boundary distances at ImageNet scale).

    Args:
        num_classes: C (linked from the data module by the CLI).
        backbone: ``resnet18``/``resnet34``/``resnet50`` (torchvision), any timm model name, or
            ``identity`` when the inputs are embeddings (``--data.dataset=features``).
        cifar_stem: 3×3 stride-1 stem without max-pool, for 32×32 images (torchvision ResNets).
        pretrained: file with the backbone's initial (SSP) weights: MoCo v2/v3, SimCLR, DINO, lightly,
            Lightning or plain timm/torchvision checkpoints (see ``models/checkpoints.py``);
            ``hub``: the weights timm publishes for ``backbone`` (a name with its pretrained tag,
            ``vit_small_patch14_dinov2.lvd142m``, or ``hf-hub:ORG/NAME``), through
            huggingface_hub's cache (``HF_HUB_OFFLINE=1``: the cache only); ``None`` starts from a
            random initialisation (fixed by the seed).
        freeze_backbone: linear evaluation: train the head only.
        freeze_bn_stats: keep BatchNorm in eval mode while fine-tuning (the SSP statistics
            stay frozen, as the paper's code does); default: on when ``pretrained`` is given.
        lr, momentum, weight_decay, nesterov: SGD settings.
        scheduler: ``cosine`` (period ``t_max`` epochs), ``step`` (×``gamma`` every
            ``step_size`` epochs) or ``constant``.
        t_max: cosine period in epochs; the CLI links it to ``--al.max_epochs``.
        head_init_std: the head's weights are drawn from N(0, std²), its bias is 0.
        class_weighted_loss: weight the cross-entropy by the labeled set's class counts
            (the paper's §5.2 for imbalanced data): w_c = (M/C)/n_c, 1 for a class without labels.
        input_dim: embedding size for ``backbone=identity`` (the CLI links it from the data).
    """

    def __init__(
        self,
        num_classes: int = 10,
        backbone: str = "resnet18",
        cifar_stem: bool = False,
        pretrained: Optional[str] = None,
        freeze_backbone: bool = False,
        freeze_bn_stats: Optional[bool] = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        scheduler: Literal["cosine", "step", "constant"] = "cosine",
        t_max: int = 200,
        step_size: int = 20,
        gamma: float = 0.1,
        head_init_std: float = 1e-3,
        class_weighted_loss: bool = False,
        input_dim: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the query callback logs them once, with the results (RoundRecords.finish)
        self.backbone, self.feature_dim = build_backbone(backbone, cifar_stem, input_dim, hub_weights=pretrained == HUB)
        if pretrained and pretrained != HUB:
            load_backbone_weights(self.backbone, pretrained)
        elif pretrained == HUB:
            repo, cache = hub_location(backbone.removeprefix("timm/"))
            rank_zero_info(f"[model] backbone {backbone}: the hub's weights ({repo}, Hugging Face cache {cache})")
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.freeze_backbone = freeze_backbone
        self.freeze_bn_stats = bool(pretrained) if freeze_bn_stats is None else freeze_bn_stats
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        # The weights every round starts from: kept off the module so they are not in checkpoints twice.
        self._initial_backbone = {k: v.detach().to("cpu", copy=True) for k, v in self.backbone.state_dict().items()}
        self.reset_weights(seed=0)
        self.register_buffer("class_weights", torch.ones(num_classes), persistent=False)
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")

    # -- weights ----------------------------------------------------------------------
    @property
    def hub_weights(self) -> bool:
        """Whether the trunk starts from timm's published weights, which come with the input pipeline they were trained with."""
        return self.hparams.pretrained == HUB

    def backbone_input_config(self) -> Optional[dict[str, Any]]:
        """timm's data config of the trunk (input_size, interpolation, mean, std, crop_pct, crop_mode) from its
        pretrained config, None for a torchvision or ``identity`` trunk (they have none)."""
        if getattr(self.backbone, "pretrained_cfg", None) is None:
            return None
        import timm

        config = timm.data.resolve_data_config(model=self.backbone)  # an hf-hub: config, read from JSON, holds lists
        return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}

    @torch.no_grad()
    def check_input_size(self, image_size: int) -> None:
        """Fail with one line if the trunk cannot take ``image_size``-px images (a ViT's patch size, a
        Swin's windows, a fixed-size model): one forward pass of a blank image, before any training."""
        if isinstance(self.backbone, nn.Identity):
            return
        modes = [(module, module.training) for module in self.backbone.modules()]
        self.backbone.eval()
        parameter = next(self.backbone.parameters())
        try:
            self.backbone(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
        except (AssertionError, RuntimeError, ValueError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            native = (self.backbone_input_config() or {}).get("input_size")
            takes = f"; its pretrained size is {native[-1]} px" if native else ""
            raise ConfigurationError(
                f"backbone '{self.hparams.backbone}' cannot take {image_size}-px images ({reason}){takes}: set --data.image_size"
            ) from err
        finally:
            for module, training in modes:
                module.training = training

    def initial_trunk_state(self) -> dict[str, Tensor]:
        """The trunk's weights every round starts from (the SSP checkpoint's, or the seeded initialisation), on the CPU.

        What a feature cache is keyed by: a frozen trunk computes the same features from them in every round.
        """
        return self._initial_backbone

    @torch.no_grad()
    def reset_weights(self, seed: int) -> None:
        """Backbone back to its initial weights, head drawn anew from N(0, head_init_std²) with ``seed``."""
        self.backbone.load_state_dict(self._initial_backbone)
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(self.head.weight.shape, generator=generator) * self.hparams.head_init_std
        self.head.weight.copy_(weight)
        self.head.bias.zero_()

    def update_class_weights(self, counts: Tensor) -> None:
        """Set the loss weights from the labeled class counts (no-op unless ``class_weighted_loss``).

        w_c = (M/C)/n_c: 1 for every class when the labeled set is balanced, larger for rare
        classes; a class without labels yet keeps weight 1.
        """
        if not self.hparams.class_weighted_loss:
            return
        counts = counts.to(self.class_weights.device, torch.float32)
        weights = torch.where(counts > 0, counts.sum() / (counts.numel() * counts.clamp_min(1)), 1.0)
        self.class_weights.copy_(weights)

    def frozen_modules(self) -> Iterator[nn.Module]:
        """The submodules that stay in eval mode while training: the trunk in linear
        evaluation, else its BatchNorm layers when ``freeze_bn_stats``."""
        if self.freeze_backbone:
            yield from self.backbone.modules()
        elif self.freeze_bn_stats:
            yield from (m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))

    def hold_frozen_modes(self) -> None:
        """Put the :meth:`frozen_modules` in eval mode, whatever set their flags before."""
        for module in self.frozen_modules():
            module.training = False

    def train(self, mode: bool = True) -> "ActiveClassifier":
        super().train(mode)
        if mode:
            self.hold_frozen_modes()
        return self

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Runs after every Lightning mode change (fit start, validation's restore), right before the step.
        self.hold_frozen_modes()

    # -- forward ----------------------------------------------------------------------
    def extract_features(self, images: Tensor) -> Tensor:
        """(B, d) penultimate embeddings: the head's input (in the trunk's precision).

        A frozen trunk given (B, d) rows instead of images is given its own features, read
        from a feature cache (``--data.feature_cache``): they pass through unchanged.
        """
        if self.freeze_backbone:
            if images.dim() == 2 and images.shape[1] == self.feature_dim:
                return images
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def classify(self, features: Tensor) -> Tensor:
        """(B, C) float32 logits of the head, computed in float32 even inside autocast."""
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.float())

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.extract_features(images))

    # -- Lightning steps --------------------------------------------------------------
    def training_step(self, batch: Optional[tuple[Tensor, Tensor]], batch_idx: int) -> Optional[Tensor]:
        if batch is None:  # every image of the batch was unreadable and skipped
            return None
        images, targets = batch
        loss = F.cross_entropy(self(images), targets, weight=self.class_weights)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=targets.numel(), sync_dist=True)
        return loss

    def validation_step(self, batch: Optional[tuple[Tensor, Tensor]], batch_idx: int) -> None:
        if batch is None:
            return
        images, targets = batch
        logits = self(images)
        self.log("val/loss", F.cross_entropy(logits, targets), batch_size=targets.numel(), sync_dist=True)
        self.val_metrics.update(logits, targets)
        self.log_dict(self.val_metrics, batch_size=targets.numel())

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov)
        if hp.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.t_max)
        elif hp.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
