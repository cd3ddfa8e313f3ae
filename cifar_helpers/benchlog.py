"""Read the committed benchmark logs in ``benchmarks/``, so notebooks print logged figures
instead of typing them.

A log is the output of ``tools/gpu_check.sh`` as printed: sections open with a line
``## N. title``, and each measurement ends with one JSON line. ``json_lines(path, "## 3.")``
returns the JSON objects of the section whose heading starts with ``## 3.``, in order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def logs_dir() -> Path:
    """The committed logs as shipped inside the package (``tools/build_notebooks.py`` copies
    ``benchmarks/*.log`` there), so a notebook opened alone finds them too."""
    return Path(__file__).resolve().parent / "benchmarks"


def log_path(name: str) -> Path:
    """The shipped copy of the committed log ``benchmarks/<name>``."""
    return logs_dir() / name


class LogError(ValueError):
    """The log or the asked-for section is missing; the message names what exists."""


def sections(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Every section's heading (the ``## ...`` line, stripped) and its JSON objects, in order."""
    path = Path(path)
    if not path.is_file():
        raise LogError(f"benchmark log {path.name} not found (looked in {path.parent})")
    found: dict[str, list[dict]] = {}
    heading = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line.strip()
            found.setdefault(heading, [])
        elif heading is not None and line.startswith("{"):
            found[heading].append(json.loads(line))
    return found


def json_lines(path: str | os.PathLike, heading: str) -> list[dict]:
    """The JSON objects of the one section whose heading starts with ``heading``."""
    matches = [k for k in sections(path) if k.startswith(heading)]
    if len(matches) != 1:
        raise LogError(f"{Path(path).name}: {len(matches)} sections start with {heading!r}; "
                       f"sections: {list(sections(path))}")
    rows = sections(path)[matches[0]]
    if not rows:
        raise LogError(f"{Path(path).name}: section {matches[0]!r} has no JSON line")
    return rows


def epoch_table(row: dict, names: dict[str, str] | None = None) -> dict[tuple[str, int, str], float]:
    """A ``bench epochs`` JSON line as :func:`cifar_helpers.speed.epoch_seconds`' table:
    ``{(net, batch size, device): seconds per epoch}``; ``names`` renames devices."""
    names = names or {}
    return {(r["net"], r["batch_size"], names.get(r["device"], r["device"])): r["seconds_per_epoch"]
            for r in row["rows"]}
