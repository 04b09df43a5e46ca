"""The markdown summary: per group, accuracy tables with intervals, Table 2's question, what was left out and why."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from al_lightning.report.groups import Group, labels_to_reach_random
from al_lightning.report.runs import METRICS

#: Shared settings named at the top of each group, when the config has them.
KEY_SETTINGS = (
    "data.dataset",
    "model.backbone",
    "model.pretrained",
    "model.freeze_backbone",
    "data.initial_pool_size",
    "al.budget",
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_table(group: Group, metric: str, digits: int = 3, confidence: float = 0.95) -> str:
    """Rows: label counts; columns: strategies; cells ``mean ± half-width (n=K)`` ("–": no record there)."""
    cells = {s: dict(zip(c.labels, c.intervals(metric, confidence))) for s, c in group.curves.items()}
    labels = sorted({n for c in group.curves.values() for n in c.labels})
    rows = [[n, *(cells[s][n].format(digits) if n in cells[s] else "–" for s in group.curves)] for n in labels]
    return markdown_table(["labels", *group.curves], rows)


def _reach_section(group: Group, metric: str) -> list[str]:
    reference, reaches, note = labels_to_reach_random(group, metric)
    name = METRICS[metric]
    if reference is None:
        return [f"{name}: {note}."]
    labels, target = reference
    lines = [f"Random sampling's final mean {name}: **{target:.3f}** at {labels} labels.", ""]
    rows = [
        [r.strategy, "not reached" if r.labels is None else r.labels, "" if r.fraction is None else f"{r.fraction:.0%}"]
        for r in reaches
    ]
    lines.append(markdown_table(["strategy", f"labels to reach {target:.3f}", f"share of random's {labels}"], rows))
    return lines


def group_section(group: Group, figures: Sequence[tuple[Path, str]], out: Path, level: str = "##", confidence: float = 0.95) -> str:
    """The summary of one group: settings, runs, dropped counts and refusals, tables, Table 2's question, figures."""
    parts = [f"{level} {group.name[0].upper()}{group.name[1:]}", ""]
    if group.differing:
        parts += ["Differs from the other groups in: " + ", ".join(f"`{k}` = `{v}`" for k, v in group.differing.items()) + ".", ""]
    settings = [f"`{k}` = `{group.config[k]}`" for k in KEY_SETTINGS if k in group.config]
    if settings:
        parts += ["Settings: " + ", ".join(settings) + ".", ""]
    rows = []
    for strategy in [*group.curves, *group.refused]:
        runs = [r for r in group.runs if r.strategy == strategy]
        seeds = ", ".join(str(r.seed) for r in runs)
        note = "refused" if strategy in group.refused else ("n=1: one seed, no interval" if len(runs) == 1 else f"n={len(runs)}")
        rows.append([strategy, seeds, note, "<br>".join(f"`{r.path}`" for r in runs)])
    parts += [markdown_table(["strategy", "seeds", "", "runs"], rows), ""]
    notes = []
    for strategy, curves in group.curves.items():
        if curves.dropped:
            which = "; ".join(f"{n} (only {', '.join(names)})" for n, names in curves.dropped.items())
            notes.append(f"- **{strategy}**: label counts dropped because not every seed has them: {which}. Averaged at {', '.join(map(str, curves.labels))}.")
    notes += [f"- **{strategy}** refused: {why}" for strategy, why in group.refused.items()]
    notes += [f"- {message}" for message in group.repeats]
    if notes:
        parts += ["Label schedules and runs left out:", "", *notes, ""]
    if not group.curves:
        return "\n".join(parts + ["Nothing to draw: every strategy was refused.", ""])
    band = f"mean ± half-width of the {confidence:.0%} Student t interval over seeds (n seeds)"
    for metric, digits in (("test_acc_top1", 3), ("test_acc_top5", 3), ("imbalance_ratio", 2), ("class_entropy", 3)):
        if any(c.has(metric) for c in group.curves.values()):
            parts += [f"{level}# {METRICS[metric][0].upper()}{METRICS[metric][1:]}", "", f"{band}.", "", metric_table(group, metric, digits, confidence), ""]
            if metric == "imbalance_ratio":
                parts += ["`inf`: some class has no labels yet.", ""]
    parts += [f"{level}# Labels needed to reach random sampling's final accuracy (Table 2's question)", "",
              "The smallest label count at which a strategy's mean accuracy is at least random sampling's mean at its last round.", ""]
    for metric in ("test_acc_top1", "test_acc_top5"):
        if any(c.has(metric) for c in group.curves.values()):
            parts += [*_reach_section(group, metric), ""]
    if figures:
        parts += [f"{level}# Figures", ""]
        parts += [f"- [`{os.path.relpath(path, out)}`]({os.path.relpath(path, out)}): {what}" for path, what in figures]
        parts.append("")
    return "\n".join(parts)


def summary_markdown(
    groups: Sequence[Group],
    figures: dict[str, Sequence[tuple[Path, str]]],
    out: str | Path,
    sources: Sequence[str | Path] = (),
    skipped: Sequence[str] = (),
    confidence: float = 0.95,
) -> str:
    """The whole ``summary.md``: one section per group (``figures`` maps a group's name to its files)."""
    out = Path(out)
    runs = sum(len(g.runs) for g in groups)
    parts = ["# Active-learning report", ""]
    parts.append(f"{runs} run(s) from {', '.join(f'`{s}`' for s in sources)}" if sources else f"{runs} run(s)")
    if len(groups) > 1:
        parts[-1] += (f", in {len(groups)} groups: their configs differ in more than strategy and seeds "
                      "(runs of different groups are never averaged together).")
    else:
        parts[-1] += "."
    parts.append("")
    if skipped:
        parts += ["Left out:", "", *(f"- {s}" for s in skipped), ""]
    level = "##"
    for group in groups:
        parts.append(group_section(group, figures.get(group.name, ()), out, level, confidence))
    return "\n".join(parts).rstrip() + "\n"
