"""A folder of unlabeled images and a few labels: the pool for labeling with real annotators."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from torchvision.datasets.folder import IMG_EXTENSIONS

from al_lightning.data.images import ImageFileDataset, image_files
from al_lightning.data.sources.image_folder import _first
from al_lightning.data.sources.source import DatasetSource, DatasetSplits, register_source
from al_lightning.data.transforms import imagenet_transforms
from al_lightning.errors import ConfigurationError

#: The columns a labels file must have (others, such as pool.csv's ``index,round``, are ignored).
LABEL_COLUMNS = ("path", "label")

#: At most this many bad rows are listed in one error.
MAX_SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class LabelsRow:
    """One row of a labels file: where it is (for error messages), the image's path, its class name."""

    line: int
    path: str
    label: str


@register_source("image_pool")
class ImagePoolSource(DatasetSource):
    """Every image file under ``path``, at any depth, is a pool item; folders are not classes.

    The images a team wants labeled, with no layout imposed. An item's id is its POSIX path
    relative to ``path``; items are in sorted id order, so the pool indices stay the same as
    long as the files do. Items named in the ``labels`` file have their class as target (the
    seed labels, which the data module labels as round 0); all others have target ``-1``
    (unknown), so a human oracle (``--al.oracle=file`` or ``labelstudio``) must answer the
    queries. ImageNet-style transforms at ``image_size`` (default 224). The labels file and the
    class folders of ``test_path`` and ``val_path`` are read at construction; the images are
    listed by :meth:`load` and opened only when an item is read.

    Args:
        labels: CSV file with the header ``path,label``: path relative to ``path``, label a
            class name. More columns are allowed, so a run's ``pool.csv`` serves as one.
        classes: the class names, in class-id order (default: the sorted distinct labels of
            ``labels``).
        test_path: a folder of class folders, ``test_path/<class>/<image>``, named as the
            pool's classes (a class may be missing); without it no test accuracy is measured.
        val_path: the same layout: a validation split for early stopping, used instead of
            holding out part of the seed labels.
        skip_corrupt: serve ``None`` (with a warning) for an unreadable image instead of
            stopping; the data module's loaders drop such items.
    """

    needs_path = True
    layout = "a folder of images (at any depth; folders are not classes), with --data.labels=FILE.csv (path,label)"

    def __init__(
        self,
        path: Optional[str] = None,
        image_size: Optional[int] = None,
        labels: Optional[str] = None,
        classes: Optional[list[str]] = None,
        test_path: Optional[str] = None,
        val_path: Optional[str] = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(path, image_size)
        if not self.path.is_dir():
            raise ConfigurationError(f"dataset '{self.name}': '{self.path}' is not a folder; expected {self.layout}")
        self.image_size = image_size or 224
        self.skip_corrupt = skip_corrupt
        self.labels_file = Path(labels).expanduser() if labels else None
        self.rows = self._read_labels(self.labels_file) if self.labels_file else []
        self.class_names = self._classes(classes)
        self.test_dir = self._split_dir(test_path, "test_path")
        self.val_dir = self._split_dir(val_path, "val_path")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self) -> DatasetSplits:
        files = sorted(image_files(self.path))
        if not files:
            raise ConfigurationError(
                f"dataset '{self.name}': no image files ({', '.join(IMG_EXTENSIONS)}) under '{self.path}'; "
                "put the images to label there (at any depth) or point --data.path at them"
            )
        train = ImageFileDataset(self.path, files, self._targets(files), skip_corrupt=self.skip_corrupt)
        train_transform, eval_transform = imagenet_transforms(self.image_size)
        return DatasetSplits(
            train=train,
            test=self._class_folder_dataset(self.test_dir, "test_path"),
            val=self._class_folder_dataset(self.val_dir, "val_path"),
            train_targets=train.targets,
            class_names=list(self.class_names),
            train_transform=train_transform,
            eval_transform=eval_transform,
        )

    # -- the labels file and the classes -------------------------------------------------
    def _read_labels(self, file: Path) -> list[LabelsRow]:
        """The rows of ``file`` with their line numbers; blank lines skipped, columns beyond path and label ignored."""
        if not file.is_file():
            raise ConfigurationError(
                f"dataset '{self.name}': labels file '{file}' does not exist; --data.labels takes a CSV file "
                f"with the header {','.join(LABEL_COLUMNS)}"
            )
        with open(file, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            if not set(LABEL_COLUMNS) <= set(header):
                found = f"its header is '{','.join(header)}'" if header else "it is empty"
                raise ConfigurationError(
                    f"dataset '{self.name}': labels file '{file}' has no {' and '.join(LABEL_COLUMNS)} columns "
                    f"({found}); its first line must be {','.join(LABEL_COLUMNS)}, then one row per labeled "
                    "image: its path relative to --data.path and its class name"
                )
            path_at, label_at = header.index("path"), header.index("label")
            rows = []
            for cells in reader:
                cells = [cell.strip() for cell in cells] + [""] * (len(header) - len(cells))  # a short row: empty cells
                if any(cells):
                    rows.append(LabelsRow(reader.line_num, cells[path_at], cells[label_at]))
        return rows

    def _classes(self, classes: Optional[Sequence[str]]) -> list[str]:
        """``classes`` as given (checked), else the sorted distinct labels of the labels file."""
        if classes is None:
            if self.labels_file is None:
                raise ConfigurationError(
                    f"dataset '{self.name}' needs its class names: give --data.labels=FILE.csv (path,label) with "
                    "some labeled images, or --data.dataset_args.classes=[name,...]"
                )
            names = sorted({row.label for row in self.rows if row.label})
            if not names:
                raise ConfigurationError(
                    f"dataset '{self.name}': labels file '{self.labels_file}' labels no image, so the classes are "
                    "unknown; add rows (path,label) or give --data.dataset_args.classes=[name,...]"
                )
        else:
            names = [str(name).strip() for name in classes]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated or "" in names:
                problem = f"names {_first(repeated)} more than once" if repeated else "has an empty name"
                raise ConfigurationError(f"--data.dataset_args.classes {problem}; give each class once")
        if len(names) < 2:
            raise ConfigurationError(
                f"dataset '{self.name}' has only the class {names}; a classifier needs at least two: "
                "list them all with --data.dataset_args.classes=[name,...]"
            )
        return names

    def _targets(self, files: list[str]) -> list[int]:
        """The class id of each file named in the labels file, ``-1`` for the others; every row is checked."""
        position = {file: i for i, file in enumerate(files)}
        class_id = {name: c for c, name in enumerate(self.class_names)}
        targets = [-1] * len(files)
        first_line: dict[str, int] = {}
        problems = []
        for row in self.rows:
            where = f"{self.labels_file.name} line {row.line}"
            path = PurePosixPath(row.path).as_posix() if row.path else ""
            if not path:
                problems.append(f"{where}: no path")
            elif path in first_line:
                problems.append(f"{where}: a second row for '{path}' (first on line {first_line[path]})")
            elif path not in position:
                problems.append(f"{where}: '{path}' is not an image under '{self.path}'")
            elif not row.label:
                problems.append(f"{where}: no label for '{path}'")
            elif row.label not in class_id:
                problems.append(f"{where}: class '{row.label}' is not one of --data.dataset_args.classes ({_first(self.class_names)})")
            else:
                targets[position[path]] = class_id[row.label]
            first_line.setdefault(path, row.line)
        if problems:
            shown = problems[:MAX_SHOWN_PROBLEMS]
            if len(problems) > MAX_SHOWN_PROBLEMS:
                shown.append(f"... and {len(problems) - MAX_SHOWN_PROBLEMS} more")
            lines = "\n".join(f"  {problem}" for problem in shown)
            raise ConfigurationError(
                f"dataset '{self.name}': {len(problems)} bad row(s) in labels file '{self.labels_file}':\n{lines}\n"
                "each row names one image once, by its path relative to --data.path, and its class name; fix those rows"
            )
        return targets

    # -- test and validation folders -----------------------------------------------------
    def _split_dir(self, folder: Optional[str], option: str) -> Optional[Path]:
        """``folder`` checked: a folder outside the pool whose class folders are all pool classes."""
        if folder is None:
            return None
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigurationError(f"dataset '{self.name}': --data.dataset_args.{option} '{root}' is not a folder; expected {root}/<class>/<image>")
        if root.resolve().is_relative_to(self.path.resolve()):
            raise ConfigurationError(
                f"dataset '{self.name}': --data.dataset_args.{option} '{root}' lies inside --data.path '{self.path}', so its images "
                "would also be pool items; move it out of the pool folder"
            )
        unknown = [name for name in _class_folders(root) if name not in self.class_names]
        if unknown:
            raise ConfigurationError(
                f"dataset '{self.name}': --data.dataset_args.{option} '{root}' has class folders that are not pool classes: "
                f"{_first(unknown)}; its folders must be named as the classes ({_first(self.class_names)})"
            )
        return root

    def _class_folder_dataset(self, root: Optional[Path], option: str) -> Optional[ImageFileDataset]:
        """The images of ``root/<class>/``, with the pool's class ids as targets (None without ``root``)."""
        if root is None:
            return None
        files: list[str] = []
        targets: list[int] = []
        for name in _class_folders(root):
            images = image_files(root / name, name)
            files += images
            targets += [self.class_names.index(name)] * len(images)
        if not files:
            raise ConfigurationError(
                f"dataset '{self.name}': no image files ({', '.join(IMG_EXTENSIONS)}) in the class folders of "
                f"--data.dataset_args.{option} '{root}'; expected {root}/<class>/<image>"
            )
        return ImageFileDataset(root, files, targets, skip_corrupt=self.skip_corrupt)


def _class_folders(root: Path) -> list[str]:
    """The sorted sub-folders of ``root``, hidden ones (``.ipynb_checkpoints``) left out."""
    with os.scandir(root) as scan:
        return sorted(e.name for e in scan if e.is_dir() and not e.name.startswith("."))
