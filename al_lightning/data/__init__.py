"""Data: the pool of labels, dataset sources, and the ``ActiveDataModule`` that serves loaders."""

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.pool import ActivePool

__all__ = ["ActiveDataModule", "ActivePool"]
