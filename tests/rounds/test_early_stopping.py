"""Early stopping within a round: patience counts validation checks; ties and a grace period as configured."""

import torch

from al_lightning.rounds.early_stopping import RoundEarlyStopping


def test_patience_counts_checks_without_improvement_and_keeps_the_best_weights():
    module = torch.nn.Linear(1, 1, bias=False)
    stopping = RoundEarlyStopping(patience=2, mode="max")
    for epoch, (score, weight) in enumerate([(0.5, 1.0), (0.7, 2.0), (0.7, 3.0), (0.6, 4.0)], start=1):
        module.weight.data.fill_(weight)
        stopping.update(score, epoch, module)
    # 0.7 first at epoch 2; the tie at epoch 3 is not an improvement, so two checks went by without one.
    assert (stopping.best_score, stopping.best_epoch, stopping.bad_checks, stopping.exhausted) == (0.7, 2, 2, True)
    stopping.restore_best(module)
    assert module.weight.item() == 2.0
    stopping.reset()
    assert stopping.best_score is None and not stopping.exhausted


def test_min_mode_and_no_patience():
    module = torch.nn.Linear(1, 1)
    stopping = RoundEarlyStopping(patience=None, mode="min")
    for epoch, score in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        stopping.update(score, epoch, module)
    assert stopping.best_epoch == 1 and stopping.bad_checks == 3 and not stopping.exhausted


def test_a_round_counts_patience_in_validation_checks_under_the_real_trainer(tmp_path):
    import pytorch_lightning as pl

    from al_lightning.data import ActiveDataModule
    from al_lightning.models import ActiveClassifier
    from al_lightning.rounds import QueryCallback

    # Validation every 2nd epoch and patience 1: a round can only end after a second check
    # (epoch 4) or at max_epochs (6); reading a stale metric at epoch 3 would end it there.
    datamodule = ActiveDataModule(dataset="digits", image_size=16, initial_pool_size=40, batch_size=16, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="resnet18", lr=0.05)
    callback = QueryCallback(strategy="random", budget=10, rounds=1, max_epochs=6, patience=1, seed=0, save_round_checkpoints=False)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path, check_val_every_n_epoch=2,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    for row in callback.history:
        assert row["epochs"] in (4, 6) and row["best_epoch"] in (2, 4, 6)


def test_a_tie_can_count_as_an_improvement_as_in_the_papers_code():
    module = torch.nn.Linear(1, 1, bias=False)
    stopping = RoundEarlyStopping(patience=2, mode="max", tie_improves=True)
    for epoch, (score, weight) in enumerate([(0.5, 1.0), (0.7, 2.0), (0.7, 3.0), (0.6, 4.0)], start=1):
        module.weight.data.fill_(weight)
        stopping.update(score, epoch, module)
    # the tie at epoch 3 resets the count and becomes the best; one bad check since.
    assert (stopping.best_score, stopping.best_epoch, stopping.bad_checks, stopping.exhausted) == (0.7, 3, 1, False)
    stopping.restore_best(module)
    assert module.weight.item() == 3.0


def _constant_score_rounds(tmp_path, **al):
    """Rounds whose validation score never changes: a head on fixed features that does not learn (lr 0)."""
    import pytorch_lightning as pl

    from al_lightning.data import ActiveDataModule
    from al_lightning.models import ActiveClassifier
    from al_lightning.rounds import QueryCallback
    from tests.standins import write_random_features

    tmp_path.mkdir()
    path = write_random_features(tmp_path / "features.pt", train=200, test=50, num_classes=10)
    datamodule = ActiveDataModule(dataset="features", path=str(path), initial_pool_size=20, batch_size=8, seed=0)
    model = ActiveClassifier(num_classes=10, backbone="identity", input_dim=4, lr=0.0)
    callback = QueryCallback(**{"strategy": "random", "budget": 10, "rounds": 1, "max_epochs": 6, "patience": 1, "seed": 0, "save_round_checkpoints": False, **al})
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=-1, callbacks=[callback], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return [(row["epochs"], row["best_epoch"]) for row in callback.history]


def test_min_epochs_and_ties_under_the_real_trainer(tmp_path):
    # patience 1: a constant score runs out of patience at epoch 2 ...
    assert _constant_score_rounds(tmp_path / "plain") == [(2, 1), (2, 1)]
    # ... but not before min_epochs ...
    assert _constant_score_rounds(tmp_path / "grace", min_epochs=4) == [(4, 1), (4, 1)]
    # ... and never when every tie improves: the round runs to max_epochs and keeps the last weights.
    assert _constant_score_rounds(tmp_path / "ties", tie_improves=True) == [(6, 6), (6, 6)]
