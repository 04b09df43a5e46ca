"""Label Studio as the oracle: a round's queries become tasks in a project, its annotations come back.

``--al.oracle=labelstudio --al.oracle_args.url=URL --al.oracle_args.project=ID_OR_TITLE``, with the
API token in the environment variable ``LABEL_STUDIO_API_KEY`` (the name Label Studio's own SDK
reads; copy it from *Account & Settings* of the server). :meth:`LabelStudioOracle.request` imports one
task per queried image, in selection order, each with a prediction (the model's guess) whose score
is the strategy's own score (or the model's confidence), so annotators can sort by it; a later
:meth:`LabelStudioOracle.collect` reads the finished annotations back through :func:`match_labels`.

Usage::

    oracle = LabelStudioOracle("http://localhost:8080", "cifar10 round labels")
    oracle.request(query)             # creates the project on first use, imports the tasks
    labels = oracle.collect(query)    # None until the round is labeled (all, or min_answered of it)

The pure functions serve the file oracle too: :func:`labelstudio_tasks` builds the task file a user
imports by hand, :func:`labelstudio_export_rows` reads the JSON export they download back (the
latest finished annotation of each task counts there; the agreement policies are the live oracle's).

Talks to the server through Label Studio's SDK (``label-studio-sdk``, imported when first
needed: ``pip install 'al_lightning[labelstudio]'``); only the check that an image resolves
fetches it directly, as the annotators' browsers will.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import mimetypes
import os
import xml.etree.ElementTree as ET
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.io import atomic_write_text
from al_lightning.oracles.base import (
    LabelRow,
    Oracle,
    Query,
    check_min_answered,
    match_labels,
    register_oracle,
    required_answers,
)

API_KEY_VARIABLE = "LABEL_STUDIO_API_KEY"
#: The server's setting of where local files may be served from (read here too for ``images=local_files``).
_DOCUMENT_ROOT = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
INSTALL_HINT = "pip install 'al_lightning[labelstudio]'"
#: The label of an annotation that chose nothing (``match_labels`` then names its task).
NO_CHOICE = "(no choice)"
#: Tag names of the labeling config this module creates.
IMAGE_TAG, CHOICES_TAG, IMAGE_KEY = "image", "label", "image"

# Formats every browser shows in an <img>; others are re-encoded to PNG before they are inlined.
_BROWSER_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
# One import request stays well under Label Studio's DATA_UPLOAD_MAX_MEMORY_SIZE (250 MB by default).
_IMPORT_CHUNK_BYTES = 32 * 2**20
# Tasks per page when a poll lists a round (ids, items, annotations: ~90 bytes a task). Each page
# makes the server filter the project's tasks by data.round again, a scan of every task's data
# (inlined images included), so pages are large: 100 a page took ~4 s a page on 10,000 inline images.
_PAGE_SIZE = 1000


# ---------------------------------------------------------------------------------------------
# Pure functions: tasks out, rows in (shared by the live oracle and the file oracle)


def labelstudio_label_config(class_names: Sequence[str]) -> str:
    """The labeling config of a new project: the image and one single choice per class.

    Few classes show as buttons in a row, many as a drop-down list.
    """
    layout = 'showInline="true"' if len(class_names) <= 10 else 'layout="select"'
    choices = "".join(f"    <Choice value={quoteattr(name)}/>\n" for name in class_names)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_TAG}" value="${IMAGE_KEY}"/>\n'
        f'  <Choices name="{CHOICES_TAG}" toName="{IMAGE_TAG}" choice="single" required="true" {layout}>\n'
        f"{choices}"
        "  </Choices>\n"
        "</View>\n"
    )


def labelstudio_tasks(
    query: Query,
    *,
    image_url: Optional[str] = None,
    from_name: str = CHOICES_TAG,
    to_name: str = IMAGE_TAG,
    image_key: str = IMAGE_KEY,
) -> list[dict[str, Any]]:
    """Label Studio tasks (``data`` and one prediction each) for ``query``, in selection order.

    ``data`` holds ``image``, ``index``, ``path`` (the item id), ``round``, ``rank`` (1-based
    selection order) and ``score``; the prediction chooses the predicted class and carries the same
    score: the strategy's (lower is asked first) where it has one, else the model's confidence.
    The image is inlined as a ``data:`` URL (see :class:`LabelStudioOracle`), or, with
    ``image_url`` such as ``"s3://bucket/train/{path}"`` or ``"/data/local-files/?d=imagenet/{path}"``,
    a reference that a storage connected to the project resolves (``{path}``: the item id,
    ``{index}``: the index). Items without an image file get an empty ``image``.
    ``from_name``/``to_name``/``image_key``: the Choices tag, the Image tag and its ``$field``.

    Raises:
        ConfigurationError: an image file is missing or unreadable.
    """
    return _tasks(query, range(len(query)), image_url, from_name, to_name, image_key)


def labelstudio_task_row(task: dict[str, Any], from_name: Optional[str] = None) -> Optional[LabelRow]:
    """The answer of one task (a Label Studio task dict with ``annotations``), or ``None`` if it has none.

    The latest annotation that was not cancelled (skipped) counts; its chosen class comes from its
    ``choices`` result (of the Choices tag ``from_name``, where given). An annotation that chose no
    class, or several, gives a label that :func:`match_labels` refuses, naming the task.
    """
    annotations = _finished(task)
    if not annotations:
        return None
    data = task.get("data") or {}
    item = data.get("path", data.get("index", ""))
    return LabelRow(line=f"task {task.get('id')}", item=str(item), label=_chosen(max(annotations, key=_edited), from_name))


def labelstudio_export_rows(path: str | os.PathLike, round: Optional[int] = None) -> list[LabelRow]:
    """The answers in a Label Studio export (*Export* → *JSON*: a list of tasks with ``annotations``).

    One row per task with a finished annotation (see :func:`labelstudio_task_row`); tasks without
    one are left out, so :func:`match_labels` names their items as missing. With ``round``, tasks
    of other rounds (``data.round``) are left out too: an export holds the whole project.

    Raises:
        ConfigurationError: the file is not JSON, or not a list of Label Studio tasks.
    """
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigurationError(f"{path}: cannot read it as a Label Studio JSON export: {_one_line(err)}") from err
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise ConfigurationError(
            f"{path}: not a Label Studio JSON export (a list of tasks with 'data' and 'annotations'); "
            "export the project with the 'JSON' format, not JSON-MIN or CSV"
        )
    rows = []
    for task in tasks:
        if round is not None and str((task.get("data") or {}).get("round", round)) != str(round):
            continue
        row = labelstudio_task_row(task)
        if row is not None:
            rows.append(row)
    return rows


def _tasks(
    query: Query, positions: Iterable[int], image_url: Optional[str], from_name: str, to_name: str, image_key: str
) -> list[dict[str, Any]]:
    scores = (query.scores if query.scores is not None else query.confidence).tolist()
    model_version = f"{query.run or 'al_lightning'} round {query.round}"
    tasks = []
    for p in positions:
        index, item_id, score = int(query.indices[p]), query.item_ids[p], float(scores[p])
        if image_url is not None:
            image = image_reference(image_url, item_id, index)
        else:
            file = query.image_files[p] if p < len(query.image_files) else None
            image = _data_url(file, item_id) if file else ""
        predicted = int(query.predicted[p])
        choice = {"choices": [query.class_names[predicted]]}
        tasks.append({
            "data": {image_key: image, "index": index, "path": item_id, "round": query.round, "rank": p + 1, "score": score},
            # The item again, apart from the (maybe inlined) image: polls read only this.
            "meta": {"index": index, "path": item_id, "round": query.round},
            "predictions": [{
                "model_version": model_version,
                "score": score,
                "result": [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": choice}],
            }] if predicted >= 0 else [],  # -1: the image was skipped as unreadable, no guess
        })
    return tasks


def image_reference(template: str, item_id: str, index: int) -> str:
    """``template`` with ``{path}`` (the item id) and ``{index}`` filled in.

    In a web address (``http(s)://``, or a path on the server such as ``/data/local-files/?d=``)
    the item id is percent-encoded (``/`` kept), as a browser needs it; a storage URI
    (``s3://``, ``gs://``) keeps it as the object's key.
    """
    web = template.startswith(("http://", "https://", "/"))
    return template.format(path=quote(item_id) if web else item_id, index=index)


def _data_url(file: str, item_id: str) -> str:
    mime = mimetypes.guess_type(file)[0]
    try:
        if mime in _BROWSER_IMAGES:
            content = Path(file).read_bytes()
        else:
            from PIL import Image

            buffer = io.BytesIO()
            with Image.open(file) as image:
                image.save(buffer, format="PNG")
            content, mime = buffer.getvalue(), "image/png"
    except OSError as err:
        raise ConfigurationError(f"cannot read the image of '{item_id}' for Label Studio: {_one_line(err)}") from err
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def _finished(task: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]


def _skipped(task: dict[str, Any]) -> bool:
    return not _finished(task) and any(isinstance(a, dict) and a.get("was_cancelled") for a in task.get("annotations") or [])


def _one_line(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# The live oracle


@dataclass(frozen=True)
class _Project:
    id: int
    title: str
    from_name: str
    to_name: str
    image_key: str
    choices: tuple[str, ...]
    #: Annotations each task needs (the project's "annotations per task", its overlap).
    annotators: int


@dataclass(frozen=True)
class ItemAnswers:
    """One task of a round: its item and each annotator's answer (their latest finished annotation).

    ``label`` is decided by the agreement policy (see :func:`decide_label`); ``status`` is
    ``labeled``, ``waiting`` (fewer answers than the project asks for), ``skipped`` (no answer,
    only skips) or ``disagreement``.
    """

    task: int
    index: int
    path: str
    answers: tuple[tuple[str, str], ...]
    label: Optional[str]
    status: str

    @property
    def agreement(self) -> Optional[float]:
        """The share of the answers that agree with the most common one."""
        if not self.answers:
            return None
        return Counter(label for _, label in self.answers).most_common(1)[0][1] / len(self.answers)


#: ``agreement`` of the Label Studio oracle: how several annotators' answers make one label.
AGREEMENT_POLICIES = ("majority", "unanimous")
#: Columns of ``label_dir/answers/round_K.csv``: every task of the round and its annotators' answers.
ANSWER_COLUMNS = ("index", "path", "task", "status", "label", "agreement", "answers")


def decide_label(answers: Sequence[str], required: int, policy: str) -> tuple[Optional[str], str]:
    """(label, status) of one item from its annotators' answers.

    ``waiting`` until ``required`` annotators answered; then ``majority`` takes the answer of more
    than half of them and ``unanimous`` needs all to agree; otherwise (a tie, a split) it is a
    ``disagreement``, left pending for people to resolve, never settled by a guess.
    """
    if not answers or len(answers) < required:
        return None, "waiting"
    label, votes = Counter(answers).most_common(1)[0]
    agreed = votes == len(answers) if policy == "unanimous" else 2 * votes > len(answers)
    return (label, "labeled") if agreed else (None, "disagreement")


def answers_csv(items: Sequence[ItemAnswers]) -> str:
    """The rows of ``answers/round_K.csv``: per task its status, label, agreement and ``annotator:answer; ...``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ANSWER_COLUMNS)
    for item in sorted(items, key=lambda i: i.task):
        answers = "; ".join(f"{who}:{label}" for who, label in item.answers)
        agreement = "" if item.agreement is None else f"{item.agreement:.3g}"
        writer.writerow([item.index, item.path, item.task, item.status, item.label or "", agreement, answers])
    return buffer.getvalue()


@register_oracle("labelstudio")
class LabelStudioOracle(Oracle):
    """Annotators label each round's queries in a Label Studio project; the run waits for them.

    The project is named by id or by title (a number is an id). A title that does not exist yet is
    created at the first :meth:`request`, with an Image and a Choices tag (one choice per class);
    an existing project's config must have a Choices tag on an object tag that offers every class
    (its tag names are used as they are). :meth:`request` is idempotent: it imports only the
    queried indices that have no task of this round yet. :meth:`collect` reads only the tasks'
    ids, items (``meta``) and annotations, never their images, and returns ``None`` until the
    round is labeled.

    How images reach the annotators (``images``):

    - ``inline`` (default): each image file is inlined in its task as a ``data:image/...;base64,``
      URL. Nothing to set up on the server (HumanSignal/label-studio#6086), but each image is
      stored in the server's database at about 4/3 of its size: rounds of hundreds to a few
      thousand ordinary images.
    - ``local_files``: the images stay on disk; the oracle connects Label Studio's local-files
      storage for the pool's folder to the project (through the SDK) and each task references its
      file (``/data/local-files/?d=...``). The server must see the pool's folder at the same path,
      started with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
      ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` a folder above the pool; set that variable here too.
    - a template such as ``https://images.example.com/train/{path}`` (images a team already
      serves) or ``s3://bucket/train/{path}`` / ``gs://...`` (a cloud storage the team connected
      to the project, which presigns them); ``{path}`` is the item id, ``{index}`` the index.

    Before any task of a round is created, the first image's reference is fetched through the
    server (or from its web address): one that does not resolve stops the run with one line
    naming the image and the URL tried.

    Several annotators per image: the project's "annotations per task" (``annotators`` sets it),
    and ``agreement`` decides the label (:func:`decide_label`); each annotator's latest finished
    annotation is their answer. Every collect writes ``label_dir/answers/round_K.csv``: each
    task's answers, agreement and status, for audits. With ``min_answered`` < 1 the round goes on
    once that fraction of its items is labeled; the rest (unanswered or disputed) go back to the
    unlabeled pool.

    Args:
        url: the server's address, e.g. ``http://localhost:8080``.
        project: a project id, or a title (created if missing).
        api_key: an access token; default: the environment variable ``LABEL_STUDIO_API_KEY``.
        images: ``inline``, ``local_files``, or a reference template (see above).
        annotators: annotations each task needs; default: the project's own setting (1 for a new one).
        agreement: ``majority`` or ``unanimous``.
        min_answered: the fraction of a round that must be labeled before the run goes on, in (0, 1].
        label_dir: where the answers records go (the run's ``--al.label_dir``).
        timeout: seconds for each request to the server.

    Raises:
        ConfigurationError: the SDK is missing, the token is missing or refused, the server cannot
            be reached, an option is out of range; all as one line naming the URL or the option.
    """

    def __init__(
        self,
        url: str,
        project: str,
        api_key: Optional[str] = None,
        *,
        images: str = "inline",
        annotators: Optional[int] = None,
        agreement: Literal["majority", "unanimous"] = "majority",
        min_answered: float = 1.0,
        label_dir: Optional[str | os.PathLike] = None,
        timeout: float = 60.0,
    ) -> None:
        sdk = _sdk()
        api_key = api_key or os.environ.get(API_KEY_VARIABLE)
        if not api_key:
            raise ConfigurationError(
                f"the Label Studio oracle needs an API token: set the environment variable {API_KEY_VARIABLE} "
                f"to the access token from Account & Settings of {url}"
            )
        if images not in ("inline", "local_files") and "{path}" not in images and "{index}" not in images:
            raise ConfigurationError(
                f"--al.oracle_args.images='{images}' is not inline, local_files, or a template with {{path}} or {{index}} "
                "(e.g. https://images.example.com/train/{path} or s3://bucket/train/{path})"
            )
        if annotators is not None and annotators < 1:
            raise ConfigurationError(f"--al.oracle_args.annotators={annotators}: a task needs at least 1 annotator")
        if agreement not in AGREEMENT_POLICIES:
            raise ConfigurationError(f"--al.oracle_args.agreement='{agreement}' is not one of {', '.join(AGREEMENT_POLICIES)}")
        self.url, self.project, self.images = url.rstrip("/"), str(project).strip(), images
        self.annotators, self.agreement = annotators, agreement
        self.min_answered = check_min_answered(min_answered, "labelstudio")
        self.label_dir = Path(label_dir).expanduser().absolute() if label_dir is not None else None
        self._api_key = api_key
        self._project: Optional[_Project] = None
        self._progress: dict[int, list[ItemAnswers]] = {}
        with self._server_errors("connecting"):
            self._client = sdk.LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
            self._client.users.whoami()

    def request(self, query: Query) -> None:
        """Import a task per queried item into the project (creating it by title on first use); idempotent."""
        project = self._resolve(query.class_names, create=True)
        tasks = self._round_tasks(project, query.round)
        have = {_item(t)[0] for t in tasks}
        todo = [p for p, index in enumerate(query.indices.tolist()) if index not in have]
        template = self._image_template(project, query) if todo else None
        if template is not None:
            first = todo[0]
            self._check_resolves(project, image_reference(template, query.item_ids[first], int(query.indices[first])), query.item_ids[first])
        new = _tasks(query, todo, template, project.from_name, project.to_name, project.image_key)
        for chunk in _chunks(new, _IMPORT_CHUNK_BYTES):
            with self._server_errors(f"importing round {query.round}'s tasks into project {project.id}"):
                self._client.projects.import_tasks(id=project.id, request=chunk)
        self._progress.pop(query.round, None)  # the next collect or waiting message reads it afresh

    def collect(self, query: Query) -> Optional[Tensor]:
        """The labels of this round's items once enough are decided (all, or ``min_answered``), else ``None``.

        Items left undecided in a partial round get -1.

        Raises:
            LabelsError: an annotation chose an unknown class, a task is not one of the query's, or
                a queried item has no task (deleted): each named by its task.
        """
        project = self._resolve(query.class_names, create=False)
        items = self._answers(project, self._round_tasks(project, query.round))
        self._progress[query.round] = items
        if self.label_dir is not None:
            atomic_write_text(self.answers_file(query.round), answers_csv(items))
        decided = [LabelRow(f"task {i.task}", i.path, i.label) for i in items if i.label is not None]
        partial = self.min_answered < 1
        if len(decided) < (required_answers(len(query), self.min_answered) if partial else len(items)):
            return None
        return match_labels(
            query,
            decided,
            source=f"{self._where(project)}, round {query.round}",
            fix="fix the annotations in Label Studio and run the same command again",
            allow_missing=partial,
        )

    def answers_file(self, round: int) -> Path:
        """``label_dir/answers/round_K.csv``: the round's tasks with each annotator's answer."""
        if self.label_dir is None:
            raise ConfigurationError("the Label Studio oracle keeps answers records only with a label_dir (--al.label_dir)")
        return self.label_dir / "answers" / f"round_{round}.csv"

    def waiting_message(self, query: Query) -> str:
        """How far the round is: labeled tasks, disagreements (named), skips, and what the run waits for."""
        if query.round not in self._progress:
            project = self._resolve(query.class_names, create=False)
            self._progress[query.round] = self._answers(project, self._round_tasks(project, query.round))
        items = self._progress[query.round]
        where = self._where(self._project) if self._project else f"Label Studio project '{self.project}' at {self.url}"
        labeled = sum(i.status == "labeled" for i in items)
        message = f"round {query.round}: {labeled} of {len(items)} tasks labeled in {where}"
        if self._project is not None and self._project.annotators > 1:
            message += f" (each needs {self._project.annotators} annotators; agreement: {self.agreement})"
        disputed = [i for i in items if i.status == "disagreement"]
        if disputed:
            shown = ", ".join(f"task {i.task} ({' / '.join(label for _, label in i.answers)})" for i in disputed[:8])
            more = f" (+{len(disputed) - 8} more)" if len(disputed) > 8 else ""
            message += f"; {len(disputed)} disagree: {shown}{more}: add an answer or correct one there"
        skipped = sum(i.status == "skipped" for i in items)
        if skipped:
            message += f"; {skipped} skipped, which counts as not annotated: label them from the Data Manager"
        if self.min_answered < 1:
            message += (
                f"; the run goes on once {required_answers(len(query), self.min_answered)} are labeled "
                f"(--al.oracle_args.min_answered={self.min_answered:g}), the rest go back to the pool"
            )
        if self.label_dir is not None and items:
            message += f"; every answer is in {self.answers_file(query.round)}"
        return message + "; annotate there and run the same command again"

    # -- helpers ------------------------------------------------------------------------------

    def _where(self, project: _Project) -> str:
        return f"Label Studio project '{project.title}' (id {project.id}) at {self.url}"

    def _resolve(self, class_names: Sequence[str], create: bool) -> _Project:
        """The project, found by id or exact title; created (titles only) when ``create``."""
        if self._project is not None:
            if create:
                _check_classes(self._project, class_names, self._where(self._project))
            return self._project
        if self.project.isdigit():
            with self._server_errors(f"reading project {self.project}", missing=f"no project with id {self.project}"):
                found = self._client.projects.get(id=int(self.project))
        else:
            with self._server_errors(f"looking up project '{self.project}'"):
                titled = [p for p in self._client.projects.list(title=self.project) if p.title == self.project]
            if len(titled) > 1:
                ids = ", ".join(str(p.id) for p in titled)
                raise ConfigurationError(
                    f"{len(titled)} projects are titled '{self.project}' in Label Studio at {self.url} (ids {ids}): name one by its id"
                )
            if titled:
                with self._server_errors(f"reading project {titled[0].id}"):
                    found = self._client.projects.get(id=titled[0].id)
            elif create:
                with self._server_errors(f"creating project '{self.project}'"):
                    found = self._client.projects.create(
                        title=self.project,
                        label_config=labelstudio_label_config(class_names),
                        description="Queries of an al_lightning active learning run: one task per queried image; "
                        "data.rank is the selection order, the prediction is the model's guess, scored by the strategy.",
                    )
            else:
                raise ConfigurationError(
                    f"no project titled '{self.project}' in Label Studio at {self.url}: it holds this run's queries "
                    "(was it renamed or deleted?); name it by its id or its current title"
                )
        where = f"Label Studio project '{found.title}' (id {found.id}) at {self.url}"
        annotators = int(getattr(found, "maximum_annotations", None) or 1)
        if self.annotators is not None and self.annotators != annotators:
            # The overlap: every task goes to this many annotators (Settings → Quality in the UI).
            with self._server_errors(f"setting project {found.id}'s annotations per task"):
                self._client.projects.update(id=found.id, maximum_annotations=self.annotators, overlap_cohort_percentage=100)
            annotators = self.annotators
        self._project = _labeling(found.id, found.title, found.label_config or "", class_names, where, annotators)
        if create:
            _check_classes(self._project, class_names, self._where(self._project))
        return self._project

    def _round_tasks(self, project: _Project, round: int) -> list[dict[str, Any]]:
        """The project's tasks of ``round`` (``data.round``): ids, items and annotations, not their data.

        Tasks imported before ``meta`` held the item are read again with their data.
        """
        # The Data Manager's filter keeps other rounds' tasks on the server; `include` keeps the data there too.
        same_round = {"filter": "filter:tasks:data.round", "operator": "equal", "type": "Number", "value": round}
        query = json.dumps({"filters": {"conjunction": "and", "items": [same_round]}})

        def listed(include: str) -> list[dict[str, Any]]:
            with self._server_errors(f"reading round {round}'s tasks of project {project.id}"):
                pages = self._client.tasks.list(
                    project=project.id, query=query, page_size=_PAGE_SIZE, fields="all", include=include,
                    # Without it `include` cuts each annotation down to its id.
                    request_options={"additional_query_parameters": {"expand": "annotations"}},
                )  # fmt: skip
                return [_as_dict(t) for t in pages]

        tasks = listed("id,meta,annotations")
        if any("index" not in (t.get("meta") or {}) for t in tasks):
            tasks = [t for t in listed("id,data,annotations") if str((t.get("data") or {}).get("round")) == str(round)]
        return tasks

    def _answers(self, project: _Project, tasks: Sequence[dict[str, Any]]) -> list[ItemAnswers]:
        """Each task's annotators' answers and the label :func:`decide_label` makes of them."""
        items = []
        for task in tasks:
            answers = _annotator_answers(task, project.from_name)
            label, status = decide_label([label for _, label in answers], project.annotators, self.agreement)
            if status == "waiting" and not answers and _skipped(task):
                status = "skipped"
            index, path = _item(task)
            items.append(ItemAnswers(int(task["id"]), index, path, answers, label, status))
        return items

    def _image_template(self, project: _Project, query: Query) -> Optional[str]:
        """The reference template of this round's images (``None``: inline), connecting local-files storage if asked."""
        if self.images == "inline":
            return None
        if self.images != "local_files":
            return self.images
        root = _pool_root(query)
        document_root = os.environ.get(_DOCUMENT_ROOT)
        if not document_root:
            raise ConfigurationError(
                f"--al.oracle_args.images=local_files needs {_DOCUMENT_ROOT} set here as on the Label Studio server "
                f"at {self.url} (a folder above the pool's images, {root}), and the server started with "
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"
            )
        document_root_path = Path(document_root).expanduser().absolute()
        if not root.is_relative_to(document_root_path):
            raise ConfigurationError(
                f"the pool's images ({root}) are not under {_DOCUMENT_ROOT}={document_root_path}: Label Studio serves "
                "local files only from there; set it (here and on the server) to a folder above the pool"
            )
        with self._server_errors(f"reading project {project.id}'s local-files storages"):
            storages = list(self._client.import_storage.local.list(project=project.id))
        if storages and not any(root.is_relative_to(Path(s.path)) for s in storages if s.path):
            elsewhere = ", ".join(str(s.path) for s in storages)
            raise ConfigurationError(
                f"{self._where(project)} has local-files storage at {elsewhere}, not at the pool's images ({root}); "
                "connect one for the pool's folder in Settings → Cloud Storage, or use another project"
            )
        if not storages:
            with self._server_errors(f"connecting local-files storage {root} to project {project.id}"):
                self._client.import_storage.local.create(
                    project=project.id, path=str(root), use_blob_urls=True, title="al_lightning pool",
                    description="The pool's images, referenced by the tasks al_lightning imports (no sync needed).",
                )  # fmt: skip
        return f"/data/local-files/?d={quote(str(root.relative_to(document_root_path)))}/{{path}}"

    def _check_resolves(self, project: _Project, reference: str, item_id: str) -> None:
        """Fetch one image as the annotators' browsers will; a one-line error if it does not come back."""
        import httpx

        if reference.startswith("/"):  # served by Label Studio itself (local files)
            target, headers = f"{self.url}{reference}", self._auth()
        elif reference.startswith(("http://", "https://")):  # a team's own web server
            target, headers = reference, {}
        else:  # a storage URI, which the project's cloud storage resolves (presigns)
            encoded = base64.urlsafe_b64encode(reference.encode()).decode()
            target, headers = f"{self.url}/projects/{project.id}/resolve/?fileuri={encoded}", self._auth()
        try:
            with httpx.stream("GET", target, headers=headers, follow_redirects=True, timeout=30) as answer:
                status = answer.status_code
        except httpx.HTTPError as err:
            status = f"no answer ({type(err).__name__})"
        if status != 200:
            raise ConfigurationError(
                f"the image of '{item_id}' does not resolve: GET {target} gave HTTP {status}; {self._resolve_hint(reference)} "
                "(checked before creating any task)"
            )

    def _resolve_hint(self, reference: str) -> str:
        if reference.startswith("/data/local-files/"):
            return (
                f"start the server at {self.url} with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and the same "
                f"{_DOCUMENT_ROOT}, with the pool's folder at the same path"
            )
        if reference.startswith(("http://", "https://")):
            return "check --al.oracle_args.images: the template must give each image's address"
        return (
            "connect a cloud storage for that bucket to the project (Settings → Cloud Storage) and check "
            "--al.oracle_args.images"
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self._api_key}"}

    @contextmanager
    def _server_errors(self, doing: str, missing: Optional[str] = None) -> Iterator[None]:
        """Turn the SDK's transport and HTTP errors into one-line ConfigurationErrors naming the URL."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TransportError as err:
            raise ConfigurationError(
                f"cannot reach Label Studio at {self.url} ({doing}): {type(err).__name__}: {_one_line(err) or 'no answer'}"
            ) from None
        except ApiError as err:
            status, detail = err.status_code, _detail(err.body)
            if status in (401, 403):
                raise ConfigurationError(
                    f"Label Studio at {self.url} refused the API token in {API_KEY_VARIABLE} (HTTP {status}: "
                    f"{_one_line(detail, 120)}); set it to the access token from Account & Settings of that server"
                ) from None
            if status == 404 and missing:
                raise ConfigurationError(f"{missing} in Label Studio at {self.url}") from None
            if status is None or (status == 404 and doing == "connecting"):
                raise ConfigurationError(
                    f"{self.url} does not answer like a Label Studio server (HTTP {status or '?'} for its API); "
                    "give the address its web pages open at, e.g. http://localhost:8080"
                ) from None
            raise ConfigurationError(f"Label Studio at {self.url}: {doing} failed with HTTP {status}: {_one_line(detail)}") from None
        except (ValueError, KeyError) as err:  # an answer that is not Label Studio's JSON (another web server)
            if doing != "connecting" or isinstance(err, ConfigurationError):
                raise
            raise ConfigurationError(f"{self.url} does not answer like a Label Studio server: {_one_line(err, 160)}") from None


def _sdk() -> Any:
    try:
        import label_studio_sdk
    except ImportError as err:
        raise ConfigurationError(f"the Label Studio oracle needs Label Studio's SDK: {INSTALL_HINT}") from err
    return label_studio_sdk


def _detail(body: Any) -> str:
    """The reason in a Label Studio error answer: its validation errors, else its detail."""
    if not isinstance(body, dict):
        return _one_line(body or "no reason given")
    errors = body.get("validation_errors")
    if isinstance(errors, dict) and errors:
        return _one_line("; ".join(f"{field}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for field, v in errors.items()))
    return _one_line(body.get("detail", body))


def _as_dict(task: Any) -> dict[str, Any]:
    return task if isinstance(task, dict) else task.dict()


def _item(task: dict[str, Any]) -> tuple[int, str]:
    """(index, item id) of a task: from its ``meta``, or its ``data`` where it has no meta."""
    item = task.get("meta") or {}
    if "index" not in item:
        item = task.get("data") or {}
    return int(item.get("index", -1)), str(item.get("path", item.get("index", "")))


def _annotator_answers(task: dict[str, Any], from_name: str) -> tuple[tuple[str, str], ...]:
    """(annotator, chosen class) per annotator: their latest annotation that was not skipped."""
    latest: dict[str, dict[str, Any]] = {}
    for annotation in sorted(_finished(task), key=_edited):
        who = annotation.get("completed_by")
        who = who.get("id") if isinstance(who, dict) else who
        latest[str(who if who is not None else f"annotation {annotation.get('id')}")] = annotation
    return tuple((who, _chosen(annotation, from_name)) for who, annotation in latest.items())


def _edited(annotation: dict[str, Any]) -> tuple[str, int]:
    """Sort key of annotations by when they were last edited (the id breaks ties)."""
    return str(annotation.get("updated_at") or annotation.get("created_at") or ""), annotation.get("id") or 0


def _chosen(annotation: dict[str, Any], from_name: Optional[str]) -> str:
    """The class an annotation chose with the Choices tag ``from_name`` (any, where None); several
    are joined and none is :data:`NO_CHOICE`, both of which :func:`match_labels` refuses."""
    chosen = [
        str(choice)
        for result in annotation.get("result") or []
        if result.get("type") == "choices" and (from_name is None or result.get("from_name") == from_name)
        for choice in (result.get("value") or {}).get("choices") or []
    ]
    return ", ".join(chosen) or NO_CHOICE


def _pool_root(query: Query) -> Path:
    """The folder the query's item ids are relative to (its image files minus the ids)."""
    for file, item_id in zip(query.image_files, query.item_ids):
        if file and file.endswith(item_id):
            return Path(file[: len(file) - len(item_id)]).absolute()
    raise ConfigurationError(
        "--al.oracle_args.images=local_files references image files, but this pool's items have none "
        "(a features file or a built-in dataset); use an image_pool dataset, or images=inline"
    )


def _chunks(tasks: list[dict[str, Any]], limit: int) -> Iterator[list[dict[str, Any]]]:
    chunk, size = [], 0
    for task in tasks:
        n = len(json.dumps(task))
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(task)
        size += n
    if chunk:
        yield chunk


def _labeling(project_id: int, title: str, config: str, class_names: Sequence[str], where: str, annotators: int = 1) -> _Project:
    """Which Choices tag labels which object (and its ``$field``) in a project's labeling config.

    Of several Choices tags, the one that offers the most of the classes. A Choice's ``alias``,
    where set, is what annotations store.
    """
    try:
        root = ET.fromstring(config)
    except ET.ParseError as err:
        raise ConfigurationError(f"{where}: cannot read its labeling config: {_one_line(err)}") from None
    objects = {el.get("name"): el.get("value", "") for el in root.iter() if el.get("name") and el.get("value", "").startswith("$")}
    candidates = []
    for tag in root.iter("Choices"):
        to_name = (tag.get("toName") or "").split(",")[0].strip()
        if tag.get("name") and to_name in objects:
            choices = tuple(c.get("alias") or c.get("value") or "" for c in tag.iter("Choice"))
            candidates.append((sum(name in choices for name in class_names), tag.get("name"), to_name, choices))
    if not candidates:
        raise ConfigurationError(
            f"{where}: its labeling config has no Choices tag on an Image (or other $field) tag; "
            "use a project with an image classification config, or a new title to create one"
        )
    _, from_name, to_name, choices = max(candidates, key=lambda c: c[0])
    return _Project(project_id, title, from_name, to_name, objects[to_name][1:], choices, annotators)


def _check_classes(project: _Project, class_names: Sequence[str], where: str) -> None:
    missing = [name for name in class_names if name not in project.choices]
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise ConfigurationError(
            f"{where}: its Choices tag '{project.from_name}' has no choice for {len(missing)} of the {len(class_names)} "
            f"classes: {shown}; add them in Settings → Labeling Interface, or use another project"
        )
