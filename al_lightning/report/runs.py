"""Runs for a report: a run's records (``rounds.csv``, ``class_counts.csv``) and its saved ``config.yaml``.

A run is a ``trainer.log_dir`` holding ``rounds.csv`` (and ``class_counts.csv``) next to
LightningCLI's ``config.yaml`` (the files: :mod:`al_lightning.run_files`). Strategy and seed
come from that config, never from folder names. Comparing runs (groups, alignment,
intervals) is :mod:`al_lightning.report.groups`.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from al_lightning.run_files import CONFIG_YAML, ROUNDS_CSV, Run, read_class_counts, read_rounds

#: The per-round measures a report draws: ``rounds.csv`` column -> a label for tables and axes.
METRICS = {
    "test_acc_top1": "test top-1 accuracy",
    "test_acc_top5": "test top-5 accuracy",
    "imbalance_ratio": "imbalance ratio (most / least labeled class)",
    "class_entropy": "class-distribution entropy (nats)",
}


class ReportError(ValueError):
    """The report cannot be made; the message names the inputs and the fix."""


class ReportWarning(UserWarning):
    """Something was left out of the report (a run without records, a label count, a strategy)."""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)


def strategy_label(config: dict[str, Any]) -> str:
    """The strategy a run used: ``al.strategy`` (registry names lower-cased), with its ``al.strategy_args`` if any.

    ``partitioned_badge`` with ``{partitions: 5}`` is ``partitioned_badge(partitions=5)``, so
    runs of one strategy with different arguments are separate curves. A cold start and a
    handover are part of it: ``coreset → random → margin@400`` (``--al.cold_start=coreset``,
    ``--al.handover_to=margin --al.handover_at=400``); a cold start by the run's own strategy is
    no different from none (``random``, not ``random → random``).
    """
    name = _one_strategy(config, "al.strategy", "al.strategy_args") or "?"
    cold_start = _one_strategy(config, "al.cold_start", "al.cold_start_args")
    if cold_start and cold_start != name:
        name = f"{cold_start} → {name}"
    handover = _one_strategy(config, "al.handover_to", "al.handover_args")
    if handover:
        name = f"{name} → {handover}@{config.get('al.handover_at')}"
    return name


def _one_strategy(config: dict[str, Any], name_key: str, args_key: str) -> Optional[str]:
    name = config.get(name_key)
    if not name:
        return None
    name = str(name)
    if "." not in name:  # a registry name: case-insensitive; a class path keeps its case
        name = name.lower()
    args = {k[len(args_key) + 1:]: v for k, v in config.items() if k.startswith(f"{args_key}.")}
    if args:
        name += "(" + ", ".join(f"{k}={_show(v)}" for k, v in sorted(args.items())) + ")"
    return name


def run_seed(config: dict[str, Any]) -> Optional[int]:
    """``al.seed`` if set, else ``seed_everything`` (None when neither is an integer)."""
    for key in ("al.seed", "seed_everything"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def path_order(path: Path) -> list[Any]:
    """A sort key that puts ``version_10`` after ``version_2``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _looks_like_run(directory: Path) -> bool:
    return (directory / CONFIG_YAML).is_file() or bool(re.fullmatch(r"version_\d+", directory.name))


def find_run_dirs(path: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Run directories at or below ``path`` (those holding ``rounds.csv``), and run-like ones without records.

    A run-like directory is one with a ``config.yaml`` or named ``version_N``; the second list
    pairs each such directory without ``rounds.csv`` (or ``path`` itself, if nothing below it
    has records) with the reason.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        return [], [(path, "does not exist")]
    found = sorted({p.parent for p in path.rglob(ROUNDS_CSV)}, key=path_order)
    candidates = [path, *(p for p in path.rglob("*") if p.is_dir())]
    empty = [(d, f"no {ROUNDS_CSV}") for d in sorted(candidates, key=path_order) if _looks_like_run(d) and not (d / ROUNDS_CSV).exists()]
    if not found and not empty:
        empty = [(path, f"no {ROUNDS_CSV} in it or below it")]
    return found, empty


def _number(text: Optional[str]) -> float:
    if text is None or text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def load_run(directory: str | Path) -> Run:
    """Read one run directory; :class:`ReportError` if it has no records or no readable config."""
    directory = Path(directory)
    if not (directory / ROUNDS_CSV).is_file():
        raise ReportError(f"{directory}: no {ROUNDS_CSV}")
    table = read_rounds(directory)
    if not table:
        raise ReportError(f"{directory}: {ROUNDS_CSV} has no rows (the run finished no round)")
    if "num_labeled" not in table[0]:
        raise ReportError(f"{directory}: {ROUNDS_CSV} has no num_labeled column")
    config_path = directory / CONFIG_YAML
    if not config_path.is_file():
        raise ReportError(f"{directory}: no {CONFIG_YAML} beside {ROUNDS_CSV}, so strategy and seed are unknown")
    try:
        config = flatten(yaml.safe_load(config_path.read_text()) or {})
    except yaml.YAMLError as error:
        raise ReportError(f"{config_path}: not readable YAML ({error})") from None
    rows: dict[int, dict[str, float]] = {}
    for line in table:
        labels = int(_number(line["num_labeled"]))
        if labels in rows:
            warnings.warn(f"{directory}: two rounds with {labels} labels; the later one is used", ReportWarning, stacklevel=2)
        rows[labels] = {key: _number(value) for key, value in line.items() if key is not None}
    class_names, class_counts = read_class_counts(directory)
    return Run(directory, strategy_label(config), run_seed(config), config, rows, class_names, class_counts)


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run at or below ``paths``; directories without records are named in a :class:`ReportWarning` and skipped.

    Raises :class:`ReportError`, naming ``paths``, when no run is left.
    """
    runs: list[Run] = []
    seen: set[Path] = set()
    for path in paths:
        found, empty = find_run_dirs(path)
        for directory, reason in empty:
            warnings.warn(f"skipped {directory}: {reason}", ReportWarning, stacklevel=2)
        for directory in found:
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            try:
                runs.append(load_run(directory))
            except ReportError as error:
                warnings.warn(f"skipped {error}", ReportWarning, stacklevel=2)
    if not runs:
        given = ", ".join(str(p) for p in paths) or "(none)"
        raise ReportError(
            f"no run with records in {given}: expected {ROUNDS_CSV} and {CONFIG_YAML} in a run's log dir "
            "(lightning_logs/version_N/) at or below these paths"
        )
    return runs
