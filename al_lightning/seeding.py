"""Seeds: one experiment seed, and independent sub-seeds derived from it for each use."""

from __future__ import annotations

import hashlib
import os
from typing import Optional


def resolve_seed(seed: Optional[int]) -> int:
    """``seed`` if given, else the seed of ``seed_everything`` (``PL_GLOBAL_SEED``), else 0."""
    if seed is not None:
        return int(seed)
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def derive_seed(*parts: object) -> int:
    """A 63-bit seed determined by ``parts`` (e.g. ``derive_seed(seed, "round", 3)``), stable across runs and machines."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_rngs(seed: int) -> None:
    """Seed torch, NumPy and Python's global generators (what augmentations and dropout draw from).

    Unlike ``seed_everything`` this leaves ``PL_GLOBAL_SEED`` alone: it restarts the random
    stream of one round, it does not change the experiment's seed.
    """
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def seed_worker(worker_id: int, base_seed: int) -> None:
    """``worker_init_fn`` for DataLoaders: worker ``worker_id`` draws from ``base_seed + worker_id``."""
    seed_rngs(base_seed + worker_id)
