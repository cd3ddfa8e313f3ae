"""The notebooks: structure, parameters, stored results, and papermill runs on tiny data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from cifar_helpers import run_all
from cifar_helpers.data import CIFAR10_CLASSES
from cifar_helpers.params import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_numbered_notebooks():
    lessons = sorted({run_all.lesson_of(p) for p in NOTEBOOKS})
    assert [n[:2] for n in lessons] == [f"{i:02d}" for i in range(1, len(lessons) + 1)]
    assert len(lessons) >= 8


def test_notebooks_match_their_sources():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def load_build(tmp_path, monkeypatch):
    """tools/build_notebooks.py as a module, writing into ``tmp_path`` (sources in ``tmp_path/src``)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    (tmp_path / "src").mkdir()
    monkeypatch.setattr(build, "SRC", tmp_path / "src")
    monkeypatch.setattr(build, "OUT", tmp_path)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["build_notebooks.py"])
    return build


PAGE = "<!-- en -->\n# T\n\n{text}\n\n<!-- zh -->\n# 题\n\n中文\n\n```python\n{code}\n```\n"


def test_build_keeps_stored_outputs_when_only_the_text_changes(tmp_path, monkeypatch):
    build = load_build(tmp_path, monkeypatch)
    src, out = tmp_path / "src" / "01_t.md", tmp_path
    src.write_text(PAGE.format(text="old words", code="print(1)"), encoding="utf-8")
    assert build.main() == 0
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["01_t.en.ipynb", "01_t.zh.ipynb"]
    nb = nbformat.read(str(out / "01_t.en.ipynb"), as_version=4)
    ids = [c.id for c in nb.cells]
    code_cells(nb)[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nbformat.write(nb, str(out / "01_t.en.ipynb"))
    src.write_text(PAGE.format(text="new words", code="print(1)"), encoding="utf-8")
    assert build.main() == 0
    en, zh = (nbformat.read(str(out / f"01_t.{lang}.ipynb"), as_version=4) for lang in ("en", "zh"))
    assert "new words" in en.cells[1].source and code_cells(en)[0].outputs[0].text == "1\n"
    assert "中文" in zh.cells[1].source and code_cells(zh)[0].outputs == code_cells(en)[0].outputs
    assert [c.id for c in en.cells] == ids          # cell ids stay: a text edit is a small diff
    src.write_text(PAGE.format(text="new words", code="print(2)"), encoding="utf-8")
    assert build.main() == 0
    assert code_cells(nbformat.read(str(out / "01_t.zh.ipynb"), as_version=4))[0].outputs == []


def test_a_new_install_cell_keeps_the_stored_outputs(tmp_path, monkeypatch):
    """The generated install cell prints nothing where the package is installed: a change to it
    (a new spec) keeps the stored run; a change to any other code cell does not."""
    build = load_build(tmp_path, monkeypatch)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "cifar_helpers"\n'
                                             'version = "1.0"\n[project.urls]\n'
                                             'Repository = "https://example.org/a/b"\n')
    src, out = tmp_path / "src" / "01_t.md", tmp_path
    src.write_text(PAGE.format(text="w", code="import cifar_helpers"), encoding="utf-8")
    assert build.main() == 0
    nb = nbformat.read(str(out / "01_t.en.ipynb"), as_version=4)
    install, code = code_cells(nb)
    assert "install" in install.metadata["tags"] and 'VERSION = "1.0"' in install.source
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    nbformat.write(nb, str(out / "01_t.en.ipynb"))
    monkeypatch.setattr(build, "INSTALL", build.INSTALL.replace("# Setup:", "# New setup:"))
    assert build.main() == 0
    install, code = code_cells(nbformat.read(str(out / "01_t.zh.ipynb"), as_version=4))
    assert install.source.startswith("# New setup:") and code.outputs[0].text == "ok\n"
    src.write_text(PAGE.format(text="w", code="import cifar_helpers  # changed"), encoding="utf-8")
    assert build.main() == 0
    assert code_cells(nbformat.read(str(out / "01_t.en.ipynb"), as_version=4))[1].outputs == []


@pytest.mark.parametrize("text, problem", [
    ("# T\n\nwords\n", "text before the first"),
    ("<!-- en -->\n# T\n", "without its zh text"),
    ("<!-- en -->\n# T\n<!-- zh -->\n# 题\n<!-- en -->\nagain\n", "<!-- en --> twice"),
])
def test_build_refuses_a_markdown_cell_without_both_languages(tmp_path, monkeypatch, text, problem):
    build = load_build(tmp_path, monkeypatch)
    (tmp_path / "src" / "01_t.md").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=problem):
        build.main()


#: Per language: the navigation's contents link, the hardware label, the closing sections.
TEMPLATE = {"en": ("[Contents]", "**Hardware:**", "## Summary", "## Exercises"),
            "zh": ("[目录]", "**硬件**：", "## 小结", "## 练习")}


def lang_of(path: Path) -> str:
    return run_all.NOTEBOOK_RE.match(path.name).group("lang")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_template(path):
    nb = nbformat.read(str(path), as_version=4)
    contents, hardware, summary, exercises = TEMPLATE[lang_of(path)]
    first, last = nb.cells[0].source, nb.cells[-1].source
    assert contents in first and first == last                          # navigation, top and bottom
    assert nb.cells[1].source.startswith("# ") and hardware in nb.cells[1].source
    code = [c for c in code_cells(nb) if "install" not in tags(c)]   # setup first, if any
    assert "import" in code[0].source and "parameters" in tags(code[1])
    assert "assert" in code[-1].source                                   # a closing check
    assert any(summary in c.source for c in nb.cells) and any(exercises in c.source for c in nb.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameter_defaults_are_the_shared_ones(path):
    declared = pm.inspect_notebook(str(path))
    assert declared["data_dir"]["default"] == 'os.environ.get("CIFAR10_DATA_DIR", "data")'
    for name, info in declared.items():
        if name != "data_dir":
            assert name in DEFAULTS, f"{path.name} declares {name}, unknown to params.DEFAULTS"
            assert eval(info["default"]) == DEFAULTS[name], name  # literals only: eval is exact
        assert info["help"], f"{path.name}: parameter {name} has no comment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_are_a_real_run(path):
    nb = nbformat.read(str(path), as_version=4)
    for cell in code_cells(nb):
        assert cell.execution_count is not None, f"{path.name}: a cell was not executed"
        assert not [o for o in cell.outputs if o.output_type == "error"]
        if "nbval-check-output" in tags(cell):
            assert cell.outputs, f"{path.name}: a checked cell has no stored output"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata
    assert "papermill" not in nb.metadata


def test_stored_results_name_their_data_copy():
    nb = nbformat.read(str(next((ROOT / "notebooks").glob("01_data*.ipynb"))), as_version=4)
    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "training images: 50000, test images: 10000" in text   # the whole data set


@pytest.mark.slow
def test_run_all_on_tiny_data(tiny_folder, tmp_path):
    """The main job's machinery on the notebooks that publish results (every notebook runs on
    tiny data in the standalone tier, and on the real data in the nbval tier)."""
    out = tmp_path / "run"
    code = run_all.main(["--out", str(out), "--only", "03,04,08", "-p", "data_dir",
                         str(tiny_folder), "-p", "epochs", "3", "-p", "lr", "0.01",
                         "-p", "print_every", "5", "-p", "ladder_epochs", "1",
                         "-p", "preset_changes", "{'batch_size': 16, 'widths': [8, 16, 16]}",
                         "-p", "budget_seconds", "None"])   # tiny data: the preset, not a budget
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, summary
    assert summary["status"] == "ok"
    assert list(summary["notebooks"]) == ["03_training", "04_evaluation", "08_modern_recipe"]
    for name, entry in summary["notebooks"].items():
        assert entry["status"] == "ok" and entry["seconds"] > 0 and list(out.glob(f"{name}*.ipynb"))
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert list(summary["per_class_accuracy"]) == list(CIFAR10_CLASSES)
    assert summary["parameters"]["epochs"] == 3 and (out / "cifar_net.pth").is_file()
    modern = summary["notebooks"]["08_modern_recipe"]["metrics"]
    assert 0.0 <= modern["modern_test_accuracy"] <= 1.0 and (out / "modern_net.pth").is_file()
    executed = nbformat.read(str(next(out.glob("03_training*.ipynb"))), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in tags(c)]
    assert "epochs = 3" in injected[0].source


@pytest.mark.slow
def test_run_all_reports_a_failing_notebook(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_all.main(["--out", str(out), "--only", "01,02", "-p", "data_dir",
                         str(tmp_path / "missing"), "-p", "download", "False"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1
    assert summary["notebooks"]["01_data"]["status"] == "failed"
    assert summary["notebooks"]["02_network"]["status"] == "not run"
    err = capsys.readouterr().err
    assert re.search(r"01_data\.en\.ipynb failed: RuntimeError: Dataset not found", err)


@pytest.mark.parametrize("args, message", [
    (["-p", "epochs", "0"], "epochs=0 must be at least 1"),
    (["-p", "epoch", "3"], "unknown parameter(s) ['epoch']: no notebook declares them"),
    (["--only", "1,99"], "--only 99: no such lesson; the lessons are 01_data, 02_network,"),
    (["-p", "preset", "gpu95"], "-p preset/preset_changes: preset='gpu95' is unknown"),
    (["-p", "preset_changes", "{'epoch': 3}"], "unknown preset field(s) ['epoch']"),
    (["-p", "preset_changes", "{'epochs': 0}"], "epochs must be"),
])
def test_run_all_refuses_bad_arguments_before_running(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert run_all.main(["--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cifar_helpers.run_all: ") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())                  # nothing written, no notebook run


def test_run_all_refuses_an_unusable_out(tmp_path, capsys, monkeypatch):
    (tmp_path / "f").write_text("")
    cases = [(tmp_path / "f", "is a file; give a folder"),
             (tmp_path / "f" / "x" / "run", f"is under {tmp_path / 'f'}, which is a file")]
    for out, message in cases:
        assert run_all.main(["--out", str(out), "--only", "01"]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.setattr(run_all.os, "access", lambda path, mode: False)  # root may write anywhere
    assert run_all.main(["--out", str(tmp_path / "new" / "run"), "--only", "01"]) == 2
    assert f"cannot write in {tmp_path}; choose a writable folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def lesson(folder: Path, name: str, code: str) -> None:
    """A one-cell lesson ``name`` in both languages, with a ``parameters`` cell."""
    for lang in run_all.LANGS:
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language":
                                                               "python", "display_name": "P"}})
        params = nbformat.v4.new_code_cell("seconds = 0  # how long to sleep")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {lang}"), params,
                    nbformat.v4.new_code_cell(code, metadata={"tags": []})]
        nbformat.write(nb, str(folder / f"{name}.{lang}.ipynb"))


@pytest.mark.slow
def test_sigterm_leaves_the_earlier_run_and_no_sockets(tmp_path):
    """A run killed with SIGTERM mid-notebook: the earlier --out stays as it was, the partial
    run is kept beside it marked "interrupted", the kernel's socket folder is removed."""
    import signal
    import time
    (tmp_path / "notebooks").mkdir()
    lesson(tmp_path / "notebooks", "01_quick", "print('quick')")
    lesson(tmp_path / "notebooks", "02_slow", "import time\ntime.sleep(120)")
    out = tmp_path / "runs" / "latest"
    out.mkdir(parents=True)
    (out / "summary.json").write_text('{"status": "ok", "earlier": true}')
    sockets = set(Path(tempfile.gettempdir()).glob("cifar-kernel-*"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen([sys.executable, "-m", "cifar_helpers.run_all", "--out", str(out)],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    for line in job.stdout:                              # wait for the slow notebook to start
        if line.startswith("[run_all] 02_slow.en.ipynb"):
            break
    time.sleep(4)                                        # its kernel is up and sleeping
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
    assert json.loads((out / "summary.json").read_text()) == {"status": "ok", "earlier": True}
    partial = next((tmp_path / "runs").glob("latest.run-*"))   # the kernel may say more before
    assert err.splitlines()[-1] == (f"cifar_helpers.run_all: interrupted: the partial run and its "
                           f"summary.json are in {partial}; --out {out} is unchanged")
    summary = json.loads((partial / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert [e["status"] for e in summary["notebooks"].values()] == ["ok", "interrupted"]
    assert set(Path(tempfile.gettempdir()).glob("cifar-kernel-*")) == sockets, "sockets left behind"


@pytest.mark.slow
def test_inplace_stores_nothing_unless_every_notebook_succeeds(tmp_path):
    lesson(tmp_path, "01_fine", "print('fine')")
    lesson(tmp_path, "02_broken", "1 / 0")
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    summary = run_all.run(tmp_path / "run", {}, inplace=True, folder=tmp_path, log=lambda *_: None)
    assert summary["status"] == "failed" and "ZeroDivisionError" in summary["error"]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")} == before
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
    summary = run_all.run(tmp_path / "run", {}, only=["01"], inplace=True, folder=tmp_path,
                          log=lambda *_: None)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
    stored = nbformat.read(str(tmp_path / "01_fine.zh.ipynb"), as_version=4)
    assert code_cells(stored)[1].outputs[0].text == "fine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "run"])


def test_parse_value():
    assert [run_all.parse_value(v) for v in ["4", "0.01", "True", "None", "data/x"]] == [4, 0.01, True, None, "data/x"]


def test_run_all_turns_progress_bars_off_in_its_kernels_only(monkeypatch):
    from cifar_helpers.train import PROGRESS_ENV, progress_bar
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    items = [1, 2, 3]
    bar = progress_bar(items)
    assert list(bar) == items and bar is not items               # a person watching: a bar
    with run_all.environment(**{run_all.PROGRESS_ENV: "0"}):
        assert progress_bar(items) is items                      # a stored run: none
    assert PROGRESS_ENV not in os.environ                        # and the setting is undone
    assert run_all.PROGRESS_ENV == PROGRESS_ENV


@pytest.mark.slow
def test_either_language_gives_the_same_summary(tiny_folder, tmp_path, capfd):
    sockets = set(Path(tempfile.gettempdir()).glob("cifar-kernel-*"))
    runs = {lang: run_all.run(tmp_path / lang, {"data_dir": str(tiny_folder)}, only=["01", "02"],
                              lang=lang) for lang in ("en", "zh")}
    out, err = capfd.readouterr()             # the kernels' stderr too: they inherit the descriptor
    assert "[run_all] 02_network.zh.ipynb: ok in" in out, out
    if os.name == "posix":                    # Unix sockets: no open port, no plain-text TCP warning
        assert "without encryption" not in err, err
        assert set(Path(tempfile.gettempdir()).glob("cifar-kernel-*")) == sockets, "socket folders left behind"
    for summary in runs.values():
        assert summary["status"] == "ok"
        for entry in summary["notebooks"].values():
            entry.pop("seconds")
        summary["parameters"] = {k: v for k, v in summary["parameters"].items() if "checkpoint" not in k}
    assert runs["en"] == runs["zh"] and list(runs["en"]["notebooks"]) == ["01_data", "02_network"]
    assert sorted(p.name for p in (tmp_path / "zh").glob("*.ipynb")) == ["01_data.zh.ipynb", "02_network.zh.ipynb"]


@pytest.mark.slow
def test_inplace_run_writes_both_languages_and_records_its_run(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA_DIR", str(tiny_folder))      # an in-place run takes no -p
    for lang in ("en", "zh"):
        shutil.copy(ROOT / "notebooks" / f"02_network.{lang}.ipynb", tmp_path)
    blank = nbformat.read(str(tmp_path / "02_network.zh.ipynb"), as_version=4)
    for cell in code_cells(blank):
        cell.outputs = []
    nbformat.write(blank, str(tmp_path / "02_network.zh.ipynb"))
    summary = run_all.run(tmp_path / "run", {}, inplace=True,
                          folder=tmp_path, log=lambda *_: None)
    assert summary["status"] == "ok"
    en, zh = (nbformat.read(str(tmp_path / f"02_network.{lang}.ipynb"), as_version=4) for lang in ("en", "zh"))
    assert [c.outputs for c in code_cells(en)] == [c.outputs for c in code_cells(zh)]
    assert any(c.outputs for c in code_cells(zh))
    assert [c.source for c in zh.cells] != [c.source for c in en.cells]   # the prose stays each one's
    for nb in (en, zh):
        run = nb.metadata["tutorial"]
        assert run["run_seconds"] > 0 and "CPU" in run["hardware"] and "torch" in run["hardware"]
