"""BALD: the points whose label the sampled heads disagree on most (mutual information with the weights)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from al_lightning.strategies.mc_dropout import check_dropout, dropout_masks, perturbed_logits
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import RankedStrategy, chunk_rows


def mutual_information(logits: Tensor) -> Tensor:
    """(B,) I[y; ω | x] = H[mean_t p_t] − mean_t H[p_t] of (B, T, C) sampled logits, in nats, in their dtype.

    p_t is the softmax of sample t. 0·log 0 counts as 0 (a one-hot prediction has entropy 0,
    not NaN); the result is clamped at 0, the lower bound that rounding may cross when every
    sample agrees.
    """
    log_p = logits.log_softmax(dim=2)
    p = log_p.exp()
    expected_entropy = -(p * log_p).sum(dim=2).mean(dim=1)
    mean_p = p.mean(dim=1)
    entropy_of_mean = -torch.special.xlogy(mean_p, mean_p).sum(dim=1)
    return (entropy_of_mean - expected_entropy).clamp_min(0)


def bald_scorer(
    head: PoolOutputs, dropout: float, samples: int, seed: int, dtype: torch.dtype
) -> Callable[[PoolOutputs], Tensor]:
    """A function from a block of outputs to its (B,) mutual information under T consistent dropout masks.

    The masks are drawn here, once per selection, from ``seed`` (:func:`~al_lightning.strategies.mc_dropout.dropout_masks`);
    every block is scored with them and with ``head``'s weight and bias, in ``dtype``.
    """
    masks = dropout_masks(head.weight.shape[1], samples, dropout, seed)
    weight, bias = head.weight, head.bias
    return lambda chunk: mutual_information(perturbed_logits(chunk.features, weight, bias, masks, dropout).to(dtype))


def bald_block_rows(num_classes: int, samples: int) -> int:
    """Rows per block so that the (rows, T, C) sampled logits hold about 4M values."""
    return chunk_rows(max(1, num_classes) * samples)


@register("bald")
class BALD(RankedStrategy):
    """Select the b points of largest mutual information between their label and the head's weights.

    BALD (Houlsby et al. 2011, "Bayesian Active Learning for Classification and Preference
    Learning"), with MC dropout as the posterior (Gal, Islam & Ghahramani, ICML 2017, "Deep
    Bayesian Active Learning with Image Data"): I[y; ω | x] = H[mean_t p_t] − mean_t H[p_t]
    over T dropout samples. The trunk is frozen and shared, so only the linear head is
    sampled, with dropout on its input features; the T masks are drawn once per selection
    from the seed and shared by every point (consistent MC dropout, Kirsch et al. 2019:
    :mod:`~al_lightning.strategies.mc_dropout`), so a point's score does not depend on the
    block or the rank it is scored in. The defaults are baal's (``ConsistentDropout(p=0.5)``,
    20 iterations in its experiments) and Gal et al.'s p = 0.5 before the last dense layer.
    Ranked by −MI, lowest first (ties to the smaller id). The MI is computed in float64 for
    float64 inputs, float32 otherwise.

    Args:
        dropout: the rate p at which each input feature of the head is dropped.
        samples: T, the number of dropout masks.

    Cost: O(N·T·C·d) time (T products of each (B, d) block with a masked (d, C) head);
    O(T·d + b) memory plus a (block, T, C) temporary of about 4M values, streamed batch by
    batch (never N×T×C).
    """

    requires = ("features", "weight", "bias")

    def __init__(self, dropout: float = 0.5, samples: int = 20, seed: int = 0) -> None:
        super().__init__(seed)
        check_dropout(dropout, samples)
        self.dropout = dropout
        self.samples = samples

    def block_rows(self, outputs: PoolOutputs) -> int:
        return bald_block_rows(outputs.num_classes or 1, self.samples)

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        mutual_information_of = bald_scorer(head, self.dropout, self.samples, self.seed, self.score_dtype(head))
        return lambda chunk: -mutual_information_of(chunk)
