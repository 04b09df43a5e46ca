"""The source contract and its registry."""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, TypeVar

from torch import Tensor
from torch.utils.data import Dataset

from al_lightning.errors import ConfigurationError


@dataclass
class DatasetSplits:
    """A dataset as the data module needs it.

    Attributes:
        train: the training set (pool + validation split); items are ``(image, target)``
            with no transform applied.
        test: the test set, items as ``train``.
        train_targets: (N,) labels of ``train``, read without loading images; the simulated
            oracle reveals them.
        class_names: one name per class.
        train_transform: augmentation for the labeled set.
        eval_transform: for validation, test and pool scoring.
    """

    train: Dataset
    test: Dataset
    train_targets: Tensor
    class_names: list[str]
    train_transform: Optional[Callable[[Any], Any]]
    eval_transform: Optional[Callable[[Any], Any]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetSource(abc.ABC):
    """Where a dataset comes from. Cheap to construct; :meth:`load` does the reading.

    Args:
        path: the dataset root or file (sources that ship their data ignore it).
        image_size: side of the square images fed to the model; ``None`` takes the
            source's natural size.
    """

    name: ClassVar[str] = ""
    #: Whether ``path`` must be given.
    needs_path: ClassVar[bool] = False
    #: What ``path`` should look like, for error messages.
    layout: ClassVar[str] = ""

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None) -> None:
        self.path = Path(path).expanduser() if path else None
        self.image_size = image_size
        if self.needs_path:
            if self.path is None:
                raise ConfigurationError(f"dataset '{self.name}' needs --data.path: {self.layout}")
            if not self.path.exists():
                raise ConfigurationError(
                    f"dataset '{self.name}': path '{self.path}' does not exist; expected {self.layout}"
                )

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of classes, known without loading the images."""

    @abc.abstractmethod
    def load(self) -> DatasetSplits:
        """Read the dataset."""


_SOURCES: dict[str, type[DatasetSource]] = {}

D = TypeVar("D", bound=type[DatasetSource])


def register_source(name: str) -> Callable[[D], D]:
    """Class decorator that makes a source available to :func:`build_source` under ``name``."""

    def decorator(cls: D) -> D:
        cls.name = name
        _SOURCES[name] = cls
        return cls

    return decorator


def available_sources() -> list[str]:
    return sorted(_SOURCES)


def build_source(name: str, **options: Any) -> DatasetSource:
    """Construct the source ``name`` with the ``options`` its constructor accepts (others are ignored)."""
    key = name.strip().lower()
    if key not in _SOURCES:
        raise ConfigurationError(f"unknown dataset '{name}'; choose one of: {', '.join(available_sources())}")
    cls = _SOURCES[key]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(**{k: v for k, v in options.items() if k in accepted})
