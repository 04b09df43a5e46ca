"""ActiveClassifier: backbones by name, linear evaluation, weight resets, initial weights."""

import pytest
import torch

from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier, build_backbone


def test_cifar_stem_keeps_resolution():
    net, dim = build_backbone("resnet18", cifar_stem=True)
    assert dim == 512 and net.conv1.stride == (1, 1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_timm_backbone_by_name():
    net, dim = build_backbone("resnet10t")
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_unknown_backbone_lists_choices():
    with pytest.raises(ConfigurationError, match="unknown backbone 'resnet51'.*resnet18, resnet34, resnet50.*close timm names"):
        build_backbone("resnet51")


def test_linear_evaluation_freezes_the_trunk():
    model = ActiveClassifier(num_classes=3, freeze_backbone=True)
    model.train()
    assert not model.backbone.training and model.head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    optimizer = model.configure_optimizers()["optimizer"]
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 512 * 3 + 3


def test_reset_restores_the_backbone_and_redraws_the_head():
    model = ActiveClassifier(num_classes=3)
    initial = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.reset_weights(seed=1)
    assert all(torch.equal(initial[k], v) for k, v in model.backbone.state_dict().items())
    head = model.head.weight.clone()
    model.reset_weights(seed=1)
    assert torch.equal(head, model.head.weight) and (model.head.bias == 0).all()
    model.reset_weights(seed=2)
    assert not torch.equal(head, model.head.weight)


def test_pretrained_weights_are_loaded_and_bn_stats_frozen(tmp_path):
    source, _ = build_backbone("resnet18")
    torch.save(source.state_dict(), tmp_path / "backbone.pt")
    model = ActiveClassifier(num_classes=3, pretrained=str(tmp_path / "backbone.pt"))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.backbone.state_dict().items())
    model.train()
    assert not model.backbone.bn1.training and model.backbone.conv1.training


def test_mismatched_weights_name_the_keys(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "extra.bias": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigurationError, match=r"missing keys \[.*bn1.*unexpected keys \['extra.bias'\]"):
        ActiveClassifier(pretrained=str(tmp_path / "bad.pt"))
    with pytest.raises(ConfigurationError, match="not found"):
        ActiveClassifier(pretrained=str(tmp_path / "missing.pt"))


def test_class_weights_follow_the_labeled_counts():
    model = ActiveClassifier(num_classes=4, backbone="identity", input_dim=3, class_weighted_loss=True)
    model.update_class_weights(torch.tensor([10, 5, 0, 25]))
    # M/C = 40/4 = 10: balanced classes weigh 1, rare ones more; a class without labels keeps 1
    assert torch.allclose(model.class_weights, torch.tensor([1.0, 2.0, 1.0, 0.4]))
    plain = ActiveClassifier(num_classes=4, backbone="identity", input_dim=3)
    plain.update_class_weights(torch.tensor([10, 5, 0, 25]))
    assert plain.class_weights.tolist() == [1.0] * 4


def test_identity_backbone_classifies_embeddings():
    model = ActiveClassifier(num_classes=3, backbone="identity", input_dim=7)
    assert model(torch.randn(5, 7)).shape == (5, 3)
    with pytest.raises(ConfigurationError, match="needs the embedding size"):
        ActiveClassifier(num_classes=3, backbone="identity")
