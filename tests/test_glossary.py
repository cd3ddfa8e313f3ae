"""The Chinese text of the sources follows notebooks/src/GLOSSARY.md: the rules a program can check.

Prose is the Chinese half of each Markdown cell of ``notebooks/src/NN_name.md`` without fenced code,
inline code, link targets and HTML tags. Each rule is one test per source, so a failure names the
notebook, the rule and the offending text.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "notebooks" / "src"
GLOSSARY = SRC / "GLOSSARY.md"
SOURCES = sorted(SRC.glob("[0-9][0-9]_*.md"))
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_PUNCT = "\u3000-\u303f\uff00-\uffef"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def glossary() -> dict:
    """The tables of GLOSSARY.md: ``{"terms": [(english, chinese, [not, ...])]}``."""
    terms = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cols) == 3 and cols[0] not in ("English", "") \
                and not set(cols[0]) <= set("-"):
            terms.append((cols[0], cols[1], [w.strip() for w in cols[2].split(",") if w.strip()]))
    return {"terms": terms}


def prose(text: str) -> str:
    """Chinese Markdown as a reader reads it: no code, link targets or HTML tags."""
    text = re.sub(r"(?ms)^(\s*)(`{3,}|~{3,}).*?^\s*\2[ \t]*$", "", text)
    text = re.sub(r"(`+)(?s:.+?)\1", "`code`", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"<[^>]+>", "", text)


def chinese_cells(path: Path) -> list[str]:
    build = _builder()
    cells = build.parse(path.read_text(encoding="utf-8"), path.name)
    return [c["zh"] for c in cells if c["type"] == "markdown"]


def lines_matching(text: str, pattern: str, flags: int = 0) -> list[str]:
    found = []
    for line in text.splitlines():
        for m in re.finditer(pattern, line, flags):
            found.append(f"{m.group(0)!r} in: {line.strip()[:90]}")
    return found


IDS = [p.stem for p in SOURCES]


def test_glossary_has_the_core_terms():
    chinese = {zh for _, zh, _ in glossary()["terms"]}
    for term in ("张量", "小批量", "批大小", "学习率", "损失函数", "优化器", "反向传播", "梯度", "动量",
                 "准确率", "检查点", "卷积", "归一化", "混淆矩阵", "训练集", "测试集", "累计损失", "数据增强"):
        assert term in chinese, f"GLOSSARY.md has no row for {term}"


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_a_notebook_is_not_a_section(path):
    """笔记本 03, never 第 03 节: a two-digit number with 节 names a notebook."""
    bad = [f for cell in chinese_cells(path) for f in lines_matching(prose(cell), r"第\s*\d{2}\s*节")]
    assert not bad, f"{path.name}: a notebook named as a 节 (write 笔记本 NN):\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_the_introduction_speaks_of_the_notebook(path):
    """The first Markdown cell introduces the notebook: 本笔记本, not 本节."""
    intro = chinese_cells(path)[0]
    intro = intro.split("\n## ", 1)[0]
    bad = lines_matching(prose(intro), r"本节")
    assert not bad, f"{path.name}: the introduction says 本节 (write 本笔记本):\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_terms_are_translated(path):
    """No English word of the glossary's terms (nor "notebook") in Chinese prose, except in
    parentheses right after its Chinese term."""
    english = [en for en, _, _ in glossary()["terms"]] + ["notebook", "notebooks"]
    bad = []
    for cell in chinese_cells(path):
        text = re.sub(r"[（(][^（）()]*[）)]", lambda m: "" if not re.search(f"[{HAN}]", m.group(0))
                      else m.group(0), prose(cell))
        for en in english:
            bad += lines_matching(text, r"(?<![\w-])" + re.escape(en).replace(r"\ ", r"\s+") + r"(?![\w-])",
                                  re.I)
    assert not bad, f"{path.name}: English left in the Chinese text (see GLOSSARY.md):\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_no_discouraged_variants(path):
    """The glossary's "not" words, and epoch translated (轮次, 周期, 时期), are not used."""
    avoid = {w: zh for _, zh, nots in glossary()["terms"] for w in nots}
    avoid.update({"轮次": "epoch", "周期": "epoch", "时期": "epoch"})
    bad = [f"{f} (write {avoid[w]})" for cell in chinese_cells(path) for w in avoid
           for f in lines_matching(prose(cell), re.escape(w))]
    assert not bad, f"{path.name}: words the glossary avoids:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_no_spaces_inside_chinese(path):
    """No space between two Chinese characters nor after Chinese punctuation, once the build has
    joined each paragraph's lines (tools/build_notebooks.py)."""
    join = _builder().join_paragraph_lines
    bad = []
    for cell in chinese_cells(path):
        text = re.sub(r"\*+|(?<!\w)_{1,2}|_{1,2}(?!\w)", "", prose(join(cell)))   # as rendered: no emphasis marks
        bad += lines_matching(text, f"[{HAN}{CJK_PUNCT}][ \t\u00a0]+[{HAN}{CJK_PUNCT}]")
        bad += lines_matching(text, f"[{CJK_PUNCT}][ \t\u00a0]+(?=[^\\s{HAN}{CJK_PUNCT}])")
    assert not bad, f"{path.name}: spaces inside Chinese text:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_bold_labels_close(path):
    """``**硬件：**只需`` shows its asterisks: CommonMark does not close ``**`` between Chinese
    punctuation and a character. The punctuation goes after the label: ``**硬件**：只需``."""
    bad = []
    for cell in chinese_cells(path):
        for line in prose(cell).splitlines():
            marks = [m.start() for m in re.finditer(r"\*\*", line)]
            for closer in marks[1::2]:
                before, after = line[closer - 1:closer], line[closer + 2:closer + 3]
                if re.match(f"[{CJK_PUNCT}]", before) and after and not re.match(f"[\\s{CJK_PUNCT}]", after):
                    bad.append(f"{line[max(0, closer - 20):closer + 10]!r} in: {line.strip()[:90]}")
    assert not bad, f"{path.name}: bold that does not close (write **label**：):\n" + "\n".join(bad)


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_build_joins_paragraph_lines(path):
    """What the site shows: after the build, no Chinese paragraph line ends where the next goes on."""
    join = _builder().join_paragraph_lines
    for cell in chinese_cells(path):
        joined = join(cell)
        assert join(joined) == joined, f"{path.name}: joining the lines twice changes the text"
        for a, b in zip(joined.splitlines(), joined.splitlines()[1:]):
            continues = a.strip() and b.strip() and not re.match(r"\s*([-*+#|<>`~:$]|\d+[.)]\s|\+\+\+)", b)
            if continues and not re.match(r"\s*([#|<`~:$]|\+\+\+)", a) and not a.endswith(("  ", "\\")):
                assert not re.search(f"[{HAN}{CJK_PUNCT}]$", a.rstrip()), \
                    f"{path.name}: a Chinese paragraph still breaks after {a.strip()[-40:]!r}"
