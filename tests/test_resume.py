"""Trustworthy runs: exact resume after SIGKILL, reproducibility, guards, clear errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

from cifar_helpers import data
from cifar_helpers.checkpoint import CheckpointError, read_checkpoint, save_model
from cifar_helpers.models import Net
from cifar_helpers.train import NonFiniteLossError, train

EPOCHS = 6   # tiny data: 80 images, batch 4 -> 20 steps an epoch


def cli(tiny_folder, ckpt, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cifar_helpers.train", "--data-dir", str(tiny_folder), "--epochs",
            str(EPOCHS), "--batch-size", "4", "--lr", "0.01", "--checkpoint", str(ckpt),
            "--no-progress", *extra]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def weights(path) -> dict:
    return read_checkpoint(path)["state_dict"]


def _wait_for_epoch(path, epoch: int, proc, timeout: float = 60) -> None:
    """Poll the (atomically replaced) checkpoint until it holds ``epoch`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if epoch == 0 or read_checkpoint(path)["epoch"] >= epoch:
                return
        except CheckpointError:
            pass                                                 # not written yet
        time.sleep(0.005)
    raise AssertionError(f"training never reached epoch {epoch}")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(tiny_folder, tmp_path):
    delay = 0.01                                                 # seconds a step: 0.2 s an epoch
    env = {**os.environ, "CIFAR_HELPERS_STEP_DELAY": str(delay)}
    ref = subprocess.run(cli(tiny_folder, tmp_path / "ref.pth"), capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr
    reference = last_json(ref.stdout)
    rng = random.Random(0)
    for k, after_epoch in enumerate([1, 2, 3, 4]):               # kill inside epochs 2, 3, 4, 5
        ckpt = tmp_path / f"killed{k}.pth"
        proc = subprocess.Popen(cli(tiny_folder, ckpt), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        _wait_for_epoch(ckpt, after_epoch, proc)
        time.sleep(rng.uniform(0, 20 * delay))                   # a random moment of the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        killed_at = read_checkpoint(ckpt)["epoch"]               # never a half-written file
        done = subprocess.run(cli(tiny_folder, ckpt, "--resume"), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        result = last_json(done.stdout)
        assert result["resumed_from"] == killed_at and 0 < killed_at < EPOCHS
        for name, tensor in weights(tmp_path / "ref.pth").items():
            assert torch.equal(weights(ckpt)[name], tensor), f"kill {k}: {name} differs"
        assert result["test_accuracy"] == reference["test_accuracy"]
        assert read_checkpoint(ckpt)["history"] == read_checkpoint(tmp_path / "ref.pth")["history"]
        assert read_checkpoint(ckpt)["optimizer"]["state"].keys() == read_checkpoint(tmp_path / "ref.pth")["optimizer"]["state"].keys()


def _fresh(seed=0, lr=0.01):
    torch.manual_seed(seed)
    net = Net()
    return net, torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)


def _loader(tiny_folder, fast=True):
    return data.make_loader(tiny_folder, True, 4, seed=0, fast=fast)


@pytest.mark.parametrize("fast", [True, False], ids=["tensor-loader", "dataloader"])
def test_resume_in_process_matches_for_both_loaders(tiny_folder, tmp_path, fast):
    net, opt = _fresh()
    full = train(net, _loader(tiny_folder, fast), nn.CrossEntropyLoss(), opt, 3, progress=False)
    net2, opt2 = _fresh()
    train(net2, _loader(tiny_folder, fast), nn.CrossEntropyLoss(), opt2, 1, progress=False,
          checkpoint=tmp_path / "c.pth")
    torch.manual_seed(123)                 # a new process would start with other RNG states
    net3, opt3 = _fresh(seed=5)
    part = train(net3, _loader(tiny_folder, fast), nn.CrossEntropyLoss(), opt3, 3, progress=False,
                 checkpoint=tmp_path / "c.pth", resume=True)
    assert part["resumed_from"] == 1 and part["step_loss"] == full["step_loss"]
    for a, b in zip(net.state_dict().values(), net3.state_dict().values()):
        assert torch.equal(a, b)


def test_same_seed_same_result(tiny_folder):
    runs = []
    for _ in range(2):
        net, opt = _fresh()
        runs.append((train(net, _loader(tiny_folder), nn.CrossEntropyLoss(), opt, 2, progress=False), net))
    assert runs[0][0]["step_loss"] == runs[1][0]["step_loss"]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].state_dict().values(), runs[1][1].state_dict().values()))


def test_resume_refuses_other_settings_or_files(tiny_folder, tmp_path):
    net, opt = _fresh()
    train(net, _loader(tiny_folder), nn.CrossEntropyLoss(), opt, 1, progress=False,
          checkpoint=tmp_path / "c.pth", run={"lr": 0.01, "batch_size": 4})
    net, opt = _fresh()
    with pytest.raises(CheckpointError, match=r"other settings \(lr: 0.01 in the checkpoint, 0.1 now\)"):
        train(net, _loader(tiny_folder), nn.CrossEntropyLoss(), opt, 2, progress=False,
              checkpoint=tmp_path / "c.pth", resume=True, run={"lr": 0.1, "batch_size": 4})
    wide = Net(8, 16)
    with pytest.raises(CheckpointError, match="not the Net"):
        train(wide, _loader(tiny_folder), nn.CrossEntropyLoss(), torch.optim.SGD(wide.parameters(), lr=0.1),
              2, progress=False, checkpoint=tmp_path / "c.pth", resume=True, run={"lr": 0.01, "batch_size": 4})
    save_model(tmp_path / "weights.pth", Net(), data.CIFAR10_CLASSES)
    net, opt = _fresh()
    with pytest.raises(CheckpointError, match="only model weights"):
        train(net, _loader(tiny_folder), nn.CrossEntropyLoss(), opt, 2, progress=False,
              checkpoint=tmp_path / "weights.pth", resume=True)
    (tmp_path / "broken.pth").write_bytes((tmp_path / "c.pth").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(net, _loader(tiny_folder), nn.CrossEntropyLoss(), opt, 2, progress=False,
              checkpoint=tmp_path / "broken.pth", resume=True)


class NaNAfter(nn.Module):
    """Cross-entropy that turns NaN after ``n`` calls: a divergence at a known step."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, outputs, labels):
        self.calls += 1
        loss = nn.functional.cross_entropy(outputs, labels)
        return loss * float("nan") if self.calls > self.n else loss


def test_nan_stops_with_epoch_step_and_keeps_last_good_checkpoint(tiny_folder, tmp_path):
    net, opt = _fresh()
    with pytest.raises(NonFiniteLossError) as err:
        train(net, _loader(tiny_folder), NaNAfter(25), opt, 3, progress=False, checkpoint=tmp_path / "c.pth")
    msg = str(err.value)
    assert "at epoch 2, step 6" in msg and "lower learning rate" in msg
    assert "last good checkpoint (after epoch 1) is kept" in msg
    state = read_checkpoint(tmp_path / "c.pth")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_failed_write_keeps_previous_checkpoint_and_says_so(tiny_folder, tmp_path, monkeypatch):
    loader = _loader(tiny_folder)          # (its cache is written before the disk "fills up")
    real_save, calls = torch.save, []

    def full_disk(obj, f):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save(obj, f)
    monkeypatch.setattr(torch, "save", full_disk)
    net, opt = _fresh()
    with pytest.raises(CheckpointError, match="c.pth: no space left on device; the previous "
                       "checkpoint is kept. Free space or choose another path."):
        train(net, loader, nn.CrossEntropyLoss(), opt, 3, progress=False, checkpoint=tmp_path / "c.pth")
    assert read_checkpoint(tmp_path / "c.pth")["epoch"] == 1
    (tmp_path / "a_file").write_text("")
    with pytest.raises(CheckpointError, match="a_file is a file, not a folder"):
        train(net, loader, nn.CrossEntropyLoss(), opt, 1, progress=False,
              checkpoint=tmp_path / "a_file" / "c.pth")


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "epochs=0 must be at least 1"),
    (["--train-size", "1000"], "asked for 1000 images but the set has only 80"),
    (["--lr", "-1"], "lr=-1.0 must be > 0"),
])
def test_cli_bad_input_is_one_clear_error(tiny_folder, tmp_path, args, message):
    done = subprocess.run(cli(tiny_folder, tmp_path / "c.pth") + args, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "c.pth").exists()


@pytest.mark.slow
def test_cli_refuses_an_unwritable_path_or_a_held_checkpoint_before_training(tiny_folder, tmp_path):
    (tmp_path / "somefile.txt").write_text("")
    bad = subprocess.run(cli(tiny_folder, tmp_path / "somefile.txt" / "net.pth"),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == "", bad.stderr      # no epoch ran
    assert bad.stderr == (f"cifar_helpers.train: cannot write {tmp_path}/somefile.txt/net.pth: "
                          f"{tmp_path}/somefile.txt is a file, not a folder; choose another path.\n")
    ckpt = tmp_path / "c.pth"
    (tmp_path / "c.pth.lock").write_text(f"{os.getpid()}\n")      # this live process holds it
    held = subprocess.run(cli(tiny_folder, ckpt), capture_output=True, text=True)
    assert held.returncode == 2 and held.stdout == "" and not ckpt.exists()
    assert f"{ckpt} is being written by another run (pid {os.getpid()})" in held.stderr
    (tmp_path / "c.pth.lock").unlink()
    done = subprocess.run(cli(tiny_folder, ckpt, "--epochs", "1"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(ckpt)["epoch"] == 1 and not (tmp_path / "c.pth.lock").exists()


def test_cli_resume_from_corrupt_checkpoint(tiny_folder, tmp_path):
    (tmp_path / "c.pth").write_bytes(b"PK\x03\x04 truncated")
    done = subprocess.run(cli(tiny_folder, tmp_path / "c.pth", "--resume"), capture_output=True, text=True)
    assert done.returncode == 2 and "corrupt or truncated" in done.stderr


# The time-to-accuracy recipe and the modern recipe: the same SIGKILL test through their CLIs.
ENTRY_POINTS = {
    # name: (command-line arguments, epochs, per-step delay; tiny data has 80 training images)
    "speed": (["-m", "cifar_helpers.speed", "--recipe", "seed-in-memory", "--epochs", "4"], 4, 0.01),
    "modern": (["-m", "cifar_helpers.modern", "--preset", "demo", "--set", "epochs=5",
                "--set", "batch_size=16", "--set", "widths=(8,16,16)", "--set", "ema_start=1"], 5, 0.04),
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_sigkill_then_resume_is_bit_identical_for_every_recipe(entry, tiny_folder, tmp_path):
    args, epochs, delay = ENTRY_POINTS[entry]

    def command(ckpt, *extra):
        return [sys.executable, *args, "--data-dir", str(tiny_folder), "--checkpoint", str(ckpt), *extra]

    env = {**os.environ, "CIFAR_HELPERS_STEP_DELAY": str(delay)}
    ref = subprocess.run(command(tmp_path / "ref.pth"), capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr
    reference = last_json(ref.stdout)
    rng = random.Random(1)
    for k, after_epoch in enumerate([1, epochs - 2]):              # kill early and late
        ckpt = tmp_path / f"killed{k}.pth"
        proc = subprocess.Popen(command(ckpt), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _wait_for_epoch(ckpt, after_epoch, proc)
        time.sleep(rng.uniform(0, 0.15))                          # a random moment of the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        killed_at = read_checkpoint(ckpt)["epoch"]
        assert 0 < killed_at < epochs
        done = subprocess.run(command(ckpt, "--resume"), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        result = last_json(done.stdout)
        assert result["resumed_from"] == killed_at
        for name, tensor in weights(tmp_path / "ref.pth").items():
            assert torch.equal(weights(ckpt)[name], tensor), f"{entry}, kill {k}: {name} differs"
        key = "test_accuracy" if entry == "speed" else "accuracy"
        assert result[key] == reference[key]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_recipe_cli_refuses_other_settings_and_bad_files(entry, tiny_folder, tmp_path):
    args, _, _ = ENTRY_POINTS[entry]
    base = [sys.executable, *args, "--data-dir", str(tiny_folder)]
    ckpt = tmp_path / "c.pth"
    first = subprocess.run(base + ["--checkpoint", str(ckpt)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    other = subprocess.run(base + ["--checkpoint", str(ckpt), "--resume", "--seed", "1"],
                           capture_output=True, text=True)
    assert other.returncode == 2 and "cannot resume" in other.stderr and "seed: 0 in the checkpoint, 1 now" in other.stderr
    ckpt.write_bytes(ckpt.read_bytes()[:1000])                     # truncated
    broken = subprocess.run(base + ["--checkpoint", str(ckpt), "--resume"], capture_output=True, text=True)
    assert broken.returncode == 2 and "corrupt or truncated" in broken.stderr
    no_file = subprocess.run(base + ["--resume"], capture_output=True, text=True)
    assert no_file.returncode == 2 and "--resume needs --checkpoint" in no_file.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "epochs=0"], "epochs must be in (0, 1000]"),
    (["--preset", "fastest"], "preset='fastest' is unknown"),
    (["--set", "epoch=3"], "unknown preset field(s) ['epoch']"),
    (["--set", "widths=(8,16)"], "widths=(8, 16) must be three whole numbers"),
    (["--device", "cuda:7"], "not available on this machine"),
    (["--val-size", "80"], "val_size=80 must be in [0, 80)"),
])
def test_modern_cli_bad_input_is_one_clear_error(tiny_folder, tmp_path, args, message):
    ckpt = tmp_path / "c.pth"
    done = subprocess.run([sys.executable, "-m", "cifar_helpers.modern", "--data-dir", str(tiny_folder),
                           "--checkpoint", str(ckpt), *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not ckpt.exists()
