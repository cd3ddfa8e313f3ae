"""Run each bad input and fault of issue 25 against the package's command lines, for real, and
print a Markdown table: the case, the exit code, and the last line the command wrote to stderr.

    python tools/fault_table.py            # about two minutes on 2 cores, tiny generated data

The full disk, the interrupted run_all and the DDP exit are covered by tests instead
(tests/test_faults.py, tests/test_notebooks.py, tools/ddp_stress.py); see docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def tiny_copy(root: Path, splits=("train", "test"), per_class: int = 2) -> Path:
    """An image-folder copy with ``per_class`` random JPEGs per class and split."""
    rng = np.random.default_rng(0)
    for split in splits:
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=75)
    return root


def checkpoint_with(path: Path, **changes) -> Path:
    """A valid notebook-03 checkpoint from the package, with ``changes`` to its entries."""
    from cifar_helpers.checkpoint import save_model
    from cifar_helpers.models import Net

    from cifar_helpers.checkpoint import normalization_entry

    save_model(path, Net(), CLASSES, normalization=normalization_entry((0.5,) * 3, (0.5,) * 3))
    blob = torch.load(path, weights_only=True)
    for key, value in changes.items():
        section, _, field = key.partition(".")
        blob[section][field] = value
    torch.save(blob, path)
    return path


def run(args: list[str], env: dict | None = None) -> tuple[int, str]:
    """Exit code and the last stderr line of ``python -m`` ``args`` (not a progress bar)."""
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip() and "it/s]" not in line]
    return done.returncode, lines[-1] if lines else "(nothing on stderr)"


def cases(tmp: Path) -> list[tuple[str, list[str], dict]]:
    """(case, command after ``python -m``, extra environment), in issue 25's order."""
    good = tiny_copy(tmp / "good")
    notest = tiny_copy(tmp / "notest", splits=("train",))
    trunc = tiny_copy(tmp / "trunc")
    jpeg = trunc / "train" / "cat" / "0001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    (tmp / "a_file").write_text("not a folder")
    lock = tmp / "held.pth"
    Path(f"{lock}.lock").write_text(str(os.getpid()))      # a live process holds it
    nan = checkpoint_with(tmp / "nan.pth", **{"normalization.mean": [0.5, float("nan"), 0.5]})
    huge = checkpoint_with(tmp / "huge.pth", **{"config.num_classes": 10 ** 9})
    from cifar_helpers.models import Net
    torch.save(Net(), tmp / "whole.pth")
    picture = good / "test" / "cat" / "0000.jpg"
    small = ["--train-size", "20", "--test-size", "20", "--epochs", "1"]
    train = ["cifar_helpers.train", "--data-dir"]
    out = ["cifar_helpers.run_all", "--out"]
    return [
        ("copy with train/ but no test/", [*train, str(notest), *small], {}),
        ("truncated JPEG", [*train, str(trunc), *small, "--checkpoint", str(tmp / "t.pth")], {}),
        ("cache cannot be written (carries on)",
         [*train, str(good), *small, "--checkpoint", str(tmp / "c.pth")],
         {"CIFAR_HELPERS_CACHE": str(tmp / "a_file" / "cache")}),
        ("run_all -p preset gpu95", [*out, str(tmp / "r1"), "-p", "preset", "gpu95"], {}),
        ("run_all bad preset_changes",
         [*out, str(tmp / "r2"), "-p", "preset_changes", "{'flip': 'maybe'}"], {}),
        ("modern --set epochs=five", ["cifar_helpers.modern", "--set", "epochs=five"], {}),
        ("modern --set epochs=1e999", ["cifar_helpers.modern", "--set", "epochs=1e999"], {}),
        ("modern --set lr=1e30", ["cifar_helpers.modern", "--set", "lr=1e30"], {}),
        ("modern --set flip=maybe", ["cifar_helpers.modern", "--set", "flip=maybe"], {}),
        ("run_all --only 1,99", [*out, str(tmp / "r3"), "--only", "1,99"], {}),
        ("run_all --out is a file", [*out, str(tmp / "a_file")], {}),
        ("run_all --out under a file", [*out, str(tmp / "a_file" / "run")], {}),
        ("checkpoint path under a file",
         [*train, str(good), *small, "--checkpoint", str(tmp / "a_file" / "net.pth")], {}),
        ("checkpoint held by another run",
         [*train, str(good), *small, "--checkpoint", str(lock)], {}),
        ("predict: NaN normalization",
         ["cifar_helpers.predict", "--checkpoint", str(nan), str(picture)], {}),
        ("predict: num_classes=1e9",
         ["cifar_helpers.predict", "--checkpoint", str(huge), str(picture)], {}),
        ("predict: torch.save(net)",
         ["cifar_helpers.predict", "--checkpoint", str(tmp / "whole.pth"), str(picture)], {}),
        ("bench inference --threads 0",
         ["cifar_helpers.bench", "inference", "--checkpoint", str(tmp / "c.pth"),
          "--threads", "0"], {}),
    ]


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        print("| case | exit | last line on stderr |\n|---|---|---|")
        for case, args, env in cases(tmp):
            code, line = run(args, env)
            line = line.replace(str(tmp), "<tmp>").replace("|", "\\|")
            print(f"| {case} | {code} | `{line}` |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
