"""Uninterrupted runs that several tests compare with, each run once per test session.

A test that kills, resumes or hand-labels a run checks that it ends as the same command run
straight through with the simulated oracle. That reference does not depend on the test, so the
tests that need the same one share it: the first to ask runs it, in a folder of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_RUN, log_dirs, run_cli

#: The tiny digits run with margin queries: 20 labels, then two queries of 20 (rounds 0, 1, 2).
MARGIN_RUN = ["fit", *TINY_RUN, "--al.strategy=margin"]

_finished: dict[tuple[str, ...], Path] = {}


def finished_run(args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The log folder of ``python train.py *args``, run to its end (exit 0) in a fresh folder.

    Made on first use in a session and shared afterwards: read it, never write into it.
    """
    key = tuple(args)
    if key not in _finished:
        cwd = tmp_path_factory.mktemp("reference")
        result = run_cli(list(args), cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        (_finished[key],) = log_dirs(cwd)
    return _finished[key]
