"""The file oracle: each round's queries go out as files, the labels come back as a file.

Layout under ``label_dir``::

    queries/round_K.csv               the items to label (index, path, rank, predicted, confidence, score)
    queries/round_K.labelstudio.json  the same items as Label Studio tasks, for a manual import
    labels/round_K.csv                written by the team: path,label or index,label
    labels/round_K.json               or: a Label Studio JSON export of those tasks

The run pauses after writing the queries; the same command run again reads the labels,
checks every row (:func:`~al_lightning.oracles.base.match_labels`) and goes on. With
``--al.oracle_args.min_answered=F`` < 1 the labels file may leave items out (or their label
empty), as long as at least a fraction F of the round is labeled; the rest go back to the pool.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional

from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.io import atomic_write_text
from al_lightning.oracles.base import (
    LabelRow,
    LabelsError,
    Oracle,
    Query,
    check_min_answered,
    match_labels,
    register_oracle,
    required_answers,
)
from al_lightning.run_files import query_file

#: Columns of ``queries/round_K.csv``: ``rank`` is the selection order (1 first), ``predicted``
#: the model's class, ``confidence`` its top softmax probability, ``score`` the strategy's own
#: score (lower is asked first; empty for strategies without one, such as random or coreset).
QUERY_COLUMNS = ("index", "path", "rank", "predicted", "confidence", "score")


def query_csv(query: Query) -> str:
    """The rows of ``queries/round_K.csv`` for ``query``, in selection order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(QUERY_COLUMNS)
    scores = query.scores.tolist() if query.scores is not None else [None] * len(query)
    for rank, (index, item, predicted, confidence, score) in enumerate(
        zip(query.indices.tolist(), query.item_ids, query.predicted.tolist(), query.confidence.tolist(), scores), start=1
    ):
        name = query.class_names[predicted] if predicted >= 0 else ""  # -1: the image was skipped as unreadable
        writer.writerow([index, item, rank, name, f"{confidence:.6g}", "" if score is None else f"{score:.6g}"])
    return buffer.getvalue()


def write_query_csv(path: str | Path, query: Query) -> Path:
    """Write :func:`query_csv` to ``path`` atomically."""
    atomic_write_text(path, query_csv(query))
    return Path(path)


def read_labels_csv(path: Path, allow_empty: bool = False) -> list[LabelRow]:
    """Rows of a labels CSV: a ``label`` column and a ``path`` or ``index`` column (others ignored).

    So ``queries/round_K.csv`` with a ``label`` column filled in is a valid labels file too.
    Line numbers count the header as line 1. An empty label is reported as such, or, with
    ``allow_empty`` (a partial round), its row left out: that item was not answered.
    """
    text = path.read_text(encoding="utf-8-sig")  # spreadsheets often save a byte-order mark
    reader = csv.reader(io.StringIO(text))
    header = [name.strip().lower() for name in next(reader, [])]
    key = "path" if "path" in header else "index" if "index" in header else None
    if key is None or "label" not in header:
        raise ConfigurationError(
            f"{path}: line 1 must be a header with a 'label' column and a 'path' or 'index' column "
            f"(got {','.join(header) or 'an empty file'}); e.g. 'path,label'"
        )
    item_column, label_column = header.index(key), header.index("label")
    rows, empty = [], []
    for row in reader:
        line = f"line {reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue  # blank lines, as spreadsheets leave them at the end
        cells = row + [""] * (len(header) - len(row))
        if not cells[label_column].strip():
            if allow_empty:
                continue
            empty.append(f"{line}: no label for '{cells[item_column].strip()}'")
            continue
        rows.append(LabelRow(line, cells[item_column], cells[label_column]))
    if empty:
        raise LabelsError(str(path), empty, "fill in every label and run the same command again")
    return rows


@register_oracle("file")
class FileOracle(Oracle):
    """Queries out as files under ``label_dir/queries``, labels in from ``label_dir/labels``.

    Args:
        label_dir: the folder shared with the annotators.
        min_answered: the fraction of the round's queries the labels file must label (0 < F <= 1);
            below 1 the file may leave items out, and those go back to the unlabeled pool.
    """

    def __init__(self, label_dir: str | Path, min_answered: float = 1.0) -> None:
        self.label_dir = Path(label_dir).expanduser().absolute()
        self.min_answered = check_min_answered(min_answered, "file")

    def query_file(self, round: int) -> Path:
        return query_file(self.label_dir, round)

    def task_file(self, round: int) -> Path:
        return query_file(self.label_dir, round).with_suffix(".labelstudio.json")

    def labels_files(self, round: int) -> tuple[Path, Path]:
        """Where the labels of ``round`` are looked for: a CSV, or a Label Studio JSON export."""
        return self.label_dir / "labels" / f"round_{round}.csv", self.label_dir / "labels" / f"round_{round}.json"

    def request(self, query: Query) -> None:
        """Write the query and its Label Studio task file (atomically; a replayed round rewrites the same files)."""
        from al_lightning.oracles.labelstudio import labelstudio_tasks

        try:
            (self.label_dir / "labels").mkdir(parents=True, exist_ok=True)
            write_query_csv(self.query_file(query.round), query)
            atomic_write_text(self.task_file(query.round), json.dumps(labelstudio_tasks(query), indent=1) + "\n")
        except OSError as err:
            raise ConfigurationError(f"cannot write the queries to --al.label_dir='{self.label_dir}' ({err}); choose a writable folder") from err

    def collect(self, query: Query) -> Optional[Tensor]:
        from al_lightning.oracles.labelstudio import labelstudio_export_rows

        csv_file, json_file = self.labels_files(query.round)
        if csv_file.exists() and json_file.exists():
            raise ConfigurationError(f"both {csv_file} and {json_file} exist; keep the one with round {query.round}'s labels")
        partial = self.min_answered < 1
        if csv_file.exists():
            rows, source = read_labels_csv(csv_file, allow_empty=partial), str(csv_file)
        elif json_file.exists():
            rows, source = labelstudio_export_rows(json_file, round=query.round), str(json_file)
        else:
            return None
        fix = f"fix {Path(source).name} and run the same command again"
        labels = match_labels(query, rows, source, fix, allow_missing=partial)
        answered, needed = int((labels >= 0).sum()), required_answers(len(query), self.min_answered)
        if answered < needed:
            raise LabelsError(
                source,
                [f"labels for {answered} of the {len(query)} queried items; --al.oracle_args.min_answered={self.min_answered:g} needs {needed}"],
                f"label at least {needed - answered} more and run the same command again",
            )
        return labels

    def waiting_message(self, query: Query) -> str:
        csv_file, json_file = self.labels_files(query.round)
        return (
            f"round {query.round}: {len(query)} items to label are listed in {self.query_file(query.round)} "
            f"(as Label Studio tasks: {self.task_file(query.round)}). Save their labels as {csv_file} "
            f"(columns path,label or index,label; class names or ids), or a Label Studio JSON export as "
            f"{json_file}, then run the same command again."
            + (
                f" At least {required_answers(len(query), self.min_answered)} must be labeled "
                f"(--al.oracle_args.min_answered={self.min_answered:g}); the rest go back to the pool."
                if self.min_answered < 1
                else ""
            )
        )
