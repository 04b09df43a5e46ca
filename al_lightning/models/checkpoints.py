"""Initial backbone weights from self-supervised checkpoints: MoCo, DINO, EsViT, lightly, SimCLR ports,
Lightning, timm and torchvision files.

Each :class:`CheckpointFormat` recognises one layout of a loaded file and renames the backbone's
tensors in it to the backbone's own key names, as timm's per-family ``checkpoint_filter_fn`` does.
:func:`load_backbone_weights` tries them in order and loads the first conversion that fits the
backbone exactly (same keys, same shapes), so a checkpoint is never half loaded.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from al_lightning.errors import ConfigurationError

log = logging.getLogger(__name__)

#: Classifier slots of torchvision (``fc``) and timm (``head``, ``head.fc``, ``fc``, ``classifier``)
#: models, where SSL code also puts its projection MLP (MoCo's ``encoder_q.fc``, MoCo v3's ViT
#: ``head``); keys there are dropped unless the backbone has them.
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.")

#: Heads of lightly's models (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, DINO, ...).
LIGHTLY_HEADS = ("projection_head.", "prediction_head.", "student_head.", "teacher_head.")

#: EsViT's heads on its Swin: the DINO head put in the Swin's own ``head`` slot, and the
#: region-level head ``head_dense`` beside it (``--use_dense_prediction``).
ESVIT_HEADS = ("head.", "head_dense.")

#: Buffers of the Microsoft Swin code that it saves and timm does not (timm recomputes them).
SWIN_BUFFERS = ("relative_position_index", "attn_mask")

#: A stage's PatchMerging in a Swin state dict, under any prefix: ``layers.{i}.downsample.``.
_SWIN_DOWNSAMPLE = re.compile(r"(^|\.)layers\.(\d+)\.downsample\.")

State = dict[str, Tensor]


class CheckpointFormat(NamedTuple):
    """One checkpoint layout: ``detect(raw)`` tells whether a loaded file has it, ``convert(raw,
    own_keys)`` returns the backbone's tensors in it under the backbone's key names."""

    name: str
    detect: Callable[[Any], bool]
    convert: Callable[[Any, Sequence[str]], State]


# -- taking a state dict apart ------------------------------------------------------------------
def _tensors(state: Any) -> State:
    """The tensors of a state dict, with DDP's ``module.`` prefix removed; ``{}`` for anything else."""
    if not isinstance(state, Mapping):
        return {}
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}


def _weights(raw: Any) -> State:
    """A file's model weights: its ``state_dict`` (Lightning, MoCo, timm's train.py) or ``model``
    (DeiT, SupContrast) entry, else the file itself."""
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                return _tensors(raw[key])
    return _tensors(raw)


def _has(state: Mapping[str, Tensor], *prefixes: str) -> bool:
    return any(key.startswith(prefixes) for key in state)


def _prefixes(state: Mapping[str, Tensor], own_keys: Sequence[str]) -> list[str]:
    """Where the backbone may sit in ``state``: each key's part before the first of the backbone's
    top-level names (or a Sequential index), in order of first appearance, and ``""``."""
    top = {key.split(".", 1)[0] for key in own_keys}
    found = {"": None}
    for key in state:
        parts = key.split(".")
        cut = next((i for i, part in enumerate(parts) if part in top or part.isdigit()), 0)
        found[".".join(parts[:cut]) + "." if cut else ""] = None
    return list(found)


def _unsequential(state: State, own_keys: Sequence[str]) -> State:
    """Rename the child indices of ``nn.Sequential(*list(resnet.children())[:-1])`` to the backbone's names.

    lightly's examples and SimCLR ports keep a ResNet trunk that way (``0.weight`` is
    ``conv1.weight``, ``4.0.conv1.weight`` is ``layer1.0.conv1.weight``). Children without weights
    (ReLU, pooling, sometimes dropped) leave gaps, so the i-th index with weights becomes the
    backbone's i-th child with weights.
    """
    split = [(key.split(".", 1), value) for key, value in state.items()]
    names = list(dict.fromkeys(key.split(".", 1)[0] for key in own_keys))
    if not all(len(parts) == 2 and parts[0].isdigit() for parts, _ in split) or any(n.isdigit() for n in names):
        return state
    indices = sorted({int(index) for (index, _), _ in split})
    if len(indices) != len(names):
        return state
    rename = dict(zip(indices, names))
    return {f"{rename[int(index)]}.{rest}": value for (index, rest), value in split}


def _under(state: State, prefix: str, own_keys: Sequence[str]) -> State:
    """The tensors under ``prefix``, renamed to the backbone's keys; classifier keys it lacks dropped."""
    inner = _unsequential({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, own_keys)
    own = set(own_keys)
    return {k: v for k, v in inner.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES)}


def _best(state: State, own_keys: Sequence[str], prefixes: Sequence[str]) -> State:
    """The backbone's tensors under whichever prefix matches its keys best; ties go to the earlier
    prefix (the online encoder over its momentum copy, DINO's teacher over its student)."""
    own = set(own_keys)
    candidates = [_under(state, prefix, own_keys) for prefix in dict.fromkeys(prefixes)]
    return max(candidates, key=lambda c: len(own & c.keys()) - len(c.keys() - own))


# -- the formats ----------------------------------------------------------------------------------
def _moco_v2(raw: Any, own_keys: Sequence[str]) -> State:
    """MoCo v1/v2 (facebookresearch/moco): ``encoder_q``; its ``fc`` projector, ``encoder_k`` and ``queue`` dropped."""
    return _best(_weights(raw), own_keys, ["encoder_q."])


def _moco_v3(raw: Any, own_keys: Sequence[str]) -> State:
    """MoCo v3 (facebookresearch/moco-v3): ``base_encoder``; its projector, ``predictor`` and ``momentum_encoder`` dropped."""
    return _best(_weights(raw), own_keys, ["base_encoder."])


def _dino_network(raw: Any) -> State:
    """DINO's ``teacher`` network, else its ``student``, else the file itself (a saved ``teacher.state_dict()``)."""
    if isinstance(raw, Mapping):
        for key in ("teacher", "student"):
            if isinstance(raw.get(key), Mapping):
                return _tensors(raw[key])
    return _weights(raw)


def _dino(raw: Any, own_keys: Sequence[str]) -> State:
    """DINO (facebookresearch/dino): the teacher's (else student's) ``backbone``; the DINO ``head`` dropped."""
    return _best(_dino_network(raw), own_keys, ["backbone."])


def _microsoft_swin(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` holds a Swin in the Microsoft layout (microsoft/Swin-Transformer, which EsViT
    copies): stage 0 ends with a PatchMerging there, while timm's stage 0 starts without one."""
    return any(re.search(r"(^|\.)layers\.0\.downsample\.reduction\.weight$", key) for key in state)


def _swin_to_timm(state: State, own_keys: Sequence[str]) -> State:
    """A Microsoft-layout Swin renamed to timm's: the parameter names are the same but for where the
    PatchMerging sits (the END of stage i there, the START of stage i + 1 in timm, so
    ``layers.{i}.downsample`` becomes ``layers.{i+1}.downsample``), and the saved
    ``relative_position_index``/``attn_mask`` buffers are dropped unless the backbone keeps them.
    The same renaming as timm's ``swin_transformer.checkpoint_filter_fn``, under any prefix."""
    own = set(own_keys)
    renamed = {}
    for key, value in state.items():
        key = _SWIN_DOWNSAMPLE.sub(lambda m: f"{m.group(1)}layers.{int(m.group(2)) + 1}.downsample.", key)
        if key.rsplit(".", 1)[-1] in SWIN_BUFFERS and key not in own:
            continue
        renamed[key] = value
    return renamed


def _esvit(raw: Any, own_keys: Sequence[str]) -> State:
    """EsViT (microsoft/esvit) Swin: the teacher's (else student's) Swin, renamed to timm's Swin
    (:func:`_swin_to_timm`); the DINO ``head`` and ``head_dense`` dropped.

    EsViT puts its heads into the Swin itself (``teacher.head = DINOHead(...)``), so the keys are
    the Swin's own (``layers.0.blocks.0.attn.qkv.weight``; the student's under DDP's ``module.``);
    a ``backbone.`` prefix (DINO's ``MultiCropWrapper``) is found as well. Also reads Microsoft's own
    Swin checkpoints (``{"model": ...}`` of microsoft/Swin-Transformer), whose ``head`` is dropped.
    """
    own = set(own_keys)
    state = {k: v for k, v in _dino_network(raw).items() if k in own or not k.startswith(ESVIT_HEADS)}
    prefix = "backbone." if _has(state, "backbone.layers.") else ""
    return _swin_to_timm(_under(state, prefix, own_keys), own_keys)


def _lightly(raw: Any, own_keys: Sequence[str]) -> State:
    """lightly models (lightly-ai/lightly, this project's pretraining): ``backbone`` or ``teacher_backbone``, heads dropped."""
    state = _weights(raw)
    return _best(state, own_keys, ["backbone.", "teacher_backbone.", *_prefixes(state, own_keys)])


def _simclr(raw: Any, own_keys: Sequence[str]) -> State:
    """SimCLR ports: ``encoder`` (Spijkervet), ``convnet`` (UvA DL course), ``f`` (leftthomas), ``backbone`` (sthalles)."""
    return _best(_weights(raw), own_keys, ["encoder.", "convnet.", "f.", "backbone."])


def _anywhere(raw: Any, own_keys: Sequence[str]) -> State:
    """Lightning (``ActiveClassifier`` too), timm, torchvision and other files: the backbone under any prefix."""
    state = _weights(raw)
    return _best(state, own_keys, _prefixes(state, own_keys))


#: Tried in this order; the first whose conversion fits the backbone wins.
FORMATS: tuple[CheckpointFormat, ...] = (
    CheckpointFormat("moco_v2", lambda raw: _has(_weights(raw), "encoder_q."), _moco_v2),
    CheckpointFormat("moco_v3", lambda raw: _has(_weights(raw), "base_encoder."), _moco_v3),
    CheckpointFormat("dino", lambda raw: _has(_dino_network(raw), "head.last_layer."), _dino),
    CheckpointFormat("esvit", lambda raw: _microsoft_swin(_dino_network(raw)), _esvit),
    CheckpointFormat("lightly", lambda raw: _has(_weights(raw), *LIGHTLY_HEADS), _lightly),
    CheckpointFormat(
        "simclr",
        lambda raw: _has(_weights(raw), "encoder.", "convnet.", "f.", "backbone.")
        and _has(_weights(raw), "projector", "projection", "g.", "convnet.fc.", "backbone.fc."),
        _simclr,
    ),
    CheckpointFormat("lightning", lambda raw: isinstance(raw, Mapping) and "pytorch-lightning_version" in raw, _anywhere),
    CheckpointFormat("state_dict", lambda raw: bool(_weights(raw)) and "pytorch-lightning_version" not in raw, _anywhere),
)


# -- loading --------------------------------------------------------------------------------------
class _Mismatch(NamedTuple):
    """How a converted state dict misses the backbone (empty lists: it fits)."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.shapes)

    def summary(self) -> str:
        return f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.shapes)} wrong shapes"

    def details(self) -> str:
        def first10(keys: list[str]) -> str:
            return f"{keys[:10]}{'...' if len(keys) > 10 else ''}"

        shapes = f", shape mismatches {first10(self.shapes)}" if self.shapes else ""
        return f"missing keys {first10(self.missing)}, unexpected keys {first10(self.unexpected)}{shapes}"


def _mismatch(state: State, own: Mapping[str, Tensor]) -> _Mismatch:
    """Compare keys and shapes; BatchNorm's step counter may be absent (converted TF/JAX weights lack it)."""
    return _Mismatch(
        missing=sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked")),
        unexpected=sorted(k for k in state if k not in own),
        shapes=[
            f"{k}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the backbone"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ],
    )


def _read(path: Path) -> Any:
    """The file's contents, read without running pickled code; ``.safetensors`` files (timm's hub weights) as such."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        # DINO's and timm's training checkpoints keep their argparse arguments beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the reader trips on, the file is not usable
        raise ConfigurationError(f"pretrained weights '{path}' are not a tensor checkpoint: {_why_unreadable(err)}") from err


def _why_unreadable(err: Exception) -> str:
    """The useful line of a reader's error: torch's ``weights_only`` refusal is a page long."""
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if unsupported:
        return f"it pickles a {unsupported.group(1)} object, not only tensors; save torch.save(model.state_dict(), path) instead"
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'unreadable'}"


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> str:
    """Load the backbone weights of a checkpoint in any of :data:`FORMATS` into ``backbone``; returns the format's name.

    SSL checkpoints hold more than the backbone (projection heads, momentum encoders, queues,
    optimizer state) under names of their own codebase; each format picks the backbone out and
    renames it. Only an exact fit (every key, every shape) is loaded; otherwise the error lists
    each format tried and, for the closest, the missing, unexpected and mis-shaped keys.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"pretrained backbone weights '{path}' not found; pass an existing file to --model.pretrained")
    raw = _read(path)
    own = backbone.state_dict()
    tried: list[tuple[str, _Mismatch]] = []
    for fmt in FORMATS:
        if not fmt.detect(raw):
            continue
        state = fmt.convert(raw, list(own))
        mismatch = _mismatch(state, own)
        if not mismatch.size():
            backbone.load_state_dict(state)
            log.info("loaded %s backbone weights from '%s'", fmt.name, path)
            return fmt.name
        tried.append((fmt.name, mismatch))
    if not tried:
        top = list(raw)[:10] if isinstance(raw, Mapping) else type(raw).__name__
        raise ConfigurationError(f"'{path}' holds no tensors by name (it has {top}); expected a checkpoint or a state_dict")
    name, closest = min(tried, key=lambda t: t[1].size())
    skipped = [fmt.name for fmt in FORMATS if fmt.name not in dict(tried)]
    raise ConfigurationError(
        f"weights in '{path}' do not fit the backbone in any checkpoint format; tried "
        + ", ".join(f"{n} ({m.summary()})" for n, m in tried)
        + (f"; not detected: {', '.join(skipped)}" if skipped else "")
        + f"; closest, {name}: {closest.details()}"
    )
