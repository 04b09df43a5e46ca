"""The source contract and its registry (:class:`~al_lightning.plugins.Registry`, as strategies and oracles)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, TypeVar

from torch import Tensor
from torch.utils.data import Dataset

from al_lightning.errors import ConfigurationError
from al_lightning.plugins import Registry


@dataclass
class DatasetSplits:
    """A dataset as the data module needs it.

    Attributes:
        train: the training set (pool + validation split); items are ``(image, target)``
            with no transform applied.
        test: the test set, items as ``train``; None when there is none (a pool of the
            user's own images without ``--data.dataset_args.test_path``): test accuracy is not measured.
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


SOURCES: Registry[DatasetSource] = Registry(
    "dataset",
    DatasetSource,
    "al_lightning.data.sources.DatasetSource",
    "--data.dataset",
    "--data.dataset_args",
    "subclass it, implement `num_classes` and `load`",
    supplied=("path", "image_size", "labels"),
)

D = TypeVar("D", bound=type[DatasetSource])


def register_source(name: str) -> Callable[[D], D]:
    """Class decorator that makes a source available under ``name`` (``--data.dataset=name``)."""
    return SOURCES.register(name)


def build_source(name: str, **options: Any) -> DatasetSource:
    """The source ``name`` (a registered name or a class path) with ``options``; see :meth:`Registry.build`."""
    return SOURCES.build(name, options)
