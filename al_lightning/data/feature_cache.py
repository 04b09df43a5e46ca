"""A disk cache of a frozen trunk's features: extracted once, memory-mapped every round after.

Linear evaluation never changes the trunk, so its features of the pool, the validation split
and the test split never change either. :class:`FeatureCache` extracts them once, in the eval
transform, into ``DIR/<split>.npy`` (float32, one row per item, memory-mapped when read) with
``DIR/<split>.json`` describing what they were computed from: the dataset and split, the
backbone, a digest of its weights, the transform and the items. A cache whose description
differs, whose file is truncated or whose extraction never finished is rebuilt, with a line
saying why; a valid one is reused across rounds, runs and resumes.

Under DDP every rank extracts its shard (every ``world_size``-th item) and writes its rows
into the one shared file: no rank holds the whole matrix. The folder is also a ``features``
dataset (``--data.dataset=features --data.path=DIR``): ``<split>_targets.npy`` and
``classes.json`` sit beside the features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from al_lightning.data.datasets import SubsetView
from al_lightning.distributed import broadcast
from al_lightning.errors import ConfigurationError
from al_lightning.inference import InferenceLoop
from al_lightning.io import atomic_write_text

#: Bumped when the files' layout changes, so older caches are rebuilt rather than misread.
CACHE_FORMAT = 1
#: Rows that could not be computed (an unreadable image skipped with ``--data.dataset_args.skip_corrupt``).
MISSING = float("nan")


def digest(*parts: Any) -> str:
    """sha256 of the parts: tensors and arrays by their bytes, everything else by its repr."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def weights_digest(state: dict[str, Tensor]) -> str:
    """The trunk's weights, whatever file and format they came from."""
    return digest(*(x for name in sorted(state) for x in (name, state[name])))


class CachedFeatures(Dataset):
    """Rows of a cache as ``(float32 vector, target)``; ``None`` for a row never computed."""

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> Optional[tuple[Tensor, int]]:
        row = self.features[i]
        if torch.isnan(row[0]):
            return None
        return row.float(), int(self.targets[i])


class FeatureCache:
    """The cache folder ``directory``: which splits are valid, extraction, and reading.

    Args:
        directory: the folder (created if missing; it must be writable).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def prepare(self, trainer: pl.Trainer, module: Any, datamodule: Any) -> dict[str, CachedFeatures]:
        """Every split of ``datamodule`` as ``module``'s trunk features: each reused if valid, else extracted now.

        The cache key of a split: the dataset and its options (its path resolved), the split's
        items, the backbone's name, a digest of the trunk's initial weights
        (``module.initial_trunk_state()``), and the eval transform. All ranks call it; rank 0
        decides whether a split is stale.
        """
        self.check_writable()
        options = dict(datamodule.source_options)
        if options.get("path") is not None:
            options["path"] = str(Path(options["path"]).expanduser().resolve())
        common = {
            "format": CACHE_FORMAT,
            "dataset": datamodule.source.name,
            "source": options,
            "backbone": module.hparams.get("backbone"),
            "weights": weights_digest(module.initial_trunk_state()),
            "transform": repr(datamodule.splits.eval_transform),
        }
        cached = {}
        for split in ("train", "test", "val"):
            dataset = datamodule.split(split)
            if dataset is None:
                continue
            targets = datamodule.train_targets if split == "train" else _targets_of(dataset)
            description = {**common, "split": split, "items": len(dataset), "items_digest": digest(targets, getattr(dataset, "files", None))}
            reason = broadcast(self.stale_reason(split, description) if trainer.is_global_zero else None)
            if reason is None:
                rank_zero_info(f"[al] feature cache: reusing {self.features_file(split)}")
            else:
                rank_zero_info(f"[al] feature cache: extracting {split} ({len(dataset)} items) into {self.features_file(split)}: {reason}")
                view = SubsetView(dataset, torch.arange(len(dataset)), datamodule.splits.eval_transform, with_index=True)
                self.extract(trainer, module, datamodule.eval_loader(view, sharded=True), split, targets, description)
            cached[split] = self.read(split, targets)
        if trainer.is_global_zero:
            self.write_classes(datamodule.class_names)
        return cached

    def features_file(self, split: str) -> Path:
        return self.directory / f"{split}.npy"

    def description_file(self, split: str) -> Path:
        return self.directory / f"{split}.json"

    # -- is it valid? ---------------------------------------------------------------------
    def stale_reason(self, split: str, description: dict[str, Any]) -> Optional[str]:
        """Why the cached ``split`` cannot be used for ``description`` (None: it can)."""
        try:
            cached = json.loads(self.description_file(split).read_text())
        except FileNotFoundError:
            return "not extracted yet" if not self.features_file(split).exists() else "its extraction never finished"
        except (OSError, ValueError) as err:
            return f"its description is unreadable ({err})"
        was, now = _flat(cached), _flat(description)
        changed = [k for k in now if was.get(k) != now[k]]
        if changed:
            return "built for another " + ", ".join(f"{k} ({_short(was.get(k))} → {_short(now[k])})" for k in changed)
        try:
            features = np.load(self.features_file(split), mmap_mode="r")
        except (OSError, ValueError) as err:
            return f"{self.features_file(split).name} is truncated or unreadable ({err})"
        if features.shape != (cached["items"], cached["dim"]) or features.dtype != np.float32:
            return f"{self.features_file(split).name} holds {features.shape} {features.dtype}, not ({cached['items']}, {cached['dim']}) float32"
        return None

    # -- extraction ------------------------------------------------------------------------
    def extract(
        self,
        trainer: pl.Trainer,
        module: Any,
        loader: DataLoader,
        split: str,
        targets: Tensor,
        description: dict[str, Any],
    ) -> None:
        """Run ``module.extract_features`` over this rank's shard of ``loader`` into ``<split>.npy``.

        Rank 0 removes the old description first (a run killed from here on leaves a cache
        that reads as unfinished), creates the file, and writes the description once every
        rank has written its rows.
        """
        dim, items = module.feature_dim, len(targets)
        path = self.features_file(split)
        if trainer.is_global_zero:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.description_file(split).unlink(missing_ok=True)
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(items, dim))[:] = MISSING
            np.save(self.directory / f"{split}_targets.npy", targets.numpy())
        trainer.strategy.barrier("feature_cache_create")
        rows = np.load(path, mmap_mode="r+")

        def write(features: Tensor, index: Tensor) -> None:
            rows[index.numpy()] = features.float().cpu().numpy()

        # Also the barrier after writing: every rank has reported before the description is written.
        loop = InferenceLoop.of(trainer, module, progress=f"[al] extracting {split} features")
        loop.run(loader, module.extract_features, write, f"extracting {split} features")
        rows.flush()
        if trainer.is_global_zero:
            atomic_write_text(self.description_file(split), json.dumps({**description, "dim": dim}, indent=1) + "\n")
        trainer.strategy.barrier("feature_cache_done")

    # -- reading ----------------------------------------------------------------------------
    def read(self, split: str, targets: Tensor) -> CachedFeatures:
        """The cached ``split``, memory-mapped (copy-on-write: never written back)."""
        features = torch.from_numpy(np.load(self.features_file(split), mmap_mode="c"))
        return CachedFeatures(features, targets)

    def write_classes(self, class_names: list[str]) -> None:
        atomic_write_text(self.directory / "classes.json", json.dumps(class_names) + "\n")

    def check_writable(self) -> None:
        """A clear error now rather than a failed write after the first extraction."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ConfigurationError(
                f"--data.feature_cache='{self.directory}' is not a writable folder ({err.strerror or err}); choose another"
            ) from err


def _flat(description: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting spelled out (``source.image_size``), so a change names its field."""
    flat: dict[str, Any] = {}
    for key, value in description.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:18]}…{text[-18:]}"


def _targets_of(dataset: Any) -> Tensor:
    """A dataset's labels, without decoding images where it keeps them (``targets``)."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [dataset[i][1] for i in range(len(dataset))]
    return torch.as_tensor(targets, dtype=torch.long)
