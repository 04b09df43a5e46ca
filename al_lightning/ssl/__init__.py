"""Self-supervised pretraining of backbones (``pretrain.py``): SimCLR and MoCo v2 over lightly.

A base LightningModule owns the loop, optimiser, schedule and the export of the trained
trunk; each method is a short subclass with its projector and loss; ``METHODS`` maps the
names ``--model.method`` accepts to the classes.
"""

from al_lightning.ssl.base import SelfSupervisedModule
from al_lightning.ssl.data import SSLDataModule
from al_lightning.ssl.methods import METHODS, build_method
from al_lightning.ssl.moco import MoCoV2
from al_lightning.ssl.simclr import SimCLR

__all__ = ["METHODS", "MoCoV2", "SSLDataModule", "SelfSupervisedModule", "SimCLR", "build_method"]
