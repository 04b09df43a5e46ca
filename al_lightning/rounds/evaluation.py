"""Test accuracy of the round's best model: each rank on its shard, the metrics synced across ranks."""

from __future__ import annotations

from functools import cache
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.inference import InferenceLoop
from al_lightning.models.classifier import ActiveClassifier


def evaluate_test(trainer: pl.Trainer, module: ActiveClassifier, datamodule: ActiveDataModule) -> dict[str, Optional[float]]:
    """``{"test_acc_top1": ..., "test_acc_top5": ...}`` on the test split, in eval mode.

    Top-5 is ``None`` with five classes or fewer (it would always be 1.0). Both are ``None``
    without a test split (the run's records leave them empty). The trunk runs in the trainer's
    precision, the head in float32, as in pool scoring (:class:`~al_lightning.inference.InferenceLoop`).
    """
    if not datamodule.has_test_split:
        _say_no_test_split()
        return {"test_acc_top1": None, "test_acc_top5": None}
    metrics = module.test_metrics
    metrics.reset()

    def update(logits: Tensor, targets: Tensor) -> None:
        metrics.update(logits, targets.to(logits.device))

    try:
        InferenceLoop.of(trainer, module).run(datamodule.test_dataloader(sharded=True), module, update, "evaluating the test split")
        results = {k.removeprefix("test/"): float(v) for k, v in metrics.compute().items()}
    finally:
        metrics.reset()
    return {"test_acc_top1": results["acc_top1"], "test_acc_top5": results.get("acc_top5")}


@cache
def _say_no_test_split() -> None:
    """Said once per process, not every round."""
    rank_zero_info("[al] test accuracy is not measured: the dataset has no test split (give one with --data.dataset_args.test_path=DIR)")
