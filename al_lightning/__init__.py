"""al_lightning: pool-based active learning on self-supervised backbones, with PyTorch Lightning.

The pieces, each in its own sub-package:

- :mod:`al_lightning.strategies`: query strategies (BASE, MASE and the baselines) behind
  ``build(name).select(outputs, budget)``; usable without Lightning.
- :mod:`al_lightning.data`: the labeled/unlabeled pool and the ``ActiveDataModule``.
- :mod:`al_lightning.models`: the classifier (backbone + linear head).
- :mod:`al_lightning.callbacks`: the query callback that turns one ``trainer.fit`` into an AL run.
- :mod:`al_lightning.cli`: the ``LightningCLI`` behind ``train.py``.
"""

__version__ = "0.1.0"
