"""tools/standalone.py, the standalone tier: what it decides without building an environment
(the environment's packages, the parameters, the spec and its extra, the checks, the lines)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from cifar_helpers.params import make_params

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.en.ipynb"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standalone = load("standalone")
build = load("build_notebooks")


def notebook(*cells: dict) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c["source"], metadata={"tags": c.get("tags", [])})
                for c in cells]
    return nb


def test_the_fresh_environment_gets_only_its_six_packages_at_the_pinned_versions():
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    wanted = standalone.venv_requirements(text)
    assert [standalone.requirement_name(r) for r in wanted] == \
        ["torch", "torchvision", "numpy", "matplotlib", "pillow", "ipykernel"]
    pinned = {standalone.requirement_name(r): r for r in standalone.requirement_lines(text)}
    assert wanted == [pinned[standalone.requirement_name(r)] for r in wanted]  # as requirements.txt says
    assert "torch==2.14.1" in wanted and "torchvision==0.29.1" in wanted
    assert not any(n in " ".join(wanted) for n in ("cifar", "papermill", "onnx", "tqdm"))


def test_requirements_parsing_drops_comments_and_options_and_keeps_unpinned_names():
    text = "# a comment\n\ntorch==2.14.1  # pinned\n-e .\n--find-links x\nTyping_Extensions>=4\n"
    assert standalone.requirement_lines(text) == ["torch==2.14.1", "Typing_Extensions>=4"]
    assert standalone.requirement_name("Typing_Extensions>=4") == "typing-extensions"
    assert standalone.venv_requirements(text, ("torch", "numpy")) == ["torch==2.14.1", "numpy"]


def test_the_extra_comes_from_the_install_cell_that_the_build_writes():
    plain = build.install_cell([{"type": "code", "source": "import cifar_helpers"}])
    onnx = build.install_cell([{"type": "code", "source": "import cifar_helpers, onnx"}])
    assert standalone.install_extra(notebook(plain)) is None
    assert standalone.install_extra(notebook(onnx)) == "export"
    assert standalone.install_extra(notebook({"source": "import torch"})) is None   # no install cell
    broken = {"source": "pip install something", "tags": [build.INSTALL_TAG]}
    with pytest.raises(ValueError, match="no default spec"):
        standalone.install_extra(notebook(broken))
    assert standalone.INSTALLED + "{SPEC}" in build.INSTALL.format(version="0", name="n", url="u")


def test_the_spec_is_the_wheel_with_the_notebooks_extra(tmp_path):
    wheel = tmp_path / "cifar_helpers-0.1.0-py3-none-any.whl"
    assert standalone.pip_spec(wheel, None) == str(wheel)
    assert standalone.pip_spec(wheel, "export") == f"{wheel}[export]"


@pytest.mark.parametrize("path", ENGLISH, ids=[p.stem for p in ENGLISH])
def test_each_notebook_gets_small_valid_values_of_only_what_it_declares(path, tmp_path):
    declared = pm.inspect_notebook(str(path))
    chosen = standalone.parameters_for(declared, tmp_path)
    assert set(chosen) <= set(declared)
    assert chosen["data_dir"] == str(tmp_path)
    make_params(**chosen)                                   # names, types and ranges all valid
    small = {"download": False, "epochs": 1, "ladder_epochs": 1}
    assert all(chosen[k] == v for k, v in small.items() if k in declared)
    if "preset_changes" in declared:
        assert chosen["preset_changes"]["widths"] == [8, 16, 16]


def test_parameters_for_leaves_out_what_a_notebook_does_not_declare():
    assert standalone.parameters_for(["data_dir", "epochs", "image_paths"], "/d") == \
        {"data_dir": "/d", "epochs": 1}


def test_the_install_check_wants_the_line_that_names_the_wheel():
    spec = "/tmp/w/cifar_helpers-0.1.0-py3-none-any.whl[export]"
    cell = nbformat.v4.new_code_cell("...", metadata={"tags": [build.INSTALL_TAG]})
    nb = notebook()
    nb.cells = [cell]
    assert "no output" in standalone.install_problem(nb, spec)       # it installed nothing
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=f"installed cifar_helpers from {spec}\n")]
    assert standalone.install_problem(nb, spec) is None
    assert "did not install" in standalone.install_problem(nb, spec.replace("[export]", ""))
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text="cifar_helpers 0.0.9 is installed; this notebook is for 0.1.0\n")]
    assert "0.0.9 is installed" in standalone.install_problem(nb, spec)
    assert standalone.install_problem(notebook({"source": "x = 1"}), spec) == "no install cell"


def test_a_failure_is_one_line_the_errors_last():
    err = pm.PapermillExecutionError(3, 4, "raise SystemExit(...)", "SystemExit",
                                     "Could not pip install x\n(ERROR: no such file)", [])
    assert standalone.error_line(err) == "SystemExit: (ERROR: no such file)"
    assert standalone.error_line(TimeoutError("cell timed out\nafter 300 s")) == "TimeoutError: after 300 s"
    line = standalone.result_line("04_evaluation.en.ipynb", False, 12.34, "FileNotFoundError: no model")
    assert re.fullmatch(r"04_evaluation\.en\.ipynb +FAILED +12\.3 s  FileNotFoundError: no model", line)
    assert re.fullmatch(r"02_network\.en\.ipynb +ok +1\.0 s", standalone.result_line("02_network.en.ipynb", True, 1))


def test_the_summary_line_is_the_plain_closing_line_ci_reads():
    line = standalone.summary_line([True, False, True])
    assert line == "standalone: 2 passed, 1 failed"
    assert re.fullmatch(r"(\w+: )?\d+ passed, \d+ failed", line)
    assert standalone.summary_line([]) == "standalone: 0 passed, 0 failed"


def test_only_picks_notebooks_by_number_and_refuses_an_unknown_one():
    assert [p.name[:2] for p in standalone.select(ENGLISH, "5, 09")] == ["05", "09"]
    assert standalone.select(ENGLISH, "") == ENGLISH and len(ENGLISH) >= 9
    with pytest.raises(SystemExit, match="no notebook numbered 42"):
        standalone.select(ENGLISH, "01,42")


def test_the_kernels_see_the_fresh_environment_and_nothing_of_this_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CIFAR10_DATA_DIR", "/real/data")
    monkeypatch.setenv("CIFAR_HELPERS_PIP_SPEC", "leftover")
    changes = standalone.kernel_environment(tmp_path / "venv", tmp_path / "pins.txt")
    env = standalone.applied(changes)
    assert not {"PYTHONPATH", "CIFAR10_DATA_DIR", "CIFAR_HELPERS_PIP_SPEC"} & set(env)
    assert env["PATH"].split(os.pathsep)[0] == str(standalone.venv_python(tmp_path / "venv").parent)
    assert env["PIP_CONSTRAINT"] == str(tmp_path / "pins.txt") and env["HOME"] == os.environ["HOME"]
    with standalone.environment(changes):
        assert "PYTHONPATH" not in os.environ and os.environ["VIRTUAL_ENV"] == str(tmp_path / "venv")
    assert os.environ["PYTHONPATH"] == str(ROOT)               # and undone after


def test_ci_and_make_run_the_tier():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python tools/standalone.py" in ci
    assert ci.index("python -m pytest -v\n") < ci.index("tools/standalone.py") < ci.index("build_site.py")
    assert re.search(r"^standalone:.*\n\t\$\(PY\) tools/standalone\.py", (ROOT / "Makefile").read_text(), re.M)
    assert sys.executable  # the tier runs papermill from the calling Python, which has it
