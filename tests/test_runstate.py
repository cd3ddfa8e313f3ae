"""The run-state module: atomic save, lock, RNG round trip, resume checks, NaN guard, hooks."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time

import pytest
import torch

from cifar_helpers import runstate
from cifar_helpers.runstate import CheckpointError, NonFiniteLossError

FULL_DISK = "no space left on device; the previous checkpoint is kept. Free space or choose " \
            "another path."


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["torch-inline_container", "ENOSPC"])
def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, error):
    path = runstate.save_atomic({"epoch": 1}, tmp_path / "c.pth")
    before = path.read_bytes()

    def full(obj, f):
        f.write(b"partial")
        raise error
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError) as err:
        runstate.save_atomic({"epoch": 2}, path)
    assert str(err.value) == f"could not write {path}: {FULL_DISK}"
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]   # no tmp file


def test_other_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def bug(obj, f):
        raise RuntimeError("Can't pickle local object")
    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match="pickle"):
        runstate.save_atomic({}, tmp_path / "c.pth")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_finds_a_path_under_a_file_or_a_folder_path(tmp_path):
    (tmp_path / "somefile.txt").write_text("")
    with pytest.raises(CheckpointError, match=r"somefile.txt/deeper/net.pth: .*somefile.txt is a file, "
                                              r"not a folder; choose another path"):
        runstate.check_writable(tmp_path / "somefile.txt" / "deeper" / "net.pth")
    with pytest.raises(CheckpointError, match="it is a folder; give a file name"):
        runstate.check_writable(tmp_path)
    runstate.check_writable(tmp_path / "new" / "folders" / "net.pth")   # can be made: fine
    assert not (tmp_path / "new").exists()                              # and nothing made yet


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    path = tmp_path / "c.pth"
    lock = tmp_path / "c.pth.lock"
    with runstate.checkpoint_lock(path):
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(CheckpointError, match=rf"c.pth is being written by another run "
                                                  rf"\(pid {os.getpid()}\)"):
            with runstate.checkpoint_lock(path):
                pass
        assert lock.exists()                    # the refused attempt left the holder's lock alone
    assert not lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")            # a run killed while holding the lock
    with runstate.checkpoint_lock(path):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists() and list(tmp_path.iterdir()) == []


def test_rng_round_trip_through_a_file(tmp_path):
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(1)
    random.seed(1)
    runstate.save_atomic(runstate.capture_rng(generator), tmp_path / "rng.pth")

    def draw():
        return (torch.rand(3).tolist(), random.random(),
                torch.randperm(10, generator=generator).tolist())
    first = draw()
    draw()
    runstate.restore_rng(runstate.read_state(tmp_path / "rng.pth"), generator)
    assert draw() == first


def test_check_finite(tmp_path):
    runstate.check_finite(torch.tensor(2.5), 0, 0)
    with pytest.raises(NonFiniteLossError, match=r"^loss is nan at epoch 2, step 4: training "
                                                 r"diverged. Try a lower learning rate \(lr\).$"):
        runstate.check_finite(float("nan"), 1, 3, checkpoint=tmp_path / "none.pth")
    (tmp_path / "c.pth").write_bytes(b"")
    with pytest.raises(NonFiniteLossError, match=r"loss is inf .* The last good checkpoint "
                                                 r"\(after epoch 1\) is kept at .*c.pth"):
        runstate.check_finite(torch.tensor(float("inf")), 1, 3, checkpoint=tmp_path / "c.pth")


def test_num_threads_restores_even_after_an_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with pytest.raises(KeyError):
        with runstate.num_threads(other):
            assert torch.get_num_threads() == other
            raise KeyError("x")
    assert torch.get_num_threads() == before
    with runstate.num_threads(None):
        assert torch.get_num_threads() == before


def test_load_for_resume(tmp_path):
    assert runstate.load_for_resume(tmp_path / "none.pth", {"lr": 0.1}) is None
    path = runstate.save_atomic({"optimizer": {}, "run": {"lr": 0.1, "seed": 0}}, tmp_path / "c.pth")
    assert runstate.load_for_resume(path, {"lr": 0.1, "seed": 0})["run"]["lr"] == 0.1
    with pytest.raises(CheckpointError, match=r"cannot resume .*c.pth with other settings "
                                              r"\(seed: 0 in the checkpoint, 1 now\)"):
        runstate.load_for_resume(path, {"lr": 0.1, "seed": 1})
    weights = runstate.save_atomic({"state_dict": {}}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="holds only model weights"):
        runstate.load_for_resume(weights, {})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        runstate.load_for_resume(path, {"lr": 0.1, "seed": 0})


def test_step_hook_delay_and_fault(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setenv(runstate.DELAY_ENV, "0.05")
    start = time.perf_counter()
    runstate.step_hook(1)
    assert time.perf_counter() - start >= 0.05
    monkeypatch.delenv(runstate.DELAY_ENV)
    monkeypatch.setenv(runstate.FAULT_ENV, "rank=1,step=3")
    runstate.step_hook(3, rank=0)
    runstate.step_hook(2, rank=1)
    assert exits == []
    runstate.step_hook(3, rank=1)
    assert exits == [3]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")    # the restarted job is not killed
    runstate.step_hook(3, rank=1)
    assert exits == [3]
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    monkeypatch.setenv(runstate.FAULT_ENV, "step 3")
    with pytest.raises(ValueError, match="must be 'rank=R,step=S'"):
        runstate.step_hook(3)
