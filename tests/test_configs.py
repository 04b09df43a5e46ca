"""Every shipped config parses, and each AL config runs one tiny round on stand-in data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from al_lightning.cli import ActiveLearningCLI
from al_lightning.models import build_backbone
from tests.conftest import REPO, log_dirs, read_csv
from tests.standins import WNIDS, write_cifar, write_features, write_jpeg

AL_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

#: Shrinks any experiment to one round of one epoch on the CPU.
TINY = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.num_nodes=1",
    "--al.rounds=1",
    "--al.max_epochs=1",
    "--data.num_workers=0",
    "--data.batch_size=8",
    "--data.eval_batch_size=32",
]


@pytest.mark.parametrize("config", AL_CONFIGS, ids=lambda p: p.name)
def test_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit:
        ActiveLearningCLI(args=["fit", "--config", str(config), "--print_config"])
    assert exit.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["al"]["strategy"] and printed["data"]["dataset"] and printed["model"]["backbone"]


def save_backbone(path: Path, name: str, cifar_stem: bool = False, moco: bool = False) -> Path:
    """Random SSP stand-in weights, as a plain state_dict or in MoCo v2's checkpoint layout."""
    state = build_backbone(name, cifar_stem)[0].state_dict()
    if moco:
        state = {"epoch": 800, "state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}}
    torch.save(state, path)
    return path


def imagenet_standin(root: Path, per_class: int = 10, test_per_class: int = 3) -> Path:
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            write_jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", 60 * c + i)
        for i in range(test_per_class):
            write_jpeg(root / "val" / wnid / f"val_{c}_{i}.JPEG", 60 * c + i)
    return root


def standin_args(config: str, tmp: Path) -> list[str]:
    """Overrides that point ``config`` at stand-in data and weights of the layout it expects."""
    if config.startswith("cifar10"):
        weights = save_backbone(tmp / "simclr.pt", "resnet18", cifar_stem=True)
        return [f"--data.path={write_cifar(tmp / 'cifar', per_class=12)}", "--data.dataset_args.download=false",
                f"--model.pretrained={weights}", "--data.initial_pool_size=20", "--al.budget=10",
                "--data.val_per_class=null"]  # the stand-in's rarest long-tailed class has one image
    if config.startswith("imagenet"):
        model = yaml.safe_load((REPO / "configs" / config).read_text())["model"]
        resnet = model["backbone"].startswith("resnet")  # transformers take only their own input size
        weights = [f"--model.pretrained={save_backbone(tmp / 'ssp.pt', model['backbone'], moco=resnet)}"] if model.get("pretrained") else []
        return [f"--data.path={imagenet_standin(tmp / 'imagenet')}", *weights,
                f"--data.image_size={32 if resnet else 224}", "--data.initial_pool_size=6", "--al.budget=4",
                "--data.val_per_class=2"]
    if config.startswith("features"):
        path = write_features(tmp / "features.pt", train_features=torch.randn(300, 16),
                              train_targets=torch.arange(300) % 4, test_features=torch.randn(40, 16),
                              test_targets=torch.arange(40) % 4)
        return [f"--data.path={path}", "--data.initial_pool_size=40", "--al.budget=20"]
    return ["--data.image_size=16", "--data.initial_pool_size=20", "--al.budget=10"]


@pytest.mark.slow
@pytest.mark.parametrize("config", AL_CONFIGS, ids=lambda p: p.name)
def test_config_runs_one_tiny_round(config, cli, tmp_path):
    result = cli(["fit", "--config", str(config), *TINY, *standin_args(config.name, tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rounds = read_csv(log_dirs(tmp_path)[0] / "rounds.csv")
    assert [r["round"] for r in rounds] == ["0", "1"]
    assert int(rounds[1]["num_labeled"]) > int(rounds[0]["num_labeled"])
