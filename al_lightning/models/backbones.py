"""Backbones by name: torchvision ResNets (with an optional CIFAR stem) or any timm model,
the latter optionally with the weights timm publishes on the Hugging Face hub."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Optional

import torch.nn as nn
from torchvision import models as tv_models

from al_lightning.errors import ConfigurationError

#: torchvision architectures, by name; any other name is looked up in timm.
TORCHVISION_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tv_models.resnet18,
    "resnet34": tv_models.resnet34,
    "resnet50": tv_models.resnet50,
}

#: ``--model.pretrained`` value that loads timm's published weights of ``--model.backbone``.
HUB = "hub"
HF_HUB_PREFIX = "hf-hub:"


def build_backbone(
    name: str, cifar_stem: bool = False, input_dim: Optional[int] = None, hub_weights: bool = False
) -> tuple[nn.Module, int]:
    """A trunk that maps images to (B, d) embeddings, and d: randomly initialised, or with hub weights.

    Args:
        name: ``resnet18``/``resnet34``/``resnet50`` (torchvision), any timm model name
            (``vit_small_patch16_224``, ``convnext_tiny``, ...; ``timm/NAME`` forces timm), with
            an optional pretrained tag (``resnet50.a1_in1k``) or as ``hf-hub:ORG/NAME``, or
            ``identity`` for inputs that already are embeddings (a features file).
        cifar_stem: for 32×32 images: a 3×3 stride-1 first convolution and no max-pool
            (torchvision ResNets only), as SimCLR's CIFAR ResNets.
        input_dim: the embedding size, for ``identity``.
        hub_weights: load the weights timm publishes for ``name`` (its pretrained tag names
            them) through huggingface_hub, which honours its own cache and offline switches
            (``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE``). A torchvision name is then
            taken as timm's model of that name.

    ViTs are built with ``dynamic_img_size=True`` where timm supports it, so they take images
    of other sides than their default one (the position embeddings are resampled).
    """
    if name == "identity":
        if hub_weights:
            raise ConfigurationError("--model.pretrained=hub needs a timm backbone with published weights, not 'identity'")
        if not input_dim:
            raise ConfigurationError("backbone 'identity' needs the embedding size: use it with --data.dataset=features")
        return nn.Identity(), input_dim
    if name in TORCHVISION_BACKBONES and not hub_weights:
        net = TORCHVISION_BACKBONES[name](weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim


    timm_name = name.removeprefix("timm/")
    if cifar_stem:
        raise ConfigurationError(f"cifar_stem applies to the torchvision ResNets only, not to timm's '{timm_name}'")
    if not timm_name.startswith(HF_HUB_PREFIX):
        check_timm_name(timm_name, hub_weights)
    try:
        net = _create_timm_model(timm_name, pretrained=hub_weights)
    except Exception as err:  # noqa: BLE001 - huggingface_hub's and the network's errors become one line
        reason = hub_failure(timm_name, err, hub_weights)
        if reason is None:
            raise
        raise ConfigurationError(reason) from err
    return net, net.num_features


def _create_timm_model(name: str, pretrained: bool) -> nn.Module:
    """``timm.create_model`` without a classifier, with a dynamic image size where the model takes one."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, dynamic_img_size=True)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
        return timm.create_model(name, pretrained=pretrained, num_classes=0)


def check_timm_name(name: str, hub_weights: bool = False) -> None:
    """A timm name's architecture must exist, and its pretrained tag (required for hub weights) be one timm has.

    ``timm.is_model`` accepts any tag, and ``timm.create_model`` would fail deep inside on a
    wrong one; here either is one line listing what timm has.
    """
    import timm
    from timm.models import split_model_name_tag

    architecture, tag = split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5)
        hint = f"; close timm names: {', '.join(close)}" if close else ""
        raise ConfigurationError(
            f"unknown backbone '{name}'; choose one of {', '.join(TORCHVISION_BACKBONES)} (torchvision), "
            f"identity (for a features file) or a timm model name (timm.list_models()){hint}"
        )
    tags = pretrained_tags(architecture)
    if (tag and tag not in tags) or (hub_weights and not tag):
        if not tags:
            raise ConfigurationError(f"timm publishes no weights for '{architecture}' (timm.list_pretrained('{architecture}.*') is empty)")
        problem = f"timm has no pretrained tag '{tag}' for '{architecture}'" if tag else (
            f"--model.pretrained=hub needs the pretrained tag of the weights in --model.backbone ('{architecture}.TAG')"
        )
        raise ConfigurationError(f"{problem}; its tags: {', '.join(tags)} (e.g. --model.backbone={architecture}.{tags[0]})")


def pretrained_tags(architecture: str) -> list[str]:
    """The pretrained tags timm has for ``architecture`` (``a1_in1k``, ...), its default first."""
    import timm

    return [n.split(".", 1)[1] for n in timm.list_pretrained(f"{architecture}.*")]


def hub_location(name: str) -> tuple[str, str]:
    """Where huggingface_hub looks for ``name``'s weights: the repository id and the cache folder.

    The cache folder is read at call time (``HF_HUB_CACHE``, else ``HF_HOME/hub``, as
    huggingface_hub resolves them when imported).
    """
    from huggingface_hub import constants

    if name.startswith(HF_HUB_PREFIX):
        repo = name.removeprefix(HF_HUB_PREFIX)
    else:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        repo = (cfg.hf_hub_id if cfg is not None else None) or f"timm/{name}"
    return repo.split("@", 1)[0], str(constants.HF_HUB_CACHE)


def hub_failure(name: str, err: BaseException, hub_weights: bool = True) -> Optional[str]:
    """The one line for a failed hub load of ``name``'s weights (or, without ``hub_weights``, of an ``hf-hub:``
    name's config): not cached while offline, or the hub out of reach; None for other errors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        import httpx

        network_errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)
    except ImportError:  # older huggingface_hub releases use requests
        network_errors = ()
    try:
        import requests

        network_errors += (requests.exceptions.RequestException,)
    except ImportError:
        pass
    if not isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, *network_errors)):
        return None
    repo, cache = hub_location(name)
    fill = (
        f"fill it on a machine with internet (`hf download {repo}`, then copy its "
        f"models--{repo.replace('/', '--')} folder into {cache}, or point HF_HUB_CACHE at a copy of that machine's cache)"
    )
    what = f"--model.pretrained=hub: the weights of '{name}'" if hub_weights else f"backbone '{name}': the model's config"
    if constants.HF_HUB_OFFLINE or isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        switch = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "the hub unreachable"
        return f"{what} ({repo}) {'are' if hub_weights else 'is'} not in the Hugging Face cache {cache} ({switch}); {fill}"
    return f"{what} ({repo}) could not be fetched from the Hugging Face hub: {' '.join(str(err).split())}; {fill}"


def backbone_input_config(name: str) -> Optional[dict[str, Any]]:
    """timm's data config (input_size, interpolation, mean, std, crop_pct, crop_mode) for a timm backbone name, read
    from its pretrained config without building the model; None for torchvision, ``identity`` and ``hf-hub:`` names
    (whose config lives on the hub)."""
    if name == "identity" or name in TORCHVISION_BACKBONES or name.startswith(HF_HUB_PREFIX):
        return None
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name.removeprefix("timm/"))
    return None if cfg is None else dict(timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict()))
