"""Backbone weights from SSL checkpoints: every format loads bit-exactly; misfits name their keys.

Each checkpoint is built by hand the way its codebase saves it, around a source backbone whose
every tensor is random (BatchNorm statistics and step counters included), with a second random
copy wherever the codebase keeps one (momentum encoder, DINO student) so that loading the wrong
copy fails the comparison.
"""

from __future__ import annotations

import argparse
import copy
import functools
from typing import Any, Callable, NamedTuple

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier, build_backbone
from al_lightning.models.checkpoints import FORMATS, load_backbone_weights

RESNET, VIT = "resnet18", "vit_tiny_patch16_224"


class Source(NamedTuple):
    """The weights to find (``net``), the decoy copy (``other``), the embedding size and classifier slot."""

    name: str
    net: nn.Module
    other: nn.Module
    dim: int
    slot: str


def randomised(name: str, seed: int) -> nn.Module:
    """A backbone whose every tensor differs from a fresh initialisation."""
    torch.manual_seed(seed)
    net, _ = build_backbone(name)
    with torch.no_grad():
        for value in net.state_dict().values():
            value.copy_(torch.rand_like(value) if value.is_floating_point() else torch.full_like(value, seed + 7))
    return net


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The work here is copying tensors; extra threads only add overhead on a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def make_source(name: str) -> Source:
    net, other = randomised(name, seed=0), randomised(name, seed=1)
    return Source(name, net, other, build_backbone(name)[1], "fc" if name == RESNET else "head")


@functools.cache
def blank(name: str) -> nn.Module:
    torch.manual_seed(123)
    return build_backbone(name)[0]


def fresh(name: str) -> nn.Module:
    """A freshly initialised backbone (seed 123: unlike either source copy), without paying for the init each time."""
    return copy.deepcopy(blank(name))


@pytest.fixture(params=[RESNET, VIT])
def source(request: pytest.FixtureRequest) -> Source:
    return make_source(request.param)


# -- pieces of checkpoints ------------------------------------------------------------------------
def under(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def mlp(prefix: str, dims: list[int]) -> dict[str, torch.Tensor]:
    """A projection MLP's weights (Linear, BatchNorm/ReLU, Linear, ...) as ``prefix.0``, ``prefix.2``, ..."""
    layers = {}
    for i, (d_in, d_out) in enumerate(zip(dims, dims[1:])):
        layers[f"{prefix}.{2 * i}.weight"] = torch.randn(d_out, d_in)
        layers[f"{prefix}.{2 * i}.bias"] = torch.randn(d_out)
    return layers


def sequential(net: nn.Module, drop: tuple[type, ...] = ()) -> dict[str, torch.Tensor]:
    """``nn.Sequential(*list(resnet.children())[:-1])``, optionally without some children (leftthomas drops the max-pool)."""
    return nn.Sequential(*[c for c in list(net.children())[:-1] if not isinstance(c, drop)]).state_dict()


def trunk(s: Source, net: nn.Module) -> dict[str, torch.Tensor]:
    """How lightly's examples keep a backbone: a ResNet as a Sequential of its children, a ViT as is."""
    return sequential(net) if s.name == RESNET else net.state_dict()


def sgd_state() -> dict[str, Any]:
    return {"state": {0: {"momentum_buffer": torch.randn(4)}}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}


def lightning(state_dict: dict[str, torch.Tensor], **hyper_parameters: Any) -> dict[str, Any]:
    """A ``Trainer.save_checkpoint`` file."""
    return {
        "epoch": 99,
        "global_step": 3900,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 99}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.5), "dirpath": "/runs/ckpt"}},
        "optimizer_states": [sgd_state()],
        "lr_schedulers": [{"T_max": 100, "last_epoch": 99, "base_lrs": [0.03]}],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


# -- one builder per format and codebase ------------------------------------------------------------
def moco_v2(s: Source, ddp: bool = True) -> dict[str, Any]:
    m = "module." if ddp else ""
    state = {
        **under(f"{m}encoder_q.", {**s.net.state_dict(), **mlp(s.slot, [s.dim, s.dim, 128])}),
        **under(f"{m}encoder_k.", {**s.other.state_dict(), **mlp(s.slot, [s.dim, s.dim, 128])}),
        f"{m}queue": torch.randn(128, 64),
        f"{m}queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    return {"epoch": 200, "arch": s.name, "state_dict": state, "optimizer": sgd_state()}


def moco_v3(s: Source, ddp: bool = True) -> dict[str, Any]:
    m = "module." if ddp else ""
    state = {
        **under(f"{m}base_encoder.", {**s.net.state_dict(), **mlp(s.slot, [s.dim, 64, 32])}),
        **under(f"{m}momentum_encoder.", {**s.other.state_dict(), **mlp(s.slot, [s.dim, 64, 32])}),
        **mlp(f"{m}predictor", [32, 64, 32]),
    }
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 7}
    return {"epoch": 100, "arch": s.name, "state_dict": state, "optimizer": sgd_state(), "scaler": scaler}


def dino_head() -> dict[str, torch.Tensor]:
    return {**mlp("head.mlp", [8, 16, 4]), "head.last_layer.weight_g": torch.ones(32, 1), "head.last_layer.weight_v": torch.randn(32, 4)}


def dino(s: Source) -> dict[str, Any]:
    return {
        "student": under("module.", {**under("backbone.", s.other.state_dict()), **dino_head()}),
        "teacher": {**under("backbone.", s.net.state_dict()), **dino_head()},
        "optimizer": sgd_state(),
        "epoch": 100,
        "args": argparse.Namespace(arch=s.name, out_dim=65536, lr=0.0005),
        "dino_loss": {"center": torch.randn(1, 32)},
    }


def dino_teacher(s: Source) -> dict[str, torch.Tensor]:
    return {**under("backbone.", s.net.state_dict()), **dino_head()}


def lightly_simclr(s: Source) -> dict[str, Any]:
    head = mlp("projection_head.layers", [s.dim, s.dim, 128])
    return lightning({**under("backbone.", trunk(s, s.net)), **head}, temperature=0.5)


def lightly_moco(s: Source) -> dict[str, Any]:
    state = {
        **under("backbone.", s.net.state_dict()),
        **mlp("projection_head.layers", [s.dim, 128]),
        **under("backbone_momentum.", s.other.state_dict()),
        **mlp("projection_head_momentum.layers", [s.dim, 128]),
    }
    return lightning(state, memory_bank_size=4096)


def lightly_dino(s: Source) -> dict[str, Any]:
    state = {
        **under("student_backbone.", trunk(s, s.other)),
        **mlp("student_head.layers", [s.dim, 64]),
        **under("teacher_backbone.", trunk(s, s.net)),
        **mlp("teacher_head.layers", [s.dim, 64]),
    }
    return lightning(state)


def lightly_masked_vit(s: Source) -> dict[str, Any]:
    """lightly's MAE: ``MaskedVisionTransformerTIMM`` keeps the timm ViT as ``backbone.vit``; no lightly head."""
    decoder = {"decoder.decoder_embed.weight": torch.randn(64, s.dim), "decoder.mask_token": torch.zeros(1, 1, 64)}
    return lightning({**under("backbone.vit.", s.net.state_dict()), **decoder}, mask_ratio=0.75)


def simclr_leftthomas(s: Source) -> dict[str, torch.Tensor]:
    return {**under("f.", sequential(s.net, drop=(nn.MaxPool2d,))), **mlp("g", [s.dim, 512, 128])}


def simclr_spijkervet(s: Source) -> dict[str, torch.Tensor]:
    return {**under("encoder.", s.net.state_dict()), **mlp("projector", [s.dim, s.dim, 64])}


def simclr_uva(s: Source) -> dict[str, Any]:
    return lightning(under("convnet.", {**s.net.state_dict(), **mlp("fc", [s.dim, 512, 128])}), hidden_dim=128, lr=5e-4)


def simclr_sthalles(s: Source) -> dict[str, Any]:
    state = under("backbone.", {**s.net.state_dict(), **mlp("fc", [s.dim, s.dim, 128])})
    return {"epoch": 100, "arch": s.name, "state_dict": state, "optimizer": sgd_state()}


def active_classifier(s: Source) -> dict[str, Any]:
    state = {**under("backbone.", s.net.state_dict()), "head.weight": torch.randn(10, s.dim), "head.bias": torch.zeros(10)}
    return lightning(state, num_classes=10, backbone=s.name, pretrained=None, lr=0.1)


def lightning_model(s: Source) -> dict[str, Any]:
    return lightning({**under("model.", s.net.state_dict()), "classifier.weight": torch.randn(10, s.dim)})


def lightning_net(s: Source) -> dict[str, Any]:
    return lightning({**under("net.backbone.", s.net.state_dict()), **mlp("net.head", [s.dim, 10])})


def lightning_encoder(s: Source) -> dict[str, Any]:
    return lightning({**under("encoder.", s.net.state_dict()), **mlp("decoder", [s.dim, 16])})


def classifier_state_dict(s: Source) -> dict[str, torch.Tensor]:
    """torchvision's or timm's ImageNet classifier file: the trunk plus ``fc``/``head``."""
    return {**s.net.state_dict(), f"{s.slot}.weight": torch.randn(1000, s.dim), f"{s.slot}.bias": torch.randn(1000)}


def training_checkpoint(s: Source) -> dict[str, Any]:
    """DeiT/SupContrast style: the model under ``model``, beside the optimizer and argparse arguments."""
    return {"model": classifier_state_dict(s), "optimizer": sgd_state(), "epoch": 299, "args": argparse.Namespace(lr=5e-4)}


BOTH, RESNET_ONLY, VIT_ONLY = (RESNET, VIT), (RESNET,), (VIT,)
#: (case, builder, format it must be detected as, backbones saved in that layout)
CASES: list[tuple[str, Callable[[Source], Any], str, tuple[str, ...]]] = [
    ("moco_v2", moco_v2, "moco_v2", BOTH),
    ("moco_v2_single_gpu", lambda s: moco_v2(s, ddp=False), "moco_v2", BOTH),
    ("moco_v3", moco_v3, "moco_v3", BOTH),
    ("moco_v3_single_gpu", lambda s: moco_v3(s, ddp=False), "moco_v3", BOTH),
    ("dino", dino, "dino", BOTH),
    ("dino_teacher_file", dino_teacher, "dino", BOTH),
    ("lightly_simclr", lightly_simclr, "lightly", BOTH),
    ("lightly_moco", lightly_moco, "lightly", BOTH),
    ("lightly_dino", lightly_dino, "lightly", BOTH),
    ("lightly_mae_vit", lightly_masked_vit, "lightning", VIT_ONLY),
    ("simclr_leftthomas_f", simclr_leftthomas, "simclr", RESNET_ONLY),
    ("simclr_spijkervet_encoder", simclr_spijkervet, "simclr", BOTH),
    ("simclr_uva_convnet", simclr_uva, "simclr", RESNET_ONLY),
    ("simclr_sthalles_backbone", simclr_sthalles, "simclr", RESNET_ONLY),
    ("active_classifier", active_classifier, "lightning", BOTH),
    ("lightning_model", lightning_model, "lightning", BOTH),
    ("lightning_net", lightning_net, "lightning", BOTH),
    ("lightning_encoder", lightning_encoder, "lightning", BOTH),
    ("classifier_state_dict", classifier_state_dict, "state_dict", BOTH),
    ("training_checkpoint", training_checkpoint, "state_dict", BOTH),
]


def assert_loaded(target: nn.Module, s: Source) -> None:
    expected = s.net.state_dict()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(
    ("name", "build", "fmt"),
    [pytest.param(name, build, fmt, id=f"{name}-{case}") for case, build, fmt, names in CASES for name in names],
)
def test_every_format_loads_bit_exactly(name, build, fmt, tmp_path):
    source = make_source(name)
    torch.save(build(source), tmp_path / "ckpt.pth")
    target = fresh(source.name)
    assert load_backbone_weights(target, tmp_path / "ckpt.pth") == fmt
    assert_loaded(target, source)


def test_safetensors_file(source, tmp_path):
    save_file({k: v.contiguous() for k, v in classifier_state_dict(source).items()}, tmp_path / "model.safetensors")
    target = fresh(source.name)
    assert load_backbone_weights(target, tmp_path / "model.safetensors") == "state_dict"
    assert_loaded(target, source)


def test_missing_batchnorm_counters_are_tolerated(tmp_path):
    """Weights converted from TF/JAX (SimCLR's own release) lack ``num_batches_tracked``; the backbone keeps its own."""
    source = make_source(RESNET).net.state_dict()
    torch.save({k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}, tmp_path / "r18.pth")
    target = fresh(RESNET)
    assert load_backbone_weights(target, tmp_path / "r18.pth") == "state_dict"
    for key, value in target.state_dict().items():
        assert torch.equal(value, torch.tensor(0) if key.endswith("num_batches_tracked") else source[key]), key


def test_larger_architecture_names_formats_and_keys(tmp_path):
    torch.manual_seed(0)
    net34, _ = build_backbone("resnet34")
    resnet34 = Source("resnet34", net34, net34, 512, "fc")
    torch.save(moco_v2(resnet34), tmp_path / "moco34.pth")
    with pytest.raises(ConfigurationError) as err:
        load_backbone_weights(fresh(RESNET), tmp_path / "moco34.pth")
    message = str(err.value)
    assert "moco34.pth" in message and "do not fit the backbone" in message
    # resnet34 has 8 more BasicBlocks of 12 tensors each.
    assert "tried moco_v2 (0 missing, 96 unexpected, 0 wrong shapes), state_dict (0 missing, 96 unexpected" in message
    assert "not detected: moco_v3, dino, esvit, lightly, simclr, dinov2, openai_clip, clip, mae, lightning" in message
    assert "closest, moco_v2: missing keys [], unexpected keys ['layer1.2.bn1.bias'" in message
    assert message.endswith("'layer1.2.bn2.weight']...") and "shape mismatches" not in message


def test_shape_mismatches_are_named(tmp_path):
    torch.manual_seed(0)
    cifar, _ = build_backbone(RESNET, cifar_stem=True)
    torch.save(cifar.state_dict(), tmp_path / "cifar.pt")
    with pytest.raises(ConfigurationError, match=r"shape mismatches \['conv1.weight: \(64, 3, 3, 3\) in the file, \(64, 3, 7, 7\) in the backbone'\]"):
        load_backbone_weights(fresh(RESNET), tmp_path / "cifar.pt")


def test_files_without_tensors_fail_clearly(tmp_path):
    backbone = fresh(RESNET)
    (tmp_path / "notes.txt").write_text("hello, not weights\n")
    with pytest.raises(ConfigurationError, match=r"'.*notes.txt' are not a tensor checkpoint: "):
        load_backbone_weights(backbone, tmp_path / "notes.txt")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ConfigurationError, match=r"pickles a torch.nn.modules.linear.Linear object.*state_dict\(\)"):
        load_backbone_weights(backbone, tmp_path / "module.pt")
    torch.save({"epoch": 3, "arch": "resnet18"}, tmp_path / "empty.pt")
    with pytest.raises(ConfigurationError, match=r"holds no tensors by name \(it has \['epoch', 'arch'\]\)"):
        load_backbone_weights(backbone, tmp_path / "empty.pt")
    with pytest.raises(ConfigurationError, match="not found; pass an existing file to --model.pretrained"):
        load_backbone_weights(backbone, tmp_path / "missing.pt")


def test_classifier_starts_from_a_moco_checkpoint(tmp_path, caplog):
    source = make_source(RESNET)
    torch.save(moco_v2(source), tmp_path / "checkpoint_0199.pth.tar")
    with caplog.at_level("INFO", logger="al_lightning.models.checkpoints"):
        model = ActiveClassifier(num_classes=3, pretrained=str(tmp_path / "checkpoint_0199.pth.tar"))
    assert "loaded moco_v2 backbone weights" in caplog.text
    assert_loaded(model.backbone, source)
    model.reset_weights(seed=1)
    assert_loaded(model.backbone, source)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# -- EsViT: a Swin in the Microsoft layout --------------------------------------------------------
SWIN = "swin_tiny_patch4_window7_224"
#: Swin-T's layout (4 stages, a shifted-window block in each) at a size a CPU test affords.
SMALL_SWIN = {"img_size": 64, "window_size": 4, "embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4)}


def small_swin(seed: int, **overrides: Any) -> nn.Module:
    """timm's Swin at :data:`SMALL_SWIN`; with ``seed >= 0`` every tensor random (as :func:`randomised`)."""
    torch.manual_seed(abs(seed))
    net = timm.create_model(SWIN, pretrained=False, num_classes=0, **{**SMALL_SWIN, **overrides})
    if seed >= 0:
        with torch.no_grad():
            for value in net.state_dict().values():
                value.copy_(torch.rand_like(value))
    return net.eval()


def microsoft_layout(net: nn.Module) -> dict[str, torch.Tensor]:
    """timm's Swin as microsoft/Swin-Transformer and EsViT name it: the PatchMerging that opens timm's
    stage i + 1 closes stage i there, and the buffers they save are in the state dict
    (``relative_position_index``; ``attn_mask`` of the shifted blocks, which the official Swin saves)."""
    state = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        state[".".join(parts)] = value
    buffers = {k: v.clone() for k, v in net.named_buffers() if k.endswith(("relative_position_index", "attn_mask"))}
    assert buffers and "layers.0.downsample.reduction.weight" in state and "layers.3.downsample.norm.weight" not in state
    return {**state, **buffers}


def esvit_heads(dim: int) -> dict[str, torch.Tensor]:
    """EsViT's view-level DINO head in the Swin's ``head`` slot and its region-level ``head_dense``."""
    dino = {"mlp.0.weight": torch.randn(16, dim), "mlp.0.bias": torch.randn(16), "mlp.2.weight": torch.randn(8, 16),
            "last_layer.weight_g": torch.ones(32, 1), "last_layer.weight_v": torch.randn(32, 8)}
    return {**under("head.", dino), **under("head_dense.", dino)}


def esvit(teacher: nn.Module, student: nn.Module, wrapper: str = "", teacher_ddp: bool = False) -> dict[str, Any]:
    """An EsViT ``checkpoint.pth`` (main_esvit.py): ``student`` saved from DDP (``module.``), the teacher
    without it unless it has BatchNorm; the heads replace the Swin's own (``wrapper=""``), or sit beside
    it in DINO's ``MultiCropWrapper`` (``wrapper="backbone."``)."""

    def network(net: nn.Module, ddp: bool) -> dict[str, torch.Tensor]:
        return under("module." if ddp else "", {**under(wrapper, microsoft_layout(net)), **esvit_heads(net.num_features)})

    return {
        "student": network(student, ddp=True),
        "teacher": network(teacher, ddp=teacher_ddp),
        "optimizer": sgd_state(),
        "epoch": 300,
        "args": argparse.Namespace(arch="swin_tiny", out_dim=65536, use_dense_prediction=True, lr=0.0005),
        "dino_loss": {"center": torch.randn(1, 32), "center_grid": torch.randn(1, 32)},
    }


@pytest.mark.parametrize(
    ("wrapper", "teacher_ddp"), [("", False), ("", True), ("backbone.", False)], ids=["esvit", "teacher_under_ddp", "multicrop_wrapper"]
)
def test_esvit_swin_loads_the_teacher_bit_exactly(wrapper, teacher_ddp, tmp_path):
    teacher, student = small_swin(seed=0), small_swin(seed=1)
    torch.save(esvit(teacher, student, wrapper, teacher_ddp), tmp_path / "checkpoint.pth")
    target = small_swin(seed=-123)
    assert load_backbone_weights(target, tmp_path / "checkpoint.pth") == "esvit"
    expected = teacher.state_dict()
    assert target.state_dict().keys() == expected.keys()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target.eval()(images), teacher(images))


def test_microsoft_swin_classifier_checkpoint_loads(tmp_path):
    """microsoft/Swin-Transformer's own files (``{"model": ...}`` with an ImageNet ``head``) are the same layout."""
    net = small_swin(seed=0)
    state = {**microsoft_layout(net), "head.weight": torch.randn(1000, net.num_features), "head.bias": torch.randn(1000)}
    torch.save({"model": state, "epoch": 299, "max_accuracy": 81.2}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    target = small_swin(seed=-123)
    assert load_backbone_weights(target, tmp_path / "swin_tiny_patch4_window7_224.pth") == "esvit"
    for key, value in target.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key


def test_esvit_swin_t_fits_the_configs_backbone():
    """EsViT's Swin-T (W=7) names and shapes fit ``build_backbone("swin_tiny_patch4_window7_224")``, on the meta device."""
    with torch.device("meta"):
        net, dim = build_backbone(SWIN)
    assert dim == 768
    raw = esvit(net, net)
    esvit_format = next(fmt for fmt in FORMATS if fmt.name == "esvit")
    assert esvit_format.detect(raw)
    state = esvit_format.convert(raw, net)
    own = net.state_dict()
    assert state.keys() == own.keys()
    assert all(state[k].shape == own[k].shape for k in own)
    # Stage 0 ends with a PatchMerging in EsViT's Swin; timm's stage 1 starts with it.
    assert "layers.1.downsample.reduction.weight" in state and "layers.0.downsample.reduction.weight" not in state


def test_timm_layout_swin_is_not_esvit(tmp_path):
    """A Swin already in timm's layout (DINO-style teacher/student around timm's Swin) is not renamed."""
    teacher = small_swin(seed=0)
    torch.save({"teacher": {**under("backbone.", teacher.state_dict()), **dino_head()}}, tmp_path / "dino_swin.pth")
    target = small_swin(seed=-123)
    assert load_backbone_weights(target, tmp_path / "dino_swin.pth") == "dino"
    for key, value in target.state_dict().items():
        assert torch.equal(value, teacher.state_dict()[key]), key


def test_esvit_misfits_name_formats_and_keys(tmp_path):
    torch.save(esvit(small_swin(seed=0), small_swin(seed=1)), tmp_path / "checkpoint.pth")
    with pytest.raises(ConfigurationError) as err:
        load_backbone_weights(fresh(RESNET), tmp_path / "checkpoint.pth")
    message = str(err.value)
    # A ResNet-18 has 100 tensors; the small Swin 119, none of which a ResNet has.
    assert "do not fit the backbone in any checkpoint format; tried dino (100 missing, 0 unexpected" in message
    assert "esvit (100 missing, 119 unexpected, 0 wrong shapes)" in message and "missing keys ['bn1.bias'" in message
    # A Swin of another window size: the relative position tables are named with both shapes.
    with pytest.raises(ConfigurationError) as err:
        load_backbone_weights(small_swin(seed=-123, window_size=2), tmp_path / "checkpoint.pth")
    message = str(err.value)
    assert "closest, esvit: missing keys [], unexpected keys []" in message
    assert "'layers.0.blocks.0.attn.relative_position_bias_table: (49, 1) in the file, (9, 1) in the backbone'" in message
