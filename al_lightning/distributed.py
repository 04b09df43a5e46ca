"""Where this process stands in a torch.distributed run; both answers hold in a single process too."""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside distributed runs)."""
    return dist.get_rank() if is_distributed() else 0
