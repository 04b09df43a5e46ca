"""Callbacks: the query callback that drives the rounds of an active-learning run, and its parts."""

from al_lightning.callbacks.query import QueryCallback
from al_lightning.callbacks.records import ROUND_COLUMNS

__all__ = ["QueryCallback", "ROUND_COLUMNS"]
