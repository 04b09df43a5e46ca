"""Fixtures for the oracles: a real Label Studio server, and queries over tiny PNG files."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
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


@pytest.fixture(scope="session")
def labelstudio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A Label Studio server on a free local port with its data in a temporary folder: (url, token).

    Skipped where no server is installed, except under CI (env ``CI``), where that fails.
    """
    executable = _server_executable()
    if executable is None or not (os.path.exists(executable) or shutil.which(executable)):
        message = (
            f"no Label Studio server ({executable or 'label-studio'} not found): "
            "python3 -m venv .labelstudio-venv && .labelstudio-venv/bin/pip install label-studio, or set LABEL_STUDIO_BIN"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data_dir = tmp_path_factory.mktemp("labelstudio")
    log_path = data_dir / "server.log"
    url, token = f"http://127.0.0.1:{_free_port()}", secrets.token_hex(20)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        # 1.23 accepts only personal access tokens (JWT) unless legacy tokens are on; --user-token is one.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false",  # else it asks pypi.org at start
        "COLLECT_ANALYTICS": "false",
    }
    command = [
        executable, "start", "--no-browser",
        "--internal-host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
        "--data-dir", str(data_dir),
        "--username", "annotator@example.com", "--password", secrets.token_hex(8),
        "--user-token", token, "--enable-legacy-api-token",
    ]  # fmt: skip
    started = time.monotonic()
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not _healthy(url):
            if server.poll() is not None:
                pytest.fail(f"Label Studio exited with {server.returncode} before it answered:\n{_tail(log_path)}")
            if time.monotonic() - started > STARTUP_TIMEOUT:
                pytest.fail(f"Label Studio did not answer {url}/health within {STARTUP_TIMEOUT:.0f} s:\n{_tail(log_path)}")
            time.sleep(1)
        print(f"Label Studio answered at {url} after {time.monotonic() - started:.0f} s")
        yield url, token
    finally:
        # The process group: `label-studio start` may run the web server in a child.
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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
