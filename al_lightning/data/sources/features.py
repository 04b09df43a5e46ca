"""Precomputed features: a ``.pt`` file of feature vectors and labels, for linear evaluation."""

from __future__ import annotations

import json
import pickle
from typing import Any, NoReturn, Optional

import numpy as np
import torch
from torch import Tensor

from al_lightning.data.datasets import FeatureDataset
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.errors import ConfigurationError

REQUIRED_KEYS = ("train_features", "train_targets", "test_features", "test_targets")


@register_source("features")
class FeatureSource(DatasetSource):
    """Feature vectors computed once by a frozen backbone, so each round trains only a head.

    The paper's ImageNet linear-evaluation setting (C-II) trains a linear classifier on a frozen
    MoCo v2 trunk: its features can be extracted once and saved with ``torch.save`` as::

        {"train_features": (N, D) float, "train_targets": (N,) int,
         "test_features": (M, D) float, "test_targets": (M,) int,
         "class_names": [C names]}  # optional

    ``path`` is that file, or the folder of a feature cache (``--data.feature_cache``). A file is opened with ``torch.load(weights_only=True, mmap=True)``, so
    construction reads only the targets (for the number of classes) and the shapes; feature
    rows are paged in as they are used. Items are ``(float32 vector, target)``; there are no
    transforms. The number of classes is the largest label + 1; :attr:`input_dim` is D.
    """

    needs_path = True
    layout = (
        "a .pt file saved with torch.save holding a dict {'train_features': (N, D) float tensor, "
        "'train_targets': (N,) int tensor, 'test_features': (M, D) float tensor, 'test_targets': (M,) int tensor, "
        "'class_names': optional list of str, one per class}, or a --data.feature_cache folder"
    )

    def __init__(self, path: Optional[str] = None, image_size: Optional[int] = None) -> None:
        super().__init__(path, image_size)
        content = self._read()
        missing = [key for key in REQUIRED_KEYS if key not in content]
        if missing:
            self._fail(f"missing key(s) {', '.join(missing)}")
        self.train_features, self.train_targets = self._split(content, "train")
        self.test_features, self.test_targets = self._split(content, "test")
        if self.train_features.shape[1] != self.test_features.shape[1]:
            self._fail(
                f"train_features has {self.train_features.shape[1]} columns but test_features has "
                f"{self.test_features.shape[1]}; both need the same feature dimension"
            )
        self._num_classes = int(torch.cat([self.train_targets, self.test_targets]).max()) + 1
        self.class_names = self._class_names(content.get("class_names"))

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_dim(self) -> int:
        """D, the length of each feature vector (the linear head's input size)."""
        return self.train_features.shape[1]

    def load(self) -> DatasetSplits:
        return DatasetSplits(
            train=FeatureDataset(self.train_features, self.train_targets),
            test=FeatureDataset(self.test_features, self.test_targets),
            train_targets=self.train_targets,
            class_names=list(self.class_names),
            train_transform=None,
            eval_transform=None,
        )

    def _read(self) -> dict[str, Any]:
        if self.path.is_dir():
            return self._read_cache()
        if not self.path.is_file():
            self._fail("it is not a file")
        try:
            content = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
            # torch's messages run over many lines (weights_only explains itself at length); the CLI
            # prints one, so keep the first.
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self._fail(f"torch.load(weights_only=True, mmap=True) failed: {first_line}")
        if not isinstance(content, dict):
            self._fail(f"it holds a {type(content).__name__}, not a dict")
        return content

    def _read_cache(self) -> dict[str, Any]:
        """A ``--data.feature_cache`` folder: its train and test features, memory-mapped, and labels."""
        content: dict[str, Any] = {}
        for split in ("train", "test"):
            features, targets = self.path / f"{split}.npy", self.path / f"{split}_targets.npy"
            if not (self.path / f"{split}.json").exists() or not targets.exists():
                self._fail(f"it is a folder without a finished {split} split of a feature cache ({split}.npy, {split}.json, {split}_targets.npy)")
            content[f"{split}_features"] = torch.from_numpy(np.load(features, mmap_mode="c"))
            content[f"{split}_targets"] = torch.from_numpy(np.load(targets))
        if (self.path / "classes.json").exists():
            content["class_names"] = json.loads((self.path / "classes.json").read_text())
        return content

    def _split(self, content: dict[str, Any], split: str) -> tuple[Tensor, Tensor]:
        """The checked features and targets of ``split`` (``train`` or ``test``)."""
        features, targets = content[f"{split}_features"], self._targets(content, split)
        if not isinstance(features, Tensor) or features.ndim != 2 or not features.is_floating_point():
            self._fail(f"{split}_features is {_describe(features)}; expected a 2-D float tensor (rows, feature dimension)")
        if features.shape[0] != targets.shape[0]:
            self._fail(f"{split}_features has {features.shape[0]} rows but {split}_targets has {targets.shape[0]}")
        return features, targets

    def _targets(self, content: dict[str, Any], split: str) -> Tensor:
        key = f"{split}_targets"
        targets = content[key]
        if not isinstance(targets, Tensor) or targets.ndim != 1 or not _is_integer(targets):
            self._fail(f"{key} is {_describe(targets)}; expected a 1-D integer tensor of class indices")
        if targets.numel() == 0:
            self._fail(f"{key} is empty")
        targets = targets.long()
        if targets.min() < 0:
            self._fail(f"{key} holds negative labels ({int(targets.min())}); expected class indices 0..C-1")
        return targets

    def _class_names(self, names: Any) -> list[str]:
        if names is None:
            return [str(c) for c in range(self._num_classes)]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            self._fail(f"class_names is {_describe(names)}; expected a list of str")
        if len(names) != self._num_classes:
            self._fail(
                f"class_names has {len(names)} names but the targets have {self._num_classes} classes "
                f"(largest label + 1)"
            )
        return list(names)

    def _fail(self, problem: str) -> NoReturn:
        raise ConfigurationError(f"dataset '{self.name}': '{self.path}': {problem}; expected {self.layout}")


def _is_integer(tensor: Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} tensor"
    return f"a {type(value).__name__}"
