"""Reports over finished runs: ``python -m al_lightning.report RUN_DIR... --out DIR``.

Loading (:mod:`.runs`), grouping and alignment (:mod:`.groups`), figures (:mod:`.figures`),
markdown (:mod:`.summary`), and the command line that ties them (:mod:`.command`).
"""

from al_lightning.report.command import main, make_report
from al_lightning.report.figures import class_counts_figure, draw_metric, metric_figure, write_figures
from al_lightning.report.groups import (
    IGNORED_KEYS,
    Group,
    Interval,
    Reach,
    StrategyCurves,
    align,
    group_runs,
    labels_to_reach_random,
    t_interval,
)
from al_lightning.report.runs import METRICS, ReportError, ReportWarning, Run, load_run, load_runs
from al_lightning.report.summary import summary_markdown

__all__ = [
    "IGNORED_KEYS",
    "METRICS",
    "Group",
    "Interval",
    "Reach",
    "ReportError",
    "ReportWarning",
    "Run",
    "StrategyCurves",
    "align",
    "class_counts_figure",
    "draw_metric",
    "group_runs",
    "labels_to_reach_random",
    "main",
    "make_report",
    "load_run",
    "load_runs",
    "metric_figure",
    "summary_markdown",
    "t_interval",
    "write_figures",
]
