"""Name → strategy class: the one front door, ``build(name)``, as ``timm.create_model`` is for models.

Besides registry names, :func:`get` and :func:`build` take a class path
(``my_package.MyStrategy``): a :class:`Strategy` subclass written outside this package.
The registry is :class:`~al_lightning.plugins.Registry`, the idiom sources and oracles share.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from al_lightning.plugins import Registry
from al_lightning.strategies.strategy import Strategy

STRATEGIES: Registry[Strategy] = Registry(
    "strategy",
    Strategy,
    "al_lightning.strategies.Strategy",
    "--al.strategy",
    "--al.strategy_args",
    "subclass it, set `requires` and implement `_select`",
    supplied=("seed",),
)

S = TypeVar("S", bound=type[Strategy])


def register(name: str) -> Callable[[S], S]:
    """Class decorator that makes a strategy available to :func:`build` under ``name``."""
    return STRATEGIES.register(name)


def available() -> list[str]:
    """Registry names of all strategies, sorted."""
    return STRATEGIES.names()


def get(name: str) -> type[Strategy]:
    """The strategy class registered under ``name`` (case-insensitive), or at class path ``name``."""
    return STRATEGIES.get(name)


def build(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the strategy registered under ``name`` (case-insensitive), or at class path ``name``, with ``kwargs``."""
    return STRATEGIES.build(name, kwargs)


def strategies_not_requiring(field: str) -> list[str]:
    """Names of the strategies that work without PoolOutputs.``field``."""
    return [name for name, cls in sorted(STRATEGIES.classes().items()) if field not in cls.requires]
