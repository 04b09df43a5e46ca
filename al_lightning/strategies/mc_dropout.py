"""Consistent MC dropout on the linear head: T dropout-perturbed logits of a block of features.

The trunk is frozen and shared, so the only stochastic part is dropout on the head's input
features, h ↦ W (m_t ⊙ h) / (1 − p) + b with a keep mask m_t per sample t (Gal & Ghahramani
2016; Gal, Islam & Ghahramani 2017 put their last dropout layer, p = 0.5, right before the
final dense layer). The masks are *consistent* (Kirsch, van Amersfoort & Gal, "BatchBALD",
NeurIPS 2019): T masks are drawn once per selection and shared by every point of the pool,
so all points are scored under the same T sampled heads and a point's logits depend on the
point alone, never on the block or the DDP rank it is scored in.

``features @ (W ⊙ m_t / (1 − p)).T`` equals ``(m_t ⊙ h) @ W.T / (1 − p)``. It is computed on
a fixed-point grid (see :mod:`~al_lightning.strategies.distances`): each feature row is
rounded to integers q = round(h · 2^e_h) with its own power-of-two scale (a function of that
row alone), the head once to q_W = round(W · 2^e_W), both with |q| ≤ 2^B, B =
:func:`~al_lightning.strategies.distances.grid_bits` (20 at d = 2,048). Every product and
partial sum of q_h · (m_t ⊙ q_W) is then an integer below 2^51, exact in float64 whatever
order a BLAS, a thread split, a GPU kernel or a block size sums it in; the scaling back, the
1/(1 − p) and the bias are elementwise float64 operations. So the logits are the same bits
for a row scored alone, in any block, on any rank (the price: B bits below each row's largest
feature and the head's largest weight, about float32's precision).

Used by ``bald`` and ``power_bald``; any strategy that needs "T dropout-perturbed logits of
the head" (e.g. DropQuery) should call :func:`dropout_masks` once per selection and
:func:`perturbed_logits` per block.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.distances import grid_bits, grid_exponent, on_grid
from al_lightning.strategies.ranking import ranking_dtype

#: float64's exponent bias and mantissa width: 2^e is built from its bits, exactly.
_BIAS, _MANTISSA = 1023, 52
#: Row scales stay within float64's normal range (a row whose largest value is below 2^-980 rounds to 0).
_EXPONENT_LIMIT = 1000


def check_dropout(rate: float, samples: int) -> None:
    """Refuse a dropout rate outside [0, 1) or fewer than one sample."""
    if not 0.0 <= rate < 1.0:
        raise ConfigurationError(f"dropout rate must lie in [0, 1), got {rate}")
    if samples < 1:
        raise ConfigurationError(f"MC dropout needs at least 1 sample, got {samples}")


def dropout_masks(dim: int, samples: int, rate: float, seed: int) -> Tensor:
    """(samples, dim) bool keep masks (True: the feature is kept), each feature dropped with probability ``rate``.

    Drawn from a CPU generator seeded with ``seed``, so every rank and every block of one
    selection gets the same T masks (consistent MC dropout).
    """
    check_dropout(rate, samples)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(samples, dim, generator=generator, dtype=torch.float64) >= rate


def _powers_of_two(exponents: Tensor) -> Tensor:
    """float64 2^e for integer ``exponents`` in [-1022, 1023], built from the bits (exact on any device)."""
    return ((exponents.to(torch.int64) + _BIAS) << _MANTISSA).view(torch.float64)


def _rows_on_grid(x: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """(B, d) float64 integers q = round(x_i · 2^e_i), |q| ≤ 2^bits, and (B,) the scales 2^-e_i that undo them.

    e_i depends on row i alone: 2^(bits−1) ≤ max|x_i| · 2^e_i < 2^bits (e_i = 0 for a zero row).
    """
    x = x.detach().to(torch.float64)
    largest = x.abs().amax(dim=1) if x.shape[1] else torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    _, exponent = torch.frexp(largest)  # largest = f · 2^exponent, 0.5 ≤ f < 1 (0 for a zero row)
    shift = torch.where(largest == 0, 0, bits - exponent.to(torch.int64)).clamp(-_EXPONENT_LIMIT, _EXPONENT_LIMIT)
    return (x * _powers_of_two(shift)[:, None]).round_(), _powers_of_two(-shift)


def perturbed_logits(features: Tensor, weight: Tensor, bias: Tensor, masks: Tensor, rate: float) -> Tensor:
    """(B, T, C) logits of the head under each of the T dropout ``masks``: ``features @ (W ⊙ m_t / (1 − rate)).T + b``.

    Args:
        features: (B, d) the head's inputs.
        weight: (C, d) and bias: (C,) the linear head.
        masks: (T, d) keep masks from :func:`dropout_masks` (the same for every block).
        rate: the dropout rate the masks were drawn with (kept features are scaled by 1/(1 − rate)).

    Exact on a fixed-point grid (module docstring): a row's logits do not depend on the rows
    it is batched with. Returned in float64 for float64 inputs, float32 otherwise. Memory:
    the (B, T, C) result plus one (B, C) product at a time (the T masked heads are applied one
    by one, never stacked into a (T·C, d) matrix).
    """
    device, dim = features.device, features.shape[1]
    bits = grid_bits(dim)
    q, unscale = _rows_on_grid(features, bits)
    head_exponent = grid_exponent([weight], dim)
    q_weight = on_grid(weight.to(device), head_exponent).to(torch.float64)
    keep = masks.to(device=device, dtype=torch.float64)
    bias64 = bias.detach().to(device=device, dtype=torch.float64)
    head_unscale = math.ldexp(1.0, -head_exponent)
    out = torch.empty(q.shape[0], masks.shape[0], weight.shape[0], dtype=torch.float64, device=device)
    for t in range(masks.shape[0]):
        dots = q @ (q_weight * keep[t]).T  # integers below 2^51: exact in any summation order
        out[:, t] = dots * unscale[:, None] * head_unscale / (1.0 - rate) + bias64
    return out.to(ranking_dtype(features, weight, bias))
