#!/usr/bin/env python
"""Run an active-learning experiment: ``python train.py fit --config configs/demo.yaml``."""

from al_lightning.cli import main

if __name__ == "__main__":
    main()
