"""SSL methods by name, and the factory behind ``pretrain.py``'s ``--model.*`` arguments."""

from __future__ import annotations

import inspect
from typing import Literal, Optional

from al_lightning.errors import ConfigurationError
from al_lightning.ssl.base import SelfSupervisedModule
from al_lightning.ssl.moco import MoCoV2
from al_lightning.ssl.simclr import SimCLR

#: ``--model.method`` names.
METHODS: dict[str, type[SelfSupervisedModule]] = {"simclr": SimCLR, "moco_v2": MoCoV2}


def build_method(
    method: str = "simclr",
    backbone: Optional[str] = None,
    cifar_stem: Optional[bool] = None,
    optimizer: Optional[Literal["adam", "sgd"]] = None,
    lr: Optional[float] = None,
    weight_decay: Optional[float] = None,
    momentum: Optional[float] = None,
    betas: Optional[tuple[float, float]] = None,
    temperature: Optional[float] = None,
    projection_dim: Optional[int] = None,
    key_momentum: Optional[float] = None,
    memory_bank_size: Optional[int] = None,
    backbone_out: Optional[str] = None,
) -> SelfSupervisedModule:
    """The SSL module ``METHODS[method]``; every argument left unset takes that method's default.

    The method classes own their paper's defaults, so one flat ``--model.*`` namespace serves
    all of them; the values used end up in ``hparams.yaml``. ``key_momentum`` and
    ``memory_bank_size`` apply to ``moco_v2`` only. See :class:`SelfSupervisedModule`,
    :class:`SimCLR` and :class:`MoCoV2` for the meaning of each argument.
    """
    options = {name: value for name, value in locals().items() if value is not None}
    name = options.pop("method").strip().lower()
    if name not in METHODS:
        raise ConfigurationError(f"unknown SSL method '{method}'; choose one of: {', '.join(METHODS)}")
    cls = METHODS[name]
    accepted = set(inspect.signature(cls).parameters) | set(inspect.signature(SelfSupervisedModule).parameters)
    foreign = sorted(set(options) - accepted)
    if foreign:
        raise ConfigurationError(f"method '{name}' takes no {', '.join('--model.' + arg for arg in foreign)}")
    return cls(**options)
