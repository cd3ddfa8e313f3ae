"""Run a two-process DDP job (torchrun, gloo, CPU, tiny generated data) many times; count failures.

    python tools/ddp_stress.py --runs 50 [--python /work/venv-sys/bin/python] [--entry SCRIPT.py]

Guards the exit-time abort of issue 25 (a worker dying with ``terminate called without an
active exception`` after the result was printed). ``--entry`` runs a script instead of
``-m cifar_helpers.distributed`` (an experiment's variant). The last line printed is
``ddp_stress: N runs, F failed``; the exit code is 1 when a run failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_tiny_data(root: Path) -> None:
    """The tests' generated image folder (8 training and 4 test images per class)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_pixels, write_folder
    write_folder(root, "train", *make_pixels(8, 0))
    write_folder(root, "test", *make_pixels(4, 1))


def one_run(python: str, entry: str | None, data_dir: Path, timeout: float) -> tuple[bool, str]:
    """One torchrun job; returns (succeeded, the tail of its output)."""
    target = [entry] if entry else ["-m", "cifar_helpers.distributed"]
    cmd = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *target, "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        out = err.stderr or b""                   # bytes here, even with text=True
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return False, f"timed out after {timeout:.0f} s\n{out[-2000:]}"
    err = done.stderr.splitlines()
    end = next((i for i, line in enumerate(err) if "failed (exitcode" in line), len(err) - 1)
    tail = "\n".join([*done.stdout.splitlines()[-2:], *err[max(0, end - 40):end + 1]])
    return done.returncode == 0, f"exit code {done.returncode}\n{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--python", default=sys.executable, help="the interpreter torchrun runs under")
    p.add_argument("--entry", default=None, help="a script to run instead of the package's module")
    p.add_argument("--timeout", type=float, default=120, help="seconds allowed to one run")
    args = p.parse_args(argv)
    failed = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ddp_stress_") as tmp:
        write_tiny_data(Path(tmp))
        for i in range(args.runs):
            ok, tail = one_run(args.python, args.entry, Path(tmp), args.timeout)
            if not ok:
                failed += 1
                print(f"--- run {i + 1} failed: {tail}", flush=True)
    print(f"{time.monotonic() - start:.0f} s under {args.python}")
    print(f"ddp_stress: {args.runs} runs, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
