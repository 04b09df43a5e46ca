"""``PretrainCLI``: ``python pretrain.py fit --config configs/ssl/X.yaml`` trains a backbone for ``train.py``."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from pytorch_lightning.cli import LightningCLI

from al_lightning.errors import ConfigurationError
from al_lightning.ssl.data import SSLDataModule
from al_lightning.ssl.methods import build_method


class PretrainCLI(LightningCLI):
    """LightningCLI over :func:`build_method` (``--model.*``) and :class:`SSLDataModule` (``--data.*``).

    ``--model.method`` picks the method (``simclr`` or ``moco_v2``); the data module then uses
    that method's augmentations unless ``--data.view_transform`` says otherwise. At the end of
    fit the trunk's ``state_dict`` is written to ``--model.backbone_out`` (default
    ``<log_dir>/backbone.pt``), ready for ``train.py --model.pretrained`` with the same
    ``backbone`` and ``cifar_stem``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", build_method)
        kwargs.setdefault("datamodule_class", SSLDataModule)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of ``pretrain.py``: configuration mistakes end with one line, not a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must not wait on a hub: backbones start from scratch
    try:
        PretrainCLI(args=args)
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
