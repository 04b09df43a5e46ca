"""Initial backbone weights from self-supervised checkpoints and release files: MoCo, DINO, EsViT,
lightly, SimCLR ports, DINOv2, OpenAI CLIP, OpenCLIP, MAE, Lightning, timm and torchvision files.

Each :class:`CheckpointFormat` recognises one layout of a loaded file and renames the backbone's
tensors in it to the backbone's own key names, as timm's per-family ``checkpoint_filter_fn`` does;
the release files of today's ViTs go through timm's own filter. :func:`load_backbone_weights`
tries them in order and loads the first conversion that fits the backbone exactly (same keys,
same shapes), so a checkpoint is never half loaded.
"""

from __future__ import annotations

import argparse
import functools
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

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

#: A ViT's sizes by width, as papers and model cards name them (ViT-g is 1408 wide in CLIP, 1536 in DINOv2).
VIT_SIZES = {192: "Ti", 384: "S", 512: "M", 768: "B", 1024: "L", 1280: "H", 1408: "g", 1536: "g", 1664: "G"}

#: MAE's decoder and its mask token, in the ``*_full.pth`` files beside the encoder.
MAE_DECODER = ("decoder_", "mask_token")

State = dict[str, Tensor]


class CheckpointFormat(NamedTuple):
    """One checkpoint layout: ``detect(raw)`` tells whether a loaded file has it, ``convert(raw,
    backbone)`` returns the backbone's tensors in it under the backbone's key names."""

    name: str
    detect: Callable[[Any], bool]
    convert: Callable[[Any, nn.Module], State]


def _by_keys(convert: Callable[[Any, Sequence[str]], State]) -> Callable[[Any, nn.Module], State]:
    """A conversion that needs only the backbone's key names (every renaming format)."""

    @functools.wraps(convert)
    def by_keys(raw: Any, backbone: nn.Module) -> State:
        return convert(raw, list(backbone.state_dict()))

    return by_keys


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


# -- TorchScript archives, read as data ----------------------------------------------------------
#: The storage classes a TorchScript archive's pickle names, and their dtypes.
_SCRIPT_STORAGES = {
    f"{name}Storage": dtype
    for name, dtype in [
        ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16), ("BFloat16", torch.bfloat16),
        ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
        ("Byte", torch.uint8), ("Bool", torch.bool),
    ]
}


class TorchScriptArchive(dict):
    """The tensors of a TorchScript archive by state-dict name, and ``classes``: each module's
    class by path (``visual.transformer.resblocks.0.mlp.gelu``: ``__torch__.model.QuickGELU``)."""

    def __init__(self, tensors: State, classes: dict[str, str]) -> None:
        super().__init__(tensors)
        self.classes = classes


class _ScriptObject:
    """A module of a TorchScript archive as data: its class name and its attributes, no code."""

    qualname = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's ``data.pkl`` without running any of its code: the archive's
    own classes (``__torch__.*``) become inert :class:`_ScriptObject` records, tensors are rebuilt
    from the archive's ``data/`` entries, and any other global is refused."""

    def __init__(self, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(archive.open(f"{root}data.pkl"))
        self.archive, self.root = archive, root
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {"qualname": f"{module}.{name}"})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _SCRIPT_STORAGES:
            return _SCRIPT_STORAGES[name]
        raise pickle.UnpicklingError(f"a TorchScript archive with a {module}.{name} object, not only modules and tensors")

    def persistent_load(self, pid: Any) -> Tensor:
        """A storage, ``("storage", dtype, key, location, numel)``: the bytes of ``data/<key>``, as a flat tensor."""
        _, dtype, key, _, numel = pid
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype, count=numel) if numel else torch.empty(0, dtype=dtype)
        return self.storages[key]

    @staticmethod
    def rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> Tensor:
        return storage.as_strided(size, stride, offset)


def _script_tensors(obj: _ScriptObject, prefix: str, tensors: State, classes: dict[str, str]) -> None:
    """Walk a module tree of :class:`_ScriptObject`: every tensor under its state-dict name, every module's class."""
    classes[prefix.removesuffix(".")] = obj.qualname
    for name, value in (obj.state if isinstance(obj.state, Mapping) else {}).items():
        if isinstance(value, Tensor):
            tensors[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _script_tensors(value, f"{prefix}{name}.", tensors, classes)


def _read_torchscript(path: Path) -> Optional[TorchScriptArchive]:
    """A TorchScript archive's tensors (``torch.jit.save``, as OpenAI's ``clip.load`` downloads),
    read without ``torch.jit.load``: that would run the archive's code. ``None`` if ``path`` is
    no TorchScript archive (a ``torch.save`` zip has no ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        roots = [n.removesuffix("constants.pkl") for n in archive.namelist() if n.count("/") == 1 and n.endswith("/constants.pkl")]
        if not roots:
            return None
        top = _ScriptUnpickler(archive, roots[0]).load()
    tensors: State = {}
    classes: dict[str, str] = {}
    if isinstance(top, _ScriptObject):
        _script_tensors(top, "", tensors, classes)
    return TorchScriptArchive(tensors, classes)


# -- release files of today's ViTs, through timm's own conversion ------------------------------------
class ViTArch(NamedTuple):
    """What a ViT's tensors say of its architecture: width, patch size, blocks and register tokens."""

    width: int
    patch: int
    depth: int
    registers: int

    def name(self, depth: bool = False) -> str:
        """``ViT-B/16``, ``ViT-S/14 with 4 registers``; with ``depth``, the number of blocks too."""
        size = VIT_SIZES.get(self.width, f"{self.width}d")
        registers = f" with {self.registers} registers" if self.registers else ""
        return f"ViT-{size}/{self.patch}{registers}" + (f" ({self.depth} blocks)" if depth else "")


def _vit_arch(state: Mapping[str, Tensor]) -> Optional[ViTArch]:
    """The ViT in ``state``, in timm's names (``patch_embed.proj``, ``blocks.N``, ``reg_token``) or
    DINOv2's (``register_tokens``), OpenAI's and OpenCLIP's (``visual.conv1``,
    ``visual.transformer.resblocks.N``), under any prefix; ``None`` for anything else."""
    patch_key = next((k for k in state if k.endswith(("patch_embed.proj.weight", "visual.conv1.weight"))), None)
    if patch_key is None or state[patch_key].ndim != 4:
        return None
    prefix = patch_key.removesuffix("patch_embed.proj.weight").removesuffix("conv1.weight")
    blocks = re.compile(re.escape(prefix) + r"(?:transformer\.res)?blocks\.(\d+)\.")
    depth = len({m.group(1) for m in map(blocks.match, state) if m})
    if not depth:  # a Swin's or a ConvNet's patch embedding: its blocks sit in stages
        return None
    tokens = next((state[prefix + k] for k in ("reg_token", "register_tokens") if prefix + k in state), None)
    width, _, patch, _ = state[patch_key].shape
    return ViTArch(width, patch, depth, 0 if tokens is None else tokens.shape[1])


def _describe(backbone: nn.Module) -> str:
    """The backbone as a user named it: its ViT architecture, else its timm or class name."""
    arch = _vit_arch(backbone.state_dict())
    if arch:
        return arch.name()
    return getattr(backbone, "pretrained_cfg", {}).get("architecture") or type(backbone).__name__


def _check_architecture(state: Mapping[str, Tensor], backbone: nn.Module, what: str = "") -> None:
    """One line naming both architectures when ``state`` holds a ViT other than the backbone,
    before any conversion resamples one into the other (timm's filter resizes patch embeddings)."""
    arch, own = _vit_arch(state), _vit_arch(backbone.state_dict())
    if arch is None or arch == own:
        return
    depth = own is not None and arch.name() == own.name()  # only the number of blocks differs
    mine = own.name(depth) if own is not None else _describe(backbone)
    raise ConfigurationError(f"{arch.name(depth)} weights{what}, backbone is {mine}: pick a --model.backbone of the file's architecture")


def _activation(backbone: nn.Module) -> str:
    """The class name of the backbone's first MLP activation (``GELU``, ``QuickGELU``), or ``""``."""
    blocks = getattr(backbone, "blocks", None)
    act = getattr(getattr(blocks[0], "mlp", None), "act", None) if blocks else None
    return type(act).__name__ if act is not None else ""


def _timm_vit_filter(state: State, backbone: nn.Module, what: str) -> State:
    """``state`` converted by timm's ``vision_transformer.checkpoint_filter_fn`` (OpenAI/OpenCLIP
    and DINOv2 key names, DINOv2's register tokens, pos_embed resampled to the backbone's image
    size), after checking that the file's ViT is the backbone's; heads the backbone lacks dropped
    (CLIP's projection to the text space: the CLIP paper's linear probes read the features before it)."""
    _check_architecture(state, backbone, what)
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if not isinstance(backbone, VisionTransformer):
        raise ConfigurationError(f"{_vit_arch(state).name()} weights{what}, backbone is a {type(backbone).__name__}, not timm's VisionTransformer")
    own = backbone.state_dict()
    converted = checkpoint_filter_fn(dict(state), backbone)
    return {k: v for k, v in converted.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES)}


def _is_dinov2(raw: Any) -> bool:
    """A DINOv2 hub ``.pth`` (``dinov2_vits14_pretrain.pth``, ``dinov2_vits14_reg4_pretrain.pth``): a
    bare state dict of ``DinoVisionTransformer`` with its ``mask_token`` (and ``register_tokens``)."""
    state = _weights(raw)
    return "mask_token" in state and "cls_token" in state and not _has(state, "decoder_")


def _dinov2(raw: Any, backbone: nn.Module) -> State:
    """DINOv2 (facebookresearch/dinov2): into timm's ``vit_*_patch14_dinov2`` / ``*_reg4_dinov2``."""
    return _timm_vit_filter(_weights(raw), backbone, " (DINOv2)")


def _is_clip(raw: Any) -> bool:
    """A CLIP model's state dict (OpenAI's names, used by OpenCLIP too; OpenCLIP's timm towers under ``visual.trunk``)."""
    return _has(_weights(raw), "visual.class_embedding", "visual.trunk.")


def _clip(raw: Any, backbone: nn.Module) -> State:
    """OpenCLIP's released files (``open_clip_pytorch_model.bin``, ``.safetensors``, training
    checkpoints under ``state_dict`` with DDP's ``module.``) and OpenAI CLIP state dicts: the image
    tower, the text tower left out, through timm's filter."""
    return _timm_vit_filter(_weights(raw), backbone, " (CLIP)")


def _openai_clip(raw: TorchScriptArchive, backbone: nn.Module) -> State:
    """OpenAI's ``clip.load`` files (TorchScript archives of ``clip/model.py``'s CLIP): as :func:`_clip`,
    but the archive names its modules' classes, so a QuickGELU model meeting a GELU backbone (the
    embeddings differ by ~4e-2) is refused with the timm name to use."""
    state = _clip(raw, backbone)
    quick = any(name.endswith("QuickGELU") for path, name in raw.classes.items() if path.startswith("visual."))
    act = _activation(backbone)
    if quick and act != "QuickGELU":
        arch = getattr(backbone, "pretrained_cfg", {}).get("architecture", "")
        hint = f"use --model.backbone={arch.replace('_clip_', '_clip_quickgelu_')}" if "_clip_" in arch else "use a *_clip_quickgelu_* timm model"
        raise ConfigurationError(
            f"OpenAI CLIP {_vit_arch(raw).name()} weights with QuickGELU, backbone {arch or _describe(backbone)} has "
            f"{act or 'another activation'} (embeddings ~4e-2 apart): {hint}"
        )
    return state


def _is_mae(raw: Any) -> bool:
    """MAE's ``*_full.pth`` (facebookresearch/mae): ``{"model": ...}`` of ``MaskedAutoencoderViT``, decoder included."""
    return _has(_weights(raw), "decoder_embed.", "decoder_blocks.")


def _mae(raw: Any, backbone: nn.Module) -> State:
    """The MAE encoder (timm's ViT names already), its decoder and mask token dropped, through timm's
    filter. The encoder-only ``mae_pretrain_vit_*.pth`` files need no format of their own: ``state_dict``."""
    state = {k: v for k, v in _weights(raw).items() if not k.startswith(MAE_DECODER)}
    return _timm_vit_filter(state, backbone, " (MAE)")


#: Tried in this order; the first whose conversion fits the backbone wins.
FORMATS: tuple[CheckpointFormat, ...] = (
    CheckpointFormat("moco_v2", lambda raw: _has(_weights(raw), "encoder_q."), _by_keys(_moco_v2)),
    CheckpointFormat("moco_v3", lambda raw: _has(_weights(raw), "base_encoder."), _by_keys(_moco_v3)),
    CheckpointFormat("dino", lambda raw: _has(_dino_network(raw), "head.last_layer."), _by_keys(_dino)),
    CheckpointFormat("esvit", lambda raw: _microsoft_swin(_dino_network(raw)), _by_keys(_esvit)),
    CheckpointFormat("lightly", lambda raw: _has(_weights(raw), *LIGHTLY_HEADS), _by_keys(_lightly)),
    CheckpointFormat(
        "simclr",
        lambda raw: _has(_weights(raw), "encoder.", "convnet.", "f.", "backbone.")
        and _has(_weights(raw), "projector", "projection", "g.", "convnet.fc.", "backbone.fc."),
        _by_keys(_simclr),
    ),
    CheckpointFormat("dinov2", _is_dinov2, _dinov2),
    CheckpointFormat("openai_clip", lambda raw: isinstance(raw, TorchScriptArchive) and _is_clip(raw), _openai_clip),
    CheckpointFormat("clip", lambda raw: not isinstance(raw, TorchScriptArchive) and _is_clip(raw), _clip),
    CheckpointFormat("mae", _is_mae, _mae),
    CheckpointFormat("lightning", lambda raw: isinstance(raw, Mapping) and "pytorch-lightning_version" in raw, _by_keys(_anywhere)),
    CheckpointFormat("state_dict", lambda raw: bool(_weights(raw)) and "pytorch-lightning_version" not in raw, _by_keys(_anywhere)),
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
    """The file's contents, read without running pickled code; ``.safetensors`` files (timm's hub
    weights) and TorchScript archives (OpenAI CLIP's) as such."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        script = _read_torchscript(path)
        if script is not None:
            return script
        # DINO's and timm's training checkpoints keep their argparse arguments beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except ConfigurationError:
        raise
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

    SSL checkpoints and release files hold more than the backbone (projection heads, momentum
    encoders, queues, decoders, CLIP's text tower, optimizer state) under names of their own
    codebase; each format picks the backbone out and renames it. A ViT file of another
    architecture than the backbone's fails with one line naming both. Only an exact fit (every
    key, every shape) is loaded; otherwise the error lists each format tried and, for the
    closest, the missing, unexpected and mis-shaped keys.
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
        try:
            state = fmt.convert(raw, backbone)
            _check_architecture(state, backbone, f" ({fmt.name} format)")
        except ConfigurationError as err:
            raise ConfigurationError(f"'{path}' holds {err}") from None
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
