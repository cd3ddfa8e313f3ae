"""The standalone tier: every English notebook, alone in an empty folder, in a fresh environment.

    python tools/standalone.py [--only 05,09] [--keep DIR]

What a learner who downloads one notebook has: a Python with torch, torchvision, numpy,
matplotlib, pillow and ipykernel, and no ``cifar_helpers``. This script

1. builds a wheel of the checkout (``pip wheel --no-deps``, from a copy of the tree);
2. makes a fresh virtual environment with only those packages (at the versions that
   ``requirements.txt`` pins) and registers its kernel in a private ``JUPYTER_PATH``;
3. writes a tiny CIFAR-10 look-alike (an image-folder copy, 8 train / 4 test images per class);
4. for each ``notebooks/NN_*.en.ipynb``: uninstalls ``cifar_helpers`` from that environment,
   copies the notebook alone into a new empty folder and runs it there with papermill (from
   this Python, which has it) on the tiny data, with small values of the parameters that the
   notebook declares, and ``CIFAR_HELPERS_PIP_SPEC`` set to the wheel (plus the extra that the
   notebook's install cell names, e.g. ``[export]``);
5. prints one line per notebook and ``standalone: N passed, M failed``; exits 1 if any failed.

A notebook with an install cell passes only if that cell installed the package ("installed
cifar_helpers from <the wheel>"); one without passes only if it ran with the package absent.
The Chinese notebooks have the same code. ``PIP_CONSTRAINT`` holds every pip run here, the
install cells' included, to ``requirements.txt``'s versions. ``--keep DIR`` keeps the wheel,
the environment and the executed notebooks in ``DIR``, and a later run with the same ``DIR``
reuses its environment (after uninstalling the package; extras that an earlier run installed stay).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tools") not in sys.path:       # build_notebooks: the install cell's tag
    sys.path.insert(0, str(ROOT / "tools"))
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "cifar-standalone"          # the fresh environment's kernel, in a private JUPYTER_PATH
INSTALLED = "installed cifar_helpers from "   # what the install cell prints after installing
#: What a fresh environment gets: no cifar_helpers, none of the project's other requirements.
VENV_PACKAGES = ("torch", "torchvision", "numpy", "matplotlib", "pillow", "ipykernel")
#: Small values for the parameters a notebook declares (data_dir is added: the tiny copy);
#: the heavier ones as tests/test_notebooks.py::test_run_all_on_tiny_data passes them.
SMALL: dict[str, Any] = {
    "download": False,
    "epochs": 1,
    "ladder_epochs": 1,
    "preset_changes": {"batch_size": 16, "widths": [8, 16, 16]},
    "ladder_train_size": 80,
    "ddp_train_size": 80,
    "budget_seconds": None,   # 80 images are fewer than one batch of the budget's nets
}
CELL_TIMEOUT = 300                    # seconds one cell may run before the notebook fails
BUDGET = 600                          # the tier's share of CI, in seconds (reported, not enforced)
#: Left out of the copy that the wheel is built from (big, generated, or not the package's).
NOT_BUILT = shutil.ignore_patterns(".git", ".venv", "venv", ".ci", "_site", "data", "runs",
                                   "checkpoints", "__pycache__", "*.egg-info", "build", "dist",
                                   ".pytest_cache", ".ipynb_checkpoints", ".cache", ".gpu")
PIP_NOISE = re.compile(r"^WARNING: Location .* is ignored")
EXTRA = re.compile(r'"cifar_helpers(?:\[(?P<extra>[^\]]*)\])? @ ')


# ---- the parts that need no environment (tests/test_standalone.py) ----------------------------

def requirement_name(line: str) -> str | None:
    """The distribution name of a requirements line (``torch==2.14.1`` -> ``torch``), or None for
    a comment, a blank line or an option (``-e .``)."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return m.group(0).lower().replace("_", "-") if m else None


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file, comments and options dropped: a
    constraints file (pip's ``-c``) of the versions tested together."""
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if requirement_name(line)]


def venv_requirements(text: str, packages: Sequence[str] = VENV_PACKAGES) -> list[str]:
    """``packages`` as ``requirements.txt`` (``text``) pins them; a bare name where it doesn't."""
    pinned = {requirement_name(line): line for line in requirement_lines(text)}
    return [pinned.get(name, name) for name in packages]


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def install_cell(nb: dict) -> dict | None:
    """The notebook's install cell (tagged as tools/build_notebooks.py tags it), or None."""
    from build_notebooks import INSTALL_TAG
    return next((c for c in nb["cells"] if c["cell_type"] == "code" and INSTALL_TAG in tags(c)), None)


def install_extra(nb: dict) -> str | None:
    """The extra in the install cell's default spec (``cifar_helpers[export] @ git+...`` ->
    ``export``); None with no extra or no install cell. ValueError if the cell names no spec."""
    cell = install_cell(nb)
    if cell is None:
        return None
    m = EXTRA.search(cell["source"])
    if m is None:
        raise ValueError('the install cell has no default spec "cifar_helpers[...] @ ..."')
    return m.group("extra") or None


def pip_spec(wheel: str | os.PathLike, extra: str | None) -> str:
    """``CIFAR_HELPERS_PIP_SPEC`` for a notebook: the wheel, with the extra it needs."""
    return f"{os.fspath(wheel)}[{extra}]" if extra else os.fspath(wheel)


def parameters_for(declared: Iterable[str], data_dir: str | os.PathLike) -> dict[str, Any]:
    """The small values of the parameters that the notebook declares, and nothing else."""
    values = {"data_dir": os.fspath(data_dir), **SMALL}
    return {name: values[name] for name in declared if name in values}


def outputs_text(cell: dict) -> str:
    """The text a cell printed (streams, plain-text results and error values)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


def install_problem(nb: dict, spec: str) -> str | None:
    """Why the executed notebook's install cell did not install the package from ``spec``
    (None: it did)."""
    cell = install_cell(nb)
    if cell is None:
        return "no install cell"
    text = outputs_text(cell)
    if INSTALLED + spec in (line.strip() for line in text.splitlines()):   # that spec, not a longer one
        return None
    shown = last_line(text) or "no output"
    return f"the install cell did not install cifar_helpers from {spec} (it printed: {shown})"


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (an error's message, pip's last word), stripped."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def error_line(err: BaseException) -> str:
    """One line for a failed run: the notebook's exception and its message's last line."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename is not None:                            # papermill.PapermillExecutionError
        return f"{ename}: {last_line(evalue)}" if last_line(evalue) else str(ename)
    return f"{type(err).__name__}: {last_line(err)}" if last_line(err) else type(err).__name__


def result_line(name: str, ok: bool, seconds: float, error: str | None = None) -> str:
    """The line printed for one notebook."""
    line = f"{name:<32} {'ok' if ok else 'FAILED':<6} {seconds:6.1f} s"
    return f"{line}  {error}" if error else line


def summary_line(results: Sequence[bool]) -> str:
    """The closing line: ``standalone: N passed, M failed``."""
    passed = sum(1 for ok in results if ok)
    return f"standalone: {passed} passed, {len(results) - passed} failed"


def select(paths: Sequence[Path], only: str) -> list[Path]:
    """The notebooks numbered in ``only`` ("05,9"; empty: all). SystemExit for a number that
    matches none."""
    wanted = [x.strip().zfill(2) for x in only.split(",") if x.strip()]
    missing = sorted(set(wanted) - {p.name[:2] for p in paths})
    if missing:
        raise SystemExit(f"standalone: no notebook numbered {', '.join(missing)}")
    return [p for p in paths if not wanted or p.name[:2] in wanted]


# ---- the environment ---------------------------------------------------------------------------

def log(line: str) -> None:
    print(line, flush=True)


def run(cmd: Sequence[str | os.PathLike], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure, SystemExit with ``what`` and the tail of its output."""
    done = subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode:
        noise = "\n".join(x for x in (done.stdout + done.stderr).splitlines() if not PIP_NOISE.match(x))
        raise SystemExit(f"standalone: {what} failed (exit {done.returncode}):\n{noise[-3000:]}")
    return done


def build_wheel(out: Path) -> Path:
    """A wheel of the checkout (working tree as it is), built from a copy so that the build
    leaves nothing in the tree."""
    with tempfile.TemporaryDirectory(prefix="standalone-src-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT, src, ignore=NOT_BUILT)
        out.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
             "-w", out, src], "pip wheel of the checkout")
    wheels = sorted(out.glob("cifar_helpers-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise SystemExit(f"standalone: pip wheel wrote no cifar_helpers wheel into {out}")
    return wheels[-1]


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_venv(venv: Path, requirements: list[str], env: dict[str, str]) -> None:
    """A fresh virtual environment with ``requirements`` only; reused when ``venv`` already
    holds one made with the same requirements (``--keep``)."""
    stamp = venv / "standalone-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted and venv_python(venv).exists():
        log(f"[standalone] reusing the environment in {venv}")
        return
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", venv], "python -m venv")
    run([venv_python(venv), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        "pip install into the fresh environment", env=env)
    stamp.write_text(wanted)


def register_kernel(venv: Path, prefix: Path) -> Path:
    """The environment's kernel, registered under ``prefix``; returns the JUPYTER_PATH folder."""
    run([venv_python(venv), "-m", "ipykernel", "install", "--prefix", prefix, "--name", KERNEL,
         "--display-name", "Python (standalone tier)"], "ipykernel install")
    return prefix / "share" / "jupyter"


def has_package(venv: Path, cwd: Path, env: dict[str, str]) -> bool:
    """Whether the environment's python, started in ``cwd``, finds ``cifar_helpers``
    (installed, or importable from there)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('cifar_helpers') is None)"
    return subprocess.run([venv_python(venv), "-c", probe], cwd=cwd, env=env).returncode == 0


def uninstall(venv: Path, env: dict[str, str]) -> None:
    run([venv_python(venv), "-m", "pip", "uninstall", "-y", "-q", "--disable-pip-version-check",
         "cifar_helpers"], "pip uninstall cifar_helpers", env=env)


def write_tiny_data(root: Path) -> Path:
    """The tiny image-folder copy of tests/conftest.py (8 train / 4 test images per class)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, make_pixels, write_folder
    finally:
        sys.path.remove(str(ROOT / "tests"))
    write_folder(root, "train", *make_pixels(TRAIN_PER_CLASS, 0))
    write_folder(root, "test", *make_pixels(TEST_PER_CLASS, 1))
    return root


def environment(changes: dict[str, str | None]) -> contextlib.AbstractContextManager:
    """``os.environ`` changed for a ``with`` block (None: unset); the kernels inherit it."""
    from cifar_helpers.run_all import environment as run_all_environment
    return run_all_environment(**changes)


def kernel_environment(venv: Path, pins: Path) -> dict[str, str | None]:
    """What the fresh environment's processes (kernels, pip, probes) see changed: its ``bin``
    first on PATH, pip held to the pinned versions, nothing of this checkout (None: unset)."""
    return {"PIP_CONSTRAINT": str(pins), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PATH": f"{venv_python(venv).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv), "PYTHONPATH": None, "CIFAR10_DATA_DIR": None,
            "CIFAR_HELPERS_PIP_SPEC": None, "CIFAR_HELPERS_PROGRESS": "0"}  # no progress bars, as run_all


def applied(changes: dict[str, str | None]) -> dict[str, str]:
    """``os.environ`` with ``changes`` applied, for a subprocess."""
    env = {**os.environ, **{k: v for k, v in changes.items() if v is not None}}
    return {k: v for k, v in env.items() if changes.get(k, "") is not None}


def run_notebook(path: Path, work: Path, venv: Path, wheel: Path, data: Path,
                 changes: dict[str, str | None]) -> tuple[bool, float, str | None]:
    """Run one notebook alone; ``(ok, seconds, error line)``."""
    import nbformat
    import papermill as pm
    from cifar_helpers.run_all import kernel_manager_class

    nb = nbformat.read(str(path), as_version=4)
    extra = install_extra(nb)
    has_install = install_cell(nb) is not None
    spec = pip_spec(wheel, extra)
    folder = work / path.stem / "alone"              # a new empty folder, then the notebook alone
    folder.mkdir(parents=True)
    shutil.copy(path, folder / path.name)
    executed = work / path.stem / "executed.ipynb"   # outside the notebook's folder
    env = applied(changes)
    uninstall(venv, env)
    if has_package(venv, folder, env):
        return False, 0.0, "cifar_helpers still installed after pip uninstall"
    params = parameters_for(pm.inspect_notebook(str(folder / path.name)), data)
    mine = {**changes, "CIFAR_HELPERS_PIP_SPEC": spec,
            "CIFAR_HELPERS_CACHE": str(work / path.stem / "cache")}
    start = time.perf_counter()
    error = None
    try:
        with environment(mine):
            pm.execute_notebook(str(folder / path.name), str(executed), parameters=params,
                                cwd=str(folder), kernel_name=KERNEL, progress_bar=False,
                                execution_timeout=CELL_TIMEOUT,
                                kernel_manager_class=kernel_manager_class())
    except Exception as err:  # noqa: BLE001  (a failed cell, a dead kernel, a timeout)
        error = error_line(err)
    seconds = time.perf_counter() - start
    if error is None:
        out = nbformat.read(str(executed), as_version=4)
        if has_install:
            error = install_problem(out, spec)
        elif has_package(venv, folder, env):
            error = "no install cell, yet cifar_helpers was installed after the run"
    return error is None, seconds, error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/standalone.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 05,09")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the wheel, environment and executed notebooks in DIR "
                             "(and reuse DIR's environment on a later run)")
    args = parser.parse_args(argv)
    paths = select(sorted(NOTEBOOKS.glob("[0-9][0-9]_*.en.ipynb")), args.only)

    total = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            base = args.keep.resolve()
            base.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        else:
            base = work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="standalone-")))
        requirements_txt = (ROOT / "requirements.txt").read_text(encoding="utf-8")
        pins = work / "constraints.txt"             # the versions tested together, for every pip
        pins.write_text("\n".join(requirement_lines(requirements_txt)) + "\n")
        changes = kernel_environment(base / "venv", pins)

        requirements = venv_requirements(requirements_txt)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:   # the wheel while pip installs
            t = time.perf_counter()
            venv_done = pool.submit(make_venv, base / "venv", requirements, applied(changes))
            wheel = build_wheel(work / "wheel")
            log(f"[standalone] built {wheel.name} in {time.perf_counter() - t:.1f} s")
            data = write_tiny_data(work / "tiny-cifar10")
            venv_done.result()
        log(f"[standalone] wheel, tiny data and environment ({' '.join(requirements)}) "
            f"ready in {time.perf_counter() - t:.1f} s")
        jupyter_path = register_kernel(base / "venv", work / "kernel")

        results = []
        with environment({"JUPYTER_PATH": str(jupyter_path)}):
            for path in paths:
                ok, seconds, error = run_notebook(path, work / "notebooks", base / "venv", wheel,
                                                  data, changes)
                results.append(ok)
                log(result_line(path.name, ok, seconds, error))
        if args.keep:
            log(f"[standalone] kept in {work} (environment: {base / 'venv'})")
    seconds = time.perf_counter() - total
    log(f"[standalone] {seconds:.0f} s in all (this tier's share of CI: {BUDGET} s)")
    print(summary_line(results), flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
