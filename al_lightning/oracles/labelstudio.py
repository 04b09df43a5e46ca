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
    labels = oracle.collect(query)    # None until every task of the round is annotated

The pure functions serve the file oracle too: :func:`labelstudio_tasks` builds the task file a user
imports by hand, :func:`labelstudio_export_rows` reads the JSON export they download back.

Talks to the server only through Label Studio's SDK (``label-studio-sdk``, imported when first
needed: ``pip install 'al_lightning[labelstudio]'``).
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence
from xml.sax.saxutils import quoteattr

from torch import Tensor

from al_lightning.errors import ConfigurationError
from al_lightning.oracles.base import LabelRow, Oracle, Query, match_labels, register_oracle

API_KEY_VARIABLE = "LABEL_STUDIO_API_KEY"
INSTALL_HINT = "pip install 'al_lightning[labelstudio]'"
#: The label of an annotation that chose nothing (``match_labels`` then names its task).
NO_CHOICE = "(no choice)"
#: Tag names of the labeling config this module creates.
IMAGE_TAG, CHOICES_TAG, IMAGE_KEY = "image", "label", "image"

# Formats every browser shows in an <img>; others are re-encoded to PNG before they are inlined.
_BROWSER_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
# One import request stays well under Label Studio's DATA_UPLOAD_MAX_MEMORY_SIZE (250 MB by default).
_IMPORT_CHUNK_BYTES = 32 * 2**20
_PAGE_SIZE = 100


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
    latest = max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    chosen = [
        str(choice)
        for result in latest.get("result") or []
        if result.get("type") == "choices" and (from_name is None or result.get("from_name") == from_name)
        for choice in (result.get("value") or {}).get("choices") or []
    ]
    data = task.get("data") or {}
    item = data.get("path", data.get("index", ""))
    return LabelRow(line=f"task {task.get('id')}", item=str(item), label=", ".join(chosen) or NO_CHOICE)


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
    tasks = []
    for p in positions:
        index, item_id, score = int(query.indices[p]), query.item_ids[p], float(scores[p])
        if image_url is not None:
            image = image_url.format(path=item_id, index=index)
        else:
            file = query.image_files[p] if p < len(query.image_files) else None
            image = _data_url(file, item_id) if file else ""
        choice = {"choices": [query.class_names[int(query.predicted[p])]]}
        tasks.append({
            "data": {image_key: image, "index": index, "path": item_id, "round": query.round, "rank": p + 1, "score": score},
            "predictions": [{
                "model_version": f"al_lightning round {query.round}",
                "score": score,
                "result": [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": choice}],
            }],
        })
    return tasks


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


@register_oracle("labelstudio")
class LabelStudioOracle(Oracle):
    """Annotators label each round's queries in a Label Studio project; the run waits for them.

    The project is named by id or by title (a number is an id). A title that does not exist yet is
    created at the first :meth:`request`, with an Image and a Choices tag (one choice per class);
    an existing project's config must have a Choices tag on an object tag that offers every class
    (its tag names are used as they are). :meth:`request` is idempotent: it imports only the
    queried indices that have no task of this round yet. :meth:`collect` returns ``None`` until
    every task of the round has an annotation that was not skipped; the latest one counts.

    How images reach the annotators: each image file is inlined in its task as a
    ``data:image/...;base64,`` URL. It works with a stock server wherever it runs (the images
    travel with the import through the SDK; nothing to mount, no ``LABEL_STUDIO_LOCAL_FILES_*``
    settings, no storage to connect), and the browser shows it like any URL
    (HumanSignal/label-studio#6086). The SDK has no call to upload media files, and local-files
    serving needs the server's environment set and the images on its disk. The cost: each image
    is stored in the server's database, about 4/3 of its file size, so it suits rounds of
    thousands of ordinary images, not of large ones; for those, connect a storage (S3, GCS,
    local files) to the project and pass ``image_url`` (see :func:`labelstudio_tasks`).

    Args:
        url: the server's address, e.g. ``http://localhost:8080``.
        project: a project id, or a title (created if missing).
        api_key: an access token; default: the environment variable ``LABEL_STUDIO_API_KEY``.
        image_url: a template for the image reference instead of inlining the file.
        timeout: seconds for each request to the server.

    Raises:
        ConfigurationError: the SDK is missing, the token is missing or refused, the server cannot
            be reached; all as one line naming the URL.
    """

    def __init__(
        self,
        url: str,
        project: str,
        api_key: Optional[str] = None,
        *,
        image_url: Optional[str] = None,
        timeout: float = 60.0,
    ) -> None:
        sdk = _sdk()
        api_key = api_key or os.environ.get(API_KEY_VARIABLE)
        if not api_key:
            raise ConfigurationError(
                f"the Label Studio oracle needs an API token: set the environment variable {API_KEY_VARIABLE} "
                f"to the access token from Account & Settings of {url}"
            )
        self.url, self.project, self.image_url = url.rstrip("/"), str(project).strip(), image_url
        self._project: Optional[_Project] = None
        self._counts: dict[int, tuple[int, int, int]] = {}
        with self._server_errors("connecting"):
            self._client = sdk.LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
            self._client.users.whoami()

    def request(self, query: Query) -> None:
        """Import a task per queried item into the project (creating it by title on first use); idempotent."""
        project = self._resolve(query.class_names, create=True)
        tasks = self._round_tasks(project, query.round)
        have = {str((t.get("data") or {}).get("index")) for t in tasks}
        todo = [p for p, index in enumerate(query.indices.tolist()) if str(index) not in have]
        new = _tasks(query, todo, self.image_url, project.from_name, project.to_name, project.image_key)
        for chunk in _chunks(new, _IMPORT_CHUNK_BYTES):
            with self._server_errors(f"importing round {query.round}'s tasks into project {project.id}"):
                self._client.projects.import_tasks(id=project.id, request=chunk)
        done, _, skipped = _count(tasks)
        self._counts[query.round] = (done, len(tasks) + len(new), skipped)

    def collect(self, query: Query) -> Optional[Tensor]:
        """The labels of this round's tasks once each has a finished annotation, else ``None``.

        Raises:
            LabelsError: an annotation chose an unknown class, a task is not one of the query's, or
                a queried item has no task (deleted): each named by its task.
        """
        project = self._resolve(query.class_names, create=False)
        tasks = self._round_tasks(project, query.round)
        self._counts[query.round] = _count(tasks)
        if any(not _finished(t) for t in tasks):
            return None
        rows = [labelstudio_task_row(t, project.from_name) for t in tasks]
        return match_labels(
            query,
            [row for row in rows if row is not None],
            source=f"{self._where(project)}, round {query.round}",
            fix="fix the annotations in Label Studio and run the same command again",
        )

    def waiting_message(self, query: Query) -> str:
        """``k of b tasks annotated in Label Studio project P at URL``, from the last look at the round."""
        if query.round not in self._counts:
            project = self._resolve(query.class_names, create=False)
            self._counts[query.round] = _count(self._round_tasks(project, query.round))
        done, total, skipped = self._counts[query.round]
        where = self._where(self._project) if self._project else f"Label Studio project '{self.project}' at {self.url}"
        message = f"round {query.round}: {done} of {total} tasks annotated in {where}"
        if skipped:
            message += f" ({skipped} skipped, which counts as not annotated: label them from the Data Manager)"
        return message + "; annotate the rest there and run the same command again"

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
        self._project = _labeling(found.id, found.title, found.label_config or "", class_names, where)
        if create:
            _check_classes(self._project, class_names, self._where(self._project))
        return self._project

    def _round_tasks(self, project: _Project, round: int) -> list[dict[str, Any]]:
        """The project's tasks of ``round`` (``data.round``), with their annotations."""
        # The Data Manager's filter keeps other rounds' tasks (and their inlined images) on the server.
        same_round = {"filter": "filter:tasks:data.round", "operator": "equal", "type": "Number", "value": round}
        query = json.dumps({"filters": {"conjunction": "and", "items": [same_round]}})
        with self._server_errors(f"reading round {round}'s tasks of project {project.id}"):
            pages = self._client.tasks.list(project=project.id, query=query, page_size=_PAGE_SIZE)
            tasks = [_as_dict(t) for t in pages]
        return [t for t in tasks if str((t.get("data") or {}).get("round")) == str(round)]

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


def _count(tasks: Sequence[dict[str, Any]]) -> tuple[int, int, int]:
    """(annotated, all, skipped) tasks."""
    return sum(1 for t in tasks if _finished(t)), len(tasks), sum(1 for t in tasks if _skipped(t))


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


def _labeling(project_id: int, title: str, config: str, class_names: Sequence[str], where: str) -> _Project:
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
    return _Project(project_id, title, from_name, to_name, objects[to_name][1:], choices)


def _check_classes(project: _Project, class_names: Sequence[str], where: str) -> None:
    missing = [name for name in class_names if name not in project.choices]
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise ConfigurationError(
            f"{where}: its Choices tag '{project.from_name}' has no choice for {len(missing)} of the {len(class_names)} "
            f"classes: {shown}; add them in Settings → Labeling Interface, or use another project"
        )
