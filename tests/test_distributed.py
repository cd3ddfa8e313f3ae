"""DDP through torchrun on CPU (gloo): the same weights as one process, multi-node, failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from cifar_helpers import distributed
from cifar_helpers.devices import DeviceError

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job(tiny_folder, tmp_path, name: str, *extra: str) -> list[str]:
    return ["-m", "cifar_helpers.distributed", "--data-dir", str(tiny_folder), "--epochs", "2",
            "--batch-size", "16", "--lr", "0.05", "--save-weights", str(tmp_path / f"{name}.pt"), *extra]


def run(cmd: list[str], env_extra: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, env=env)


def torchrun(nproc: int, *args: str, rdzv: list[str] | None = None) -> list[str]:
    return ["-m", "torch.distributed.run", *(rdzv or ["--standalone"]), "--nproc_per_node", str(nproc), *args]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_end_with_the_weights_of_one(tiny_folder, tmp_path):
    one = run(job(tiny_folder, tmp_path, "one"))
    assert one.returncode == 0, one.stderr
    two = run(torchrun(2, *job(tiny_folder, tmp_path, "two")))
    assert two.returncode == 0, two.stderr
    r1, r2 = last_json(one.stdout), last_json(two.stdout)
    assert (r1["world_size"], r2["world_size"]) == (1, 2) and r2["backend"] == "gloo"
    assert set(r2) >= {"world_size", "test_accuracy", "train_seconds"}
    w1, w2 = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    assert abs(r1["test_accuracy"] - r2["test_accuracy"]) <= 1 / 40   # 40 test images: one at most
    assert two.stdout.count("epoch 1:") == 1                          # only rank 0 logs


def test_two_nodes_rendezvous(tiny_folder, tmp_path):
    port = free_port()
    procs = []
    for node in (0, 1):
        rdzv = ["--nnodes", "2", "--node_rank", str(node), "--rdzv_backend", "c10d",
                "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "cifar-test"]
        procs.append(subprocess.Popen([sys.executable, *torchrun(1, *job(tiny_folder, tmp_path, f"node{node}"), rdzv=rdzv)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    results = [last_json(o) for o, _ in outs if o.strip()]
    assert len(results) == 1 and results[0]["world_size"] == 2      # rank 0 lives on one node


def test_a_crashing_worker_ends_the_job_quickly(tiny_folder, tmp_path):
    start = time.monotonic()
    done = run(torchrun(2, *job(tiny_folder, tmp_path, "crash")),
               env_extra={distributed.FAULT_ENV: "rank=1,step=3"}, timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode != 0
    assert "injected fault at step 3" in done.stderr
    assert "ChildFailedError" in done.stderr or "FAILED" in done.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s to stop"


def test_clear_errors_before_any_work(tiny_folder, tmp_path):
    if not torch.cuda.is_available():
        done = run(job(tiny_folder, tmp_path, "x", "--device", "cuda"))
        assert done.returncode == 2 and "CUDA is not available here" in done.stderr
    done = run(job(tiny_folder, tmp_path, "x", "--backend", "nccl", "--device", "cpu"))
    assert done.returncode == 2
    assert "nccl needs CUDA GPUs" in done.stderr or "backend nccl is not available" in done.stderr
    done = run(job(tiny_folder, tmp_path, "x", "--epochs", "0"))
    assert done.returncode == 2 and "epochs=0 must be at least 1" in done.stderr
    (tmp_path / "a_file").write_text("not a folder")
    done = run(job(tiny_folder, tmp_path, "x", "--checkpoint", str(tmp_path / "a_file" / "c.pth")))
    assert done.returncode == 2 and "a_file is a file, not a folder" in done.stderr
    assert "world size" not in done.stdout                            # before any training


def test_a_diverging_run_stops_with_a_clear_error(tiny_folder, tmp_path):
    done = run(job(tiny_folder, tmp_path, "nan", "--lr", "1e30"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("cifar_helpers.distributed: loss is nan at epoch 1, step 5: "
                                   "training diverged. Try a lower learning rate (lr).")


def _args(**kw) -> Namespace:
    return Namespace(**{"device": "auto", "backend": "auto", **kw})


def test_more_processes_than_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(distributed.LaunchError, match="4 processes need one GPU each, but this node has 2"):
        distributed.choose(_args(), world_size=4, local_rank=3)


def test_backend_choice_and_missing_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.choose(_args(), 2, 0) == (torch.device("cpu"), "gloo")
    with pytest.raises(DeviceError):
        distributed.choose(_args(device="cuda"), 2, 0)
    monkeypatch.setattr(torch.distributed, "is_gloo_available", lambda: False)
    with pytest.raises(distributed.LaunchError, match="backend gloo is not available"):
        distributed.choose(_args(), 2, 0)
    with pytest.raises(distributed.LaunchError, match="use auto, gloo or nccl"):
        distributed.choose(_args(backend="mpi"), 2, 0)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes through /proc")
def test_ddp_killed_and_resumed_ends_like_the_uninterrupted_run(tiny_folder, tmp_path):
    import random
    import signal
    from cifar_helpers.checkpoint import CheckpointError, read_checkpoint
    env = {"CIFAR_HELPERS_STEP_DELAY": "0.05"}                    # 5 steps an epoch: 0.25 s
    common = ["--epochs", "6"]
    ref = run(torchrun(2, *job(tiny_folder, tmp_path, "ref", *common, "--checkpoint", str(tmp_path / "ref.pth"))),
              env_extra=env)
    assert ref.returncode == 0, ref.stderr
    ckpt = tmp_path / "killed.pth"
    cmd = [sys.executable, *torchrun(2, *job(tiny_folder, tmp_path, "killed", *common, "--checkpoint", str(ckpt)))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if read_checkpoint(ckpt)["epoch"] >= 2:
                break
        except CheckpointError:
            pass
        time.sleep(0.01)
    time.sleep(random.Random(1).uniform(0, 0.25))                 # somewhere inside epoch 3
    for pid in [proc.pid, *descendants(proc.pid)]:               # torchrun and both workers
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    time.sleep(0.5)
    killed_at = read_checkpoint(ckpt)["epoch"]
    assert 2 <= killed_at < 6
    done = run(torchrun(2, *job(tiny_folder, tmp_path, "killed", *common, "--checkpoint", str(ckpt), "--resume")))
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["resumed_from"] == killed_at
    w_ref, w = torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "killed.pt")
    for k in w_ref:
        torch.testing.assert_close(w[k], w_ref[k], rtol=1e-6, atol=1e-7)


def test_elastic_restart_ends_with_the_weights_of_an_uninterrupted_run(tiny_folder, tmp_path):
    """torchrun --max-restarts 1: rank 1 dies in epoch 2 (5 steps an epoch); the restarted group
    resumes from epoch 1's checkpoint and ends with the uninterrupted run's weights, bit for bit."""
    common = ["--data-dir", tiny_folder, "--epochs", "3", "--batch-size", "16", "--lr", "0.05"]
    ref = distributed.launch(2, [*common, "--checkpoint", tmp_path / "ref.pth"], log=lambda _: None)
    lines: list[str] = []
    done = distributed.launch(2, [*common, "--checkpoint", tmp_path / "el.pth", "--resume"],
                              log=lines.append, max_restarts=1,
                              env={distributed.FAULT_ENV: "rank=1,step=7"})
    assert (ref["resumed_from"], done["resumed_from"]) == (0, 1)
    assert "[rank 1] injected fault at step 7" in lines               # the first attempt only
    assert any(line.startswith("torchrun: ") and "exitcode: 3" in line for line in lines)
    assert not any(line.startswith("[rank0]:") for line in lines)       # no worker tracebacks
    assert sum(line.startswith("resumed from") for line in lines) == 1
    w_ref = torch.load(tmp_path / "ref.pth")["state_dict"]
    w = torch.load(tmp_path / "el.pth")["state_dict"]
    assert all(torch.equal(w[k], w_ref[k]) for k in w_ref)


def test_ddp_jobs_end_cleanly_run_after_run():
    """Issue 25: a worker used to abort at exit now and then (``terminate called without an
    active exception``) after a successful run; five jobs in a row must all exit with 0."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "ddp_stress.py"
    done = subprocess.run([sys.executable, str(tool), "--runs", "5"], capture_output=True,
                          text=True, timeout=600)
    assert done.stdout.strip().splitlines()[-1] == "ddp_stress: 5 runs, 0 failed", done.stdout
