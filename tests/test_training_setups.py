"""The two training setups under the real CLI: what stays frozen stays bit-identical to the SSP checkpoint,
and every round starts its LR schedule afresh before any other callback sees it."""

from __future__ import annotations

import pytest
import torch

from al_lightning.models import build_backbone
from tests.conftest import TINY_RUN, log_dirs

pytestmark = pytest.mark.slow


@pytest.fixture
def ssp_checkpoint(tmp_path):
    """A ResNet-18 trunk with non-trivial BatchNorm statistics, as an SSP checkpoint has."""
    trunk, _ = build_backbone("resnet18")
    generator = torch.Generator().manual_seed(0)
    for name, tensor in trunk.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    path = tmp_path / "ssp.pt"
    torch.save(trunk.state_dict(), path)
    return path, trunk.state_dict()


def saved_trunk(checkpoint) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def test_linear_evaluation_keeps_the_trunk_equal_to_the_ssp_checkpoint(cli, tmp_path, ssp_checkpoint):
    path, ssp = ssp_checkpoint
    lr_monitor = ["--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval=epoch"]
    result = cli(["fit", *TINY_RUN, f"--model.pretrained={path}", "--model.freeze_backbone=true", "--model.lr=0.02", *lr_monitor], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)
    for checkpoint in sorted((run / "checkpoints").glob("round-*.ckpt")):
        trunk = saved_trunk(checkpoint)
        assert trunk.keys() == ssp.keys()
        changed = [k for k in ssp if not torch.equal(trunk[k], ssp[k])]
        assert not changed, f"{checkpoint.name}: {len(changed)} trunk tensors moved, e.g. {changed[:3]}"

    # Every round restarts the cosine schedule (T_max = --al.max_epochs = 2): lr, lr/2, lr, lr/2, ...
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()
    logged = [round(e.value, 6) for e in events.Scalars("lr-SGD")]
    assert logged == [0.02, 0.01] * 3


def test_frozen_batchnorm_statistics_stay_those_of_the_ssp_checkpoint(cli, tmp_path, ssp_checkpoint):
    path, ssp = ssp_checkpoint
    result = cli(["fit", *TINY_RUN, f"--model.pretrained={path}", "--model.freeze_bn_stats=true", "--al.rounds=0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = log_dirs(tmp_path)
    trunk = saved_trunk(run / "checkpoints" / "round-00.ckpt")
    statistics = [k for k in ssp if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics and all(torch.equal(trunk[k], ssp[k]) for k in statistics)
    assert not torch.equal(trunk["conv1.weight"], ssp["conv1.weight"])  # fine-tuning did train the trunk
