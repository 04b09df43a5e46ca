"""Fixtures for the oracles: a real Label Studio server, and queries over tiny PNG files."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest
import torch
from PIL import Image

from al_lightning.oracles.base import Query

REPO = Path(__file__).resolve().parents[2]
#: Seconds for the server to answer /health: ~50-90 s on two busy cores (migrations, then Django).
STARTUP_TIMEOUT = float(os.environ.get("LABEL_STUDIO_STARTUP_TIMEOUT", 360))
#: The test server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: the folder pytest's tmp_path is under.
LOCAL_FILES_ROOT = tempfile.gettempdir()


def _server_executable() -> Optional[str]:
    """``LABEL_STUDIO_BIN``, else the repo's ``.labelstudio-venv``, else ``label-studio`` on PATH."""
    if os.environ.get("LABEL_STUDIO_BIN"):
        return os.environ["LABEL_STUDIO_BIN"]
    local = REPO / ".labelstudio-venv" / "bin" / "label-studio"
    return str(local) if local.exists() else shutil.which("label-studio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


class _Server:
    """A ``label-studio start`` launched in the background, with its data in a temporary folder."""

    def __init__(self, executable: str) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="labelstudio-"))
        self.log_path = self.data_dir / "server.log"
        self.url, self.token = f"http://127.0.0.1:{_free_port()}", secrets.token_hex(20)
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            # 1.23 accepts only personal access tokens (JWT) unless legacy tokens are on; --user-token is one.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",  # else it asks pypi.org at start
            "COLLECT_ANALYTICS": "false",
            # Local-files storage (images by reference) for anything under the temporary folder,
            # where the tests' images live.
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": LOCAL_FILES_ROOT,
        }
        command = [
            executable, "start", "--no-browser",
            "--internal-host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
            "--data-dir", str(self.data_dir),
            "--username", "annotator@example.com", "--password", secrets.token_hex(8),
            "--user-token", self.token, "--enable-legacy-api-token",
        ]  # fmt: skip
        self.started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_healthy(self) -> None:
        """Return once it answers /health; fail if it exits first or stays silent too long."""
        # The timeout runs from when a test first waits: the server may have started long before,
        # while other tests kept the cores busy.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(self.url):
            if self.process.poll() is not None:
                pytest.fail(f"Label Studio exited with {self.process.returncode} before it answered:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not answer {self.url}/health within {STARTUP_TIMEOUT:.0f} s:\n{_tail(self.log_path)}")
            time.sleep(1)
        print(f"Label Studio answered at {self.url} {time.monotonic() - self.started:.0f} s after it was started")

    def stop(self) -> None:
        # The process group: `label-studio start` may run the web server in a child.
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


#: The session's server, once started (at most one per session).
_server: Optional[_Server] = None


def _available_executable() -> Optional[str]:
    executable = _server_executable()
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
            _server = _Server(executable)


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
            f"no Label Studio server ({_server_executable() or 'label-studio'} not found): "
            "python3 -m venv .labelstudio-venv && .labelstudio-venv/bin/pip install label-studio, or set LABEL_STUDIO_BIN"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if _server is None:
        _server = _Server(executable)
    _server.wait_until_healthy()
    yield _server.url, _server.token


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
