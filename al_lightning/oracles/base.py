"""The oracle contract: a query goes out, labels come back, checked against what was asked.

An oracle answers "what are the labels of these points?". The simulated one answers at
once from the dataset's labels; a human one (annotators with a spreadsheet, a Label Studio
project) answers later: :meth:`Oracle.request` hands the query over, :meth:`Oracle.collect`
returns the labels once they exist (``None`` while they do not), and the run pauses in between.
Whatever the source of the answers, they pass through :func:`match_labels`, which refuses a
bad answer as a whole and names every problem, so nothing is half-applied.

A round may also end partly answered (``min_answered`` of the human oracles): ``collect`` then
returns -1 for the items nobody labeled, and those go back to the unlabeled pool.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional, Sequence, TypeVar

import torch
from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.plugins import Registry


@dataclass
class Query:
    """The points one round asks to have labeled, with what the model thinks of them.

    Attributes:
        round: the round these labels join.
        indices: (b,) training-set indices, in selection order.
        item_ids: one id per point: its path relative to the dataset root for image files,
            else the index as text.
        predicted: (b,) the model's predicted class.
        confidence: (b,) the model's top softmax probability.
        scores: (b,) the strategy's own score of each point (lower is asked first), or None
            for strategies without a per-point score (random, coreset, BADGE, ...).
        class_names: the classes, by id.
        strategy: the strategy's name.
        image_files: (b,) absolute path of each point's image file, where it has one.
        run: the run that asked (its log folder), for labeling tools' model versions.
    """

    round: int
    indices: Tensor
    item_ids: list[str]
    predicted: Tensor
    confidence: Tensor
    scores: Optional[Tensor]
    class_names: list[str]
    strategy: str
    image_files: list[Optional[str]] = field(default_factory=list)
    run: str = ""

    def __len__(self) -> int:
        return self.indices.numel()


@dataclass(frozen=True)
class LabelRow:
    """One answer as read from a labels file or a labeling tool.

    Attributes:
        line: where it came from, for error messages (``"line 7"``, ``"task 12"``).
        item: the item's id (relative path) or its index, as text.
        label: a class name or a class id, as text.
    """

    line: str
    item: str
    label: str


class LabelsError(ConfigurationError):
    """Answers that cannot be applied; ``problems`` lists every one, with where it is."""

    def __init__(self, source: str, problems: Sequence[str], fix: str) -> None:
        self.source, self.problems = source, list(problems)
        shown = self.problems[:20] + ([f"... and {len(self.problems) - 20} more"] if len(self.problems) > 20 else [])
        lines = "\n".join(f"  {p}" for p in shown)
        self.fix = fix
        super().__init__(f"{source}: {len(self.problems)} problem(s), nothing was applied:\n{lines}\n{fix}")

    def __reduce__(self):
        # Raised on rank 0 and re-raised on every rank: pickling must keep the arguments.
        return type(self), (self.source, self.problems, self.fix)


def match_labels(query: Query, rows: Sequence[LabelRow], source: str, fix: str, *, allow_missing: bool = False) -> Tensor:
    """(b,) class ids for ``query.indices`` from ``rows``; every row checked, all problems reported.

    A row names its item by id (path) or by index, and its class by name or by id. Refused:
    an unknown item, an item that was not queried this round, an unknown class, a second row
    for the same item, and (unless ``allow_missing``: a partial round) a queried item with no
    row; with ``allow_missing`` such an item gets -1.

    Raises:
        LabelsError: with one line per problem, naming the row.
    """
    by_id = {item_id: position for position, item_id in enumerate(query.item_ids)}
    by_index = {int(index): position for position, index in enumerate(query.indices.tolist())}
    class_ids = {name: i for i, name in enumerate(query.class_names)}
    labels = torch.full((len(query),), -1, dtype=torch.long)
    seen: dict[int, str] = {}
    problems: list[str] = []
    for row in rows:
        item, label = row.item.strip(), row.label.strip()
        position = by_id.get(item)
        if position is None and item.lstrip("-").isdigit():
            position = by_index.get(int(item))
        if position is None:
            problems.append(f"{row.line}: '{item}' was not queried in round {query.round} (not one of its {len(query)} items)")
            continue
        if position in seen:
            problems.append(f"{row.line}: a second row for '{item}' (first on {seen[position]})")
            continue
        seen[position] = row.line
        if label in class_ids:
            labels[position] = class_ids[label]
        elif label.isdigit() and int(label) < len(query.class_names):
            labels[position] = int(label)
        else:
            problems.append(f"{row.line}: unknown class '{label}' for '{item}'; classes: {_first(query.class_names)}")
    missing = [query.item_ids[p] for p in range(len(query)) if p not in seen]
    if missing and not allow_missing:
        problems.append(f"no row for {len(missing)} queried item(s): {_first(missing)}")
    if problems:
        raise LabelsError(source, problems, fix)
    return labels


def check_min_answered(min_answered: float, oracle: str) -> float:
    """``min_answered`` if it is a fraction in (0, 1], else a one-line error naming the option."""
    if not 0 < min_answered <= 1:
        raise ConfigurationError(
            f"--al.oracle_args.min_answered={min_answered} is outside (0, 1]: the fraction of a round's queries that must be "
            f"labeled before the {oracle} oracle goes on (1: all of them; 0.9: once 90% are)"
        )
    return float(min_answered)


def required_answers(asked: int, min_answered: float) -> int:
    """How many of ``asked`` queries must be answered: ``ceil(min_answered * asked)``, at least 1 where asked."""
    return min(asked, max(1, math.ceil(round(min_answered * asked, 9)))) if asked else 0


def _first(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


class Oracle(abc.ABC):
    """Where labels come from. :meth:`request` hands a query over; :meth:`collect` returns its labels.

    ``answers_at_once``: the labels exist as soon as the query does (the simulated oracle), so
    the run never pauses, and strategies may read the pool's true labels during the query
    (:meth:`true_labels`). A human oracle pauses the run after :meth:`request`; the same
    command run again calls :meth:`collect`, which returns ``None`` while the labels are not
    there yet.

    The query callback calls both on global rank 0 only and hands the result to every rank
    (:func:`~al_lightning.distributed.on_rank_zero`): an oracle writes files or talks to a
    server once, and needs no pickling. Oracles register in :data:`ORACLES` (``--al.oracle``)
    and take their own options from ``--al.oracle_args``.
    """

    name: ClassVar[str] = ""
    answers_at_once: ClassVar[bool] = False

    @abc.abstractmethod
    def request(self, query: Query) -> None:
        """Hand ``query`` to the annotators. Called again for the same query on a replayed round: idempotent."""

    @abc.abstractmethod
    def collect(self, query: Query) -> Optional[Tensor]:
        """(b,) class ids for ``query.indices``, or ``None`` while the answers are not there.

        An oracle that lets a round end partly answered (``min_answered`` < 1) gives -1 for the
        items without a label; the run labels the others and the rest go back to the pool.

        Raises:
            LabelsError: answers exist but are wrong (checked with :func:`match_labels`).
        """

    def true_labels(self) -> Optional[Tensor]:
        """(N_train,) the pool's true labels where this oracle knows them before it is asked
        (the simulated one), else None; strategies that read ``PoolOutputs.targets`` get them from here."""
        return None

    def waiting_message(self, query: Query) -> str:
        """What the user should do next while the labels of ``query`` are pending."""
        return f"round {query.round}: waiting for the labels of {len(query)} queried items"


#: ``--al.oracle``: name → oracle class (:class:`~al_lightning.plugins.Registry`, as strategies and sources).
ORACLES: Registry[Oracle] = Registry(
    "oracle",
    Oracle,
    "al_lightning.oracles.Oracle",
    "--al.oracle",
    "--al.oracle_args",
    "subclass it, implement `request` and `collect`",
    supplied=("targets", "label_dir"),
)

OracleClass = TypeVar("OracleClass", bound=type[Oracle])


def register_oracle(name: str) -> Callable[[OracleClass], OracleClass]:
    """Class decorator that makes an oracle available under ``name`` (``--al.oracle=name``)."""
    return ORACLES.register(name)
