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
        test: the test set, items as ``train``; None when there is none (a pool of the
            user's own images without ``--data.test_path``): test accuracy is not measured.
        train_targets: (N,) labels of ``train``, read without loading images; the simulated
            oracle reveals them. ``-1`` marks an item whose label is not known (yet): a
            human oracle must give it.
        class_names: one name per class.
        train_transform: augmentation for the labeled set.
        eval_transform: for validation, test and pool scoring.
        val: a validation split of its own, items as ``train``; when given, the data module
            holds nothing of ``train`` out for early stopping.
    """

    train: Dataset
    test: Optional[Dataset]
    train_targets: Tensor
    class_names: list[str]
    train_transform: Optional[Callable[[Any], Any]]
    eval_transform: Optional[Callable[[Any], Any]]
    val: Optional[Dataset] = None

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


def source_options(name: str) -> list[str]:
    """The options (constructor arguments) that the source ``name`` takes."""
    return [p for p in inspect.signature(_SOURCES[name].__init__).parameters if p != "self"]


def build_source(name: str, **options: Any) -> DatasetSource:
    """Construct the source ``name`` with ``options``; one it does not take is an error naming who does."""
    key = name.strip().lower()
    if key not in _SOURCES:
        raise ConfigurationError(f"unknown dataset '{name}'; choose one of: {', '.join(available_sources())}")
    accepted = set(source_options(key))
    for option in options:
        if option not in accepted:
            takers = [n for n in available_sources() if option in source_options(n)]
            raise ConfigurationError(
                f"dataset '{key}' does not take --data.{option} (it is an option of: {', '.join(takers) or 'none'}); "
                "remove it or choose one of those datasets"
            )
    return _SOURCES[key](**options)
