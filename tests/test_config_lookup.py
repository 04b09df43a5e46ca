"""``--config NAME.yaml`` finds the project's configs from any working directory."""

from __future__ import annotations

import pytest
import yaml

from al_lightning.config_files import PROJECT_CONFIGS, resolve_config_args
from al_lightning.errors import ConfigurationError
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo.yaml"
SIMCLR = REPO / "configs" / "ssl" / "cifar10_simclr.yaml"


def test_project_configs_is_the_folder_beside_the_package():
    assert PROJECT_CONFIGS == REPO / "configs" and DEMO.is_file()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["fit", "--config", "demo.yaml"], ["fit", "--config", str(DEMO)]),
        (["fit", "--config=demo"], ["fit", f"--config={DEMO}"]),
        (["fit", "-c", "demo.yaml", "--al.budget=3"], ["fit", "-c", str(DEMO), "--al.budget=3"]),
        (
            ["fit", "--config", "demo", "--config=features_linear.yaml"],
            ["fit", "--config", str(DEMO), f"--config={REPO / 'configs' / 'features_linear.yaml'}"],
        ),
        (["fit", "--config", "{al: {budget: 3}}"], ["fit", "--config", "{al: {budget: 3}}"]),  # inline YAML
        (["fit", "--print_config", "--al.budget=3"], ["fit", "--print_config", "--al.budget=3"]),
    ],
)
def test_names_resolve_to_the_project_configs(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_args(args) == expected
    if "demo" in " ".join(args):
        assert f"using config {DEMO}" in capsys.readouterr().err


def test_a_file_in_the_working_directory_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("al:\n  budget: 7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "features_linear.yaml").write_text("al:\n  budget: 7\n")
    args = ["fit", "--config", "demo.yaml", "--config=sub/features_linear.yaml", "--config", str(DEMO)]
    assert resolve_config_args(args) == args
    assert "using config" not in capsys.readouterr().err


def test_ssl_configs_resolve_with_and_without_their_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ssl = PROJECT_CONFIGS / "ssl"
    for name in ["cifar10_simclr.yaml", "cifar10_simclr", "ssl/cifar10_simclr.yaml"]:
        assert resolve_config_args(["fit", "--config", name], ssl) == ["fit", "--config", str(SIMCLR)]
    # pretrain.py does not pick up train.py's configs
    with pytest.raises(
        ConfigurationError, match=r"'demo.yaml' not found .* one of: cifar10_simclr.yaml, fashion_mnist_simclr.yaml, imagenet_mocov2.yaml"
    ):
        resolve_config_args(["fit", "--config", "demo.yaml"], ssl)


def test_a_name_found_nowhere_lists_the_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as err:
        resolve_config_args(["fit", "--config=nosuch.yaml"])
    message = str(err.value)
    assert message.startswith(f"config file 'nosuch.yaml' not found in {tmp_path} nor in {PROJECT_CONFIGS}")
    assert "demo.yaml" in message and "imagenet_base.yaml" in message and "cifar10_simclr" not in message


@pytest.mark.slow
def test_train_finds_a_project_config_from_any_directory(cli, tmp_path):
    result = cli(["fit", "--config", "demo.yaml", "--al.budget=7", "--print_config"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"using config {DEMO}" in result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["al"]["budget"] == 7 and config["data"]["dataset"] == "digits"


@pytest.mark.slow
def test_train_prefers_the_local_file(cli, tmp_path):
    local = yaml.safe_load(DEMO.read_text())
    local["al"]["budget"] = 3
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(local))
    result = cli(["fit", "--config=demo.yaml", "--print_config"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using config" not in result.stderr
    assert yaml.safe_load(result.stdout)["al"]["budget"] == 3


@pytest.mark.slow
def test_train_lists_the_configs_for_an_unknown_name(cli, tmp_path):
    result = cli(["fit", "--config", "nosuch.yaml"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: config file 'nosuch.yaml' not found in {tmp_path} nor in {PROJECT_CONFIGS}" in result.stderr
    assert "demo.yaml" in result.stderr


@pytest.mark.slow
def test_pretrain_finds_an_ssl_config_from_any_directory(cli, tmp_path):
    result = cli(["fit", "--config", "cifar10_simclr.yaml", "--print_config"], cwd=tmp_path, script="pretrain.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"using config {SIMCLR}" in result.stderr
    assert yaml.safe_load(result.stdout)["model"]["method"] == "simclr"
