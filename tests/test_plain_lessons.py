"""Notebooks 01-04 teach plain PyTorch: their cells import nothing of this project, run copied
alone into an empty folder, stay short, fit 88 columns, and every exercise's solution runs."""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LESSONS = ("01_data", "02_network", "03_training", "04_evaluation")
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
#: What a taught cell may import: PyTorch, numpy, matplotlib, Jupyter's display, the standard library.
ALLOWED = {"torch", "torchvision", "numpy", "matplotlib", "IPython"} | set(sys.stdlib_module_names)
MAX_WORDS, MAX_WORDS_TOTAL, MAX_COLUMNS = 1200, 4000, 88
SOLUTION = {"en": ("Solution", "This is a thought exercise."), "zh": ("答案", "这是一道思考题。")}


def read(stem: str, lang: str = "en") -> nbformat.NotebookNode:
    return nbformat.read(str(NOTEBOOKS / f"{stem}.{lang}.ipynb"), as_version=4)


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def prose_words(nb) -> int:
    """English words a reader reads: Markdown outside code blocks, inline code, tags, link targets."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "nav" in cell.metadata.get("tags", []):
            continue
        text = re.sub(r"^\s*```.*?^\s*```", " ", cell.source, flags=re.S | re.M)
        text = re.sub(r"`[^`]*`|<[^>]+>", " ", text)
        text = re.sub(r"\]\([^)]*\)", "]", text)
        count += len(re.findall(r"[A-Za-z0-9][\w'’.,-]*", text))
    return count


def solutions(nb, lang: str) -> list[str | None]:
    """Per exercise, the code of its solution, or None for a thought exercise."""
    label, thought = SOLUTION[lang]
    heading = "## Exercises" if lang == "en" else "## 练习"
    text = next(c.source for c in nb.cells if c.cell_type == "markdown" and heading in c.source)
    found = []
    for body in re.findall(rf"<summary>{label}</summary>(.*?)</details>", text, re.S):
        blocks = re.findall(r"^([ \t]*)```python[ \t]*\n(.*?)^\1```", body, re.S | re.M)
        if thought in body:
            assert not blocks, f"a thought exercise with code: {body[:80]!r}"
            found.append(None)
        else:
            assert len(blocks) == 1, f"a solution needs one ```python block: {body[:120]!r}"
            indent, code = blocks[0]
            found.append(textwrap.dedent(code))
    return found


@pytest.mark.parametrize("stem", LESSONS)
def test_taught_cells_import_only_pytorch_numpy_matplotlib(stem):
    for cell in code_cells(read(stem)):
        assert "cifar_helpers" not in cell.source, f"{stem}: {cell.source[:80]!r}"
        for node in ast.walk(ast.parse(cell.source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{stem} imports {name}"


def test_the_lesson_is_short():
    words = {stem: prose_words(read(stem)) for stem in LESSONS}
    assert all(n <= MAX_WORDS for n in words.values()), words
    assert sum(words.values()) <= MAX_WORDS_TOTAL, words


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_code_fits_88_columns(path):
    nb = nbformat.read(str(path), as_version=4)
    lang = path.suffixes[0][1:]
    code = [c.source for c in code_cells(nb)]
    if path.name[:2] <= "04":
        code += [s for s in solutions(nb, lang) if s]
    long = [line for src in code for line in src.splitlines() if len(line) > MAX_COLUMNS]
    assert not long, f"{path.name}: {len(long)} code lines over {MAX_COLUMNS}: {long[:3]}"


@pytest.mark.parametrize("stem", LESSONS)
def test_both_languages_share_the_solutions(stem):
    en, zh = solutions(read(stem, "en"), "en"), solutions(read(stem, "zh"), "zh")
    assert en and en == zh


@pytest.mark.slow
def test_copied_alone_the_lesson_runs_with_its_solutions(tiny_folder, tmp_path):
    """01-04 copied into one empty folder run in order, with ``cifar_helpers`` unimportable,
    each followed by its exercises' solutions; 04 reads the model that 03 saved."""
    import papermill as pm
    blocked = "import sys\nsys.modules['cifar_helpers'] = None  # as in a fresh Jupyter"
    tiny = {"data_dir": str(tiny_folder), "download": False, "print_every": 5}
    for stem in LESSONS:
        nb = read(stem)
        nb.cells.insert(0, nbformat.v4.new_code_cell(blocked))
        nb.cells += [nbformat.v4.new_code_cell(code) for code in solutions(nb, "en") if code]
        src, out = tmp_path / f"{stem}.ipynb", tmp_path / f"{stem}.out.ipynb"
        nbformat.write(nb, str(src))
        declared = pm.inspect_notebook(str(src))
        pm.execute_notebook(str(src), str(out), cwd=str(tmp_path), progress_bar=False,
                            parameters={k: v for k, v in tiny.items() if k in declared},
                            kernel_name="python3")
    assert (tmp_path / "checkpoints" / "cifar_net.pth").is_file()
