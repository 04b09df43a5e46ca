"""Where this process stands in a torch.distributed run, and work that must succeed on every rank.

Every answer holds in a single process too.
"""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch.distributed as dist

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
