"""Release files of today's backbones load into the matching timm model and give the original model's embedding.

Each test builds the model with its authors' own code (tests/models/reference_models/, vendored,
or the open_clip_torch package), gives every tensor a seeded random offset (so that a tensor put in
the wrong place, or a LayerNorm or layer-scale left at its initial value, shows), saves it in its
release layout and loads that file into the timm backbone with ``load_backbone_weights``. The
original model and ours then embed the same images; they must agree within 1e-4. The models keep
their width, patch size and image size but have 2 image blocks (1 text block, 1 decoder block) on
both sides, so that the architecture names stay the same and a test takes seconds on 2 CPU cores;
the full-size layouts are checked for an exact fit on the meta device.
"""

from __future__ import annotations

import warnings
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

import open_clip
import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

from al_lightning.errors import ConfigurationError
from al_lightning.models import build_backbone
from al_lightning.models.checkpoints import FORMATS, TorchScriptArchive, _read, load_backbone_weights

with warnings.catch_warnings():  # DINOv2's layers say once whether xFormers is there; it is not, and need not be
    warnings.simplefilter("ignore")
    from tests.models.reference_models.dinov2 import vision_transformer as dinov2_vits
from tests.models.reference_models.mae import models_mae
from tests.models.reference_models.openai_clip import model as openai_clip

pytestmark = pytest.mark.timeout(120)  # each test takes seconds; a hang fails in two minutes

#: The largest difference allowed between the original model's embedding and ours.
TOLERANCE = 1e-4


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in eval mode, every floating tensor offset by N(0, 0.02²) noise drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.02 * torch.randn(value.shape, generator=generator, dtype=value.dtype))
    return model.eval()


def images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def timm_backbone(name: str, **kwargs: Any) -> nn.Module:
    """The timm model as ``build_backbone`` makes it (no classifier), with a different seed from the source."""
    torch.manual_seed(123)
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()


def assert_same_embedding(ours: nn.Module, original: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, got = original(x), ours(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < TOLERANCE


def without_projection(visual: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A CLIP image tower's embedding before its projection to the text space, by its own forward
    (OpenAI's and OpenCLIP's both skip ``proj`` when it is None): the features CLIP's linear probes use."""

    def embed(x: torch.Tensor) -> torch.Tensor:
        proj, visual.proj = visual.proj, None
        try:
            return visual(x)
        finally:
            visual.proj = proj

    return embed


# -- DINOv2 ----------------------------------------------------------------------------------------
def dinov2_vits14(registers: int, depth: int = 2, device: str = "cpu") -> nn.Module:
    """``dinov2_vits14`` / ``dinov2_vits14_reg`` as facebookresearch/dinov2's hub builds them
    (dinov2/hub/backbones.py: ``vit_small`` at img_size 518, init_values 1.0, mlp FFN, no block
    chunks; the register model interpolates with antialias and no offset), with ``depth`` blocks:
    ``vit_small``'s own arguments, given to ``DinoVisionTransformer`` with another depth."""
    torch.manual_seed(0)
    interpolation = {"interpolate_antialias": True, "interpolate_offset": 0.0} if registers else {}
    with torch.device(device):
        model = dinov2_vits.DinoVisionTransformer(
            patch_size=14, embed_dim=384, depth=depth, num_heads=6, mlp_ratio=4,
            block_fn=partial(dinov2_vits.Block, attn_class=dinov2_vits.MemEffAttention), num_register_tokens=registers,
            img_size=518, init_values=1.0, ffn_layer="mlp", block_chunks=0, **interpolation,
        )  # fmt: skip
    return model if device == "meta" else perturbed(model, seed=1)


@pytest.mark.parametrize(
    ("registers", "backbone", "filename"),
    [(0, "vit_small_patch14_dinov2", "dinov2_vits14_pretrain.pth"), (4, "vit_small_patch14_reg4_dinov2", "dinov2_vits14_reg4_pretrain.pth")],
    ids=["dinov2_vits14", "dinov2_vits14_reg4"],
)
def test_dinov2_hub_file(registers, backbone, filename, tmp_path):
    """The hub's ``.pth``: ``torch.save(model.state_dict())`` of the ViT-S/14, its ``mask_token``
    and the 1,370-row pos_embed (cls included) too, at the hub's 518 px."""
    original = dinov2_vits14(registers)
    assert "mask_token" in original.state_dict() and original.pos_embed.shape == (1, 1370, 384)
    torch.save(original.state_dict(), tmp_path / filename)
    ours = timm_backbone(backbone, depth=2)
    assert load_backbone_weights(ours, tmp_path / filename) == "dinov2"
    # The original's output is its normed class token (x_norm_clstoken), as timm's token pooling.
    assert_same_embedding(ours, original, images(518, n=1))


# -- OpenAI CLIP -----------------------------------------------------------------------------------
#: OpenAI's ViT-B/32 (clip.py's "ViT-B/32": build_model reads these off the file), with 2 image
#: blocks, 1 text block and a 1,024-token vocabulary instead of 12, 12 and 49,408; the text tower
#: is in the file, as released, under the same names.
OPENAI_B32 = {
    "embed_dim": 512, "image_resolution": 224, "vision_layers": 2, "vision_width": 768, "vision_patch_size": 32,
    "context_length": 77, "vocab_size": 1024, "transformer_width": 512, "transformer_heads": 8, "transformer_layers": 1,
}  # fmt: skip


def openai_clip_archive(path: Path) -> None:
    """A ``clip.load`` file: a TorchScript archive of clip/model.py's CLIP with fp16 weights.

    OpenAI traced their fp16 model (clip.load patches the traced graphs' device and fp16 casts);
    we do the same on the CPU: ``convert_weights`` (their fp16 conversion), then
    ``torch.jit.trace_module`` of ``forward``, ``encode_image`` and ``encode_text``. The released
    archives also hold ``input_resolution``, ``context_length`` and ``vocab_size`` tensors, which
    build_model deletes; they are registered as buffers here so the archive holds them too.
    (``check_trace`` is off: the first call casts the text tower's cached ``attn_mask`` to fp16.)
    """
    torch.manual_seed(0)
    model = perturbed(openai_clip.CLIP(**OPENAI_B32), seed=1)
    openai_clip.convert_weights(model)
    for key, value in [("input_resolution", 224), ("context_length", 77), ("vocab_size", OPENAI_B32["vocab_size"])]:
        model.__dict__.pop(key, None)  # CLIP keeps the last two as ints
        model.register_buffer(key, torch.tensor(value))
    image = torch.randn(1, 3, 224, 224).half()
    text = torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated, but it is what made these files
        traced = torch.jit.trace_module(model, {"forward": (image, text), "encode_image": image, "encode_text": text}, check_trace=False)
        traced.save(str(path))


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("openai_clip") / "ViT-B-32.pt"
    openai_clip_archive(path)
    return path


def clip_load_without_jit(path: Path) -> nn.Module:
    """What ``clip.load(path, device="cpu", jit=False)`` returns (clip/clip.py): ``build_model`` of the
    archive's state dict, in float32. Running the archive's code is fine here: the test wrote it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state_dict = torch.jit.load(str(path), map_location="cpu").eval().state_dict()
    return openai_clip.build_model(state_dict).float()


def test_openai_clip_torchscript_archive(openai_archive):
    path = openai_archive
    original = clip_load_without_jit(path)
    ours = timm_backbone("vit_base_patch32_clip_quickgelu_224", depth=2)
    assert load_backbone_weights(ours, path) == "openai_clip"
    x = images(224)
    assert_same_embedding(ours, without_projection(original.visual), x)
    with torch.no_grad():  # and the projection we leave out is the one encode_image applies
        projected = ours(x) @ original.visual.proj
        assert (projected - original.encode_image(x)).abs().max().item() < TOLERANCE


def test_openai_clip_archive_is_read_without_running_it(openai_archive):
    """The reader returns the archive's tensors, bit for bit what torch.jit.load's state dict holds,
    and the class of every module (so that QuickGELU is known), without loading its code."""
    path = openai_archive
    archive = _read(path)
    assert isinstance(archive, TorchScriptArchive) and next(f for f in FORMATS if f.name == "openai_clip").detect(archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert archive.keys() == expected.keys()
    assert all(torch.equal(archive[k], v) and archive[k].dtype == v.dtype for k, v in expected.items())
    assert archive["visual.conv1.weight"].dtype == torch.float16 and "token_embedding.weight" in archive
    assert archive.classes["visual.transformer.resblocks.0.mlp.gelu"].endswith(".QuickGELU")


def test_openai_clip_into_a_gelu_backbone_names_the_quickgelu_model(openai_archive):
    path = openai_archive
    with pytest.raises(ConfigurationError) as err:
        load_backbone_weights(timm_backbone("vit_base_patch32_clip_224", depth=2), path)
    assert str(err.value) == (
        f"'{path}' holds OpenAI CLIP ViT-B/32 weights with QuickGELU, backbone vit_base_patch32_clip_224 has GELU "
        "(embeddings ~4e-2 apart): use --model.backbone=vit_base_patch32_clip_quickgelu_224"
    )


# -- OpenCLIP --------------------------------------------------------------------------------------
def open_clip_vit_b16() -> nn.Module:
    """OpenCLIP's ViT-B-16 (its model_configs/ViT-B-16.json, plain GELU) with 2 image blocks, 1 text block and a 1,024-token vocabulary instead of 12, 12 and 49,408."""
    config = open_clip.get_model_config("ViT-B-16")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=config["embed_dim"], vision_cfg={**config["vision_cfg"], "layers": 2}, text_cfg={**config["text_cfg"], "layers": 1, "vocab_size": 1024}
    )
    return perturbed(model, seed=1)


def training_checkpoint(model: nn.Module) -> dict[str, Any]:
    """open_clip's training/main.py checkpoint (``epoch_N.pt``): DDP's ``module.`` state dict beside the optimizer."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    return {"epoch": 32, "name": "ViT-B-16-laion2b", "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": []}]}}


@pytest.mark.parametrize(
    ("filename", "save"),
    [
        ("open_clip_pytorch_model.bin", lambda model, path: torch.save(model.state_dict(), path)),
        ("open_clip_model.safetensors", lambda model, path: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)),
        ("epoch_32.pt", lambda model, path: torch.save(training_checkpoint(model), path)),
    ],
    ids=["hub_bin", "hub_safetensors", "training_checkpoint"],
)
def test_open_clip_image_tower(filename, save, tmp_path):
    original = open_clip_vit_b16()
    save(original, tmp_path / filename)
    ours = timm_backbone("vit_base_patch16_clip_224", depth=2)
    assert load_backbone_weights(ours, tmp_path / filename) == "clip"
    assert_same_embedding(ours, without_projection(original.visual), images(224))


# -- MAE -------------------------------------------------------------------------------------------
def mae_vit_base() -> nn.Module:
    """MAE's ``mae_vit_base_patch16`` (models_mae.py's mae_vit_base_patch16_dec512d8b) with 2 encoder and 1 decoder blocks instead of 12 and 8."""
    torch.manual_seed(0)
    model = models_mae.MaskedAutoencoderViT(
        patch_size=16, embed_dim=768, depth=2, num_heads=12, decoder_embed_dim=512, decoder_depth=1, decoder_num_heads=16,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    return perturbed(model, seed=1)


def mae_class_token(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """MAE's encoder output for the class token, unmasked. With ``mask_ratio=0`` its random masking
    keeps every patch but shuffles their order; position embeddings are added before the shuffle
    and attention does not see order, so the class token comes out the same."""
    return lambda x: model.forward_encoder(x, mask_ratio=0.0)[0][:, 0]


@pytest.mark.parametrize(
    ("filename", "encoder_only", "fmt"),
    [("mae_pretrain_vit_base.pth", True, "state_dict"), ("mae_pretrain_vit_base_full.pth", False, "mae")],
    ids=["encoder_only", "full"],
)
def test_mae_file(filename, encoder_only, fmt, tmp_path):
    """``{"model": ...}``: the encoder only (``mae_pretrain_vit_base.pth``), or the whole MAE with its decoder."""
    original = mae_vit_base()
    state = {k: v for k, v in original.state_dict().items() if not (encoder_only and k.startswith(("decoder_", "mask_token")))}
    torch.save({"model": state}, tmp_path / filename)
    ours = timm_backbone("vit_base_patch16_224", depth=2)
    assert load_backbone_weights(ours, tmp_path / filename) == fmt
    assert_same_embedding(ours, mae_class_token(original), images(224))


# -- full-size layouts fit the backbones build_backbone makes ---------------------------------------
@pytest.mark.parametrize(
    ("fmt", "make", "backbone"),
    [
        ("openai_clip", lambda: openai_clip.CLIP(**{**OPENAI_B32, "vision_layers": 12, "transformer_layers": 12, "vision_patch_size": 16}),
         "vit_base_patch16_clip_quickgelu_224"),
        ("clip", lambda: open_clip.model.CLIP(**open_clip.get_model_config("ViT-L-14")), "vit_large_patch14_clip_224"),
        ("mae", lambda: models_mae.mae_vit_large_patch16(), "vit_large_patch16_224"),
        ("dinov2", lambda: dinov2_vits14(0, depth=12, device="meta"), "vit_small_patch14_dinov2"),
        ("dinov2", lambda: dinov2_vits14(4, depth=12, device="meta"), "vit_small_patch14_reg4_dinov2"),
        ("dinov2", lambda: dinov2_vits.vit_giant2(patch_size=14, img_size=518, init_values=1.0, ffn_layer="swiglufused", block_chunks=0,
                                                  num_register_tokens=4), "vit_giant_patch14_reg4_dinov2"),
    ],
    ids=["openai_clip_vit_b16", "open_clip_vit_l14", "mae_vit_large", "dinov2_vits14", "dinov2_vits14_reg4", "dinov2_vitg14_reg4"],
)  # fmt: skip
def test_full_size_layouts_fit(fmt, make, backbone):
    """Real depths and widths (ViT-g's SwiGLU FFN too), on the meta device: every key and shape fits."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = make()
        ours, _ = build_backbone(backbone)
    raw = {"model": original.state_dict()} if fmt == "mae" else original.state_dict()
    if fmt == "openai_clip":
        raw = TorchScriptArchive(raw, {"visual.transformer.resblocks.0.mlp.gelu": "__torch__.model.QuickGELU"})
    state = next(f for f in FORMATS if f.name == fmt).convert(raw, ours)
    own = ours.state_dict()
    assert state.keys() == own.keys()
    assert all(state[k].shape == own[k].shape for k in own)


# -- a file of another architecture ------------------------------------------------------------------
def test_release_file_of_another_architecture_says_which(tmp_path):
    torch.save(dinov2_vits14(registers=4).state_dict(), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    with torch.device("meta"):
        vit_b16, _ = build_backbone("vit_base_patch16_224")
        vit_s14, _ = build_backbone("vit_small_patch14_dinov2")
    with pytest.raises(ConfigurationError, match=r"holds ViT-S/14 with 4 registers weights \(DINOv2\), backbone is ViT-B/16: pick a --model.backbone"):
        load_backbone_weights(vit_b16, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    with pytest.raises(ConfigurationError, match=r"holds ViT-S/14 with 4 registers weights \(DINOv2\), backbone is ViT-S/14:"):
        load_backbone_weights(vit_s14, tmp_path / "dinov2_vits14_reg4_pretrain.pth")

    torch.save(open_clip_vit_b16().state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(ConfigurationError, match=r"holds ViT-B/16 weights \(CLIP\), backbone is ResNet:"):
        load_backbone_weights(build_backbone("resnet18")[0], tmp_path / "open_clip_pytorch_model.bin")
    # Only the depth differs: the number of blocks is named.
    with pytest.raises(ConfigurationError, match=r"holds ViT-B/16 \(2 blocks\) weights \(CLIP\), backbone is ViT-B/16 \(12 blocks\):"):
        with torch.device("meta"):
            load_backbone_weights(build_backbone("vit_base_patch16_clip_224")[0], tmp_path / "open_clip_pytorch_model.bin")

    original = mae_vit_base()
    torch.save({"model": {k: v for k, v in original.state_dict().items() if k.startswith(("blocks", "patch", "cls", "pos", "norm"))}},
               tmp_path / "mae_pretrain_vit_base.pth")  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"holds ViT-B/16 weights \(state_dict format\), backbone is ViT-S/14:"):
        load_backbone_weights(vit_s14, tmp_path / "mae_pretrain_vit_base.pth")



def test_archive_with_other_code_is_refused_unrun(tmp_path, monkeypatch):
    """A TorchScript archive whose pickle calls anything but a tensor rebuild (here ``os.system``)
    fails as unreadable; nothing in it runs."""
    monkeypatch.chdir(tmp_path)
    payload = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00touch pwndq\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(tmp_path / "ViT-B-32.pt", "w") as archive:
        archive.writestr("ViT-B-32/data.pkl", payload)
        archive.writestr("ViT-B-32/constants.pkl", b"\x80\x02).")
    with pytest.raises(ConfigurationError, match=r"are not a tensor checkpoint: UnpicklingError: a TorchScript archive with a os.system object"):
        load_backbone_weights(timm_backbone("vit_base_patch32_clip_quickgelu_224", depth=2), tmp_path / "ViT-B-32.pt")
    assert not (tmp_path / "pwnd").exists()
