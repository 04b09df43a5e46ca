"""Balancing sampler: one point at a time, near the rarest class's centre, away from the majority."""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.strategies.distances import grid_exponent, on_grid, sq_distances_to, sq_norms, squared_distances
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
    centre *nearest* to x (as the paper defines it; the published code took the farthest,
    and divided by its squared distance). Otherwise it picks a random unpicked point: the
    first one not yet picked in one seeded permutation of the pool. The regime test is exact,
    in integers (multiplied through by #majority).

    The method labels one point per step. What a step knows of the previous picks depends on
    the oracle:

    * **Label feedback** (``outputs.targets`` given: an oracle that answers at once, the
      simulated one). As the paper's code ran it: after each pick its TRUE label joins the
      labeled set, so the count of that class goes up and its centre moves to the mean of
      its labeled features, the picked points included; a class's first label gives it a
      centre. The next step's regime, rarest class, majority set and distances see it. This
      is the variant that matches the published code, up to the choices documented here
      (nearest majority centre and its unsquared distance, the unseen-class rule, seeded
      random picks, the exact regime test, exact means where the code divided by count + 1e-5).
    * **Assumed classes** (``targets`` None: what runs with a human oracle, who answers after
      the query). No label comes back, so after each pick the count of its *assumed* class
      goes up: the targeted class for a targeted pick, the class of the nearest centre for a
      random pick. Centres stay those of the labeled set for the whole query.

    A class with no labels has no centre; it is the rarest, so it is targeted first. Distance
    cannot aim at it, so it gets the point farthest from every existing centre (the published
    code set the numerator to 1, ranking by the majority centres alone; but an unseen class is
    no more likely to sit by a minority centre than by a majority one). With feedback it stays
    targeted until a pick turns out to be of that class (as in the code; a class absent from
    the pool is targeted for the rest of the balancing regime); with assumed classes each such
    pick counts for it. The majority always holds a class with a centre: with feedback a
    class's count is its number of labels; with assumed classes targeted picks raise the
    smallest count, never past the largest, and random picks go to classes with centres. With
    no labels at all the picks are random until one is labeled (feedback), or all random
    (assumed classes).

    Not a batch method (the paper notes it does not scale); we keep it exact and incremental:
    squared distances to all centres once, exact on a fixed-point grid of the features and
    centres (:mod:`~al_lightning.strategies.distances`; a point on a centre is exactly 0 from it),
    stored in float32; with feedback, after each pick only the picked
    class's column (O(N·d)); the nearest-majority distance recomputed only when the majority
    set, or a majority centre, changed; then O(N) per pick. Running sums of the features are
    float64 under feedback, so a centre is the mean of its points to float32 precision however
    many picks join it.

    Cost: O(N·C·d) time for the distances; O(N·C) for each recomputed nearest-majority (or,
    for an unseen class, nearest-centre) distance: once per change of the majority set with
    assumed classes, at most once per pick with feedback; O(N) per pick, plus O(N·d) with
    feedback. O(N·C) memory (float32), plus the grid, N·d float32 values.

    Args:
        seed: seeds the random picks outside the balancing regime.
    """

    requires = ("features", "labeled_features", "labeled_targets", "num_classes")
    accepts = ("targets",)

    def _select(self, outputs: PoolOutputs, budget: int) -> Tensor:
        features = outputs.features.float()
        device = features.device
        labeled_targets = outputs.labeled_targets.long().to(device)
        n = features.shape[0]
        feedback = outputs.targets is not None
        if labeled_targets.numel() == 0 and not feedback:
            return torch.randperm(n, generator=self.generator())[:budget]
        num_classes = outputs.num_classes
        true_targets = outputs.targets.long().cpu() if feedback else None

        labeled_counts = torch.bincount(labeled_targets, minlength=num_classes)
        centred = (labeled_counts > 0).nonzero().squeeze(1)
        dtype = torch.float64 if feedback else torch.float32  # running sums, float64 when picks join them
        sums = torch.zeros(num_classes, features.shape[1], device=device, dtype=dtype)
        sums.index_add_(0, labeled_targets, outputs.labeled_features.to(device, sums.dtype))
        # (N, C) squared distances to the class centres, exact on one grid (in its units); +inf for a class without one.
        centres = sums[centred] / labeled_counts[centred, None]
        exponent = grid_exponent([features, outputs.labeled_features, centres], features.shape[1])
        points = on_grid(features, exponent)
        distances = torch.full((n, num_classes), torch.inf, device=device)
        if centred.numel():
            distances[:, centred] = squared_distances(points, on_grid(centres, exponent), torch.float32)
        has_centre = (labeled_counts > 0).cpu()
        feature_sq = sq_norms(points) if feedback else None  # once: a moved centre costs one N·d product
        nearest_sq = None  # (N,) distance to the nearest centre, while no centre has moved

        ids = torch.arange(n, device=device)
        taken = torch.zeros(n, dtype=torch.bool, device=device)
        random_order = iter(torch.randperm(n, generator=self.generator()).tolist())
        counts = labeled_counts.cpu()
        majority_columns = None  # the classes nearest_majority was computed for, while their centres hold
        picks: list[int] = []
        for step in range(budget):
            majority = counts * num_classes > counts.sum()
            num_majority = int(majority.sum())
            # remaining <= #min × (mean_maj − mean_min), multiplied through by #maj: exact in integers.
            num_minority = num_classes - num_majority
            gap = num_minority * int(counts[majority].sum()) - num_majority * int(counts[~majority].sum())
            if num_majority and (budget - step) * num_majority <= gap:
                target = int(counts.argmin())
                if has_centre[target]:
                    columns = (majority & has_centre).nonzero().squeeze(1)
                    if majority_columns is None or not torch.equal(columns, majority_columns):
                        majority_columns = columns
                        nearest_majority = distances[:, columns.to(device)].min(1).values.sqrt()
                    # x on a majority centre scores r/0 or 0/0: worst, not NaN (which ranks first).
                    score = distances[:, target] / nearest_majority
                    score.nan_to_num_(nan=torch.inf, posinf=torch.inf)
                else:
                    if nearest_sq is None:
                        nearest_sq = distances.min(1).values
                    score = -nearest_sq
                keys = score_keys(score, ids)
                keys[taken] = EMPTY_KEY  # taken points sort last
                pick = int(key_ids(smallest_keys(keys, 1))[0])
            else:
                pick = next(p for p in random_order if not taken[p])
                target = None if feedback else int(distances[pick].argmin())  # the nearest centre's class
            taken[pick] = True
            picks.append(pick)
            if not feedback:
                counts[target] += 1
                continue
            # The oracle's answer: the pick joins its true class, whose centre moves.
            label = int(true_targets[pick])
            counts[label] += 1
            sums[label] += features[pick]
            has_centre[label] = True
            # A mean of features stays within their largest value, so on the same grid.
            centre = on_grid((sums[label] / int(counts[label]))[None], exponent)
            distances[:, label] = sq_distances_to(points, feature_sq, centre[0], sq_norms(centre)[0]).float()
            nearest_sq = None
            if majority_columns is not None and bool((majority_columns == label).any()):
                majority_columns = None
        return torch.tensor(picks, dtype=torch.long)
