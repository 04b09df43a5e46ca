"""``python -m al_lightning.report RUN_DIR... --out DIR``: the paper's figures and a markdown summary from finished runs.

Each argument is a run's log dir (``lightning_logs/version_N/``) or any folder above runs (a
sweep's output, a ``lightning_logs``). Runs are grouped by config (strategy, seeds and
path/logging keys aside), each strategy's seeds are aligned by label count, and per group
``DIR`` gets ``top1.png``, ``top5.png``, ``imbalance.png``, ``entropy.png``,
``class_counts.png`` (prefixed ``groupK_`` when there are several groups) and one
``summary.md``. Exit status 2 when no run has records. The work is in the package's other modules.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from al_lightning.report.figures import write_figures
from al_lightning.report.groups import IGNORED_KEYS, Group, group_runs
from al_lightning.report.runs import ReportError, ReportWarning, load_runs
from al_lightning.report.summary import summary_markdown


@contextmanager
def _recorded(into: list[str]) -> Iterator[None]:
    """Collect the :class:`ReportWarning` s raised in the block into ``into``, then raise every warning again."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as inner:
            warnings.simplefilter("always", ReportWarning)
            try:
                yield
            finally:
                caught = list(inner)
    finally:
        for w in caught:
            if issubclass(w.category, ReportWarning):
                into.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def make_report(paths: Sequence[str | Path], out: str | Path, ignore: Sequence[str] = IGNORED_KEYS) -> tuple[list[Group], Path]:
    """Load, group and align the runs at or below ``paths``; write the figures and ``summary.md`` to ``out``.

    What is left out on the way (runs without records, repeats, label counts, strategies) is
    raised as :class:`~al_lightning.report.ReportWarning` and listed in the summary.
    Raises :class:`~al_lightning.report.ReportError` when no run has records.
    """
    out = Path(out)
    skipped: list[str] = []
    with _recorded(skipped):
        runs = load_runs(paths)
    groups = group_runs(runs, ignore)
    out.mkdir(parents=True, exist_ok=True)
    figures = {group.name: write_figures(group, out) for group in groups}
    summary = out / "summary.md"
    summary.write_text(summary_markdown(groups, figures, out, paths, skipped))
    return groups, summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0 done, 2 nothing to report)."""
    parser = argparse.ArgumentParser(
        prog="python -m al_lightning.report",
        description="Figures (accuracy, imbalance, entropy, sorted class histograms) and a markdown summary of AL runs.",
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR", help="a run's log dir, or any folder above runs")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the PNG files and summary.md go")
    parser.add_argument(
        "--ignore-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a dotted config key (and everything below it) that does not split groups, on top of: " + ", ".join(IGNORED_KEYS),
    )
    args = parser.parse_args(argv)
    status = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        try:
            groups, summary = make_report(args.paths, args.out, (*IGNORED_KEYS, *args.ignore_key))
        except ReportError as error:
            groups, status = [], 2
            message = f"error: {error}"
    for w in caught:
        if issubclass(w.category, ReportWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if status:
        print(message, file=sys.stderr)
        return status
    print(f"wrote {summary} ({sum(len(g.runs) for g in groups)} runs, {len(groups)} group(s))")
    if not any(group.curves for group in groups):
        print("error: every strategy was refused, nothing drawn (see summary.md)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
