"""Loading initial backbone weights from a file."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from al_lightning.errors import ConfigurationError


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a backbone ``state_dict`` saved with ``torch.save`` into ``backbone``, strictly.

    Keys must match the backbone's own (a classifier's ``fc.*``/``head.*`` keys are
    dropped). A mismatch fails with the missing and unexpected keys.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"pretrained backbone weights '{path}' not found; pass an existing file to --model.pretrained")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise ConfigurationError(f"cannot read pretrained weights '{path}': {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigurationError(f"'{path}' is not a plain state_dict of tensors (a dict name → tensor)")
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(("fc.", "head."))}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigurationError(
            f"weights in '{path}' do not fit the backbone: missing keys {missing[:10]}"
            f"{'...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}"
        )
    try:
        backbone.load_state_dict(state)
    except RuntimeError as err:  # same keys, different shapes
        raise ConfigurationError(f"weights in '{path}' do not fit the backbone: {err}") from err
