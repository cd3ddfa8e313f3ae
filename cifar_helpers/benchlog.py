"""Read the committed benchmark logs in ``benchmarks/``, so notebooks print logged figures
instead of typing them.

A log is the output of ``tools/gpu_check.sh`` as printed: sections open with a line
``## N. title``, and each measurement ends with one JSON line. ``json_lines(path, "## 3.")``
returns the JSON objects of the section whose heading starts with ``## 3.``, in order.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import replace
from pathlib import Path

from .modern import PRESETS, Preset


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


def _preset_from_repr(text: str) -> Preset:
    """The :class:`~cifar_helpers.modern.Preset` printed as
    ``Preset(name='gpu94', widths=(64, 256, 256), ...)``."""
    call = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Preset"):
        raise ValueError(f"not a Preset: {text[:60]!r}")
    return Preset(**{k.arg: ast.literal_eval(k.value) for k in call.keywords})


def preset_name_of(preset: Preset) -> str | None:
    """The name of the preset in :data:`~cifar_helpers.modern.PRESETS` with ``preset``'s
    settings (its name and ``compile`` aside), or None."""
    same = lambda p: replace(p, name="", compile=False)
    return next((n for n, p in PRESETS.items() if same(p) == same(preset)), None)


def read_bench_logs(folder: str | Path) -> list[dict]:
    """One row per ``bench fast`` run in the logs ``folder/*.log`` (as in ``benchmarks/``):
    ``log``, ``machine`` (the GPU named in the log's first line), ``preset`` (a name from
    :data:`~cifar_helpers.modern.PRESETS` or None), ``widths``, ``epochs``, ``compile``,
    ``scored_on`` ("test" or "val"), ``seeds``, ``accuracy`` (mean), ``min_accuracy``,
    ``train_seconds`` (mean) and ``seed_seconds`` (each seed's)."""
    rows = []
    for path in sorted(Path(folder).glob("*.log")):
        lines = path.read_text(encoding="utf-8").splitlines()
        found = re.search(r"NVIDIA (\w+)", lines[0]) if lines else None
        machine = found.group(1) if found else None
        block = None
        for line in lines:
            if line.startswith("# bench fast:"):
                block = {"scored_on": "val" if "validation" in line else "test", "seconds": []}
            elif block is not None and line.startswith("# Preset("):
                block["preset"] = _preset_from_repr(line[2:])
            elif block is not None and line.startswith("seed "):
                block["seconds"].append(float(line.split("train")[1].split()[0]))
            elif block is not None and line.startswith("{") and "mean_train_seconds" in line:
                summary, p = json.loads(line), block["preset"]
                key = "test" if block["scored_on"] == "test" else "val"
                rows.append({"log": path.name, "machine": machine, "preset": preset_name_of(p),
                             "widths": p.widths, "epochs": p.epochs, "compile": p.compile,
                             "scored_on": block["scored_on"], "seeds": summary["seeds"],
                             "accuracy": summary[f"mean_{key}_accuracy"],
                             "min_accuracy": summary[f"min_{key}_accuracy"],
                             "train_seconds": summary["mean_train_seconds"],
                             "seed_seconds": block["seconds"]})
                block = None
    return rows
