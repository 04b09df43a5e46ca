"""A real Label Studio server for tests and benchmarks: ``label-studio start`` with its data in a temporary folder.

It serves local files (images by reference) from ``document_root``, takes a legacy API token
chosen here (``--user-token``), and never asks the internet (no version check, no analytics).
The tests' fixture (``tests/oracles/conftest.py``) and ``benchmarks/labelstudio_scale.py`` start it.
"""

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
from typing import Optional

REPO = Path(__file__).resolve().parents[1]


def server_executable() -> Optional[str]:
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


class LabelStudioServer:
    """A ``label-studio start`` launched in the background; :meth:`wait_until_healthy`, then ``url`` and ``token``."""

    def __init__(self, executable: str, document_root: str | Path) -> None:
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
            # Local-files storage (images by reference) for anything under document_root.
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
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

    def database(self) -> Path:
        """Its SQLite database file."""
        return self.data_dir / "label_studio.sqlite3"

    def wait_until_healthy(self, timeout: float) -> None:
        """Return once it answers /health; RuntimeError (with the log's tail) if it exits first or stays silent ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not _healthy(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process.returncode} before it answered:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Label Studio did not answer {self.url}/health within {timeout:.0f} s:\n{_tail(self.log_path)}")
            time.sleep(1)

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
