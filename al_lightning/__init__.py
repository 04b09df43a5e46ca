"""al_lightning: pool-based active learning on self-supervised backbones, with PyTorch Lightning.

The pieces, each in its own sub-package:

- :mod:`al_lightning.strategies`: query strategies (BASE, MASE and the baselines) behind
  ``build(name).select(outputs, budget)``; usable without Lightning.
- :mod:`al_lightning.data`: the labeled/unlabeled pool, the ``ActiveDataModule``, dataset
  sources and the feature cache.
- :mod:`al_lightning.models`: the classifier (backbone + linear head).
- :mod:`al_lightning.rounds`: the query callback that turns one ``trainer.fit`` into an AL run.
- :mod:`al_lightning.query`: one round's query over the pool, on one rank or many.
- :mod:`al_lightning.oracles`: where labels come from (the dataset, a labels file, Label Studio).
- :mod:`al_lightning.inference`: the one loop over a loader outside training.
- :mod:`al_lightning.plugins`: the registry idiom of strategies, sources and oracles.
- :mod:`al_lightning.run_files`: a run's files, their writers and readers.
- :mod:`al_lightning.cli`: the ``LightningCLI`` behind ``train.py``; :mod:`al_lightning.sweep`
  and :mod:`al_lightning.report` run grids and report on them.
"""

__version__ = "0.1.0"
