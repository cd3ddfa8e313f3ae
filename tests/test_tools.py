"""tools/gpu_check.sh, the prepared GPU measurements: its dry run (every step tiny, on the CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def checkout_with_script(tmp_path: Path) -> Path:
    """A bare checkout as the device tool sends it: tools/gpu_check.sh, no data beside it."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "gpu_check.sh", repo / "tools")
    return repo


def gpu_check(repo: Path, out: Path, timeout: int = 600, **env_changes: str) -> subprocess.CompletedProcess:
    """The script's dry run, with CIFAR10_DATA_DIR unset (the device machine has none) unless
    ``env_changes`` sets it."""
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_DATA_DIR"}
    env.update(PYTHON=sys.executable, OUT=str(out), GPU_CHECK_DRY_RUN="1", PYTHONPATH=str(ROOT))
    env.update(env_changes)
    return subprocess.run(["bash", str(repo / "tools" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_gpu_check_runs_every_step_from_the_packed_data(tiny_folder, tmp_path):
    repo = checkout_with_script(tmp_path)
    (repo / ".gpu").mkdir()
    with tarfile.open(repo / ".gpu" / "cifar10-jpg.tar.gz", "w:gz") as tar:
        tar.add(tiny_folder, arcname="cifar10-jpg")
    done = gpu_check(repo, tmp_path / "out")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    results = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    fast, sweep_a, sweep_b, epochs, ddp_large, ddp4, tutorial = results
    assert fast["seeds"] == 1 and 0 <= fast["mean_test_accuracy"] <= 1
    assert all(0 <= s["mean_val_accuracy"] <= 1 and "mean_test_accuracy" not in s for s in (sweep_a, sweep_b))
    assert epochs["devices"] == ["cpu"] and len(epochs["rows"]) == 6
    assert all(r["seconds_per_epoch"] > 0 for r in epochs["rows"])
    assert (ddp_large["global_batch"], ddp4["global_batch"]) == (16, 4) and ddp4["world_size"] == 1
    assert tutorial["fast_seconds"] > 0 and tutorial["baseline_seconds"] is None
    assert "/tmp/gpu_check_data/cifar10-jpg" in log and log.rstrip().endswith("## gpu_check done")
    assert "failed" not in log


@pytest.mark.slow
def test_gpu_check_goes_on_past_failing_steps_and_names_them(tiny_folder, tmp_path):
    repo = checkout_with_script(tmp_path)
    broken = tmp_path / "broken" / "cifar_helpers"       # a package that fails at import: every
    broken.mkdir(parents=True)                           # step fails at once, and the script
    (broken / "__init__.py").write_text('raise RuntimeError("broken on purpose")\n')  # goes on
    done = gpu_check(repo, tmp_path / "out", timeout=300, PYTHONPATH=str(broken.parent),
                     CIFAR10_DATA_DIR=str(tiny_folder))
    assert done.returncode == 1
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    last = log.rstrip().splitlines()[-1]
    assert "broken on purpose" in log and last.startswith("## gpu_check done; failed: 1 fast --preset demo")
    steps = ["1 fast", "2 sweep", "3 epochs (exit 1)", "4 ddp batch 16", "4 ddp batch 4",
             "5 tutorial (exit 1)"]
    assert all(step in last for step in steps) and last.count("2 sweep") == 2, last


def test_gpu_check_without_data_says_how_to_get_it(tmp_path):
    done = gpu_check(checkout_with_script(tmp_path), tmp_path / "out", timeout=60)
    assert done.returncode == 2
    assert "set CIFAR10_DATA_DIR" in done.stderr and ".gpu/cifar10-jpg.tar.gz" in done.stderr
