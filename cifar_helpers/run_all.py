"""The main job: run the numbered notebooks in order with papermill and write ``summary.json``.

    python -m cifar_helpers.run_all [--lang en|zh] [--out DIR] [-p NAME VALUE]... [--only 01,03]
                                    [--inplace]

Every lesson has an English and a Chinese notebook (``NN_name.en.ipynb``, ``NN_name.zh.ipynb``)
with the same code; ``--lang`` picks which to run, and the summary is the same either way.
``--inplace`` stores the run's outputs in that notebook and in its other-language twin.

A run is written into a new folder beside ``--out`` and replaces ``--out`` only once it is done;
``--inplace`` stores outputs only once every notebook succeeded. An interrupted run (Ctrl-C,
SIGTERM) changes neither: its folder keeps the partial run, marked "interrupted" in summary.json.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .params import DEFAULTS, make_params

METRICS_TAG = "metrics"              # cell whose application/json output holds the results
PATH_PARAMS = ("data_dir", "checkpoint", "modern_checkpoint", "image_paths")  # image_paths: a list
PROGRESS_ENV = "CIFAR_HELPERS_PROGRESS"   # read by cifar_helpers.train.progress_bar
LANGS = ("en", "zh")
PROG = "cifar_helpers.run_all"             # the prefix of its one-line errors
NOTEBOOK_RE = re.compile(r"^(?P<lesson>\d\d_[A-Za-z0-9_]+)\.(?P<lang>en|zh)\.ipynb$")


def notebooks_dir() -> Path:
    """``./notebooks`` if the current folder has one, else the one beside this package."""
    here = Path("notebooks")
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "notebooks"


def lesson_of(path: Path) -> str:
    """``01_data`` for ``01_data.en.ipynb``: a run's summary's name for it, in any language."""
    m = NOTEBOOK_RE.match(path.name)
    if not m:
        raise ValueError(f"{path.name} is not a lesson notebook "
                         f"(NN_name.en.ipynb or NN_name.zh.ipynb)")
    return m.group("lesson")


class RunAllError(ValueError):
    """A run that cannot start (bad arguments, --out unusable); the message says which and why."""


class Interrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGTERM); ``folder`` holds its partial run and summary."""

    def __init__(self, folder: Path) -> None:
        super().__init__(f"interrupted: the partial run and its summary.json are in {folder}")
        self.folder = folder


def list_notebooks(folder: Path, only: Sequence[str] = (), lang: str = "en") -> list[Path]:
    """The numbered notebooks ``NN_name.<lang>.ipynb`` in order, optionally only those numbered
    in ``only``; an unknown number in ``only`` is a :class:`RunAllError` listing the lessons."""
    if lang not in LANGS:
        raise RunAllError(f"lang={lang!r}: the notebooks exist in {', '.join(LANGS)}")
    lessons = sorted({lesson_of(p) for p in folder.glob("*.ipynb") if NOTEBOOK_RE.match(p.name)})
    if not lessons:
        raise RunAllError(f"no numbered notebooks (NN_name.{lang}.ipynb) in {folder.resolve()}")
    unknown = [n for n in only if n not in {name[:2] for name in lessons}]
    if unknown:
        raise RunAllError(f"--only {','.join(unknown)}: no such lesson; the lessons are "
                          f"{', '.join(lessons)}")
    return [folder / f"{n}.{lang}.ipynb" for n in lessons if not only or n[:2] in only]


def parse_value(text: str) -> Any:
    """A ``-p`` value as a Python literal (``4``, ``0.01``, ``True``, ``None``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def declared_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import papermill as pm
    return set(pm.inspect_notebook(str(path)))


def publish_metrics(metrics: dict) -> None:
    """Show ``metrics`` in a notebook as JSON, where :func:`read_metrics` finds it."""
    from IPython.display import display
    display({"application/json": metrics}, raw=True)


def absolute(value: Any) -> Any:
    """A path parameter (or a list of them) made absolute against the current folder: the
    kernels run in notebooks/, where a relative path would mean something else."""
    if isinstance(value, (list, tuple)):
        return [str(Path(v).expanduser().resolve()) for v in value]
    return str(Path(value).expanduser().resolve())


def read_metrics(nb: dict) -> dict:
    """The JSON shown by the cells tagged ``metrics`` of an executed notebook."""
    found: dict = {}
    for cell in nb["cells"]:
        if METRICS_TAG in cell.get("metadata", {}).get("tags", []):
            for out in cell.get("outputs", []):
                found.update(out.get("data", {}).get("application/json", {}))
    return found


def strip_volatile(nb: dict) -> dict:
    """Drop metadata that changes on every run (papermill's timings, execution times)."""
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    return nb


def run(out: Path, parameters: dict[str, Any], only: Sequence[str] = (),
        inplace: bool = False, folder: Path | None = None, log=None, lang: str = "en") -> dict:
    """Execute the notebooks into a fresh folder beside ``out`` and move it into place (with
    ``inplace``, also store the outputs in the notebooks, if all ran) once the run is done; return
    the summary (``out/summary.json``). An interrupt raises :class:`Interrupted`, ``out`` intact."""
    log = log or (lambda line: print(line, flush=True))   # progress shows at once, piped or not
    folder = (folder or notebooks_dir()).resolve()
    out = Path(out).expanduser().resolve()
    paths = list_notebooks(folder, only, lang)
    declared = {p.name: declared_parameters(p) for p in paths}
    check_parameters(parameters, set().union(*declared.values()))
    check_out(out)
    parameters = {k: (absolute(v) if k in PATH_PARAMS else v) for k, v in parameters.items()}
    if os.environ.get("CIFAR10_DATA_DIR"):  # the kernels run in notebooks/: make it absolute
        os.environ["CIFAR10_DATA_DIR"] = str(Path(os.environ["CIFAR10_DATA_DIR"]).resolve())
    staging = out.with_name(f"{out.name}.run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    staging.mkdir(parents=True)
    final = {}
    for key, file in (("checkpoint", "cifar_net.pth"), ("modern_checkpoint", "modern_net.pth")):
        if key not in parameters and not inplace:       # a run's files stay in its folder
            if (out / file).is_file():                  # an earlier run's, for --only 04
                shutil.copy2(out / file, staging / file)
            parameters[key], final[key] = str(staging / file), str(out / file)

    summary: dict[str, Any] = {"parameters": {**parameters, **final}, "notebooks": {},
                               "test_accuracy": None, "per_class_accuracy": None}
    failed = None
    sockets = tempfile.mkdtemp(prefix="cifar-kernel-")   # the kernels' sockets, removed always
    try:
        with environment(**{PROGRESS_ENV: "0"}), sigterm_interrupts():  # kernels inherit it
            for path in paths:
                failed = _run_one(path, staging, parameters, declared[path.name], folder,
                                  summary, failed, log, kernel_manager_class(sockets))
    except KeyboardInterrupt:
        for path in paths:
            summary["notebooks"].setdefault(lesson_of(path), {"status": "not run", "seconds": 0.0})
        summary["status"] = "interrupted"
        write_summary(staging, summary)
        raise Interrupted(staging) from None
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    summary["status"] = "failed" if failed else "ok"
    if failed:
        summary["error"] = failed
    elif inplace:
        store_outputs(paths, staging, summary)
    write_summary(staging, summary)
    replace_folder(staging, out)
    return summary


def check_parameters(parameters: dict[str, Any], declared: set[str]) -> None:
    """Refuse, before anything runs, parameters no notebook declares, bad values, a bad preset."""
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise RunAllError(f"unknown parameter(s) {unknown}: no notebook declares them. "
                          f"Declared: {sorted(declared)}")
    make_params(**{k: v for k, v in parameters.items() if k in DEFAULTS})
    if {"preset", "preset_changes"} & set(parameters):
        from .modern import get_preset
        name = parameters.get("preset", DEFAULTS["preset"])
        try:
            get_preset(name, **parameters.get("preset_changes", DEFAULTS["preset_changes"]))
        except (ValueError, TypeError) as err:
            raise RunAllError(f"-p preset/preset_changes: {err}") from None


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot take a run: a file, a path under a file, not writable."""
    if out.exists() and not out.is_dir():
        raise RunAllError(f"--out {out} is a file; give a folder (a run replaces it whole)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunAllError(f"--out {out} is under {parent}, which is a file; give a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunAllError(f"--out {out}: cannot write in {parent}; choose a writable folder")


def write_summary(folder: Path, summary: dict) -> None:
    """``folder/summary.json``."""
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def replace_folder(new: Path, old: Path) -> None:
    """Put the folder ``new`` where ``old`` is (``old`` and what it holds go)."""
    if old.exists():
        gone = old.with_name(f".{old.name}.old-{os.getpid()}")
        old.rename(gone)
        new.rename(old)
        shutil.rmtree(gone, ignore_errors=True)
    else:
        new.rename(old)


def store_outputs(paths: Sequence[Path], executed: Path, summary: dict) -> None:
    """Write the executed notebooks in ``executed`` over ``paths`` and their other-language twins,
    each with its run's seconds and hardware; every twin is checked before anything is written."""
    import nbformat
    where = hardware()
    writes = []
    for path in paths:
        nb = strip_volatile(nbformat.read(str(executed / path.name), as_version=4))
        seconds = summary["notebooks"][lesson_of(path)]["seconds"]
        nb.metadata["tutorial"] = {"run_seconds": seconds, "hardware": where}
        writes += [(path, nb)] + [(twin, with_outputs_of(nb, twin)) for twin in twins_of(path)]
    for path, nb in writes:
        nbformat.write(nb, str(path))


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, so it cleans up as Ctrl-C does."""
    import signal
    import threading

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield                                  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_one(path: Path, out: Path, parameters: dict[str, Any], declared: set[str],
             folder: Path, summary: dict, failed: str | None, log, manager: type) -> str | None:
    """Execute one notebook into ``out`` and ``summary``; return the job's failure so far."""
    import nbformat
    import papermill as pm

    name = lesson_of(path)
    if failed:
        summary["notebooks"][name] = {"status": "not run", "seconds": 0.0}
        return failed
    mine = {k: v for k, v in parameters.items() if k in declared}
    target = out / path.name
    log(f"[run_all] {path.name} {mine or ''}".rstrip())
    summary["notebooks"][name] = {"status": "interrupted", "seconds": 0.0}   # until it ends
    start = time.perf_counter()
    status, error = "ok", None
    try:
        pm.execute_notebook(str(path), str(target), parameters=mine, cwd=str(folder),
                            progress_bar=False, kernel_name="python3",
                            kernel_manager_class=manager)
    except pm.PapermillExecutionError as err:
        status, error = "failed", f"{err.ename}: {err.evalue} (cell {err.exec_count})"
    except Exception as err:  # kernel died, notebook unreadable, ...
        status, error = "failed", f"{type(err).__name__}: {err}"
    seconds = round(time.perf_counter() - start, 2)
    entry: dict[str, Any] = {"status": status, "seconds": seconds}
    if target.exists():
        metrics = read_metrics(nbformat.read(str(target), as_version=4))
        if metrics:
            entry["metrics"] = metrics
            for key in ("test_accuracy", "per_class_accuracy"):
                if key in metrics:
                    summary[key] = metrics[key]
    if error:
        entry["error"] = error
        failed = f"{path.name} failed: {error}"
    summary["notebooks"][name] = entry
    log(f"[run_all] {path.name}: {status} in {seconds:.1f} s")
    return failed


def kernel_manager_class(folder: str | None = None) -> type:
    """The kernels' manager: on Linux and macOS over Unix sockets in a private folder (no open TCP
    port, so ipykernel has no plain-text TCP warning to print), made inside ``folder`` if given,
    with the connection file; elsewhere Jupyter's default."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default
    if os.name != "posix":
        return AsyncKernelManager

    class UnixSocketKernelManager(AsyncKernelManager):
        def _private_folder(self) -> str:
            if not getattr(self, "_socket_folder", None):
                self._socket_folder = tempfile.mkdtemp(prefix="cifar-kernel-", dir=folder)
            return self._socket_folder

        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:   # the sockets are <folder>/kernel-<port>
            return os.path.join(self._private_folder(), "kernel")

        @default("connection_file")
        def _default_connection_file(self) -> str:
            return os.path.join(self._private_folder(), "kernel.json")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and getattr(self, "_socket_folder", None):
                shutil.rmtree(self._socket_folder, ignore_errors=True)

    return UnixSocketKernelManager


def hardware() -> str:
    """This machine in a few words, e.g. ``2-core CPU (AMD EPYC 7B13), torch 2.14.1``."""
    import platform
    import torch
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip()
                 for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    where = f"{os.cpu_count()}-core CPU ({cpu})"
    if torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name(0)}, {where}"
    return f"{where}, torch {torch.__version__.split('+')[0]}"


def twins_of(path: Path) -> list[Path]:
    """The same lesson's notebooks in the other languages."""
    m = NOTEBOOK_RE.match(path.name)
    if not m:
        return []
    return [path.with_name(f"{m.group('lesson')}.{lang}.ipynb") for lang in LANGS
            if lang != m.group("lang")]


def with_outputs_of(executed, twin_path: Path):
    """The notebook at ``twin_path`` given the outputs of ``executed``, whose code is the same."""
    import nbformat
    twin = nbformat.read(str(twin_path), as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    twin_code = [c for c in twin.cells if c.cell_type == "code"]
    if [(c.source, c.metadata.get("tags")) for c in code] != \
            [(c.source, c.metadata.get("tags")) for c in twin_code]:
        raise RunAllError(f"{twin_path.name} has other code than the notebook just run: "
                          f"rebuild both from notebooks/src (python tools/build_notebooks.py)")
    take_outputs(twin, executed)
    return twin


def take_outputs(nb, executed) -> None:
    """Give ``nb`` the outputs, execution counts and metadata of ``executed``, whose code cells
    are the same."""
    done = iter(c for c in executed.cells if c.cell_type == "code")
    for cell in nb.cells:
        if cell.cell_type == "code":
            old = next(done)
            cell.outputs, cell.execution_count = old.outputs, old.execution_count
            cell.metadata = {**old.metadata, "tags": cell.metadata.get("tags", [])}
    nb.metadata = executed.metadata


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set environment variables (None: unset one) for the duration of a ``with`` block."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_helpers.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/latest", type=Path,
                        help="folder for the executed notebooks and summary.json "
                             "(default: %(default)s)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="set a parameter in every notebook that declares it (repeatable)")
    parser.add_argument("--lang", default="en", choices=LANGS,
                        help="which language's notebooks to run "
                             "(default: %(default)s; same results)")
    parser.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,03")
    parser.add_argument("--inplace", action="store_true",
                        help="write the outputs back into notebooks/ (regenerates the stored "
                             "results; takes no -p)")
    args = parser.parse_args(argv)
    params = {name: parse_value(value) for name, value in args.parameter}
    if args.inplace and params:
        parser.error("--inplace stores the default run; it takes no -p "
                     "(set CIFAR10_DATA_DIR instead)")
    only = [x.strip().zfill(2) for x in args.only.split(",") if x.strip()]
    try:
        summary = run(args.out, params, only=only, inplace=args.inplace, lang=args.lang)
    except Interrupted as err:
        print(f"{PROG}: {err}; --out {args.out} is unchanged", file=sys.stderr)
        return 130
    except ValueError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("status", "test_accuracy")}))
    if summary["status"] != "ok":
        kept = "; notebooks/ unchanged (a run stores its outputs only if all succeed)"
        print(f"{PROG}: {summary['error']}" + (kept if args.inplace else ""), file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
