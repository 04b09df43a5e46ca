"""A strategy's own networks train alongside the classifier and follow its learning-rate schedule."""

from itertools import groupby

import pytest
import pytorch_lightning as pl

from al_lightning.data import ActiveDataModule
from al_lightning.models import ActiveClassifier
from al_lightning.rounds import QueryCallback
from al_lightning.strategies.vaal import VAAL


def test_vaal_learning_rates_follow_the_classifiers_step_schedule_every_round(tmp_path, monkeypatch):
    seen: list[tuple[float, float]] = []
    original = VAAL.train_step

    def recording(self, labeled, unlabeled, lr_scale=1.0):
        losses = original(self, labeled, unlabeled, lr_scale=lr_scale)
        seen.append((self._vae_optimizer.param_groups[0]["lr"], self._discriminator_optimizer.param_groups[0]["lr"]))
        return losses

    monkeypatch.setattr(VAAL, "train_step", recording)
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=32, batch_size=16, seed=0)
    # the classifier's LR halves after every epoch
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05, scheduler="step", step_size=1, gamma=0.5)
    callback = QueryCallback(
        strategy="vaal", strategy_args={"crop_size": 16, "width": 8, "vae_lr": 1e-4, "discriminator_lr": 1e-3},
        budget=16, rounds=1, max_epochs=3, patience=None, seed=0, save_round_checkpoints=False,
    )
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    vae_rates = [rate for rate, _ in groupby(vae for vae, _ in seen)]
    discriminator_rates = [rate for rate, _ in groupby(discriminator for _, discriminator in seen)]
    halving = [0.5**epoch for epoch in range(3)] * 2  # two rounds, each from the initial rates
    assert vae_rates == pytest.approx([1e-4 * h for h in halving])
    assert discriminator_rates == pytest.approx([1e-3 * h for h in halving])
