"""Callbacks: the query callback that drives the rounds of an active-learning run."""

from al_lightning.callbacks.query import ROUND_COLUMNS, QueryCallback

__all__ = ["QueryCallback", "ROUND_COLUMNS"]
