"""Backbones by name: torchvision ResNets (with an optional CIFAR stem) or any timm model."""

from __future__ import annotations

import difflib
from typing import Callable, Optional

import torch.nn as nn
from torchvision import models as tv_models

from al_lightning.errors import ConfigurationError

#: torchvision architectures, by name; any other name is looked up in timm.
TORCHVISION_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tv_models.resnet18,
    "resnet34": tv_models.resnet34,
    "resnet50": tv_models.resnet50,
}


def build_backbone(name: str, cifar_stem: bool = False, input_dim: Optional[int] = None) -> tuple[nn.Module, int]:
    """A randomly initialised trunk that maps images to (B, d) embeddings, and d.

    Args:
        name: ``resnet18``/``resnet34``/``resnet50`` (torchvision), any timm model name
            (``vit_small_patch16_224``, ``convnext_tiny``, ...; ``timm/NAME`` forces timm), or
            ``identity`` for inputs that already are embeddings (a features file).
        cifar_stem: for 32×32 images: a 3×3 stride-1 first convolution and no max-pool
            (torchvision ResNets only), as SimCLR's CIFAR ResNets.
        input_dim: the embedding size, for ``identity``.
    """
    if name == "identity":
        if not input_dim:
            raise ConfigurationError("backbone 'identity' needs the embedding size: use it with --data.dataset=features")
        return nn.Identity(), input_dim
    if name in TORCHVISION_BACKBONES:
        net = TORCHVISION_BACKBONES[name](weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim

    import timm

    timm_name = name.removeprefix("timm/")
    if not timm.is_model(timm_name):
        close = difflib.get_close_matches(timm_name, timm.list_models(), n=5)
        hint = f"; close timm names: {', '.join(close)}" if close else ""
        raise ConfigurationError(
            f"unknown backbone '{name}'; choose one of {', '.join(TORCHVISION_BACKBONES)} (torchvision), "
            f"identity (for a features file) or a timm model name (timm.list_models()){hint}"
        )
    if cifar_stem:
        raise ConfigurationError(f"cifar_stem applies to the torchvision ResNets only, not to timm's '{timm_name}'")
    net = timm.create_model(timm_name, pretrained=False, num_classes=0)
    return net, net.num_features
