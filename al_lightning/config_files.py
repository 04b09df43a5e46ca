"""Command lines before the parser: ``--config NAME.yaml`` found in the project's configs, moved options refused, ``--print_config``'s flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from al_lightning.errors import ConfigurationError

#: The project's configs: the ``configs/`` folder beside the ``al_lightning`` package.
PROJECT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

_FLAGS = ("--config", "-c")


def resolve_config_args(args: list[str], folder: Path = PROJECT_CONFIGS) -> list[str]:
    """``args`` with every ``--config NAME`` (or ``--config=NAME``, ``-c NAME``) made a real file.

    A value that exists relative to the working directory (or as an absolute path) is kept as
    is, and so is inline YAML. Otherwise ``NAME`` (and ``NAME.yaml`` when it has no suffix) is
    looked up in ``folder`` (the entry point's configs, e.g. ``configs/ssl``) and in
    :data:`PROJECT_CONFIGS` (so ``ssl/x.yaml`` works too), accepting only files inside
    ``folder``; the file used is named on stderr. A name found nowhere raises
    :class:`ConfigurationError` listing the configs in ``folder``.
    """
    out = list(args)
    for i, arg in enumerate(out):
        if arg in _FLAGS and i + 1 < len(out):
            out[i + 1] = _resolve(out[i + 1], folder)
        elif arg.startswith("--config="):
            out[i] = "--config=" + _resolve(arg.removeprefix("--config="), folder)
    return out


def _resolve(value: str, folder: Path) -> str:
    if Path(value).expanduser().exists() or "\n" in value or value.lstrip().startswith(("{", "[")) or ": " in value:
        return value  # a real path, or YAML given inline: jsonargparse reads it as is
    folder = folder.resolve()
    names = [value] if Path(value).suffix else [value, value + ".yaml"]
    for base in dict.fromkeys([folder, PROJECT_CONFIGS]):
        for name in names:
            candidate = (base / name).resolve()
            if candidate.is_file() and candidate.is_relative_to(folder):
                if os.environ.get("LOCAL_RANK", "0") == "0":  # DDP workers rerun the command: say it once
                    print(f"using config {candidate}", file=sys.stderr)
                return str(candidate)
    existing = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    raise ConfigurationError(
        f"config file '{value}' not found in {Path.cwd()} nor in {folder}; "
        f"give a path or one of: {', '.join(existing) or '(no configs there)'}"
    )


def print_config_flags(args: list[str]) -> Optional[set[str]]:
    """The flags of ``--print_config[=flags]`` in ``args`` (an empty set for the bare option), or None without it."""
    for arg in args:
        name, _, value = arg.partition("=")
        if name == "--print_config":
            return {flag.strip() for flag in value.split(",") if flag.strip()}
    return None


def check_moved_options(args: list[str], moved: dict[str, str]) -> None:
    """Refuse an option that moved (``moved``: old dotted key → new), on the command line or in a config file.

    One line names the new spelling, instead of jsonargparse's list of every valid option.
    """
    given = [arg.split("=", 1)[0].removeprefix("--") for arg in args if arg.startswith("--")]
    for i, arg in enumerate(args):
        value = args[i + 1] if arg in _FLAGS and i + 1 < len(args) else arg.removeprefix("--config=") if arg.startswith("--config=") else None
        if value is not None and Path(value).expanduser().is_file():
            try:
                content = yaml.safe_load(Path(value).expanduser().read_text())
            except yaml.YAMLError:
                continue  # jsonargparse says what is wrong with it
            given += [key for key in _dotted_keys(content)]
    for key in given:
        for old, new in moved.items():
            if key == old or key.endswith("." + old):
                raise ConfigurationError(f"{old} has moved: it is now {new} (--{new}=... on the command line)")


def _dotted_keys(content: Any, prefix: str = "") -> list[str]:
    if not isinstance(content, dict):
        return []
    keys = []
    for key, value in content.items():
        name = f"{prefix}{key}"
        keys.append(name)
        keys += _dotted_keys(value, f"{name}.")
    return keys
