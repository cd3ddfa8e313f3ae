"""A real full disk: a small tmpfs, filled up, under the data cache and under a checkpoint."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_helpers import data, runstate
from conftest import copy_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for this test (needs root, as CI runs), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(disk: Path) -> None:
    """Write zeros to ``disk`` until it is full."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(64 * 1024))
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_full_disk_under_the_data_cache_keeps_the_data_in_memory(small_disk, tiny_folder,
                                                                 monkeypatch, capsys):
    root = copy_folder(tiny_folder, small_disk / "cifar")   # the cache goes beside it
    monkeypatch.delenv("CIFAR_HELPERS_CACHE")
    cache = data.cache_path(root, train=True)
    assert cache.is_relative_to(small_disk)
    fill(small_disk)
    trainloader, testloader = data.make_loaders(root, 8, train_size=40)
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 2                  # one line for each split
    for line, split in zip(err.splitlines(), ("train", "test")):
        assert line == ("cifar_helpers.data: the decoded images stay in memory only, not cached: "
                        f"could not write {data.cache_path(root, split == 'train')}: no space "
                        f"left on device; nothing was saved. Free space or choose another path. "
                        "(CIFAR_HELPERS_CACHE=<folder> puts the cache elsewhere)")
    assert not cache.exists() and not list(cache.parent.glob(".*.tmp"))
    reference = data.make_loader(root, False, 8, fast=False)  # torchvision's decoding
    assert all(torch.equal(a, b) and torch.equal(y, z)
               for (a, y), (b, z) in zip(testloader, reference, strict=True))
    assert len(trainloader.dataset) == 40 and sum(len(y) for _, y in trainloader) == 40


@pytest.mark.slow
def test_full_disk_under_a_checkpoint_stops_the_cli_and_keeps_the_last_one(small_disk, tiny_folder,
                                                                          tmp_path):
    checkpoint = small_disk / "net.pth"
    env = {**os.environ, "CIFAR_HELPERS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
           runstate.DELAY_ENV: "0.1"}                          # 2 s per epoch of 20 steps
    proc = subprocess.Popen([sys.executable, "-m", "cifar_helpers.train", "--data-dir",
                             str(tiny_folder), "--epochs", "3", "--checkpoint", str(checkpoint),
                             "--no-progress"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not checkpoint.exists() and proc.poll() is None:   # written after epoch 1
            time.sleep(0.05)
        fill(small_disk)                                       # epoch 2's save finds no space
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    assert err == (f"cifar_helpers.train: could not write {checkpoint}: no space left on device; "
                   f"the previous checkpoint is kept. Free space or choose another path.\n")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "net.pth"]  # no tmp, no lock
    state = runstate.read_state(checkpoint)
    assert state["epoch"] == 1                                 # the one before the full disk
