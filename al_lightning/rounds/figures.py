"""Figures for TensorBoard's image tab, drawn with matplotlib's object API (no pyplot, no global state)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

#: Up to this many classes the bars carry the class names; beyond it they would be unreadable.
MAX_NAMED_CLASSES = 30


def sorted_class_counts_figure(counts: Sequence[int], class_names: Sequence[str], title: Optional[str] = None) -> Figure:
    """Labeled count per class, classes sorted from least to most labeled (the paper's Figure 3).

    x: the classes in that order (their rank; ties keep the class order), y: the labeled count;
    a dashed line marks the count of a perfectly balanced set. With at most
    :data:`MAX_NAMED_CLASSES` classes each bar is labeled with its class name, otherwise the
    axis has no tick labels. The figure is not registered with pyplot: drop the reference
    (or pass it to ``SummaryWriter.add_figure``) and it is gone.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    if len(class_names) != len(counts):
        raise ValueError(f"{len(counts)} counts but {len(class_names)} class names")
    order = np.argsort(counts, kind="stable")
    ranks = np.arange(len(counts))

    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.add_subplot()
    axes.bar(ranks, counts[order], width=0.8 if len(counts) <= 100 else 1.0, color="tab:blue")
    if len(counts):
        axes.axhline(counts.sum() / len(counts), color="tab:gray", linestyle="--", linewidth=1, label="balanced")
        axes.legend(loc="upper left", frameon=False)
    axes.set_xlim(-0.6, max(len(counts), 1) - 0.4)
    if len(counts) <= MAX_NAMED_CLASSES:
        names = [str(class_names[i]) for i in order]
        long_names = len(counts) > 12 or max((len(n) for n in names), default=0) > 4
        axes.set_xticks(ranks, names, rotation=90 if long_names else 0, fontsize=8 if long_names else 10)
        axes.set_xlabel("class, from least to most labeled")
    else:
        axes.set_xticks([])
        axes.set_xlabel(f"{len(counts)} classes, from least to most labeled")
    axes.set_ylabel("labeled points")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return figure
