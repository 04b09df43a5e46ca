"""Balancing sampler: one point at a time, near the rarest class's centre, away from the majority."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.distances import squared_distances
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.ranking import EMPTY_KEY, key_ids, score_keys, smallest_keys
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import Strategy


@register("balancing")
class BalancingSampler(Strategy):
    """Select, one point at a time, points likely to belong to the least-labeled class.

    Aggarwal, Popescu & Hudelot, "Active Learning for Imbalanced Datasets", WACV 2020; the
    paper's baseline (x). Class centres μ_c are the means of the labeled features. Counts
    start as the labeled class counts; majority classes are those above the mean count.
    While the remaining budget is at most #minority × (mean majority count − mean minority
    count), the step targets the rarest class r (fewest counts, ties to the lower index) and
    picks the unpicked point with the smallest ‖x − μ_r‖² / ‖x − μ_m*‖, m* the majority
    centre *nearest* to x (as the paper defines it; the published code took the farthest).
    Otherwise it picks a random unpicked point (seeded).

    The method was built to label one point per step. Inside one query no label comes back,
    so after each pick the count of its *assumed* class goes up: the targeted class for a
    targeted pick, the class of the nearest centre for a random pick (the published code read
    the pick's true label from the pool and moved the centres with it). Centres stay those of
    the labeled set for the whole query.

    A class with no labels has no centre; it is the rarest, so it is targeted first. Distance
    cannot aim at it, so it gets the point farthest from every existing centre (the published
    code set the numerator to 1, ranking by the majority centres alone; but an unseen class is
    no more likely to sit by a minority centre than by a majority one). The majority always
    holds a class with labels: targeted picks raise the smallest count, never past the
    largest, and random picks go to classes with centres. With no labels at all every pick
    is random.

    Not a batch method (the paper notes it does not scale); we keep it exact and incremental:
    squared distances to all centres once, the nearest-majority distance recomputed only when
    the majority set changes, then O(N) per pick.

    Cost: O(N·C·d) time for the distances, O(N·C·(changes of the majority set) + N·b) for the
    picks; O(N·C) memory (float32).

    Args:
        seed: seeds the random picks outside the balancing regime.
    """

    requires = ("features", "labeled_features", "labeled_targets", "num_classes")

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        features = outputs.features.float()
        device = features.device
        labeled_targets = outputs.labeled_targets.long().to(device)
        n = features.shape[0]
        if labeled_targets.numel() == 0:
            return torch.randperm(n, generator=self.generator())[:budget]
        num_classes = outputs.num_classes

        labeled_counts = torch.bincount(labeled_targets, minlength=num_classes)
        centred = (labeled_counts > 0).nonzero().squeeze(1)
        sums = torch.zeros(num_classes, features.shape[1], device=device)
        sums.index_add_(0, labeled_targets, outputs.labeled_features.float().to(device))
        distances = squared_distances(features, sums[centred] / labeled_counts[centred, None])  # (N, K)
        nearest_sq, nearest_column = distances.min(1)
        column = torch.full((num_classes,), -1, dtype=torch.long)
        column[centred.cpu()] = torch.arange(centred.numel())

        ids = torch.arange(n, device=device)
        taken = torch.zeros(n, dtype=torch.bool, device=device)
        random_order = iter(torch.randperm(n, generator=self.generator()).tolist())
        counts = labeled_counts.cpu()
        majority_columns = torch.empty(0, dtype=torch.long)
        picks: list[int] = []
        for step in range(budget):
            majority = counts * num_classes > counts.sum()
            num_majority = int(majority.sum())
            # remaining <= #min × (mean_maj − mean_min), multiplied through by #maj: exact in integers.
            num_minority = num_classes - num_majority
            gap = num_minority * int(counts[majority].sum()) - num_majority * int(counts[~majority].sum())
            if num_majority and (budget - step) * num_majority <= gap:
                target = int(counts.argmin())
                if column[target] >= 0:
                    columns = column[majority]
                    columns = columns[columns >= 0]
                    if not torch.equal(columns, majority_columns):
                        majority_columns = columns
                        nearest_majority = distances[:, columns.to(device)].min(1).values.sqrt()
                    # x on a majority centre scores r/0 or 0/0: worst, not NaN (which ranks first).
                    score = distances[:, int(column[target])] / nearest_majority
                    score.nan_to_num_(nan=torch.inf, posinf=torch.inf)
                else:
                    score = -nearest_sq
                keys = score_keys(score, ids)
                keys[taken] = EMPTY_KEY  # taken points sort last
                pick = int(key_ids(smallest_keys(keys, 1))[0])
            else:
                pick = next(p for p in random_order if not taken[p])
                target = int(centred[nearest_column[pick]])
            taken[pick] = True
            picks.append(pick)
            counts[target] += 1
        return torch.tensor(picks, dtype=torch.long)
