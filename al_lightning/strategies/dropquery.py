"""DropQuery: points whose prediction dropout flips, spread by k-means (Gupte et al., TMLR 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.kmeans_sampling import fill_at_random, index_order, nearest_to_centres
from al_lightning.strategies.mc_dropout import check_dropout, dropout_masks, perturbed_logits
from al_lightning.strategies.neighbours import on_one_grid
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy, chunk_rows


def disagreements(features: Tensor, weight: Tensor, bias: Tensor, masks: Tensor, rate: float) -> Tensor:
    """(N,) how many of the T dropout-perturbed predictions of the head differ from its clean prediction.

    Predictions are argmaxes (ties: the lower class) of :func:`~al_lightning.strategies.mc_dropout.perturbed_logits`,
    the clean one under an all-keep mask at rate 0, so every row's count is exact and depends
    on that row alone. Row blocks of ~4M logits.
    """
    keep_all = torch.ones(1, features.shape[1], dtype=torch.bool)
    step = chunk_rows(weight.shape[0] * (masks.shape[0] + 1))
    counts = []
    for start in range(0, features.shape[0], step):
        block = features[start : start + step]
        clean = perturbed_logits(block, weight, bias, keep_all, 0.0)[:, 0].argmax(dim=1)
        noisy = perturbed_logits(block, weight, bias, masks, rate).argmax(dim=2)
        counts.append((noisy != clean[:, None]).sum(dim=1))
    return torch.cat(counts).cpu() if counts else torch.empty(0, dtype=torch.long)


def candidate_threshold(mismatch: Tensor, samples: int, wanted: int) -> int:
    """The code's threshold: start at T // 2 (more than half disagree), lower it while fewer than ``wanted``
    points exceed it and it is above 0."""
    threshold = samples // 2
    while int((mismatch > threshold).sum()) < wanted and threshold > 0:
        threshold -= 1
    return threshold


@register("dropquery")
class DropQuery(Strategy):
    """Select, among the points whose prediction dropout flips, the one nearest each of b k-means centres.

    Gupte, Schulz, Jang & Rodriguez, "Revisiting Active Learning in the Era of Vision
    Foundation Models" (TMLR 2024), following the authors' code
    (``github.com/sanketx/AL-foundation-models``, ``ALFM/src/query_strategies/dropout.py``):

    1. The head predicts every unlabeled point cleanly and under T = ``samples`` = 3 dropout
       masks of its input features at rate p = ``dropout`` = 0.75 (the code's ``num_iter`` and
       ``dropout_p``; dropout scales kept features by 1/(1 − p)).
    2. Candidates: the points where more than T // 2 perturbed predictions differ from the
       clean one (more than half, for odd T). As in the code, while fewer than
       ``candidate_factor`` · b = 25·b points pass and the threshold is above 0, it is lowered by
       one (``candidate_factor=0`` keeps the paper's majority rule alone).
    3. With at least b candidates: their features, L2-normalised (the code's ``F.normalize``),
       are cut into b clusters by k-means (k-means++ seeds, at most ``iterations`` = 100 Lloyd
       steps, the code's ``niter``) and each cluster gives its candidate nearest its centre;
       picks in order of cluster size, largest first (the code returns an unordered mask). With
       fewer than b candidates, the code's fallback: all candidates (in pool-index order), then
       points drawn at random from the other unlabeled points.

    Where this differs from the code: the T masks are drawn once per selection and shared by
    every point (consistent MC dropout, :mod:`~al_lightning.strategies.mc_dropout`), where the
    code's ``nn.Dropout`` draws a mask per point and pass; so a point's count depends on the
    point alone, not on its batch or DDP rank. k-means is the exact Lloyd's algorithm of
    :mod:`~al_lightning.strategies.neighbours` (the code: faiss float32 k-means on the GPU from
    its own k-means++ seeds). The code clusters the embedding of its classifier's
    ``feature_extractor`` (a BatchNorm without affine for its linear head); here the head's
    input features. An empty cluster (fewer distinct candidates than b) gives a random
    candidate instead (the code would fail). All draws come from the strategy's seeded
    generator: the masks' seed first, then k-means++ and the fallbacks.

    Cost: O(N·T·C·d) for the perturbed predictions (exact products on a grid, blocks of ~4M
    logits), then k-means of the N_c candidates, O(N_c·b·d) per Lloyd iteration. Memory: O(N)
    beyond one block of logits, plus the candidates' grid, N_c·d float32 values.

    Args:
        seed: seeds the dropout masks, k-means++ and the fallbacks.
        dropout: p, the rate at which each input feature of the head is dropped.
        samples: T, the number of dropout masks.
        candidate_factor: lower the threshold while fewer than this many candidates per
            budgeted point pass it (the code's 25); 0: never.
        iterations: at most this many Lloyd steps.
        normalize: L2-normalise the candidates' features before clustering, as the code does.
    """

    requires = ("features", "weight", "bias")
    pairwise = True
    shares_work = True

    def __init__(
        self,
        seed: int = 0,
        dropout: float = 0.75,
        samples: int = 3,
        candidate_factor: int = 25,
        iterations: int = 100,
        normalize: bool = True,
    ) -> None:
        super().__init__(seed)
        check_dropout(dropout, samples)
        self.dropout = dropout
        self.samples = samples
        self.candidate_factor = candidate_factor
        self.iterations = iterations
        self.normalize = normalize

    def candidates(self, outputs: PoolOutputs, budget: int, generator: torch.Generator) -> Tensor:
        """Positions (ascending) of the candidates, in ``outputs`` sorted by pool index."""
        features = outputs.features
        masks = dropout_masks(features.shape[1], self.samples, self.dropout, int(torch.randint(2**62, (1,), generator=generator)))
        mismatch = disagreements(features, outputs.weight, outputs.bias, masks, self.dropout)
        threshold = candidate_threshold(mismatch, self.samples, self.candidate_factor * budget)
        return (mismatch > threshold).nonzero().squeeze(1)

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        order = index_order(outputs)
        device = outputs.features.device
        ordered = PoolOutputs(
            index=outputs.index[order.to(outputs.index.device)],
            features=outputs.features[order.to(device)],
            weight=outputs.weight,
            bias=outputs.bias,
        )
        generator = self.generator()
        candidates = self.candidates(ordered, budget, generator)
        if candidates.numel() < budget:
            picks = fill_at_random(candidates.tolist(), len(ordered), budget, generator)
            return order[torch.tensor(picks, dtype=torch.long)]
        features = ordered.features[candidates.to(device)]
        (points,) = on_one_grid(features, unit=self.normalize)
        picks, _ = nearest_to_centres(points, budget, generator, self.iterations)
        picks = fill_at_random(picks, len(points), budget, generator)
        return order[candidates[torch.tensor(picks, dtype=torch.long)]]
