"""Oracles: where a query's labels come from (``--al.oracle``).

``simulated`` reveals the dataset's own labels (research runs); ``file`` writes each round's
queries to a folder and reads the team's labels file back; ``labelstudio`` pushes them to a
Label Studio project and pulls the annotations back. See :mod:`al_lightning.oracles.base`.
"""

from __future__ import annotations

from typing import Optional

from al_lightning.errors import ConfigurationError
from al_lightning.oracles.base import LabelRow, LabelsError, Oracle, Query, match_labels
from al_lightning.oracles.files import QUERY_COLUMNS, FileOracle, query_csv, read_labels_csv, write_query_csv
from al_lightning.oracles.simulated import SimulatedOracle

#: The names ``--al.oracle`` takes.
ORACLES = ("simulated", "file", "labelstudio")


def build_human_oracle(
    name: str, label_dir: Optional[str], labelstudio_url: Optional[str] = None, labelstudio_project: Optional[str] = None
) -> Optional[Oracle]:
    """The oracle ``name`` if it is a human one (``file``, ``labelstudio``); None for ``simulated``.

    Both human oracles need ``label_dir``: the file oracle exchanges its files there, and
    both keep the paused run's state there, so the same command finds it again.
    """
    key = name.strip().lower()
    if key not in ORACLES:
        raise ConfigurationError(f"unknown oracle '{name}'; choose one of: {', '.join(ORACLES)}")
    if key == "simulated":
        return None
    if not label_dir:
        raise ConfigurationError(f"--al.oracle={key} needs --al.label_dir=DIR: where the queries, labels and the paused run's state live")
    if key == "file":
        return FileOracle(label_dir)
    if not labelstudio_url or not labelstudio_project:
        raise ConfigurationError("--al.oracle=labelstudio needs --al.labelstudio_url=URL and --al.labelstudio_project=ID_OR_TITLE")
    from al_lightning.oracles.labelstudio import LabelStudioOracle

    return LabelStudioOracle(labelstudio_url, labelstudio_project)


__all__ = [
    "ORACLES",
    "QUERY_COLUMNS",
    "FileOracle",
    "LabelRow",
    "LabelsError",
    "Oracle",
    "Query",
    "SimulatedOracle",
    "build_human_oracle",
    "match_labels",
    "query_csv",
    "read_labels_csv",
    "write_query_csv",
]
