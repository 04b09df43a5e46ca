"""The rank helpers: where this process stands in a distributed run, broadcasts, gathers, and work
that must succeed on every rank.

They use torch.distributed's default process group, the one Lightning's DDP strategy sets up
(``trainer.strategy.broadcast`` is the same call), so they also serve code that runs without a
trainer (a strategy's selection, tests with a hand-made process group). Every helper holds in a
single process too, where it does no communication.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics.utilities.distributed import gather_all_tensors

T = TypeVar("T")


class RankFailedError(RuntimeError):
    """Work that every rank does failed on some rank; raised on every rank, naming the rank and the cause."""


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside distributed runs)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 outside distributed runs)."""
    return dist.get_world_size() if is_distributed() else 1


def leave_process_group() -> None:
    """Destroy the default process group, if any, while the interpreter is still whole.

    Lightning destroys an NCCL group at exit but leaves a gloo group to the interpreter's
    shutdown. Gloo's worker threads may then still be freeing the last collective's work
    object, whose tensors need the GIL to release their Python objects: a thread that asks
    for the GIL during finalisation is ended mid-destructor and the process aborts
    ("terminate called without an active exception", SIGABRT) after a run that finished.
    Seen in 3 of 40 two-node ``torchrun`` runs on a busy machine. Destroying the group
    first joins those threads. The call is local to this rank, so it is safe after an error too.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def on_every_rank(work: Callable[[], T], what: str) -> T:
    """``work()`` on this rank, then agreement: if it raised on any rank, every rank raises.

    Without it, a rank that fails in local work (reading its shard, scoring, selecting in its
    partitions) leaves the others waiting in the next collective, where they end with a
    backend error that names neither the rank nor the cause (gloo), or wait for the process
    group's timeout (NCCL). Here every rank reports success or its error, so all of them stop
    with one message that says which rank failed doing ``what``, and why. ``work`` itself must
    not run collectives (a failing rank would skip them).

    Raises:
        RankFailedError: on every rank, if ``work`` raised on any; chained to the local error
            on the rank where it was raised. In a single process the error is raised as is.
    """
    error: Optional[BaseException] = None
    try:
        result = work()
    except Exception as err:  # noqa: BLE001 - reported to every rank, then raised
        if not is_distributed():
            raise
        error, result = err, None
    if not is_distributed():
        return result
    reports: list[Optional[str]] = [None] * world_size()
    dist.all_gather_object(reports, None if error is None else f"{type(error).__name__}: {error}")
    failed = [(r, report) for r, report in enumerate(reports) if report is not None]
    if failed:
        causes = "; ".join(f"rank {r}: {report}" for r, report in failed)
        raise RankFailedError(f"{what} failed on {len(failed)} of {len(reports)} ranks ({causes})") from error
    return result


def broadcast(value: T, src: int = 0) -> T:
    """Rank ``src``'s ``value`` on every rank (any picklable object; tensors come back on the CPU)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_rank_zero(work: Callable[[], T]) -> T:
    """``work()`` on global rank 0 only; every rank gets its result, or raises its exception.

    For work with side effects outside the process (files, a labeling server): done once, and
    an error on rank 0 stops every rank instead of leaving them waiting in a collective.
    ``work`` itself must not take part in a collective (``trainer.log_dir`` is one): ask before.
    """
    outcome: Any = None
    if rank() == 0:
        try:
            outcome = (work(), None)
        except Exception as err:  # noqa: BLE001  re-raised below, on every rank
            outcome = (None, err)
    result, error = broadcast(outcome)
    if error is not None:
        raise error
    return result


def gather_rows(tensor: Tensor, device: torch.device, to: Optional[int] = None) -> Optional[Tensor]:
    """Every rank's rows of ``tensor`` (any number per rank), in rank order, on the tensor's device.

    ``to``: only that rank receives them (the others get None), so the gathered whole exists
    once, not on every rank. The collectives run on ``device`` (the rank's GPU under NCCL).
    """
    if not is_distributed():
        return tensor
    if to is None:
        return torch.cat(gather_all_tensors(tensor.to(device))).to(tensor.device)
    local = tensor.to(device)
    sizes = [int(s) for s in gather_all_tensors(torch.tensor([local.shape[0]], device=device))]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    received = [torch.empty_like(padded) for _ in sizes] if rank() == to else None
    dist.gather(padded, received, dst=to)
    if received is None:
        return None
    return torch.cat([rows[:size] for rows, size in zip(received, sizes)]).to(tensor.device)


def average_over_ranks(module: nn.Module) -> None:
    """Average ``module``'s gradients and float buffers (BatchNorm statistics) over the DDP ranks.

    For networks not wrapped in DDP (VAAL's): called before each optimizer step, it keeps
    every rank's copy identical: same initialisation, same averaged update, same running
    statistics for scoring. One all-reduce per call; a no-op without torch.distributed.
    """
    if not is_distributed():
        return
    tensors = [p.grad for p in module.parameters() if p.grad is not None]
    tensors += [b for b in module.buffers() if b.is_floating_point()]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for tensor, averaged in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(averaged.view_as(tensor))
