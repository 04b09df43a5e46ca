"""Train and eval transforms for each kind of input, following the paper's settings, and a backbone's own pipeline."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
#: The paper's code's CIFAR std (the widely copied values; the pixels' own std is
#: (0.2470, 0.2435, 0.2616)). Pretraining reads the same constants, so the two always agree.
CIFAR_STD = (0.2023, 0.1994, 0.2010)

Transform = Callable


def imagenet_transforms(image_size: int = 224) -> tuple[Transform, Transform]:
    """RandomResizedCrop + flip for training; Resize(size/0.875) + CenterCrop for eval and scoring."""
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    evaluate = T.Compose([T.Resize(round(image_size / 0.875)), T.CenterCrop(image_size), T.ToTensor(), normalize])
    return train, evaluate


def cifar_transforms(image_size: int = 32) -> tuple[Transform, Transform]:
    """Random crop with 4-pixel padding + flip for training; normalisation only for eval."""
    normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    resize = [T.Resize(image_size)] if image_size != 32 else []
    train = T.Compose(resize + [T.RandomCrop(image_size, padding=image_size // 8), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    evaluate = T.Compose(resize + [T.ToTensor(), normalize])
    return train, evaluate


def tensor_transforms(image_size: int, mean: float = 0.5, std: float = 0.5) -> tuple[Transform, Transform]:
    """For images already in a float tensor in [0, 1] (digits): random shifts, no flips."""
    normalize = T.Normalize((mean,) * 3, (std,) * 3)
    train = T.Compose([T.RandomCrop(image_size, padding=image_size // 8), normalize])
    return train, normalize


def grayscale_transforms(
    image_size: int, mean: float, std: float, natural_size: int, flip: bool = True
) -> tuple[Transform, Transform]:
    """For uint8 grayscale tensors already repeated to 3 channels (Fashion-MNIST).

    The backbones' stems (and any pretrained weights) take 3 channels, so the gray channel is
    repeated rather than the stem changed; the dataset's own mean and std go to all three.
    Resized only when ``image_size`` is not the ``natural_size``. Training adds random shifts
    (crop with 1/8 padding, as CIFAR) and, with ``flip``, left-right flips (garments are
    mirror-symmetric; digits, which use :func:`tensor_transforms`, are not).
    """
    to_float = T.ConvertImageDtype(torch.float32)
    resize = [T.Resize(image_size, antialias=True)] if image_size != natural_size else []
    normalize = T.Normalize((mean,) * 3, (std,) * 3)
    augment = [T.RandomCrop(image_size, padding=image_size // 8)] + ([T.RandomHorizontalFlip()] if flip else [])
    train = T.Compose([to_float, *resize, *augment, normalize])
    evaluate = T.Compose([to_float, *resize, normalize])
    return train, evaluate


#: The parts of a backbone's input pipeline that the data module's options can set (timm's data-config keys).
PIPELINE_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def resolve_input_config(backbone_config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A backbone's data config (timm's: input_size, interpolation, mean, std, crop_pct, crop_mode) with the
    options that are set (not None) in ``overrides`` taking precedence; ``image_size`` sets a square input."""
    from timm.data import resolve_data_config

    args = {k: v for k, v in overrides.items() if v is not None}
    if "image_size" in args:
        args["img_size"] = args.pop("image_size")
    if "mean" in args:
        args["mean"] = tuple(args["mean"])
    if "std" in args:
        args["std"] = tuple(args["std"])
    return dict(resolve_data_config(args, pretrained_cfg=backbone_config))


def backbone_transforms(config: dict[str, Any]) -> tuple[Transform, Transform]:
    """The backbone's own pipeline (timm's ``create_transform``) from its data config.

    Evaluation and scoring: timm's eval transform (resize by ``crop_pct``, crop, normalise).
    Training: RandomResizedCrop + flip at the backbone's size, interpolation and normalisation,
    the augmentation of the paper's ImageNet setting (timm's colour jitter is left out).
    """
    from timm.data import create_transform

    options = {k: config[k] for k in PIPELINE_KEYS}
    train = create_transform(**options, is_training=True, color_jitter=None)
    evaluate = create_transform(**options, is_training=False)
    return T.Compose([FloatImage(), *train.transforms]), T.Compose([FloatImage(), *evaluate.transforms])


class FloatImage:
    """uint8 image tensors (Fashion-MNIST's) to float in [0, 1]; PIL images and float tensors pass unchanged.

    timm's pipeline takes PIL images or float tensors: its ``MaybeToTensor`` leaves a tensor as it is.
    """

    def __call__(self, image: Any) -> Any:
        if isinstance(image, torch.Tensor) and not image.is_floating_point():
            return T.functional.convert_image_dtype(image, torch.float32)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def describe_input_config(config: dict[str, Any]) -> str:
    """One line for logs and ``--print_config``: ``160 px, bicubic, crop 0.95 (center), mean (…), std (…)``."""
    size = config["input_size"][-1] if config["input_size"][-2] == config["input_size"][-1] else "×".join(map(str, config["input_size"][1:]))
    return (
        f"{size} px, {config['interpolation']}, crop {config['crop_pct']:.4g} ({config['crop_mode']}), "
        f"mean {_numbers(config['mean'])}, std {_numbers(config['std'])}"
    )


def _numbers(values: Any) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
