"""What a reader sees: prose figures that the outputs print, clean stored outputs, exercises
with hints and solutions. These read the committed notebooks only (no execution)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]

#: Figures the prose may quote without a cell printing them: (number, unit) -> where it comes from.
CITED = {
    ("54", "%"): "the seed's overall test accuracy after its 2 epochs",
    ("10", "%"): "random guessing among ten classes",
    ("94", "%"): "airbench94's target on the original CIFAR-10",
    ("94.01", "%"): "airbench94's reported mean on the original CIFAR-10",
}

NUMBER = r"\d[\d,]*(?:\.\d+)?"
UNIT = r"%|％|ms\b|s\b|毫秒|秒|img/s|张/秒|×(?!\s*\d)|x(?![\w])|倍"
FIGURE = re.compile(rf"(?<![\w.,])({NUMBER})(?:\s?[–~-]\s?({NUMBER}))?\s?({UNIT})")
#: The before-stop hook's test for a path of the machine that ran the notebook.
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.-]+/)+[\w.-]+")


def plain_number(text: str) -> str:
    return re.sub(r"(?<=\d),(?=\d{3})", "", text)


def unit_of(unit: str) -> str:
    return {"％": "%", "秒": "s", "毫秒": "ms", "张/秒": "img/s", "x": "×", "倍": "×"}.get(unit, unit)


def prose_of(source: str) -> str:
    """Markdown without code blocks, inline code, link targets and HTML tags."""
    text = re.sub(r"^\s*```.*?^\s*```", " ", source, flags=re.S | re.M)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"<[^>]+>", " ", text)


def figures(markdown: str) -> list[tuple[str, str]]:
    """Every (number, unit) the prose states, both ends of a range included."""
    found = []
    for m in FIGURE.finditer(prose_of(markdown)):
        unit = unit_of(m.group(3))
        found += [(plain_number(n), unit) for n in m.group(1, 2) if n]
    return found


def output_texts(cell) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            texts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            data = out.get("data", {})
            for kind, value in data.items():
                if kind == "text/plain" and any(k.startswith("image/") for k in data):
                    continue                  # a figure's fallback text: readers see the image
                if kind.startswith("text/"):
                    texts.append(value if isinstance(value, str) else "".join(value))
                elif kind == "application/json":
                    texts.append(json.dumps(value))
        elif out.output_type == "error":
            texts.append("\n".join(out.get("traceback", [])))
    return texts


def read(path: Path):
    return nbformat.read(str(path), as_version=4)


def printed(nb) -> str:
    return plain_number("\n".join(t for c in nb.cells if c.cell_type == "code" for t in output_texts(c)))


def test_figure_finder():
    text = ("about 53.0 % here, 54–55% there, 1,799 img/s, 2.4× faster, 12 秒, 3 × 32 × 32 images, "
            "a 5×5 kernel, `7 s` in code, 30 倍, 2 epochs, 40 s")
    assert figures(text) == [("53.0", "%"), ("54", "%"), ("55", "%"), ("1799", "img/s"),
                             ("2.4", "×"), ("12", "s"), ("30", "×"), ("40", "s")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_prose_figures_are_printed_by_the_notebook(path):
    nb = read(path)
    out = printed(nb)
    missing = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for number, unit in figures(cell.source):
            if (number, unit) in CITED:
                continue
            if not re.search(rf"(?<![\d.]){re.escape(number)}(?!\d|\.\d)", out):
                missing.append(f"{number} {unit}")
    assert not missing, (f"{path.name}: the prose states {missing}, which no stored output prints; "
                         f"print them in a cell, cite them in CITED, or say it in words")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_are_clean(path):
    problems = []
    for i, cell in enumerate(c for c in read(path).cells if c.cell_type == "code"):
        texts = output_texts(cell)
        where = f"code cell {i + 1}"
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"{where}: an error output ({out.get('ename')})")
            if out.output_type == "stream" and out.name == "stderr":
                problems.append(f"{where}: stderr output {out.text[:60]!r}")
        for text in texts:
            if "\r" in text:
                problems.append(f"{where}: a progress-bar fragment (\\r)")
            if re.search(r"Warning|WARNING", text):
                problems.append(f"{where}: a warning {text[:80]!r}")
            m = ABSOLUTE_PATH.search(text)
            if m:
                problems.append(f"{where}: an absolute path {m.group()!r}")
            if re.fullmatch(r"<Figure size [^>]*>\s*", text):
                problems.append(f"{where}: a figure's text repr instead of the figure")
        if len(texts) != len(set(texts)):
            problems.append(f"{where}: the same output twice")
    assert not problems, f"{path.name}: " + "; ".join(problems)


#: Per language: the exercises heading, the hint and solution labels, the stored run's sentence.
LABELS = {
    "en": ("## Exercises", "Hint", "Solution", r"stored outputs.{0,80}CPU|CPU.{0,80}stored outputs"),
    "zh": ("## 练习", "提示", "答案", r"(保存|存储).{0,30}输出.{0,60}CPU|输出.{0,30}(来自|CPU)"),
}


def lang_of(path: Path) -> str:
    return "en" if path.name.endswith(".en.ipynb") else "zh"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_exercise_has_a_hint_and_a_solution(path):
    heading, hint, solution, _ = LABELS[lang_of(path)]
    cells = [c.source for c in read(path).cells if c.cell_type == "markdown" and heading in c.source]
    assert len(cells) == 1, f"{path.name}: one {heading!r} cell expected"
    text = cells[0].split(heading, 1)[1]
    exercises = re.findall(r"^\d+\.\s", text, re.M)
    hints = re.findall(rf"<details>\s*<summary>{hint}</summary>", text)
    solutions = re.findall(rf"<details>\s*<summary>{solution}</summary>", text)
    assert exercises, f"{path.name}: no numbered exercises"
    assert len(hints) == len(solutions) == len(exercises), (
        f"{path.name}: {len(exercises)} exercises, {len(hints)} hints, {len(solutions)} solutions")
    assert text.count("<details>") == text.count("</details>")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_stored_run_names_its_machine(path):
    prose = " ".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    assert re.search(LABELS[lang_of(path)][3], prose, re.S), (
        f"{path.name}: say once where the stored outputs were run (a CPU run, the JPEG copy)")
