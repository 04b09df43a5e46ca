"""Exact, order-independent ranking: every score becomes one int64 key.

A key packs a float32 score (high 32 bits, mapped to an order-preserving integer) and the
point's id (low 32 bits). Keys are totally ordered, ties between equal scores go to the
smaller id, and the k smallest keys are the same whether they are found in one pass, batch
by batch, or merged across DDP ranks. That is what lets streaming selection reproduce the
dense one exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

_ID_BITS = 32
_ID_MASK = (1 << _ID_BITS) - 1


def score_keys(scores: Tensor, ids: Tensor) -> Tensor:
    """Pack ``scores`` (any float dtype, rounded to float32) and ``ids`` into sortable int64 keys.

    ``ids`` broadcast against ``scores`` (e.g. (B, 1) ids for (B, C) scores) and must lie in
    [0, 2**32). Smaller score first, then smaller id.
    """
    bits = scores.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    # IEEE floats order like sign-magnitude integers: flipping the magnitude bits of the
    # negatives makes integer order equal float order (and puts -0.0 just below +0.0).
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (ordered << _ID_BITS) | ids.to(torch.int64)


def key_ids(keys: Tensor) -> Tensor:
    """The ids packed into ``keys`` by :func:`score_keys`."""
    return keys & _ID_MASK


def key_scores(keys: Tensor) -> Tensor:
    """The float32 scores packed into ``keys`` by :func:`score_keys`."""
    ordered = keys >> _ID_BITS
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).to(torch.int32)
    return bits.view(torch.float32)


def smallest_keys(keys: Tensor, k: int, dim: int = 0) -> Tensor:
    """The ``k`` smallest keys along ``dim``, sorted ascending (all of them if fewer)."""
    k = min(k, keys.shape[dim])
    return torch.topk(keys, k, dim=dim, largest=False, sorted=True).values


def smallest_k(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` smallest ``scores``, ascending; ties go to the lower position."""
    ids = torch.arange(scores.numel(), device=scores.device)
    return key_ids(smallest_keys(score_keys(scores.reshape(-1), ids), k))
