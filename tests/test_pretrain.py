"""Self-supervised pretraining: each method's step on a tiny batch, and ``pretrain.py`` → ``train.py`` end to end."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from al_lightning.errors import ConfigurationError
from al_lightning.models.backbones import build_backbone
from al_lightning.models.checkpoints import load_backbone_weights
from al_lightning.ssl import METHODS, MoCoV2, SimCLR, SSLDataModule, build_method
from al_lightning.ssl.cli import PretrainCLI, main
from tests.conftest import REPO, run_cli

SIMCLR_CONFIG = str(REPO / "configs" / "ssl" / "cifar10_simclr.yaml")

#: Two steps of pretraining on digits at 16 px, on the CPU.
TINY_PRETRAIN = [
    "--config", SIMCLR_CONFIG,
    "--data.dataset=digits",
    "--data.path=null",
    "--data.dataset_args=null",  # the config's CIFAR-10 options do not apply to digits
    "--data.image_size=16",
    "--data.batch_size=32",
    "--data.num_workers=0",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
]


def views(batch: int = 4, size: int = 16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 3, size, size, generator=generator) for _ in range(2)]


def test_simclr_loss_is_finite_and_trains_backbone_and_head():
    model = SimCLR(backbone="resnet18", cifar_stem=True)
    loss = model.loss(views())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    assert all(p.grad is not None for p in model.projection_head.parameters())


def test_moco_key_encoder_follows_query_by_momentum_without_gradients():
    model = MoCoV2(backbone="resnet18", cifar_stem=True, key_momentum=0.9, memory_bank_size=16)
    query_modules = (model.backbone, model.projection_head)
    key_modules = (model.key_backbone, model.key_projection_head)
    for query, key in zip(query_modules, key_modules):
        assert all(torch.equal(q, k) for q, k in zip(query.state_dict().values(), key.state_dict().values()))
    with torch.no_grad():  # make the two encoders differ, so that the update is visible
        for p in model.backbone.parameters():
            p.add_(0.1)
    before = [[p.detach().clone() for p in m.parameters()] for m in query_modules + key_modules]

    model.loss(views()).backward()

    for q0, k0, key in zip(before[:2], before[2:], key_modules):
        for q, k, new in zip(q0, k0, key.parameters()):
            torch.testing.assert_close(new, 0.9 * k + 0.1 * q)
            assert not new.requires_grad and new.grad is None
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_moco_memory_bank_queues_the_keys():
    model = MoCoV2(backbone="resnet18", cifar_stem=True, memory_bank_size=16, projection_dim=8)
    bank = model.criterion.memory_bank
    initial = bank.bank.clone()
    assert bank.bank.shape == (16, 8)

    assert torch.isfinite(model.loss(views(batch=4)))
    assert int(bank.bank_ptr) == 4
    assert not torch.allclose(bank.bank[:4], initial[:4]) and torch.equal(bank.bank[4:], initial[4:])
    torch.testing.assert_close(bank.bank[:4].norm(dim=1), torch.ones(4))  # keys are queued normalised
    model.loss(views(batch=4))
    assert int(bank.bank_ptr) == 8


def test_save_backbone_writes_a_state_dict_that_train_py_loads_bit_identically(tmp_path):
    model = SimCLR(backbone="resnet18", cifar_stem=True)
    model.save_backbone(tmp_path / "out" / "backbone.pt")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["backbone.pt"]  # no temporary file left behind

    trunk, _ = build_backbone("resnet18", cifar_stem=True)
    load_backbone_weights(trunk, tmp_path / "out" / "backbone.pt")
    for (name, saved), loaded in zip(model.backbone.state_dict().items(), trunk.state_dict().values()):
        assert torch.equal(saved, loaded), name


def plain_nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss (Chen et al. 2020, eq. 1): each of the 2B views against its partner, the other 2B − 2 as negatives."""
    z = F.normalize(torch.cat([z0, z1]), dim=1).double()
    similarity = (z @ z.T / temperature).fill_diagonal_(-math.inf)
    b = len(z0)
    return F.cross_entropy(similarity, torch.cat([torch.arange(b, 2 * b), torch.arange(b)]))


def plain_info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's loss (He et al. 2020, eq. 1): each query against its key, the queued keys as negatives."""
    q, k = F.normalize(query, dim=1).double(), F.normalize(key, dim=1).double()
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.double().T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def optimizer_and_schedule(model, total_steps: int = 101):
    """``configure_optimizers()`` as a Trainer planning ``total_steps`` steps would get it, and the learning rate at each step."""
    model._trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
    config = model.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]
    assert schedule["interval"] == "step"
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    return optimizer, lrs


def assert_cosine_to_zero(lrs: list[float], peak: float) -> None:
    assert lrs[0] == pytest.approx(peak)
    assert all(later <= earlier for earlier, later in zip(lrs, lrs[1:]))
    assert lrs[len(lrs) // 2] == pytest.approx(peak / 2, rel=0.05)  # half-way down a cosine
    assert lrs[-1] == pytest.approx(0.0, abs=peak * 1e-3)


def test_simclr_defaults_are_the_papers_cifar10_settings():
    """Appendix C.1 (CIFAR-10): Adam, lr 3e-4, betas (0.9, 0.999), cosine schedule; SimCLR's temperature 0.5, 128-d output.

    Nothing is passed in: each value is read from what the built module computes.
    """
    model = build_method("simclr", backbone="resnet18", cifar_stem=True).eval()
    images = views(batch=6)
    with torch.no_grad():
        z0, z1 = (model.projection_head(model.backbone(v)) for v in images)
        loss = model.loss(images)
    assert z0.shape == (6, 128)
    torch.testing.assert_close(loss.double(), plain_nt_xent(z0, z1, temperature=0.5), rtol=1e-5, atol=1e-6)
    assert not torch.isclose(loss.double(), plain_nt_xent(z0, z1, temperature=0.2))

    optimizer, lrs = optimizer_and_schedule(model)
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert (tuple(group["betas"]), group["weight_decay"]) == ((0.9, 0.999), 0.0)
    assert_cosine_to_zero(lrs, peak=3e-4)


def test_moco_v2_defaults_are_the_papers_imagenet_settings():
    """Appendix C.1 (ImageNet): SGD, lr 0.03, momentum 0.9, weight decay 4e-4, cosine schedule;
    MoCo v2's temperature 0.2, 65536 queued keys, key momentum 0.999, 2048-d MLP head, 128-d output.

    Nothing is passed in: each value is read from what the built module computes.
    """
    model = build_method("moco_v2", backbone="resnet18").eval()
    linears = [m for m in model.projection_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [2048, 128]
    with torch.no_grad():  # move the query encoder away from the key encoder, to see the key update
        for p in model.backbone.parameters():
            p.add_(0.01)
    query_before = [p.detach().clone() for p in model.backbone.parameters()]
    key_before = [p.detach().clone() for p in model.key_backbone.parameters()]
    queue = model.criterion.memory_bank.bank.detach().clone()
    assert queue.shape == (65536, 128)

    images = views(batch=6, size=32)
    loss = model.loss(images)  # with gradients: it queues the keys

    for q, k, new in zip(query_before, key_before, model.key_backbone.parameters()):
        torch.testing.assert_close(new, 0.999 * k + 0.001 * q)
    with torch.no_grad():
        query = model.projection_head(model.backbone(images[0]))
        key = model.key_projection_head(model.key_backbone(images[1]))
    torch.testing.assert_close(loss.double(), plain_info_nce(query, key, queue, temperature=0.2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.criterion.memory_bank.bank[:6], F.normalize(key, dim=1))

    optimizer, lrs = optimizer_and_schedule(model)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 4e-4)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in [*model.backbone.parameters(), *model.projection_head.parameters()]}
    assert_cosine_to_zero(lrs, peak=0.03)


def test_build_method_rejects_unknown_names_and_foreign_arguments():
    with pytest.raises(ConfigurationError, match="choose one of: simclr, moco_v2"):
        build_method("byol")
    with pytest.raises(ConfigurationError, match="takes no --model.memory_bank_size"):
        build_method("simclr", memory_bank_size=4096)


def test_data_module_gives_two_normalised_views_of_every_training_image():
    data = SSLDataModule("digits", image_size=16, batch_size=8, view_transform="simclr")
    data.setup("fit")
    assert len(data.train_set) == len(data.splits.train)
    (view0, view1), index = next(iter(data.train_dataloader()))
    assert view0.shape == view1.shape == (8, 3, 16, 16)
    assert not torch.equal(view0, view1)
    assert view0.min() < 0  # normalised with the source's statistics (digits: mean 0.5, std 0.5)


def test_cli_names_the_choices_of_a_bad_method(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pretrain.py"])  # LightningCLI warns when pytest's own arguments are there too
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TINY_PRETRAIN, "--model.method=byol"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: unknown SSL method 'byol'; choose one of: simclr, moco_v2"


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, Path]:
    """Backbone files written by ``pretrain.py``, one per method."""
    files = {}
    for method in METHODS:
        workdir = tmp_path_factory.mktemp(method)
        files[method] = workdir / "backbone.pt"
        args = ["fit", *TINY_PRETRAIN, f"--model.method={method}", f"--model.backbone_out={files[method]}"]
        result = run_cli(args, cwd=workdir, script="pretrain.py")
        assert result.returncode == 0, result.stderr[-3000:]
    return files


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_pretrain_writes_a_trained_backbone_state_dict(backbones, method, monkeypatch):
    state = torch.load(backbones[method], map_location="cpu", weights_only=True)
    trunk, _ = build_backbone("resnet18", cifar_stem=True)
    load_backbone_weights(trunk, backbones[method])
    assert trunk.state_dict().keys() == state.keys()
    assert all(torch.equal(trunk.state_dict()[k], v) for k, v in state.items())
    # The run's own start: the same command's classes, built (seed 0) and not run.
    monkeypatch.setattr(sys, "argv", ["pretrain.py"])
    start = PretrainCLI(args=[*TINY_PRETRAIN, f"--model.method={method}"], run=False).model.backbone.state_dict()
    assert start.keys() == state.keys()
    moved = [k for k in state if state[k].is_floating_point() and not torch.equal(state[k], start[k])]
    assert "conv1.weight" in moved  # two steps moved the trunk's weights


@pytest.mark.slow
def test_train_py_fine_tunes_from_the_pretrained_backbone(backbones, tmp_path):
    # One method suffices: both write through SelfSupervisedModule.save_backbone.
    args = [
        "fit", "--config", str(REPO / "configs" / "demo.yaml"),
        "--data.image_size=16", "--al.rounds=0", "--al.max_epochs=1", "--data.initial_pool_size=20",
        "--trainer.accelerator=cpu", "--model.cifar_stem=true", f"--model.pretrained={backbones['simclr']}",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
