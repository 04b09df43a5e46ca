#!/usr/bin/env python
"""Pretrain a backbone self-supervised: ``python pretrain.py fit --config configs/ssl/cifar10_simclr.yaml``."""

from al_lightning.ssl.cli import main

if __name__ == "__main__":
    main()
