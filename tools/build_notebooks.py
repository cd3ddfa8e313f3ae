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
import tomllib
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cifar_helpers.run_all import take_outputs  # noqa: E402  (one copy of the rule, shared with run_all)

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "src", ROOT / "notebooks"
LANGS = ("en", "zh")
EXECUTED = "en"          # the language whose run produces the outputs of both
FENCE = re.compile(r"^```python(?P<tags>(\s+[\w-]+)*)\s*$")
MARKER = re.compile(r"^<!-- (en|zh) -->\s*$")
CONTENTS = {"en": "[Contents](../README.md#notebooks)",
            "zh": "[目录](../README.md#中文说明)"}
INSTALL_TAG = "install"  # the generated first code cell of a notebook that uses the package
INSTALL = """\
# Setup: installs the tutorial's helper package where it is missing (Colab, Kaggle, a
# downloaded notebook); set CIFAR_HELPERS_PIP_SPEC to install it from elsewhere.
import importlib, importlib.metadata, os, subprocess, sys

VERSION = "{version}"
SPEC = ("{name} @ "
        "{url}")
SPEC = os.environ.get("CIFAR_HELPERS_PIP_SPEC", SPEC)
try:
    found = importlib.metadata.version("cifar_helpers")
except importlib.metadata.PackageNotFoundError:
    found = None
alone = "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


class InstallError(RuntimeError):
    def _render_traceback_(self):  # Jupyter shows this one line instead of a traceback
        return [str(self)]


if found is None or (found != VERSION and alone):
    pip = subprocess.run(  # what %pip runs, without its wall of text
        [sys.executable, "-m", "pip", "install", "-q", "--no-color", SPEC],
        capture_output=True, text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
    if pip.returncode:
        lines = pip.stderr.strip().splitlines() or ["pip failed"]
        why = next((x for x in lines if x.startswith("ERROR")), lines[-1]).rstrip(".")
        raise InstallError(f"Could not pip install {{SPEC}} ({{why}}). Set "
                           "CIFAR_HELPERS_PIP_SPEC to a wheel, a mirror or a folder of "
                           "cifar_helpers, then rerun this cell.")
    importlib.invalidate_caches()
    print(f"installed cifar_helpers from {{SPEC}}")
elif found != VERSION:
    print(f"cifar_helpers {{found}} is installed; this notebook is for {{VERSION}}")"""


def file_name(name: str, lang: str) -> str:
    """``NN_name.en.ipynb`` or ``NN_name.zh.ipynb``."""
    return f"{name}.{lang}.ipynb"


def target(name: str, lang: str) -> Path:
    return OUT / file_name(name, lang)


def title_of(md: str) -> str:
    m = re.search(r"^# (.+)$", md, re.M)
    return m.group(1).strip() if m else ""


def nav_line(names: list[str], i: int, titles: dict[str, str], lang: str) -> str:
    def link(j: int, text: str) -> str:
        return f"[{text}]({file_name(names[j], lang)})"
    prev = link(i - 1, f"← {names[i - 1][:2]} {titles[names[i - 1]]}") if i else "←"
    nxt = link(i + 1, f"{names[i + 1][:2]} {titles[names[i + 1]]} →") if i + 1 < len(names) else "→"
    return f"{prev} · {CONTENTS[lang]} · {nxt}"


def package_spec(extra: str | None = None) -> tuple[str, str]:
    """``(version, pip spec)`` of the package at its release tag, from ``pyproject.toml``."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name = meta["name"] + (f"[{extra}]" if extra else "")
    return meta["version"], f"{name} @ git+{meta['urls']['Repository']}@v{meta['version']}"


def install_cell(cells: list[dict]) -> dict | None:
    """The install cell for a notebook whose code uses ``cifar_helpers`` (None otherwise),
    with the ``export`` extra where it runs ONNX."""
    code = "\n".join(c["source"] for c in cells if c["type"] == "code")
    if "cifar_helpers" not in code:
        return None
    version, spec = package_spec("export" if "onnx" in code else None)
    name, url = spec.split(" @ ")
    return {"type": "code", "source": INSTALL.format(version=version, name=name, url=url),
            "tags": [INSTALL_TAG]}


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


CJK_CHAR = "\u2e80-\u2fff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_PUNCT = "\u3000-\u303f\uff00-\uffef\u2014\u2026\u201c\u201d\u2018\u2019\u00b7"
NOT_PARAGRAPH = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|#{1,6}\s|>|\||<|```|~~~|\$\$|:::|\+\+\+|$)")


def join_paragraph_lines(md: str) -> str:
    """Chinese Markdown with each paragraph (and list item) on one line: a line break inside a
    paragraph renders as a space, which Chinese text must not have between two characters or
    after its punctuation. Lines meet with no space where either side is Chinese text or
    punctuation, else with one (``用 `Net`↵训练`` keeps the space around code). Fenced blocks,
    headings, tables, HTML lines, list starts and hard breaks are left as they are."""
    cjk = re.compile(f"[{CJK_CHAR}{CJK_PUNCT}]")
    punct = re.compile(f"[{CJK_PUNCT}]")
    out: list[str] = []
    fence = ""
    joinable = False   # the last line of ``out`` is paragraph text that the next line may continue
    for line in md.split("\n"):
        opener = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence:
            out.append(line)
            if opener and opener.group(1).startswith(fence) and not line.strip()[len(opener.group(1)):]:
                fence = ""
            continue
        if opener:
            fence, joinable = opener.group(1), False
            out.append(line)
            continue
        text = line.strip()
        if joinable and text and not NOT_PARAGRAPH.match(line):
            prev = out[-1].rstrip()
            a, b = prev[-1], text[0]
            glue = "" if (cjk.match(a) and cjk.match(b)) or punct.match(a) or punct.match(b) else " "
            out[-1] = prev + glue + text
        else:
            out.append(line)
            joinable = bool(text) and not re.match(r"^\s*(?:#{1,6}\s|\||<|\$\$|:::|\+\+\+)", line)
        if line.endswith(("  ", "\\")):   # a hard line break stays one
            joinable = False
    return "\n".join(out)


def parse(text: str, name: str = "source") -> list[dict]:
    """Cells of one source: ``{"type": "code", "source", "tags"}`` or ``{"type": "markdown", "en", "zh"}``."""
    cells: list[dict] = []
    md: list[str] = []
    code: list[str] | None = None
    tags: list[str] = []
    lineno = 0

    def flush_md():
        body = "\n".join(md)
        if body.strip():
            cells.append({"type": "markdown", **split_languages(body, f"{name}, line {lineno}")})
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
          titles: dict[str, dict[str, str]]) -> nbformat.NotebookNode:
    nav = nav_line(names, names.index(name), titles[lang], lang)
    nb_cells = [nbformat.v4.new_markdown_cell(nav)]
    setup = install_cell(cells)
    if setup is not None:          # first code cell: after the title and introduction
        first_code = next(i for i, c in enumerate(cells) if c["type"] == "code")
        cells = [*cells[:first_code], setup, *cells[first_code:]]
    for cell in cells:
        if cell["type"] == "code":
            new = nbformat.v4.new_code_cell(cell["source"])
            new.metadata["tags"] = list(cell["tags"])
        else:
            new = nbformat.v4.new_markdown_cell(
                join_paragraph_lines(cell[lang]) if lang == "zh" else cell[lang])
            new.metadata["tags"] = []
        nb_cells.append(new)
    nb_cells.append(nbformat.v4.new_markdown_cell(nav))
    nb_cells[0].metadata["tags"] = nb_cells[-1].metadata["tags"] = ["nav"]   # the site drops them
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
    """Per code cell: type, source and tags. The install cell counts by its tag alone: it
    prints nothing where the package is installed, so a new version of it (a new spec, say)
    changes no output, and the stored run's outputs stay."""
    return [(kind, "" if tags and INSTALL_TAG in tags else source, tags)
            for _, kind, source, tags in signature(nb) if kind == "code"]


def outputs(nb: nbformat.NotebookNode) -> list[tuple]:
    """What execution left in each code cell: outputs, execution count, metadata."""
    return [(c.outputs, c.execution_count, c.metadata) for c in nb.cells if c.cell_type == "code"]


def sync_logs(check: bool) -> list[str]:
    """Copy ``benchmarks/*.log`` into the package (``cifar_helpers/benchmarks/``), where
    notebooks opened alone read them; with ``check``, only name the copies that differ."""
    src, dst = ROOT / "benchmarks", ROOT / "cifar_helpers" / "benchmarks"
    want = {p.name: p.read_bytes() for p in sorted(src.glob("*.log"))}
    have = {p.name: p.read_bytes() for p in sorted(dst.glob("*.log"))} if dst.is_dir() else {}
    stale = sorted(n for n in want.keys() | have.keys() if want.get(n) != have.get(n))
    if not check:
        for name in stale:
            dst.mkdir(parents=True, exist_ok=True)
            if name in want:
                (dst / name).write_bytes(want[name])
            else:
                (dst / name).unlink()
            print(f"synced cifar_helpers/benchmarks/{name}")
        return []
    return [f"cifar_helpers/benchmarks/{n}" for n in stale]


def read(path: Path) -> nbformat.NotebookNode | None:
    return nbformat.read(str(path), as_version=4) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    names = sorted(p.stem for p in SRC.glob("[0-9][0-9]_*.md"))
    texts = {n: (SRC / f"{n}.md").read_text(encoding="utf-8") for n in names}
    sources = {n: parse(texts[n], f"{n}.md") for n in names}
    titles = {lang: {n: title_of(next(c[lang] for c in sources[n] if c["type"] == "markdown"))
                     for n in names} for lang in LANGS}
    stale = sync_logs(args.check)
    for name in names:
        built = {lang: build(name, lang, sources[name], names, titles) for lang in LANGS}
        current = {lang: read(target(name, lang)) for lang in LANGS}
        executed = current[EXECUTED]
        for lang in LANGS:
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
