"""The backbone's own input pipeline (timm's data config) against the source's, and the image sizes a backbone takes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from al_lightning.data import ActiveDataModule
from al_lightning.data.transforms import backbone_transforms, resolve_input_config, tensor_transforms
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier
from tests.conftest import REPO
from tests.standins import HUB_MODEL, publish_to_hub_cache

pytestmark = pytest.mark.timeout(120)

#: timm's pretrained config of HUB_MODEL, as timm resolves it.
PUBLISHED = {"input_size": (3, 160, 160), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.95, "crop_mode": "center"}
OVERRIDES = {"image_size": 96, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}


@pytest.fixture
def hub_model(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    publish_to_hub_cache(tmp_path)
    return ActiveClassifier(num_classes=10, backbone=HUB_MODEL, pretrained="hub")


def digits(**options) -> ActiveDataModule:
    datamodule = ActiveDataModule(dataset="digits", initial_pool_size=20, seed=0, **options)
    datamodule.setup()  # no trainer: the source's pipeline until a model is given
    return datamodule


def test_a_tagged_timm_backbone_brings_its_pretrained_pipeline(hub_model):
    assert hub_model.backbone_input_config() == PUBLISHED
    datamodule = digits()
    datamodule.choose_input_pipeline(hub_model)
    assert datamodule.input_config == PUBLISHED
    train, evaluate = datamodule.splits.train_transform, datamodule.splits.eval_transform
    resize, crop = evaluate.transforms[1:3]  # after FloatImage
    assert (resize.size, resize.interpolation, crop.size) == (168, T.InterpolationMode.BICUBIC, (160, 160))  # 160 / 0.95
    assert train.transforms[1].size == (160, 160) and "bicubic" in repr(train.transforms[1])
    image, _ = datamodule.split("train")[0]
    assert evaluate(image).shape == (3, 160, 160)
    # mean/std: (x − 0.5)/0.5 of the resized image
    assert torch.allclose(evaluate(image), (T.CenterCrop(160)(T.Resize(168, T.InterpolationMode.BICUBIC)(image)) - 0.5) / 0.5)


def test_the_config_overrides_every_part(hub_model):
    assert resolve_input_config(PUBLISHED, OVERRIDES) == {
        "input_size": (3, 96, 96), "interpolation": "bilinear", "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6), "crop_pct": 1.0, "crop_mode": "squash"
    }
    assert resolve_input_config(PUBLISHED, {"image_size": None, "mean": None}) == PUBLISHED
    datamodule = digits(input_pipeline="backbone", **OVERRIDES)
    datamodule.choose_input_pipeline(hub_model)
    resize, normalize = datamodule.splits.eval_transform.transforms[1], datamodule.splits.eval_transform.transforms[-1]
    assert (resize.size, resize.interpolation) == ((96, 96), T.InterpolationMode.BILINEAR)  # squash: no crop
    assert normalize.mean.tolist() == pytest.approx([0.1, 0.2, 0.3]) and normalize.std.tolist() == pytest.approx([0.4, 0.5, 0.6])
    image = Image.new("RGB", (50, 70), (255, 0, 0))
    assert datamodule.splits.eval_transform(image).shape == (3, 96, 96)
    assert backbone_transforms(datamodule.input_config)[0](image).shape == (3, 96, 96)


def test_a_vit_runs_at_other_sizes_and_refuses_one_it_cannot_take(hub_model):
    published = {k: v.clone() for k, v in hub_model.backbone.state_dict().items()}
    for size in (32, 96, 224):
        assert hub_model.backbone.eval()(torch.zeros(2, 3, size, size)).shape == (2, hub_model.feature_dim)
    assert all(torch.equal(v, published[k]) for k, v in hub_model.backbone.state_dict().items())  # pos_embed resampled, not replaced
    datamodule = digits(image_size=100)
    with pytest.raises(ConfigurationError) as err:
        datamodule.choose_input_pipeline(hub_model)
    assert str(err.value) == (
        f"backbone '{HUB_MODEL}' cannot take 100-px images (Input height (100) should be divisible by patch size (16).); "
        "its pretrained size is 160 px: set --data.image_size"
    )


def test_torchvision_backbones_and_files_keep_the_sources_transforms(hub_model, tmp_path):
    datamodule = digits(image_size=16)
    source_eval = repr(datamodule.splits.eval_transform)
    ssp_file = tmp_path / "ssp.pt"
    torch.save(hub_model.backbone.state_dict(), ssp_file)  # the same weights, from a file
    models = [ActiveClassifier(num_classes=10, backbone=name, pretrained=weights) for name, weights in
              (("resnet18", None), (HUB_MODEL, None), (HUB_MODEL, str(ssp_file)))]
    for model in models:
        datamodule.choose_input_pipeline(model)  # auto: the source's, for any weights but the hub's
        assert datamodule.input_config is None and repr(datamodule.splits.eval_transform) == source_eval
    assert source_eval == repr(tensor_transforms(16)[1])  # the paper's settings, untouched
    datamodule.choose_input_pipeline(hub_model)
    assert datamodule.input_config["input_size"] == (3, 16, 16)  # --data.image_size, the backbone's other settings
    with pytest.raises(ConfigurationError, match=r"--data.input_pipeline=backbone: backbone 'resnet18' has no pretrained config"):
        digits(input_pipeline="backbone").choose_input_pipeline(ActiveClassifier(num_classes=10, backbone="resnet18"))
    with pytest.raises(ConfigurationError, match=r"^--data.mean, --data.crop_pct set the backbone's input pipeline, but this run uses the source's"):
        digits(mean=(0.5, 0.5, 0.5), crop_pct=1.0).choose_input_pipeline(ActiveClassifier(num_classes=10, backbone="resnet18"))


@pytest.mark.slow
def test_print_config_says_which_pipeline(tmp_path, cli):
    base = ["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--print_config"]
    hub = cli([*base, f"--model.backbone={HUB_MODEL}", "--model.pretrained=hub"], tmp_path, timeout=100)
    assert hub.returncode == 0, hub.stderr
    lines = hub.stdout.splitlines()
    assert lines[0] == (
        f"# input pipeline (--data.input_pipeline=auto): the backbone's ({HUB_MODEL}, timm): "
        "16 px, bicubic, crop 0.95 (center), mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)"  # demo.yaml's image_size
    )
    assert {"  input_pipeline: auto", "  mean: null", "  crop_mode: null"} <= set(lines)
    source = cli(base, tmp_path, timeout=100)
    assert source.stdout.splitlines()[0] == "# input pipeline (--data.input_pipeline=auto): the source's transforms (digits, the paper's settings)"


def test_uint8_image_tensors_take_the_backbones_pipeline_as_floats():
    """Fashion-MNIST's items are uint8 tensors; timm's pipeline leaves tensors as they are, so they are made floats first."""
    train, evaluate = backbone_transforms({**PUBLISHED, "input_size": (3, 32, 32)})
    pixels = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert torch.allclose(evaluate(pixels), evaluate(pixels.float() / 255), atol=1e-6)
    assert train(pixels).dtype == torch.float32 and train(pixels).shape == (3, 32, 32)
