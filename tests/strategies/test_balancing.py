"""Class-balancing strategies: the cheating balanced random baseline and the Balancing sampler."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import al_lightning.strategies.balanced_random  # noqa: F401
import al_lightning.strategies.balancing  # noqa: F401
from al_lightning.errors import ConfigurationError
from al_lightning.inference import InferenceLoop
from al_lightning.models import ActiveClassifier
from al_lightning.query.scoring import PoolScorer
from al_lightning.query.selection import select_from_pool
from al_lightning.strategies import PoolOutputs, build


def class_counts(chosen: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(targets[chosen], minlength=num_classes).tolist()


# ---------------------------------------------------------------- balanced_random


def test_balanced_random_is_exactly_balanced_and_reads_only_targets():
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(100) % 4
    bare = PoolOutputs(index=torch.arange(100), targets=targets, num_classes=4)
    assert build("balanced_random").requires == ("targets", "num_classes")
    chosen = build("balanced_random", seed=5).select(bare, 22)
    assert class_counts(chosen, targets, 4) == [6, 6, 5, 5]  # ⌊22/4⌋ + [c < 22 mod 4]
    # Every prefix is balanced too (round-robin order).
    assert class_counts(chosen[:8], targets, 4) == [2, 2, 2, 2]
    # Model outputs play no part.
    logits, features = torch.randn(100, 4, generator=g), torch.randn(100, 3, generator=g)
    full = PoolOutputs(index=torch.arange(100), targets=targets, logits=logits, features=features)
    assert torch.equal(build("balanced_random", seed=5).select(full, 22), chosen)


def test_balanced_random_is_random_within_each_class():
    outputs = PoolOutputs(index=torch.arange(100), targets=torch.arange(100) % 4, num_classes=4)
    picks = {tuple(sorted(build("balanced_random", seed=s).select(outputs, 8).tolist())) for s in range(5)}
    assert len(picks) > 1


def test_balanced_random_gives_a_short_class_shortfall_to_the_others():
    targets = torch.tensor([0] * 10 + [1] * 10 + [2])
    outputs = PoolOutputs(index=torch.arange(21), targets=targets, num_classes=3)
    # Quotas [3, 3, 3]; class 2 has one point, the two missing are shared evenly.
    assert class_counts(build("balanced_random").select(outputs, 9), targets, 3) == [4, 4, 1]
    # Quotas for 8: [3, 3, 2]; water-filled to [3, 3, 1] plus one for a random class with points to spare.
    seen = {tuple(class_counts(build("balanced_random", seed=s).select(outputs, 8), targets, 3)) for s in range(9)}
    assert seen == {(4, 3, 1), (3, 4, 1)}


def test_balanced_random_counts_classes_absent_from_the_pool():
    targets = torch.arange(40) % 3
    # C = 4: class 3 has no point in the pool, its quota goes to the others.
    outputs = PoolOutputs(index=torch.arange(40), targets=targets, num_classes=4)
    chosen = build("balanced_random").select(outputs, 12)
    assert class_counts(chosen, targets, 4) == [4, 4, 4, 0]


# ---------------------------------------------------------------- balancing


def replay(outputs: PoolOutputs, picks: list[int], num_classes: int) -> list[str]:
    """Walk a balancing selection, recomputing everything from scratch at every step.

    At each step: the (assumed) counts decide the regime; in the balancing regime the pick
    must be the unpicked argmin of ‖x − μ_r‖² / min over majority m of ‖x − μ_m‖ for the
    rarest class r (for a class without labels: the point farthest from every centre).
    Returns each step's kind, "target <class>" or "random".
    """
    x = outputs.features.double()
    labeled = outputs.labeled_targets
    counts = torch.bincount(labeled, minlength=num_classes).double()
    has_centre = counts > 0
    centres = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    for c in has_centre.nonzero().flatten().tolist():
        centres[c] = outputs.labeled_features[labeled == c].double().mean(0)
    dist = torch.cdist(x, centres)  # (N, C)
    taken = torch.zeros(len(x), dtype=torch.bool)
    kinds = []
    for step, pick in enumerate(picks):
        mean = counts.mean()
        majority = counts > mean
        minority = ~majority
        remaining = len(picks) - step
        gap = minority.sum() * (counts[majority].mean() - counts[minority].mean()) if majority.any() else -1
        in_regime = remaining <= gap + 1e-9
        if in_regime:
            rarest = int(counts.argmin())
            if has_centre[rarest]:
                score = dist[:, rarest] ** 2 / dist[:, majority & has_centre].min(1).values
            else:
                score = -dist[:, has_centre].min(1).values
            score[taken] = torch.inf
            assert pick == int(score.argmin()), f"step {step}: class {rarest} wants {int(score.argmin())}, not {pick}"
            kinds.append(f"target {rarest}")
            counts[rarest] += 1
        else:
            kinds.append("random")
            nearest = dist[pick].masked_fill(~has_centre, torch.inf).argmin()
            counts[nearest] += 1
        assert not taken[pick]
        taken[pick] = True
    return kinds


def imbalanced_pool(num_classes: int = 4, labeled_per_class: tuple[int, ...] = (20, 10, 2, 1)) -> tuple[PoolOutputs, torch.Tensor]:
    """200 points in Gaussian blobs, one per class, and their true classes; the labeled set is imbalanced as given.

    Only features, the labeled set and ``num_classes`` are given: no logits, so C comes from
    ``num_classes`` alone, as it does when a caller has only embeddings and labels.
    """
    g = torch.Generator().manual_seed(0)
    means = 3 * torch.randn(num_classes, 5, generator=g)
    pool_targets = torch.randint(0, num_classes, (200,), generator=g)
    labeled_targets = torch.cat([torch.full((k,), c) for c, k in enumerate(labeled_per_class)])
    outputs = PoolOutputs(
        index=torch.arange(1000, 1200),
        features=means[pool_targets] + torch.randn(200, 5, generator=g),
        labeled_features=means[labeled_targets] + torch.randn(len(labeled_targets), 5, generator=g),
        labeled_targets=labeled_targets,
        num_classes=num_classes,
    )
    return outputs, pool_targets


def imbalanced_outputs(num_classes: int = 4, labeled_per_class: tuple[int, ...] = (20, 10, 2, 1)) -> PoolOutputs:
    return imbalanced_pool(num_classes, labeled_per_class)[0]


def test_balancing_always_serves_the_least_labeled_class():
    outputs = imbalanced_outputs()
    # Counts [20, 10, 2, 1]: the gap 2 × (15 − 1.5) = 27 exceeds the budget throughout.
    chosen = build("balancing").select(outputs, 12)
    kinds = replay(outputs, (chosen - 1000).tolist(), 4)
    # Class 3, then 2, alternating; the majority set shrinks to {0} on the way (mean passes 10).
    assert kinds == ["target 3", "target 2"] * 6
    assert torch.equal(build("balancing", seed=7).select(outputs, 12), chosen)  # no randomness


def test_balancing_targets_a_class_without_labels_first():
    outputs = imbalanced_outputs(num_classes=5, labeled_per_class=(20, 10, 2, 1, 0))  # class 4 has no labels
    chosen = build("balancing").select(outputs, 6)
    kinds = replay(outputs, (chosen - 1000).tolist(), 5)
    assert kinds == ["target 4", "target 3", "target 4", "target 2", "target 3", "target 4"]


def test_balancing_targets_the_last_class_when_it_has_no_label():
    # Class 3 of 4 has no labeled point, so the labels alone say C = 3: a class count read
    # from them never targets class 3 (it picked classes [2, 2, 2, 2, 2, 2] here).
    outputs, pool_targets = imbalanced_pool(num_classes=4, labeled_per_class=(20, 10, 2, 0))
    assert outputs.logits is None and outputs.weight is None and outputs.bias is None
    chosen = build("balancing").select(outputs, 6) - 1000
    # Counts [20, 10, 2, 0]: class 3, again 3 (1 < 2), then 2 and 3 in turn (ties to the lower class).
    assert replay(outputs, chosen.tolist(), 4) == ["target 3", "target 3", "target 2", "target 3", "target 2", "target 3"]
    # Each pick lies in the blob of the class it targets: far from every centre is class 3's blob.
    assert pool_targets[chosen].tolist() == [3, 3, 2, 3, 2, 3]
    # Told C = 3, as the labels alone say, the same pool gets class 2 only: C is what matters.
    as_if_three = PoolOutputs(**{**vars(outputs), "num_classes": 3})
    assert pool_targets[build("balancing").select(as_if_three, 6) - 1000].tolist() == [2] * 6


@pytest.mark.parametrize("name", ["balancing", "balanced_random"])
def test_label_only_strategies_need_the_number_of_classes(name):
    outputs, pool_targets = imbalanced_pool()
    bare = PoolOutputs(
        index=outputs.index,
        features=outputs.features,
        labeled_features=outputs.labeled_features,
        labeled_targets=outputs.labeled_targets,
        targets=pool_targets,
    )
    assert bare.num_classes is None
    with pytest.raises(ConfigurationError, match="num_classes"):
        build(name).select(bare, 4)


def test_balancing_divides_by_the_nearest_majority_centre():
    # Rarest class 0 at the origin; majority classes 1 at (3, 0) and 2 at (−30, 0).
    labeled_features = torch.tensor([[0.0, 0.0]] + [[3.0, 0.0]] * 5 + [[-30.0, 0.0]] * 5)
    labeled_targets = torch.tensor([0] + [1] * 5 + [2] * 5)
    # Both candidates are 1 from the origin. a = (1, 0): nearest majority 2 away, farthest 31;
    # b = (0, 1): nearest √10, farthest √901. Nearest: 1/2 vs 1/√10 → b. Farthest would pick a.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    outputs = PoolOutputs(
        index=torch.tensor([10, 11]),
        features=features,
        labeled_features=labeled_features,
        labeled_targets=labeled_targets,
        num_classes=3,
    )
    assert build("balancing").select(outputs, 1).tolist() == [11]


def test_balancing_ranks_a_point_on_a_majority_centre_last():
    # Classes 0 (rarest) and 1 (majority) share the centre (0, 0): the point there scores 0/0.
    outputs = PoolOutputs(
        index=torch.tensor([10, 11]),
        features=torch.tensor([[0.0, 0.0], [1.0, 0.0]]),
        labeled_features=torch.zeros(6, 2),
        labeled_targets=torch.tensor([0] + [1] * 5),
        num_classes=2,
    )
    assert build("balancing").select(outputs, 1).tolist() == [11]


def switch_outputs() -> PoolOutputs:
    """Class 0: 5 labels at the origin; class 1: 1 label at (10, 0); every pool point is nearer the origin."""
    features = torch.stack([torch.linspace(-3.0, 4.9, 30), torch.zeros(30)], dim=1)
    return PoolOutputs(
        index=torch.arange(30),
        features=features,
        labeled_features=torch.tensor([[0.0, 0.0]] * 5 + [[10.0, 0.0]]),
        labeled_targets=torch.tensor([0] * 5 + [1]),
        num_classes=2,
    )


@pytest.mark.parametrize(
    "budget, kinds",
    [
        # Counts [5, 1]: gap 1 × (5 − 1) = 4, so a budget of 4 is balanced from the start.
        (4, ["target 1"] * 4),
        # 8 > 4: random; the pick is assumed class 0 → [6, 1], gap 5 < 7: random → [7, 1], gap 6 = 6.
        (8, ["random", "random"] + ["target 1"] * 6),
    ],
)
def test_balancing_picks_at_random_outside_the_balancing_regime(budget, kinds):
    outputs = switch_outputs()
    chosen = build("balancing").select(outputs, budget)
    assert replay(outputs, chosen.tolist(), 2) == kinds
    # Targeted picks go to the points nearest class 1, largest x first.
    targeted = [p for p, k in zip(chosen.tolist(), kinds) if k != "random"]
    assert sorted(targeted, reverse=True) == targeted
    firsts = {int(build("balancing", seed=s).select(outputs, budget)[0]) for s in range(6)}
    assert (len(firsts) > 1) == (kinds[0] == "random")


# ---------------------------------------------------------------- balancing with label feedback


def feedback_outputs(with_targets: bool) -> PoolOutputs:
    """Classes 0, 1, 2 with 4, 2, 1 labels at (0, 0), (10, 0), (0, 10); four pool points, true classes [1, 2, 1, 2]."""
    return PoolOutputs(
        index=torch.arange(4),
        features=torch.tensor([[0.0, 8.0], [3.0, 7.0], [8.0, 0.0], [-4.0, 7.0]]),
        labeled_features=torch.tensor([[0.0, 0.0]] * 4 + [[10.0, 0.0]] * 2 + [[0.0, 10.0]]),
        labeled_targets=torch.tensor([0] * 4 + [1] * 2 + [2]),
        targets=torch.tensor([1, 2, 1, 2]) if with_targets else None,
        num_classes=3,
    )


def test_balancing_with_label_feedback_uses_each_picks_true_class_and_moves_its_centre():
    # Worked by hand, budget 2; the score is s(x) = ‖x − μ_r‖² / min over majority m of ‖x − μ_m‖.
    # Step 0, counts [4, 2, 1] (sum 7): majority {0} (4·3 > 7), gap 2·4 − 1·(2 + 1) = 5 >= 2·1:
    #   target class 2, μ_2 = (0, 10): s(p0) = 4/8 = 0.5, s(p1) = 18/√58 = 2.36, s(p2) = 164/8,
    #   s(p3) = 25/√65 = 3.10 → p0, which is a class-1 point near class 2's centre.
    # Assumed classes: counts [4, 2, 2], majority {0}, gap 2·4 − 4 = 4 >= 1: target class 1 (the
    #   lower of the tied), μ_1 = (10, 0): s(p2) = 4/8 = 0.5 is best (p1 98/√58, p3 245/√65) → [p0, p2].
    # Feedback: p0 is class 1, counts [4, 3, 1] (sum 8): majority {0, 1}, gap 1·7 − 2·1 = 5 >= 1·2;
    #   still target class 2; μ_1 moves to ((10, 0)·2 + (0, 8))/3 = (20/3, 8/3).
    #   p1: ‖p1 − μ_1‖ = √(290/9) = 5.68 < ‖p1 − μ_0‖ = √58 = 7.62, s = 18/5.68 = 3.17;
    #   p3: ‖p3 − μ_1‖ = √(1193/9) = 11.5 > √65 = 8.06, s = 25/8.06 = 3.10;
    #   p2: ‖p2 − μ_1‖ = √(80/9) = 2.98, s = 164/2.98 = 55 → p3.
    #   (Had μ_1 stayed at (10, 0), p1 would score 18/√58 = 2.36 and win: the moved centre decides.)
    with_feedback = build("balancing").select(feedback_outputs(with_targets=True), 2)
    assumed = build("balancing").select(feedback_outputs(with_targets=False), 2)
    assert with_feedback.tolist() == [0, 3]
    assert assumed.tolist() == [0, 2]
    assert build("balancing").accepts == ("targets",)
    assert "targets" not in build("balancing").requires


def feedback_reference(outputs: PoolOutputs, budget: int, seed: int) -> list[int]:
    """The paper's code's loop, written plainly: before every pick, counts and centres from
    scratch from the labeled set plus the picks so far with their TRUE labels (float64).

    Regime: remaining <= #minority × (mean majority − mean minority), in exact fractions. In it,
    target the rarest class r (first on ties): the argmin of ‖x − μ_r‖² / min over majority m
    of ‖x − μ_m‖, or if r has no label the point farthest from every centre. Outside it, the
    next unpicked point of ``randperm(N)`` seeded with ``seed``.
    """
    from fractions import Fraction

    x = outputs.features.double()
    known_x = [row for row in outputs.labeled_features.double()]
    known_y = outputs.labeled_targets.tolist()
    num_classes = outputs.num_classes
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).tolist()
    picks: list[int] = []
    for step in range(budget):
        counts = [known_y.count(c) for c in range(num_classes)]
        mean = Fraction(sum(counts), num_classes)
        majority = [c for c in range(num_classes) if counts[c] > mean]
        minority = [c for c in range(num_classes) if counts[c] <= mean]
        if majority:
            mean_majority = Fraction(sum(counts[c] for c in majority), len(majority))
            mean_minority = Fraction(sum(counts[c] for c in minority), len(minority))
        balancing = bool(majority) and budget - step <= len(minority) * (mean_majority - mean_minority)
        if balancing:
            centres = {
                c: torch.stack([f for f, y in zip(known_x, known_y) if y == c]).mean(0)
                for c in range(num_classes)
                if counts[c]
            }
            rarest = min(range(num_classes), key=lambda c: counts[c])
            if counts[rarest]:
                to_majority = torch.stack([(x - centres[m]).norm(dim=1) for m in majority]).min(0).values
                score = (x - centres[rarest]).square().sum(1) / to_majority
            else:
                score = -torch.stack([(x - mu).square().sum(1) for mu in centres.values()]).min(0).values
            score[picks] = torch.inf
            pick = int(score.argmin())
        else:
            pick = next(p for p in order if p not in picks)
        picks.append(pick)
        known_x.append(x[pick])
        known_y.append(int(outputs.targets[pick]))
    return picks


def feedback_pool(labeled_per_class: tuple[int, ...], seed: int) -> PoolOutputs:
    """N = 300, d = 8, C = 5 Gaussian blobs with imbalanced pool classes; the labeled set as given."""
    g = torch.Generator().manual_seed(100 + seed)
    num_classes, n, dim = len(labeled_per_class), 300, 8
    means = 2.5 * torch.randn(num_classes, dim, generator=g)
    pool_targets = torch.multinomial(torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05]), n, replacement=True, generator=g)
    labeled_targets = torch.cat([torch.full((k,), c) for c, k in enumerate(labeled_per_class)]).long()
    return PoolOutputs(
        index=torch.arange(500, 500 + n),
        features=means[pool_targets] + torch.randn(n, dim, generator=g),
        labeled_features=means[labeled_targets] + torch.randn(len(labeled_targets), dim, generator=g),
        labeled_targets=labeled_targets,
        targets=pool_targets,
        num_classes=num_classes,
    )


@pytest.mark.parametrize("labeled_per_class", [(40, 15, 6, 2, 0), (12, 12, 3, 1, 1), (0, 0, 0, 0, 0)])
@pytest.mark.parametrize("budget", [10, 60, 100])
@pytest.mark.parametrize("seed", [0, 1])
def test_balancing_with_label_feedback_matches_a_from_scratch_reference(labeled_per_class, budget, seed):
    # Class 4 unseen (gains a centre on its first pick), no unseen class, no labels at all; the
    # budgets run balancing only, and random picks first. The closest call (best vs second-best
    # score, float64) in these cases is 1.3e-4 relative: far above float32 rounding.
    outputs = feedback_pool(labeled_per_class, seed)
    chosen = build("balancing", seed=seed).select(outputs, budget) - 500
    assert chosen.tolist() == feedback_reference(outputs, budget, seed)


def select_through_the_scorer(name: str, true_targets: torch.Tensor | None) -> torch.Tensor:
    """``select_from_pool`` on :func:`feedback_outputs`' points as a training set of 11 (7 labeled,
    pool 7..10), scored by a real classifier whose identity trunk makes the features the inputs."""
    outputs = feedback_outputs(with_targets=True)
    inputs = torch.cat([outputs.labeled_features, outputs.features])
    labels = torch.cat([outputs.labeled_targets, torch.full((4,), -1)])
    pool, labeled = torch.arange(7, 11), torch.arange(7)
    model = ActiveClassifier(num_classes=3, backbone="identity", input_dim=2)
    scorer = PoolScorer(InferenceLoop(model, torch.device("cpu")))
    pool_loader = DataLoader(TensorDataset(inputs[pool], pool), batch_size=3)
    labeled_loader = DataLoader(TensorDataset(inputs[labeled], labeled), batch_size=3)
    return select_from_pool(build(name), 2, scorer, pool_loader, pool, labeled_loader, labels, true_targets)


def test_select_from_pool_gives_balancing_the_labels_only_when_the_oracle_answers_at_once():
    outputs = feedback_outputs(with_targets=True)
    dataset_targets = torch.cat([outputs.labeled_targets, outputs.targets])
    # The simulated oracle: label feedback, the picks of the hand-checked case shifted by 7.
    assert select_through_the_scorer("balancing", dataset_targets).tolist() == [7, 10]
    # An oracle that cannot answer during the query: assumed classes.
    assert select_through_the_scorer("balancing", None).tolist() == [7, 9]


def test_select_from_pool_refuses_a_strategy_that_requires_labels_without_them():
    # The query callback refuses the pairing before a run starts; here the strategy's own contract does.
    needs = r"strategy 'balanced_random' needs PoolOutputs.targets, which is None"
    with pytest.raises(ConfigurationError, match=needs):
        select_through_the_scorer("balanced_random", None)
    outputs = feedback_outputs(with_targets=True)
    dataset_targets = torch.cat([outputs.labeled_targets, outputs.targets])
    chosen = select_through_the_scorer("balanced_random", dataset_targets)
    assert sorted(dataset_targets[chosen].tolist()) == [1, 2]  # one of each class the pool holds
