"""``PretrainCLI``: ``python pretrain.py fit --config configs/ssl/X.yaml`` trains a backbone for ``train.py``."""

from __future__ import annotations

from typing import Any, Optional

from pytorch_lightning.cli import LightningCLI

from al_lightning.cli import run_cli
from al_lightning.config_files import PROJECT_CONFIGS
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
    """Entry point of ``pretrain.py``."""
    run_cli(PretrainCLI, args, configs=PROJECT_CONFIGS / "ssl")
