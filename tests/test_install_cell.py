"""The install cell that lets a notebook run alone (Colab, Kaggle, a downloaded file): where it
is, the spec it installs (from pyproject.toml), and what it does in each situation."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def install_cells(nb) -> list:
    return [c for c in nb.cells
            if c.cell_type == "code" and "install" in c.metadata.get("tags", [])]


def cell_source(stem: str = "09_use_the_model") -> str:
    return install_cells(nbformat.read(str(ROOT / "notebooks" / f"{stem}.en.ipynb"), 4))[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_that_uses_the_package_installs_it_first(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    uses = any("cifar_helpers" in c.source for c in code if c not in install_cells(nb))
    cells = install_cells(nb)
    assert len(cells) == (1 if uses else 0), path.name
    if uses:
        assert code[0] is cells[0], "the install cell comes before every other code cell"
        spec = re.search(r'SPEC = \("(.+?) @ "\s+"(.+?)"\)', cells[0].source)
        extra = "[export]" if path.name.startswith("09") else ""
        assert spec.group(1) == f"{PROJECT['name']}{extra}"
        assert spec.group(2) == f"git+{PROJECT['urls']['Repository']}@v{PROJECT['version']}"
        assert f'VERSION = "{PROJECT["version"]}"' in cells[0].source


def run_cell(source: str, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the cell's code as ``python FLAGS -c SOURCE`` in the notebooks' folder."""
    return subprocess.run([sys.executable, *flags, "-c", source], capture_output=True, text=True,
                          cwd=ROOT / "notebooks", env=env, timeout=120)


def test_with_the_package_installed_it_does_nothing():
    done = run_cell(cell_source())
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_another_installed_version_is_reported():
    done = run_cell(cell_source().replace(f'VERSION = "{PROJECT["version"]}"', 'VERSION = "9.9"'))
    assert done.returncode == 0
    assert done.stdout == f"cifar_helpers {PROJECT['version']} is installed; this notebook is for 9.9\n"


def test_an_unusable_spec_gives_one_clear_line(tmp_path):
    """Where the package is missing, the cell installs SPEC; a spec pip cannot use ends, in
    IPython as in Jupyter, in one line naming the spec and CIFAR_HELPERS_PIP_SPEC, not pip's
    wall of text (FORCE_COLOR, which ipykernel sets, must not colour pip's error away)."""
    import os
    spec = str(tmp_path / "cifar_helpers-0.0.0-py3-none-any.whl")
    missing = cell_source().replace('version("cifar_helpers")', 'version("cifar_helpers_absent")')
    done = run_cell(missing, "-m", "IPython", "--colors=NoColor", "--no-banner",
                    env={**os.environ, "CIFAR_HELPERS_PIP_SPEC": spec, "FORCE_COLOR": "1"})
    assert done.returncode == 1 and done.stderr == ""
    assert done.stdout.count("\n") == 1, done.stdout
    assert done.stdout.startswith(f"Could not pip install {spec} (ERROR: ")
    assert "Set CIFAR_HELPERS_PIP_SPEC to a wheel" in done.stdout and "\x1b" not in done.stdout


def test_the_readme_gives_the_same_address_and_spec():
    """The repository address lives in pyproject.toml; the README repeats it exactly."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    repo, version = PROJECT["urls"]["Repository"], PROJECT["version"]
    assert f'"cifar_helpers @ git+{repo}@v{version}"' in readme
    owner_name = repo.removeprefix("https://github.com/")
    assert f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/" in readme
