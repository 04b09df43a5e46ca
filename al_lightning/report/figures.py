"""The paper's figures from aligned runs: accuracy, imbalance and entropy against labels; sorted class histograms.

Each ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` built
without pyplot (no display, no global state), so the command line saves it and a notebook
shows it with ``display(fig)``; the ``draw_*`` functions draw on axes you give them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from al_lightning.report.groups import Group
from al_lightning.report.runs import METRICS

#: file stem, rounds.csv column, title: the figures :func:`write_figures` writes per group.
METRIC_FIGURES = (
    ("top1", "test_acc_top1", "Test top-1 accuracy (Figure 2a/b)"),
    ("top5", "test_acc_top5", "Test top-5 accuracy"),
    ("imbalance", "imbalance_ratio", "Class imbalance ratio of the labeled set (Figure 2c/d)"),
    ("entropy", "class_entropy", "Class-distribution entropy of the labeled set (Figure 6)"),
)
CLASS_COUNTS_FIGURE = ("class_counts", "Labeled examples per class, sorted, every round (Figure 3)")


def strategy_colors(names: Sequence[str]) -> dict[str, Any]:
    """One colour per strategy, stable for a given list of names (``tab10``, ``tab20`` beyond ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def group_caption(group: Group) -> str:
    """The keys that set this group apart, as ``key=value`` (empty for a single group)."""
    return ", ".join(f"{k}={v}" for k, v in group.differing.items())


#: Metrics that lie in [0, 1]: their bands are clipped to it.
BOUNDED_METRICS = ("test_acc_top1", "test_acc_top5")


def draw_metric(ax: Axes, group: Group, metric: str, confidence: float = 0.95) -> list[str]:
    """Mean over seeds of ``metric`` against labels per strategy, with its t interval as a band.

    A single seed draws the line alone. Infinite means (an imbalance ratio while a class has
    no labels) are not drawn; the return value names them, ``strategy@labels``.
    """
    colors = strategy_colors(list(group.curves))
    infinite: list[str] = []
    for strategy, curves in group.curves.items():
        if not curves.has(metric):
            continue
        intervals = curves.intervals(metric, confidence)
        x = np.asarray(curves.labels, dtype=float)
        mean = np.asarray([i.mean for i in intervals])
        half = np.asarray([i.half_width for i in intervals])
        infinite += [f"{strategy}@{n}" for n, m in zip(curves.labels, mean) if math.isinf(m)]
        mean = np.where(np.isfinite(mean), mean, np.nan)
        ax.plot(x, mean, marker="o", markersize=3, color=colors[strategy], label=f"{strategy} (n={len(curves.runs)})")
        if np.isfinite(half).any():
            lower, upper = mean - half, mean + half
            if metric in BOUNDED_METRICS:  # an accuracy's interval says nothing beyond [0, 1]
                lower, upper = np.clip(lower, 0.0, 1.0), np.clip(upper, 0.0, 1.0)
            ax.fill_between(x, lower, upper, color=colors[strategy], alpha=0.2, linewidth=0)
    ax.set_xlabel("labeled examples")
    ax.set_ylabel(METRICS.get(metric, metric))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return infinite


def metric_figure(group: Group, metric: str, title: Optional[str] = None, confidence: float = 0.95) -> Optional[Figure]:
    """One metric against labels for every strategy of ``group``; None if no run recorded it."""
    if not any(curves.has(metric) for curves in group.curves.values()):
        return None
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    infinite = draw_metric(ax, group, metric, confidence)
    if metric == "class_entropy" and group.num_classes:
        ax.axhline(math.log(group.num_classes), color="grey", linestyle="--", linewidth=1, label=f"balanced: log {group.num_classes}")
        ax.legend(fontsize="small")
    if infinite:
        ax.annotate("not drawn, infinite (a class without labels): " + ", ".join(infinite[:6]) + (" ..." if len(infinite) > 6 else ""),
                    xy=(0.01, 0.01), xycoords="axes fraction", fontsize="x-small", color="grey")
    band = f"mean over seeds, {confidence:.0%} t interval"
    caption = group_caption(group)
    fig.suptitle((title or METRICS.get(metric, metric)) + f"\n{band}" + (f"; {caption}" if caption else ""), fontsize="medium")
    return fig


def draw_sorted_class_counts(ax: Axes, sorted_counts: dict[int, np.ndarray], norm: Normalize, proportion: bool = False) -> None:
    """One curve per round: the labeled set's per-class counts sorted from least to most labeled class."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for labels, counts in sorted(sorted_counts.items()):
        y = counts / max(counts.sum(), 1) if proportion else counts
        ax.plot(np.arange(len(y)), y, drawstyle="steps-mid", color=cmap(norm(labels)), linewidth=1)
    ax.set_xlabel("class, least to most labeled")
    ax.grid(alpha=0.3)


def class_counts_figure(group: Group, proportion: bool = False) -> Optional[Figure]:
    """Figure 3's form: per strategy, the sorted per-class labeled counts of every round (mean over seeds).

    ``proportion=True`` divides each round by its number of labels, as the paper's histograms.
    None if no run of the group has ``class_counts.csv``.
    """
    panels = {s: c.sorted_class_counts() for s, c in group.curves.items()}
    panels = {s: p for s, p in panels.items() if p}
    if not panels:
        return None
    every = [n for p in panels.values() for n in p]
    norm = Normalize(min(every), max(every) if max(every) > min(every) else min(every) + 1)
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.6 * ncols + 1.2, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    for ax, (strategy, sorted_counts) in zip(axes.flat, panels.items()):
        draw_sorted_class_counts(ax, sorted_counts, norm, proportion)
        ax.set_title(f"{strategy} (n={len(group.curves[strategy].runs)})", fontsize="small")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("share of labels" if proportion else "labeled examples")
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=axes, label="labeled examples (round)")
    caption = group_caption(group)
    fig.suptitle(CLASS_COUNTS_FIGURE[1] + ("\n" + caption if caption else ""), fontsize="medium")
    return fig


def write_figures(group: Group, out: str | Path, confidence: float = 0.95) -> list[tuple[Path, str]]:
    """Save ``group``'s figures as PNG in ``out`` (``<slug>_<name>.png`` when there are several groups).

    Returns (path, description) for each file written; a metric nobody recorded
    (``test_acc_top5`` with ≤ 5 classes) or missing class counts write nothing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{group.slug}_" if group.slug else ""
    written: list[tuple[Path, str]] = []
    for stem, metric, title in METRIC_FIGURES:
        fig = metric_figure(group, metric, title, confidence)
        if fig is not None:
            path = out / f"{prefix}{stem}.png"
            fig.savefig(path, dpi=120)
            written.append((path, title))
    fig = class_counts_figure(group)
    if fig is not None:
        path = out / f"{prefix}{CLASS_COUNTS_FIGURE[0]}.png"
        fig.savefig(path, dpi=120)
        written.append((path, CLASS_COUNTS_FIGURE[1]))
    return written
