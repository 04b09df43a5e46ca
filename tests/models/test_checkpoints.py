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
import torch
import torch.nn as nn
from safetensors.torch import save_file

from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier, build_backbone
from al_lightning.models.checkpoints import load_backbone_weights

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
    assert "not detected: moco_v3, dino, lightly, simclr, lightning" in message
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
