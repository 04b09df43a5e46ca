"""Exact, order-independent ranking: every (score, id) pair becomes a key of int64 words.

Keys have shape ``(*scores.shape, W)`` and compare lexicographically, word by word. Scores
in float32 or narrower (float16 and bfloat16 widen to float32 exactly) take one word
(W = 1): the score mapped to an order-preserving 32-bit integer in the high half, the id in
the low half, so a single ``topk`` or ``sort`` ranks them (the fast path). float64 scores
keep their precision with two words (W = 2): the score mapped to an order-preserving 64-bit
integer, then the id; they are ranked by two stable sorts (by id, then by score).

Either way keys are totally ordered, ties between equal scores go to the smaller id, and the
k smallest keys are the same whether they are found in one pass, batch by batch, or merged
across DDP ranks. That is what lets streaming selection reproduce the dense one exactly.
Keys refuse what they cannot order: NaN scores of either sign (x86's default NaN has its
sign bit set and would sort before −inf) and ids outside [0, 2**32).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError

#: Ids are packed into 32 bits of a one-word key.
ID_LIMIT = 1 << 32
_ID_MASK = ID_LIMIT - 1
#: Key word of an empty slot: larger than any real key's first word (it would be a NaN
#: score), so empty slots sort last.
EMPTY_KEY = torch.iinfo(torch.int64).max
#: Bits flipped in a negative float's integer image to make integer order equal float order.
_MAGNITUDE = {torch.float32: (1 << 31) - 1, torch.float64: (1 << 63) - 1}


def ranking_dtype(*values: object) -> torch.dtype:
    """The precision scores of these inputs are computed and ranked in.

    float64 if any of ``values`` is a float64 tensor, float32 otherwise (``None`` and
    non-tensors are ignored): half-precision inputs are scored in float32, float64 inputs
    keep their precision.
    """
    wide = any(isinstance(v, Tensor) and v.dtype == torch.float64 for v in values)
    return torch.float64 if wide else torch.float32


def key_words(dtype: torch.dtype) -> int:
    """Words per key (W) for scores of ``dtype``: 2 for float64, 1 otherwise."""
    return 2 if dtype == torch.float64 else 1


def check_ids(ids: Tensor, what: str = "ids") -> None:
    """Refuse ids that a key cannot hold: outside [0, 2**32)."""
    if ids.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(ids))
    if low < 0 or high >= ID_LIMIT:
        raise ConfigurationError(
            f"{what} must lie in [0, 2**32) to be ranked, got values in [{low}, {high}]; "
            "renumber your pool ids (e.g. by position, 0..N-1) and map the selection back"
        )


def check_scores(scores: Tensor, ids: Tensor) -> None:
    """Refuse NaN scores: a NaN has no place in the order (it means a broken model or input).

    One summing pass decides the usual case (a sum is NaN whenever a term is); only then is
    a mask built. ``ids`` broadcast against ``scores`` and name the offending points.
    """
    if not bool(torch.isnan(scores.sum())):
        return
    bad = torch.isnan(scores)
    if bool(bad.any()):
        points = torch.broadcast_to(ids, scores.shape)[bad].unique()
        raise ConfigurationError(
            f"scores hold NaN for {points.numel()} points (ids {points[:5].tolist()}...); NaN cannot be "
            "ranked: check the model and its inputs (diverged training, fp16 overflow, NaN features)"
        )


def _flip(bits: Tensor, magnitude: int) -> Tensor:
    # IEEE floats order like sign-magnitude integers: flipping the magnitude bits of the
    # negatives makes integer order equal float order (and puts -0.0 just below +0.0). The
    # map is its own inverse.
    return torch.where(bits < 0, bits ^ magnitude, bits)


def score_keys(scores: Tensor, ids: Tensor) -> Tensor:
    """Keys ``(*scores.shape, W)`` of ``scores`` and ``ids``: smaller score first, then smaller id.

    ``ids`` broadcast against ``scores`` (e.g. (B, 1) ids for (B, C) scores). float64 scores
    give two-word keys, any other float dtype one-word keys (see the module docstring).
    Raises :class:`ConfigurationError` on NaN scores or ids outside [0, 2**32).
    """
    check_scores(scores, ids)
    check_ids(ids)
    ids = ids.to(torch.int64)
    if scores.dtype == torch.float64:
        ordered = _flip(scores.contiguous().view(torch.int64), _MAGNITUDE[torch.float64])
        return torch.stack(torch.broadcast_tensors(ordered, ids), dim=-1)
    bits = scores.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return ((_flip(bits, _MAGNITUDE[torch.float32]) << 32) | ids).unsqueeze(-1)


def key_ids(keys: Tensor) -> Tensor:
    """The ids held by ``keys``, shape ``keys.shape[:-1]``."""
    return keys[..., 0] & _ID_MASK if keys.shape[-1] == 1 else keys[..., 1]


def key_scores(keys: Tensor) -> Tensor:
    """The scores held by ``keys``: float32 for one-word keys, float64 for two-word ones."""
    if keys.shape[-1] == 1:
        bits = _flip(keys[..., 0] >> 32, _MAGNITUDE[torch.float32]).to(torch.int32)
        return bits.view(torch.float32)
    return _flip(keys[..., 0], _MAGNITUDE[torch.float64]).view(torch.float64)


def sort_keys(keys: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """``keys`` sorted ascending along ``dim`` (a dimension of the points, not the words), and the order."""
    dim = dim % (keys.dim() - 1)
    if keys.shape[-1] == 1:
        values, order = keys[..., 0].sort(dim=dim)
        return values.unsqueeze(-1), order
    order = keys[..., 1].argsort(dim=dim, stable=True)
    order = order.gather(dim, keys[..., 0].gather(dim, order).argsort(dim=dim, stable=True))
    return keys.gather(dim, order.unsqueeze(-1).expand(*order.shape, 2)), order


def smallest_keys(keys: Tensor, k: int, dim: int = 0) -> Tensor:
    """The ``k`` smallest keys along ``dim``, sorted ascending (all of them if fewer)."""
    dim = dim % (keys.dim() - 1)
    k = min(k, keys.shape[dim])
    if keys.shape[-1] == 1:
        return torch.topk(keys, k, dim=dim, largest=False, sorted=True).values
    return sort_keys(keys, dim)[0].narrow(dim, 0, k)


def smallest_k(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` smallest ``scores``, ascending; ties go to the lower position."""
    ids = torch.arange(scores.numel(), device=scores.device)
    return key_ids(smallest_keys(score_keys(scores.reshape(-1), ids), k))


def sparse_nonzero(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``mask.nonzero(as_tuple=True)`` of a 2-D boolean mask with few True entries, about eight times faster.

    The mask's bytes are read as 64-bit words: ``nonzero`` runs over an eighth as many
    elements, and only the words holding a True byte are looked at byte by byte. Same
    positions, same (row-major) order.
    """
    flat = mask.contiguous().view(-1)
    if flat.numel() % 8 or flat.numel() == 0:
        return mask.nonzero(as_tuple=True)
    bytes_ = flat.view(torch.uint8)
    words = bytes_.view(torch.int64).nonzero().squeeze(1)
    within = bytes_.view(-1, 8)[words].nonzero(as_tuple=True)
    positions = words[within[0]] * 8 + within[1]
    return positions // mask.shape[1], positions % mask.shape[1]


def first_argmax(values: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """(B,) ``values.argmax(dim=1)`` of a (B, C) float tensor without NaN: the first position of each row's maximum.

    On CPU ``argmax`` costs several times a summing pass (it is not vectorised); here the
    maximum is ``amax`` (vectorised), and its first position one of the few entries equal
    to it (equal values compare equal, +0.0 and −0.0 included, as in argmax), found by
    :func:`sparse_nonzero`. Elsewhere, and for rows with NaN (which argmax returns), it is
    ``argmax``. ``mask``: an optional bool buffer of ``values``' shape for the comparison.
    """
    if values.device.type != "cpu" or values.dim() != 2 or values.shape[1] == 0 or values.shape[0] == 0:
        return values.argmax(dim=1)
    top = values.amax(dim=1, keepdim=True)
    equal = values == top if mask is None else torch.eq(values, top, out=mask)
    rows, columns = sparse_nonzero(equal)
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    if int(first.sum()) != values.shape[0]:  # a row without a maximum equal to itself: NaN
        return values.argmax(dim=1)
    return columns[first]
