"""The rounds of an experiment: the query callback that drives them, and its parts.

:class:`QueryCallback` (``callback.py``) keeps the round state (``state.py``) and, each round,
uses early stopping (``early_stopping.py``), test evaluation (``evaluation.py``), the records
(``records.py``, ``figures.py``), the checkpoints (``checkpoints.py``) and, for strategies with
networks of their own, companion training (``companion.py``); the query itself is
:mod:`al_lightning.query`.
"""

from al_lightning.rounds.callback import QueryCallback
from al_lightning.run_files import ROUND_COLUMNS

__all__ = ["QueryCallback", "ROUND_COLUMNS"]
