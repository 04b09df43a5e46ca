"""Name → strategy class: the one front door, ``build(name)``, as ``timm.create_model`` is for models.

Besides registry names, :func:`get` and :func:`build` take a class path
(``my_package.MyStrategy``): a :class:`Strategy` subclass written outside this package.
"""

from __future__ import annotations

import importlib
import inspect
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
    """The strategy class registered under ``name`` (case-insensitive), or at class path ``name``.

    A name containing a ``.`` is a class path, ``package.module.ClassName``: the module is
    imported and the class must be a concrete :class:`Strategy` subclass; otherwise a
    :class:`ConfigurationError` names the path and the reason.
    """
    if "." in name:
        return _import_strategy(name.strip())
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ConfigurationError(
            f"unknown strategy '{name}'; choose one of: {', '.join(available())} "
            "(or give the class path of your own Strategy subclass, e.g. my_package.MyStrategy)"
        )
    return _REGISTRY[key]


def build(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the strategy registered under ``name`` (case-insensitive), or at class path ``name``, with ``kwargs``."""
    cls = get(name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigurationError(f"strategy '{cls.name}' does not take these arguments {sorted(kwargs)}: {err}") from err


def _import_strategy(path: str) -> type[Strategy]:
    """The :class:`Strategy` subclass at ``path``; its ``name`` is the path unless it sets its own."""
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"strategy class path '{path}' is not of the form package.module.ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigurationError(
            f"strategy class path '{path}': cannot import module '{module_name}' ({err}); is its folder on PYTHONPATH?"
        ) from err
    if not hasattr(module, attr):
        found = [
            n for n, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, Strategy) and obj.__module__ == module.__name__
        ]
        raise ConfigurationError(
            f"strategy class path '{path}': module '{module_name}' has no attribute '{attr}'"
            f"; Strategy subclasses it defines: {', '.join(found) or 'none'}"
        )
    cls = getattr(module, attr)
    if not inspect.isclass(cls):
        raise ConfigurationError(
            f"strategy class path '{path}' is not a class (it is of type {type(cls).__name__}); "
            "give a subclass of al_lightning.strategies.Strategy"
        )
    if not issubclass(cls, Strategy):
        raise ConfigurationError(
            f"strategy class path '{path}': class {cls.__qualname__} is not a subclass of al_lightning.strategies.Strategy; "
            "subclass it, set `requires` and implement `_select`"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigurationError(f"strategy class path '{path}': class {cls.__qualname__} is abstract; implement {missing}")
    if "name" not in vars(cls):
        cls.name = path  # error messages and logs call the strategy by what the user typed
    return cls


def strategies_not_requiring(field: str) -> list[str]:
    """Names of the strategies that work without PoolOutputs.``field``."""
    return [name for name, cls in sorted(_REGISTRY.items()) if field not in cls.requires]
