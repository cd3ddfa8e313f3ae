"""The two languages of every lesson: one source, the same code and outputs, each wholly in its language."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.md"))
LESSONS = [p.stem for p in SOURCES]
CJK = re.compile(r"[\u3400-\u9fff\u3000-\u303f\uff00-\uffef]")


def read(lesson: str, lang: str):
    return nbformat.read(str(ROOT / "notebooks" / f"{lesson}.{lang}.ipynb"), as_version=4)


def code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_each_source_makes_its_notebooks_and_no_others():
    found = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    expected = [f"{lesson}.{lang}.ipynb" for lesson in LESSONS for lang in ("en", "zh")]
    assert LESSONS and found == sorted(expected)


@pytest.mark.parametrize("lesson", LESSONS)
def test_same_cells_code_tags_and_outputs(lesson):
    en, zh = read(lesson, "en"), read(lesson, "zh")
    assert [c.cell_type for c in en.cells] == [c.cell_type for c in zh.cells]
    assert [c.id for c in en.cells] == [c.id for c in zh.cells]
    for a, b in zip(code(en), code(zh)):
        where = f"{lesson}, cell {a.id}"
        assert a.source == b.source, f"{where}: the code differs between en and zh"
        assert a.metadata.get("tags") == b.metadata.get("tags"), f"{where}: tags differ"
        assert a.outputs == b.outputs and a.execution_count == b.execution_count, (
            f"{where}: outputs differ (run_all --inplace writes both; or rebuild)")
    params = [c.source for c in code(en) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1


@pytest.mark.parametrize("lesson", LESSONS)
def test_each_notebook_is_wholly_in_its_language(lesson):
    for cell in read(lesson, "en").cells:
        if cell.cell_type == "markdown":
            assert not CJK.search(cell.source), f"{lesson}.en: Chinese in {cell.source[:80]!r}"
    for cell in read(lesson, "zh").cells:
        if cell.cell_type == "markdown":
            prose = re.sub(r"```.*?```", "", cell.source, flags=re.S)
            prose = re.sub(r"`[^`]*`|\$[^$]*\$|\([^)]*\)|<[^>]+>", "", prose)
            assert CJK.search(prose), f"{lesson}.zh: a Markdown cell with no Chinese: {cell.source[:80]!r}"
            english = [s for s in re.split(r"[.!?]\s|[。！？；]", prose) if len(re.findall(r"\b[a-z]{3,}\b", s)) > 8]
            assert not english, f"{lesson}.zh: English sentences {english[:1]!r}"
