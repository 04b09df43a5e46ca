"""``--model.pretrained=hub``: timm's published weights through huggingface_hub's own cache, offline.

No test reaches the hub (``HF_HUB_OFFLINE=1``): each fills a temporary ``HF_HUB_CACHE`` in the
hub's layout with seeded weights of a real timm model (:func:`tests.standins.publish_to_hub_cache`).
"""

from __future__ import annotations

import pytest
import torch

from al_lightning.data.feature_cache import weights_digest
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier
from tests.conftest import TINY_RUN, log_dirs
from tests.standins import HUB_MODEL, publish_to_hub_cache

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline: huggingface_hub reads both constants at call time."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def trunk_weights(published: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published weights without timm's classifier (``num_classes=0`` drops it)."""
    return {k: v for k, v in published.items() if not k.startswith("head.")}


def cache_with(cache, seed: int):
    """A second cache, holding other weights published under the same name."""
    cache.mkdir()
    publish_to_hub_cache(cache, seed=seed)
    return cache


@pytest.mark.parametrize("backbone", [HUB_MODEL, f"timm/{HUB_MODEL}", f"hf-hub:timm/{HUB_MODEL}"])
def test_the_trunk_holds_exactly_the_cached_weights(hub_cache, backbone):
    published = trunk_weights(publish_to_hub_cache(hub_cache, seed=1))
    model = ActiveClassifier(num_classes=3, backbone=backbone, pretrained="hub")
    state = model.backbone.state_dict()
    assert state.keys() == published.keys()
    assert all(torch.equal(state[k], published[k]) for k in state)


def test_each_round_resets_to_the_hub_weights_and_the_feature_cache_keys_on_them(hub_cache):
    published = trunk_weights(publish_to_hub_cache(hub_cache, seed=1))
    model = ActiveClassifier(num_classes=3, backbone=HUB_MODEL, pretrained="hub")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # a round of fine-tuning
    model.reset_weights(seed=1)
    assert all(torch.equal(v, published[k]) for k, v in model.backbone.state_dict().items())
    # The feature cache's key is a digest of initial_trunk_state(): the hub weights', not a random initialisation's.
    assert weights_digest(model.initial_trunk_state()) == weights_digest(published)
    random_init = ActiveClassifier(num_classes=3, backbone=HUB_MODEL)
    assert weights_digest(random_init.initial_trunk_state()) != weights_digest(published)
    other = cache_with(hub_cache.parent / "other", seed=2)
    with pytest.MonkeyPatch.context() as mp:
        from huggingface_hub import constants

        mp.setattr(constants, "HF_HUB_CACHE", str(other))
        republished = ActiveClassifier(num_classes=3, backbone=HUB_MODEL, pretrained="hub")
    assert weights_digest(republished.initial_trunk_state()) != weights_digest(published)


@pytest.mark.parametrize("backbone", [HUB_MODEL, f"hf-hub:timm/{HUB_MODEL}"])
def test_weights_not_in_the_cache_offline_is_one_line_saying_how_to_fill_it(hub_cache, backbone):
    with pytest.raises(ConfigurationError) as err:
        ActiveClassifier(num_classes=3, backbone=backbone, pretrained="hub")
    message = str(err.value)
    assert "\n" not in message
    assert f"the weights of '{backbone}' (timm/{HUB_MODEL}) are not in the Hugging Face cache {hub_cache} (HF_HUB_OFFLINE=1)" in message
    assert f"`hf download timm/{HUB_MODEL}`" in message and "HF_HUB_CACHE" in message


def test_an_hf_hub_name_whose_config_is_not_cached_says_so(hub_cache):
    with pytest.raises(ConfigurationError, match=rf"^backbone 'hf-hub:timm/{HUB_MODEL}': the model's config \(timm/{HUB_MODEL}\) is not in the Hugging Face cache"):
        ActiveClassifier(num_classes=3, backbone=f"hf-hub:timm/{HUB_MODEL}")


@pytest.mark.parametrize(
    "backbone, expected",
    [
        ("test_vit.bogus", "timm has no pretrained tag 'bogus' for 'test_vit'; its tags: r160_in1k (e.g. --model.backbone=test_vit.r160_in1k)"),
        ("test_vit", "--model.pretrained=hub needs the pretrained tag of the weights in --model.backbone ('test_vit.TAG'); its tags: r160_in1k"),
        ("resnet50", "('resnet50.TAG'); its tags: a1_in1k, "),  # a torchvision name with hub weights means timm's model
        ("identity", "--model.pretrained=hub needs a timm backbone with published weights, not 'identity'"),
    ],
)
def test_a_name_without_a_pretrained_tag_lists_timms_tags(hub_cache, backbone, expected):
    with pytest.raises(ConfigurationError, match="^[^\n]*$") as err:
        ActiveClassifier(num_classes=3, backbone=backbone, pretrained="hub", input_dim=4)
    assert expected in str(err.value)


def test_a_wrong_tag_fails_without_hub_weights_too(hub_cache):
    with pytest.raises(ConfigurationError, match="timm has no pretrained tag 'bogus' for 'resnet50'; its tags: a1_in1k"):
        ActiveClassifier(num_classes=3, backbone="resnet50.bogus")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_with_hub_weights(tmp_path, cli):
    """train.py with --model.pretrained=hub on the digits: the frozen trunk is the hub's, every round."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    published = trunk_weights(publish_to_hub_cache(cache, seed=3))
    args = ["fit", *TINY_RUN, f"--model.backbone={HUB_MODEL}", "--model.pretrained=hub", "--model.freeze_backbone=true",
            "--model.lr=0.05", "--data.image_size=32", "--al.strategy=margin", f"--trainer.default_root_dir={tmp_path}"]
    result = cli(args, tmp_path, timeout=240, env={"HF_HUB_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"[model] backbone {HUB_MODEL}: the hub's weights (timm/{HUB_MODEL}, Hugging Face cache {cache})" in log
    assert f"[data] input pipeline: the backbone's ({HUB_MODEL}, timm): 32 px, bicubic, crop 0.95 (center)" in log
    (run,) = log_dirs(tmp_path)
    checkpoints = sorted((run / "checkpoints").glob("round-*.ckpt"))
    assert [c.name for c in checkpoints] == ["round-00.ckpt", "round-01.ckpt", "round-02.ckpt"]
    for checkpoint in checkpoints:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        trunk = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        assert all(torch.equal(trunk[k], published[k]) for k in published), checkpoint.name

    # Not cached: the same command stops before any training with one line.
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    result = cli(args, tmp_path, timeout=120, env={"HF_HUB_CACHE": str(empty)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --model.pretrained=hub: the weights of '{HUB_MODEL}'")
    assert len(log_dirs(tmp_path)) == 1  # no second run was started
