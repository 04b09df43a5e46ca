"""Name → strategy class: the one front door, ``build(name)``, as ``timm.create_model`` is for models."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from al_lightning.errors import ConfigurationError
from al_lightning.strategies.strategy import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}

S = TypeVar("S", bound=type[Strategy])


def register(name: str) -> Callable[[S], S]:
    """Class decorator that makes a strategy available to :func:`build` under ``name``."""

    def decorator(cls: S) -> S:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"strategy name '{key}' is already registered by {_REGISTRY[key].__qualname__}")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return decorator


def available() -> list[str]:
    """Registry names of all strategies, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Strategy]:
    """The strategy class registered under ``name`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ConfigurationError(f"unknown strategy '{name}'; choose one of: {', '.join(available())}")
    return _REGISTRY[key]


def build(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the strategy registered under ``name`` (case-insensitive) with ``kwargs``."""
    cls = get(name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigurationError(f"strategy '{cls.name}' does not take these arguments {sorted(kwargs)}: {err}") from err


def strategies_not_requiring(field: str) -> list[str]:
    """Names of the strategies that work without PoolOutputs.``field``."""
    return [name for name, cls in sorted(_REGISTRY.items()) if field not in cls.requires]
