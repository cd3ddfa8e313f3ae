"""Read a notebook's code cells by tag, so tests can run the lesson's code against its package twin."""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_path(stem: str) -> Path:
    """The English notebook of a lesson (``01_data`` -> ``01_data.en.ipynb``); the Chinese one has the same code."""
    return NOTEBOOKS / f"{stem}.en.ipynb"


def cell_source(stem: str, tag: str) -> str:
    """The source of the one code cell tagged ``tag`` in the notebook of ``stem`` (see ``notebook_path``)."""
    nb = nbformat.read(str(notebook_path(stem)), as_version=4)
    found = [c.source for c in nb.cells
             if c.cell_type == "code" and tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"{stem}: expected one code cell tagged {tag!r}, found {len(found)}"
    return found[0]


def run_cell(stem: str, tag: str, namespace: dict) -> dict:
    """Execute the cell tagged ``tag`` in ``namespace`` (updated in place and returned)."""
    exec(compile(cell_source(stem, tag), f"{stem}[{tag}]", "exec"), namespace)
    return namespace
