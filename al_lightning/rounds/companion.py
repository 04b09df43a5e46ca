"""Training a strategy's own networks alongside the classifier (VAAL and any other :class:`TrainsWithClassifier`)."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import pytorch_lightning as pl
from torch import Tensor

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.strategies import TrainsWithClassifier


class CompanionTraining:
    """Feeds a :class:`~al_lightning.strategies.TrainsWithClassifier` strategy one step per classifier step.

    At the start of a round the strategy is reset (fresh networks from the round's seed, on
    the classifier's device); after every training batch it gets that batch's labeled images
    and a batch of unlabeled ones (training transforms, this rank's share) and the
    classifier's learning rate relative to its initial one (:func:`lr_scale`), and its losses
    are logged under ``<strategy name>/<loss>``.
    """

    def __init__(self, strategy: TrainsWithClassifier, name: str) -> None:
        self.strategy = strategy
        self.name = name
        self._unlabeled: Optional[Iterator[tuple[Tensor, Tensor]]] = None
        self._lr_scale = 1.0

    def start_round(self, module: pl.LightningModule, datamodule: ActiveDataModule, network_seed: int, data_seed: int) -> None:
        self.strategy.reset(network_seed, module.device)
        self._unlabeled = datamodule.unlabeled_train_batches(data_seed)

    def before_batch(self, trainer: pl.Trainer) -> None:
        """Note the classifier's rate for this step (by the batch's end, the last batch of an
        epoch already sees the next epoch's rate: Lightning steps epoch schedules first)."""
        self._lr_scale = lr_scale(trainer)

    def after_batch(self, module: pl.LightningModule, batch: Any) -> None:
        if batch is None or self._unlabeled is None:
            return
        unlabeled = next(self._unlabeled, None)
        if unlabeled is None:  # the pool is exhausted, or the batch's images were all unreadable
            return
        losses = self.strategy.train_step(batch[0], unlabeled[0].to(module.device), lr_scale=self._lr_scale)
        module.log_dict({f"{self.name}/{k}": v for k, v in losses.items()}, on_step=False, on_epoch=True, batch_size=len(batch[0]))


def lr_scale(trainer: pl.Trainer) -> float:
    """The classifier's learning rate over the one its schedule started from (1.0 at lr 0).

    For the step, cosine (to 0) and constant schedules, a companion optimizer whose rate is
    multiplied by this follows exactly the schedule a copy of the classifier's scheduler
    would give it.
    """
    group = trainer.optimizers[0].param_groups[0]
    initial = group.get("initial_lr", group["lr"])
    return group["lr"] / initial if initial else 1.0
