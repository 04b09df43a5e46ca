"""Models: backbones by name and the ``ActiveClassifier`` LightningModule."""

from al_lightning.models.backbones import build_backbone
from al_lightning.models.classifier import ActiveClassifier

__all__ = ["ActiveClassifier", "build_backbone"]
