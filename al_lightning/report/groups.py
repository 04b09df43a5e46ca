"""Comparing runs: groups of comparable configs, each strategy's seeds aligned by label count, t intervals.

Runs whose configs differ in anything but the strategy, the seeds and path or logging-only
keys (:data:`IGNORED_KEYS`) are never averaged together: they form separate :class:`Group` s.
Within a group, each strategy's seeds are aligned by the number of labels (``num_labeled``),
keeping only the label counts every seed has, and averaged with a Student t interval.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np

# the t quantile: scipy comes with scikit-learn (scipy.special, not scipy.stats, which takes seconds to import)
from scipy.special import stdtrit

from al_lightning.report.runs import ReportError, ReportWarning, path_order
from al_lightning.run_files import Run
from al_lightning.sweep import OWNED

#: Config keys (dotted; a key also covers everything below it) left out when deciding whether two
#: runs are comparable. What a sweep sets per run (:data:`~al_lightning.sweep.OWNED`: the
#: strategy, the seed, the folder, the resume point), the strategy's own options and the cold
#: start and handover (``al.strategy_args``, ``al.cold_start*``, ``al.handover*`` become part of its
#: name, see :func:`~al_lightning.report.runs.strategy_label`); ``al.rounds`` only says when a run stops,
#: which changes no round's numbers (runs cut short are what the alignment by label count is
#: for); the others say where files go, what gets logged or shown, and how checkpoints are
#: written, none of which changes a run's numbers. Everything else splits groups,
#: ``data.num_workers``, ``data.eval_batch_size`` and ``trainer.devices`` included: add keys with
#: ``--ignore-key`` when you know they do not matter.
IGNORED_KEYS = (
    *OWNED,
    "al.strategy_args",
    "al.cold_start",
    "al.cold_start_args",
    "al.handover_to",
    "al.handover_args",
    "al.handover_at",
    "al.seed",
    "data.seed",
    "al.rounds",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
    "trainer.profiler",
    "data.path",
    "data.dataset_args.split_dir",
    "data.dataset_args.download",
    "al.save_round_checkpoints",
    "weights_only",
)

#: Means within this of a target count as reaching it (means of different runs are not bit-exact).
REACH_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with the half-width of its Student t confidence interval (NaN for one seed)."""

    mean: float
    half_width: float
    n: int

    def format(self, digits: int = 3) -> str:
        """``0.812 ± 0.013 (n=3)``; ``0.812 (n=1)`` for a single seed; ``n/a`` without values."""
        if self.n == 0:
            return "n/a"
        mean = f"{self.mean:.{digits}f}" if math.isfinite(self.mean) else str(self.mean)
        if math.isnan(self.half_width):
            return f"{mean} (n={self.n})"
        return f"{mean} ± {self.half_width:.{digits}f} (n={self.n})"


def t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean ± t_{(1+confidence)/2, n−1} · s/√n over ``values`` (NaNs left out: empty records).

    One value has no interval (half-width NaN); an infinite value (an imbalance ratio with a
    class still unlabeled) makes the mean infinite and the interval undefined.
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    if not np.isfinite(x).all():
        return Interval(float(x.mean()), math.nan, n)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, 1)
    half = float(stdtrit(n - 1, (1 + confidence) / 2) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, half, n)


@dataclass
class StrategyCurves:
    """One strategy's seeds aligned at the label counts they all have."""

    strategy: str
    runs: list[Run]
    labels: list[int]
    #: label count -> names of the runs that have it, for the counts not every seed has
    dropped: dict[int, list[str]] = field(default_factory=dict)

    @property
    def seeds(self) -> list[Optional[int]]:
        return [run.seed for run in self.runs]

    def values(self, metric: str) -> np.ndarray:
        """``(seeds, label counts)`` array of ``metric`` (NaN where a record is empty)."""
        return np.asarray([[run.rows[n].get(metric, math.nan) for n in self.labels] for run in self.runs], dtype=float)

    def intervals(self, metric: str, confidence: float = 0.95) -> list[Interval]:
        """Mean and t interval over seeds of ``metric`` at each label count."""
        return [t_interval(column, confidence) for column in self.values(metric).T]

    def has(self, metric: str) -> bool:
        """Whether any seed recorded a value of ``metric`` (``test_acc_top5`` is empty with ≤ 5 classes)."""
        return bool((~np.isnan(self.values(metric))).any())

    def sorted_class_counts(self) -> dict[int, np.ndarray]:
        """Label count -> mean over seeds of the per-class labeled counts sorted ascending (Figure 3's rows).

        Only the seeds with ``class_counts.csv`` count; empty if none has it.
        """
        runs = [run for run in self.runs if run.class_counts]
        result: dict[int, np.ndarray] = {}
        for n in self.labels:
            rows = [np.sort(run.class_counts[n]) for run in runs if n in run.class_counts]
            if rows and len({len(r) for r in rows}) == 1:
                result[n] = np.mean(rows, axis=0)
        return result


def align(strategy: str, runs: Sequence[Run]) -> StrategyCurves:
    """Align one strategy's seeds by label count; :class:`ReportError` (with the reason) if no count is common."""
    schedules = [set(run.rows) for run in runs]
    common = sorted(set.intersection(*schedules))
    every = sorted(set.union(*schedules))
    if not common:
        listed = "; ".join(f"{run.name} ({run.path}): {', '.join(map(str, run.labels))}" for run in runs)
        raise ReportError(f"{strategy}: its seeds share no label count, so there is nothing to average ({listed})")
    dropped = {n: [run.name for run in runs if n in run.rows] for n in every if n not in common}
    return StrategyCurves(strategy, list(runs), common, dropped)


@dataclass
class Group:
    """Runs with the same config but for strategy, seeds and ignored keys; drawn and summarised together."""

    name: str
    slug: str
    runs: list[Run]
    config: dict[str, Any]
    #: the keys whose values differ between groups, with this group's value (``None``: not set)
    differing: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, StrategyCurves] = field(default_factory=dict)
    #: strategy -> why it is not drawn
    refused: dict[str, str] = field(default_factory=dict)
    #: runs left out as repeats of another run of the same strategy and seed, with the reason
    repeats: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> Optional[int]:
        names = [len(run.class_names) for run in self.runs if run.class_names]
        return names[0] if names else None


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in ignore)


def comparable_config(run: Run, ignore: Sequence[str] = IGNORED_KEYS) -> dict[str, Any]:
    """The run's flattened config without the ``ignore`` d keys: what must match for runs to be averaged."""
    return {k: v for k, v in run.config.items() if not _ignored(k, ignore)}


def _frozen(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def strategy_order(names: Iterable[str]) -> list[str]:
    """``random`` first (the reference), then the others alphabetically."""
    return sorted(set(names), key=lambda s: (s != "random", s))


def _one_run_per_seed(runs: list[Run], group: Group) -> list[Run]:
    """One run per seed: several dirs with one strategy and seed are attempts of one run (a resumed run
    writes a new version folder holding the whole history), so the one with the most label counts
    is kept (the later folder on a tie) and the others leave ``group.runs``. Unknown seeds are kept."""
    by_seed: dict[Any, list[Run]] = {}
    for run in runs:
        key = (run.seed, run.config.get("data.seed")) if run.seed is not None else id(run)
        by_seed.setdefault(key, []).append(run)
    kept = []
    for attempts in by_seed.values():
        best = max(attempts, key=lambda r: (len(r.rows), path_order(r.path)))
        kept.append(best)
        for run in attempts:
            if run is not best:
                message = (f"{run.name}: {run.path} ({len(run.rows)} label counts) left out, a repeat of "
                           f"{best.path} ({len(best.rows)}): same strategy and seed")
                group.repeats.append(message)
                group.runs.remove(run)
                warnings.warn(f"{group.name}: {message}", ReportWarning, stacklevel=3)
    return kept


def group_runs(runs: Sequence[Run], ignore: Sequence[str] = IGNORED_KEYS) -> list[Group]:
    """Split ``runs`` into groups of equal :func:`comparable_config`, align each strategy's seeds in each.

    A strategy whose seeds share no label count is left out of its group's curves, with the
    reason in ``Group.refused``; of several runs with one strategy and seed (the attempts of a
    resumed run) only the most complete is kept, the others named in ``Group.repeats`` (each
    also a :class:`ReportWarning`).
    """
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(_frozen(comparable_config(run, ignore)), []).append(run)
    configs = [comparable_config(members[0], ignore) for members in by_config.values()]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({_frozen({"v": c.get(k)}) for c in configs}) > 1]
    several = len(configs) > 1
    groups = []
    for i, (members, config) in enumerate(zip(by_config.values(), configs), start=1):
        group = Group(
            name=f"group {i}" if several else "all runs",
            slug=f"group{i}" if several else "",
            runs=list(members),
            config=config,
            differing={k: config.get(k) for k in differing},
        )
        for strategy in strategy_order(run.strategy for run in members):
            of_strategy = _one_run_per_seed([run for run in members if run.strategy == strategy], group)
            try:
                group.curves[strategy] = align(strategy, of_strategy)
            except ReportError as error:
                group.refused[strategy] = str(error)
                warnings.warn(f"{group.name}: {error}", ReportWarning, stacklevel=2)
        groups.append(group)
    return groups


# ------------------------------------------------------------------------------ Table 2's question


@dataclass(frozen=True)
class Reach:
    """The labels a strategy needs to reach random sampling's final mean accuracy."""

    strategy: str
    labels: Optional[int]  # None: not reached
    fraction: Optional[float]  # labels / random's final label count


def labels_to_reach_random(group: Group, metric: str = "test_acc_top1") -> tuple[Optional[tuple[int, float]], list[Reach], str]:
    """Per strategy, the smallest label count whose mean ``metric`` ≥ random's final mean.

    Returns ``(random's final (labels, mean) or None, reaches, note)``; without a usable
    ``random`` strategy the reaches are empty and ``note`` says why.
    """
    if "random" not in group.curves:
        why = group.refused.get("random")
        return None, [], ("random sampling was refused: " + why) if why else "no `random` strategy in this group: nothing to compare with"
    reference = group.curves["random"]
    means = [i.mean for i in reference.intervals(metric)]
    if not math.isfinite(means[-1]):
        return None, [], f"random has no {metric} at its final label count ({reference.labels[-1]})"
    final_labels, target = reference.labels[-1], means[-1]
    reaches = []
    for strategy, curves in group.curves.items():
        reached = next((n for n, i in zip(curves.labels, curves.intervals(metric)) if math.isfinite(i.mean) and i.mean >= target - REACH_TOLERANCE), None)
        reaches.append(Reach(strategy, reached, None if reached is None else reached / final_labels))
    return (final_labels, target), reaches, ""
