"""One plug-in idiom for strategies, dataset sources and oracles: a registry per kind.

Every kind of part a run is built from works the same way, as ``timm.create_model`` does for
models: a class registers itself under a name in its own module, the configuration names it
(``--al.strategy=base``, ``--data.dataset=cifar10_lt``, ``--al.oracle=labelstudio``) or gives
the class path of a user's own subclass (``my_package.MyStrategy``), and the plug-in's own
options, declared once as its constructor's arguments, go in a dict under its name
(``--al.strategy_args.partitions=10``, ``--data.dataset_args.imbalance_ratio=20``,
``--al.oracle_args.url=http://...``). ``--print_config`` shows every option of the chosen
plug-ins with its default (:meth:`Registry.options`), and an option the plug-in does not take
is refused with the ones it does.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Generic, Optional, TypeVar

from al_lightning.errors import ConfigurationError

P = TypeVar("P")
C = TypeVar("C", bound=type)


class Registry(Generic[P]):
    """Name → class for one kind of plug-in.

    Args:
        kind: what the plug-ins are, as messages call them (``strategy``, ``dataset``, ``oracle``).
        base: the class every plug-in subclasses.
        public_base: the base class's public import path, for messages.
        flag: the option that names the plug-in (``--al.strategy``).
        options_flag: the option that holds its own options (``--al.strategy_args``).
        hint: what a class needs to be a plug-in, for the message that refuses one.
        supplied: constructor arguments the run supplies itself (a source's ``path``, a
            strategy's per-round ``seed``), left out of :meth:`options`.
    """

    def __init__(
        self, kind: str, base: type, public_base: str, flag: str, options_flag: str, hint: str, supplied: tuple[str, ...] = ()
    ) -> None:
        self.kind, self.base, self.public_base = kind, base, public_base
        self.flag, self.options_flag, self.hint, self.supplied = flag, options_flag, hint, supplied
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: the class becomes available under ``name`` (case-insensitive), its ``name`` attribute set."""

        def decorator(cls: C) -> C:
            key = name.lower()
            if key in self._classes and self._classes[key] is not cls:
                raise ValueError(f"{self.kind} name '{key}' is already registered by {self._classes[key].__qualname__}")
            cls.name = key
            self._classes[key] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def classes(self) -> dict[str, type]:
        """Registered name → class."""
        return dict(self._classes)

    def get(self, name: str) -> type:
        """The class registered under ``name`` (case-insensitive), or the class at class path ``name``.

        A name with a ``.`` is a class path, ``package.module.ClassName``: the module is imported
        and the class must be a concrete subclass of the base; otherwise a
        :class:`ConfigurationError` names the path and the reason.
        """
        if "." in name:
            return self._import(name.strip())
        key = name.strip().lower()
        if key not in self._classes:
            example = f"my_package.My{self.base.__name__}"
            raise ConfigurationError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())} "
                f"(or give the class path of your own {self.base.__name__} subclass, e.g. {example})"
            )
        return self._classes[key]

    def options(self, name: str) -> dict[str, Any]:
        """The options a user gives a plug-in (its constructor's arguments but the ``supplied`` ones)
        with their defaults; a required one maps to ``None``. What ``--print_config`` shows under
        :attr:`options_flag`."""
        return {
            p.name: None if p.default is inspect.Parameter.empty else p.default
            for p in self._parameters(self.get(name))
            if p.name not in self.supplied
        }

    def build(self, name: str, options: Optional[Mapping[str, Any]] = None, **context: Any) -> P:
        """An instance of the plug-in ``name`` with the user's ``options`` and the run's ``context``.

        ``options`` are the user's (:attr:`options_flag`): each must be one the plug-in takes,
        or the error lists those it does. ``context`` is what the run supplies (a dataset's
        ``path``, an oracle's ``targets``): passed where the plug-in takes it and set (not
        None), left out otherwise; a name in both is an error.
        """
        cls = self.get(name)
        accepted = {p.name for p in self._parameters(cls)}
        takes_any = self._takes_any(cls)
        options = dict(options or {})
        self.check(name, options)
        for key, value in context.items():
            if value is None or not (key in accepted or takes_any):
                continue
            if key in options:
                raise ConfigurationError(f"{key} is given twice, in {self.options_flag} and on its own; give it once")
            options[key] = value
        missing = [p.name for p in self._parameters(cls) if p.default is inspect.Parameter.empty and p.name not in options]
        if missing:
            needed = " ".join(f"{self.options_flag}.{m}=..." for m in missing)
            raise ConfigurationError(f"{self.kind} '{cls.name}' needs {needed}")
        return cls(**options)

    def check(self, name: str, options: Mapping[str, Any]) -> None:
        """Refuse an option the plug-in ``name`` does not take, naming the ones it does (and who takes it)."""
        cls = self.get(name)
        accepted = {p.name for p in self._parameters(cls)}
        unknown = sorted(k for k in options if k not in accepted)
        if unknown and not self._takes_any(cls):
            takers = self._takers(unknown[0])
            elsewhere = f"; {unknown[0]} is an option of: {', '.join(takers)}" if takers else ""
            raise ConfigurationError(
                f"{self.kind} '{cls.name}' does not take these arguments {unknown} ({self.options_flag}{elsewhere}); "
                f"it takes: {', '.join(sorted(self.options(name))) or 'no options of its own'}"
            )

    def takes(self, name: str, option: str) -> bool:
        """Whether the plug-in ``name`` takes ``option``."""
        return option in {p.name for p in self._parameters(self.get(name))}

    def _takers(self, option: str) -> list[str]:
        """The registered plug-ins that take ``option``."""
        return [n for n, c in sorted(self._classes.items()) if option in {p.name for p in self._parameters(c)}]

    @staticmethod
    def _takes_any(cls: type) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())

    @staticmethod
    def _parameters(cls: type) -> list[inspect.Parameter]:
        return [
            p
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]

    def _import(self, path: str) -> type:
        """The plug-in class at ``path``; its ``name`` is the path unless it sets its own."""
        where = f"{self.kind} class path '{path}'"
        module_name, _, attr = path.rpartition(".")
        if not module_name or not attr:
            raise ConfigurationError(f"{where} is not of the form package.module.ClassName")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigurationError(f"{where}: cannot import module '{module_name}' ({err}); is its folder on PYTHONPATH?") from err
        if not hasattr(module, attr):
            found = [
                n
                for n, obj in vars(module).items()
                if inspect.isclass(obj) and issubclass(obj, self.base) and obj.__module__ == module.__name__
            ]
            raise ConfigurationError(
                f"{where}: module '{module_name}' has no attribute '{attr}'"
                f"; {self.base.__name__} subclasses it defines: {', '.join(found) or 'none'}"
            )
        cls = getattr(module, attr)
        if not inspect.isclass(cls):
            raise ConfigurationError(f"{where} is not a class (it is of type {type(cls).__name__}); give a subclass of {self.public_base}")
        if not issubclass(cls, self.base):
            raise ConfigurationError(f"{where}: class {cls.__qualname__} is not a subclass of {self.public_base}; {self.hint}")
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise ConfigurationError(f"{where}: class {cls.__qualname__} is abstract; implement {missing}")
        if "name" not in vars(cls):
            cls.name = path  # messages and logs call the plug-in by what the user typed
        return cls
