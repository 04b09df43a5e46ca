"""The few collective operations the query needs, as no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside distributed runs)."""
    return dist.get_rank() if is_distributed() else 0


def gather_rows(tensor: Tensor, device: torch.device | str) -> Tensor:
    """Concatenate ``tensor`` (rows may differ in number) from every rank, rank order, on every rank.

    ``device`` is where the collective runs (the rank's GPU under NCCL); the result comes
    back on the tensor's own device.
    """
    if not is_distributed():
        return tensor
    home = tensor.device
    local = tensor.to(device).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=device))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:s] for g, s in zip(gathered, sizes)]).to(home)


def broadcast_from_zero(tensor: Tensor, device: torch.device | str) -> Tensor:
    """Rank 0's ``tensor`` (1-D, any length) on every rank."""
    if not is_distributed():
        return tensor
    home = tensor.device
    size = torch.tensor([tensor.numel()], device=device)
    dist.broadcast(size, src=0)
    buffer = tensor.to(device) if dist.get_rank() == 0 else torch.empty(int(size), dtype=tensor.dtype, device=device)
    dist.broadcast(buffer, src=0)
    return buffer.to(home)
