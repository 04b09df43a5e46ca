"""Oracles: where a query's labels come from (``--al.oracle``, options in ``--al.oracle_args``).

``simulated`` reveals the dataset's own labels (research runs); ``file`` writes each round's
queries to a folder and reads the team's labels file back; ``labelstudio`` pushes them to a
Label Studio project and pulls the annotations back. Each registers in :data:`ORACLES`; see
:mod:`al_lightning.oracles.base` for the contract.
"""

from __future__ import annotations

from al_lightning.oracles.base import ORACLES, LabelRow, LabelsError, Oracle, Query, match_labels, register_oracle
from al_lightning.oracles.files import QUERY_COLUMNS, FileOracle, query_csv, read_labels_csv, write_query_csv
from al_lightning.oracles.simulated import SimulatedOracle

from al_lightning.oracles import labelstudio  # noqa: E402,F401  isort: skip  (registers "labelstudio")

__all__ = [
    "ORACLES",
    "QUERY_COLUMNS",
    "FileOracle",
    "LabelRow",
    "LabelsError",
    "Oracle",
    "Query",
    "SimulatedOracle",
    "match_labels",
    "query_csv",
    "read_labels_csv",
    "register_oracle",
    "write_query_csv",
]
