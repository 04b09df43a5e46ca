"""Fixtures for the oracles: a real Label Studio server, and queries over tiny PNG files."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest
import torch
from PIL import Image

from al_lightning.oracles.base import Query
from tests.labelstudio_server import LabelStudioServer, server_executable

#: Seconds for the server to answer /health: ~50-90 s on two busy cores (migrations, then Django).
STARTUP_TIMEOUT = float(os.environ.get("LABEL_STUDIO_STARTUP_TIMEOUT", 360))
#: The test server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: the folder pytest's tmp_path is under.
LOCAL_FILES_ROOT = tempfile.gettempdir()


#: The session's server, once started (at most one per session).
_server: Optional[LabelStudioServer] = None


def _available_executable() -> Optional[str]:
    executable = server_executable()
    if executable is None or not (os.path.exists(executable) or shutil.which(executable)):
        return None
    return executable


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the server as soon as the tests are known, if any of them needs it: its ~1-1.5 min
    start-up (migrations, then Django) overlaps the tests that run before the first of them."""
    global _server
    if session.config.option.collectonly or _server is not None:
        return
    if any("labelstudio_server" in getattr(item, "fixturenames", ()) for item in session.items):
        executable = _available_executable()
        if executable is not None:
            _server = LabelStudioServer(executable, LOCAL_FILES_ROOT)


def pytest_sessionfinish(session: pytest.Session) -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


@pytest.fixture(scope="session")
def labelstudio_server() -> Iterator[tuple[str, str]]:
    """A Label Studio server on a free local port with its data in a temporary folder: (url, token).

    Started once per session, in the background as soon as collection ends (see
    :func:`pytest_collection_finish`), else by the first test that asks; stopped when the
    session ends. Skipped where no server is installed, except under CI (env ``CI``), where
    that fails.
    """
    global _server
    executable = _available_executable()
    if executable is None:
        message = (
            f"no Label Studio server ({server_executable() or 'label-studio'} not found): "
            "python3 -m venv .labelstudio-venv && .labelstudio-venv/bin/pip install label-studio, or set LABEL_STUDIO_BIN"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if _server is None:
        _server = LabelStudioServer(executable, LOCAL_FILES_ROOT)
    # The timeout runs from when a test first waits: the server may have started long before,
    # while other tests kept the cores busy.
    try:
        _server.wait_until_healthy(STARTUP_TIMEOUT)
    except RuntimeError as err:
        pytest.fail(str(err))
    print(f"Label Studio answered at {_server.url} {time.monotonic() - _server.started:.0f} s after it was started")
    yield _server.url, _server.token


@pytest.fixture
def client(labelstudio_server):
    """Label Studio's SDK on the test server, as an annotator's script would use it."""
    label_studio_sdk = pytest.importorskip("label_studio_sdk")
    url, token = labelstudio_server
    return label_studio_sdk.LabelStudio(base_url=url, api_key=token)


QueryMaker = Callable[..., Query]


@pytest.fixture
def labeled_image_query(tmp_path: Path) -> QueryMaker:
    """``make(round=1, items=("a.png", ...), predicted=..., scores=...)``: a Query over tiny real PNGs.

    Each item is an 8x8 PNG under ``tmp_path/images``, with index ``10 * round + position``; the
    classes are ``cat``, ``dog``, ``bird``.
    """
    root = tmp_path / "images"

    def make(
        round: int = 1,
        items: Sequence[str] = ("a.png", "b.png", "c.png"),
        predicted: Optional[Sequence[int]] = None,
        scores: Optional[Sequence[float]] = None,
        class_names: Sequence[str] = ("cat", "dog", "bird"),
    ) -> Query:
        files = []
        for i, item in enumerate(items):
            file = root / item
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * i % 256, 90, 200)).save(file)
            files.append(str(file))
        n = len(items)
        return Query(
            round=round,
            indices=torch.arange(n) + 10 * round,
            item_ids=list(items),
            predicted=torch.tensor(predicted if predicted is not None else [i % len(class_names) for i in range(n)]),
            confidence=torch.linspace(0.9, 0.5, n),
            scores=torch.tensor(scores, dtype=torch.float) if scores is not None else None,
            class_names=list(class_names),
            strategy="entropy",
            image_files=files,
        )

    return make
