"""Build the English and the Chinese notebook of every lesson from its one source.

``notebooks/src/NN_name.md`` -> ``notebooks/NN_name.en.ipynb`` and ``notebooks/NN_name.zh.ipynb``.

Source format: Markdown. Each ```` ```python [tag ...] ```` fence at the start of a line is one
code cell with those tags, shared by both languages; a line ``+++`` splits Markdown into cells.
Every Markdown cell holds both languages, each after its own marker line, ``<!-- en -->`` and
``<!-- zh -->``. A navigation line is added at the top and bottom; cell ids follow positions.

Outputs are executed once, in English (``python -m cifar_helpers.run_all --inplace``), and the
Chinese notebook carries the same outputs: the build copies them.

    python tools/build_notebooks.py            # rebuild what changed (text-only changes keep outputs)
    python tools/build_notebooks.py --check    # exit 1 if a notebook differs from its source
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "src", ROOT / "notebooks"
LANGS = ("en", "zh")
EXECUTED = "en"          # the language whose run produces the outputs of both
FENCE = re.compile(r"^```python(?P<tags>(\s+[\w-]+)*)\s*$")
MARKER = re.compile(r"^<!-- (en|zh) -->\s*$")
CONTENTS = {"en": "[Contents](../README.md#notebooks)",
            "zh": "[目录](../README.md#中文说明)",
            "mono": "[目录 / Contents](../README.md#notebooks)"}


def file_name(name: str, lang: str) -> str:
    """``NN_name.en.ipynb``; ``NN_name.ipynb`` for a one-language source (lang "mono")."""
    return f"{name}.ipynb" if lang == "mono" else f"{name}.{lang}.ipynb"


def target(name: str, lang: str) -> Path:
    return OUT / file_name(name, lang)


def title_of(md: str) -> str:
    m = re.search(r"^# (.+)$", md, re.M)
    return m.group(1).strip() if m else ""


def nav_line(names: list[str], i: int, titles: dict[str, str], lang: str,
             langs_of: dict[str, tuple[str, ...]]) -> str:
    def link(j: int, text: str) -> str:
        other = lang if lang in langs_of[names[j]] else langs_of[names[j]][0]
        return f"[{text}]({file_name(names[j], other)})"
    prev = link(i - 1, f"← {names[i - 1][:2]} {titles[names[i - 1]]}") if i else "←"
    nxt = link(i + 1, f"{names[i + 1][:2]} {titles[names[i + 1]]} →") if i + 1 < len(names) else "→"
    return f"{prev} · {CONTENTS[lang]} · {nxt}"


def split_languages(body: str, where: str) -> dict[str, str]:
    """One Markdown cell's text per language."""
    parts: dict[str, list[str]] = {}
    current = None
    for line in body.splitlines():
        m = MARKER.match(line)
        if m:
            current = m.group(1)
            if current in parts:
                raise ValueError(f"{where}: <!-- {current} --> twice in one Markdown cell")
            parts[current] = []
        elif current is None:
            if line.strip():
                raise ValueError(f"{where}: text before the first <!-- en --> / <!-- zh --> marker: "
                                 f"{line.strip()[:60]!r}")
        else:
            parts[current].append(line)
    missing = [lang for lang in LANGS if lang not in parts or not "".join(parts[lang]).strip()]
    if missing:
        raise ValueError(f"{where}: a Markdown cell without its {'/'.join(missing)} text")
    return {lang: "\n".join(lines).strip("\n") for lang, lines in parts.items()}


def languages(text: str) -> tuple[str, ...]:
    """The notebooks a source makes: both languages, or ("mono",) for a source without markers."""
    return LANGS if any(MARKER.match(line) for line in text.splitlines()) else ("mono",)


def parse(text: str, name: str = "source") -> list[dict]:
    """Cells of one source: ``{"type": "code", "source", "tags"}`` or ``{"type": "markdown", "en", "zh"}``."""
    mono = languages(text) == ("mono",)
    cells: list[dict] = []
    md: list[str] = []
    code: list[str] | None = None
    tags: list[str] = []
    lineno = 0

    def flush_md():
        body = "\n".join(md)
        if body.strip():
            texts = {"mono": body.strip("\n")} if mono else split_languages(body, f"{name}, line {lineno}")
            cells.append({"type": "markdown", **texts})
        md.clear()

    for lineno, line in enumerate(text.splitlines(), 1):
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
            cells.append({"type": "code", "source": "\n".join(code).strip("\n"), "tags": tags})
            code = None
        else:
            code.append(line)
    if code is not None:
        raise ValueError(f"{name}: unclosed ```python fence")
    flush_md()
    return cells


def build(name: str, lang: str, cells: list[dict], names: list[str],
          titles: dict[str, dict[str, str]], langs_of: dict[str, tuple[str, ...]]) -> nbformat.NotebookNode:
    nav = nav_line(names, names.index(name), titles[lang], lang, langs_of)
    nb_cells = [nbformat.v4.new_markdown_cell(nav)]
    for cell in cells:
        if cell["type"] == "code":
            new = nbformat.v4.new_code_cell(cell["source"])
            new.metadata["tags"] = list(cell["tags"])
        else:
            new = nbformat.v4.new_markdown_cell(cell[lang])
            new.metadata["tags"] = []
        nb_cells.append(new)
    nb_cells.append(nbformat.v4.new_markdown_cell(nav))
    nb_cells[0].metadata["tags"] = nb_cells[-1].metadata["tags"] = []
    for j, cell in enumerate(nb_cells):   # by position, not random: a rebuild leaves ids alone
        cell.id = f"nb{name[:2]}-{j:03d}"
    nb = nbformat.v4.new_notebook(cells=nb_cells)
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


def outputs(nb: nbformat.NotebookNode) -> list[tuple]:
    """What execution left in each code cell: outputs, execution count, metadata."""
    return [(c.outputs, c.execution_count, c.metadata) for c in nb.cells if c.cell_type == "code"]


def take_outputs(nb: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> None:
    """Give ``nb`` the outputs of ``executed``, whose code cells are the same."""
    done = iter(c for c in executed.cells if c.cell_type == "code")
    for cell in nb.cells:
        if cell.cell_type == "code":
            old = next(done)
            cell.outputs, cell.execution_count = old.outputs, old.execution_count
            cell.metadata = {**old.metadata, "tags": cell.metadata["tags"]}
    nb.metadata = executed.metadata


def read(path: Path) -> nbformat.NotebookNode | None:
    return nbformat.read(str(path), as_version=4) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    names = sorted(p.stem for p in SRC.glob("[0-9][0-9]_*.md"))
    texts = {n: (SRC / f"{n}.md").read_text(encoding="utf-8") for n in names}
    langs_of = {n: languages(texts[n]) for n in names}
    sources = {n: parse(texts[n], f"{n}.md") for n in names}
    def title(n: str, lang: str) -> str:   # a one-language title reads "中文 · English"
        key = lang if lang in langs_of[n] else ("zh" if lang == "mono" else "mono")
        text = title_of(next(c[key] for c in sources[n] if c["type"] == "markdown"))
        return text.split("·")[-1 if lang == "en" and langs_of[n] == ("mono",) else 0].strip()
    titles = {lang: {n: title(n, lang) for n in names} for lang in (*LANGS, "mono")}
    stale = []
    for name in names:
        langs = langs_of[name]
        built = {lang: build(name, lang, sources[name], names, titles, langs_of) for lang in langs}
        current = {lang: read(target(name, lang)) for lang in langs}
        executed = current[EXECUTED if EXECUTED in langs else langs[0]]
        for lang in langs:
            nb, old, path = built[lang], current[lang], target(name, lang)
            if executed is not None and code_cells(executed) == code_cells(nb):
                take_outputs(nb, executed)             # the code is unchanged: keep its outputs
            if args.check:
                if old is None or signature(old) != signature(nb) or outputs(old) != outputs(nb):
                    stale.append(path.name)
                continue
            if old is not None and signature(old) == signature(nb) and outputs(old) == outputs(nb):
                continue
            nbformat.validate(nb)
            nbformat.write(nb, str(path))
            note = ("outputs kept" if nb.cells and any(c.get("outputs") for c in nb.cells
                                                       if c.cell_type == "code")
                    else "no outputs: run python -m cifar_helpers.run_all --inplace")
            print(f"wrote {path.relative_to(ROOT)} ({note})")
    if stale:
        print("out of date with notebooks/src (run python tools/build_notebooks.py): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
