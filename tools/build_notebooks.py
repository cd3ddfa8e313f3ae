"""Build ``notebooks/NN_name.ipynb`` from ``notebooks/src/NN_name.md`` (no outputs).

Source format: Markdown; each ```` ```python [tag ...] ```` fence is one code cell with those
tags; a line ``+++`` splits Markdown into cells. A navigation line is added at the top and
bottom of every notebook; cell ids follow the cells' positions, so a rebuild keeps them.
Outputs come from ``python -m cifar_helpers.run_all --inplace``.

    python tools/build_notebooks.py            # rebuild the notebooks whose source changed
                                               # (text-only changes keep the stored outputs)
    python tools/build_notebooks.py --check    # exit 1 if a notebook's cells differ from its source
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "src", ROOT / "notebooks"
FENCE = re.compile(r"^```python(?P<tags>(\s+[\w-]+)*)\s*$")


def title_of(md: str) -> str:
    m = re.search(r"^# (.+)$", md, re.M)
    return m.group(1).strip() if m else ""


def nav_line(names: list[str], i: int, titles: dict[str, str]) -> str:
    prev = f"[← {names[i - 1][:2]} {titles[names[i - 1]]}]({names[i - 1]}.ipynb)" if i else "←"
    nxt = (f"[{names[i + 1][:2]} {titles[names[i + 1]]} →]({names[i + 1]}.ipynb)"
           if i + 1 < len(names) else "→")
    return f"{prev} · [目录 / Contents](../README.md#notebooks) · {nxt}"


def parse(text: str) -> list[nbformat.NotebookNode]:
    """Cells of one source file."""
    cells, md, code, tags = [], [], None, []

    def flush_md():
        body = "\n".join(md).strip("\n")
        if body.strip():
            cells.append(nbformat.v4.new_markdown_cell(body))
        md.clear()

    for line in text.splitlines():
        if code is None:
            m = FENCE.match(line)
            if m:
                flush_md()
                code, tags = [], m.group("tags").split()
            elif line.strip() == "+++":
                flush_md()
            else:
                md.append(line)
        elif line.strip() == "```":
            cell = nbformat.v4.new_code_cell("\n".join(code).strip("\n"))
            if tags:
                cell.metadata["tags"] = tags
            cells.append(cell)
            code = None
        else:
            code.append(line)
    if code is not None:
        raise ValueError("unclosed ```python fence")
    flush_md()
    return cells


def build(name: str, names: list[str], titles: dict[str, str]) -> nbformat.NotebookNode:
    i = names.index(name)
    nav = nav_line(names, i, titles)
    cells = parse((SRC / f"{name}.md").read_text(encoding="utf-8"))
    cells.insert(0, nbformat.v4.new_markdown_cell(nav))
    cells.append(nbformat.v4.new_markdown_cell(nav))
    for j, cell in enumerate(cells):   # by position, not random: a rebuild leaves ids alone
        cell.id = f"nb{name[:2]}-{j:03d}"
        cell.metadata.setdefault("tags", [])   # as papermill writes them: no churn between the two
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    return nb


def signature(nb: nbformat.NotebookNode) -> list[tuple[str, str, str, tuple[str, ...] | None]]:
    """Per cell: id, type, source and tags (None where the cell has no tags list at all)."""
    sigs = []
    for c in nb.cells:
        tags = c.get("metadata", {}).get("tags")
        sigs.append((c.get("id", ""), c.cell_type, c.source, None if tags is None else tuple(tags)))
    return sigs


def code_cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...] | None]]:
    return [sig[1:] for sig in signature(nb) if sig[1] == "code"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    names = sorted(p.stem for p in SRC.glob("[0-9][0-9]_*.md"))
    titles = {n: title_of((SRC / f"{n}.md").read_text(encoding="utf-8")).split("·")[0].strip()
              for n in names}
    stale = []
    for name in names:
        nb = build(name, names, titles)
        target = OUT / f"{name}.ipynb"
        current = nbformat.read(str(target), as_version=4) if target.exists() else None
        if args.check:
            if current is None or signature(current) != signature(nb):
                stale.append(target.name)
        elif current is not None and signature(current) == signature(nb):
            continue                  # unchanged: keep its stored outputs
        else:
            note = "no outputs: regenerate with run_all --inplace"
            if current is not None and code_cells(current) == code_cells(nb):
                executed = iter(c for c in current.cells if c.cell_type == "code")
                for cell in nb.cells:     # only the text changed: keep the stored outputs
                    if cell.cell_type == "code":
                        old = next(executed)
                        cell.outputs, cell.execution_count = old.outputs, old.execution_count
                        cell.metadata = {**old.metadata, "tags": cell.metadata["tags"]}
                nb.metadata, note = current.metadata, "text only; code unchanged, stored outputs kept"
            nbformat.validate(nb)
            nbformat.write(nb, str(target))
            print(f"wrote {target.relative_to(ROOT)} ({note})")
    if stale:
        print("out of date with notebooks/src (run python tools/build_notebooks.py): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
