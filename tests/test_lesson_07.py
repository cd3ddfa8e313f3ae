"""Notebook 07's DDP script, launched by torchrun, against plain single-process training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from notebook_code import cell_source

pytestmark = pytest.mark.slow

SETTINGS = {"train_size": 80, "epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9,
            "seed": 0, "device": "cpu"}


def script_text(remove: str | None = None) -> str:
    """The ``%%writefile`` cell's script (optionally without the line containing ``remove``)."""
    magic, *lines = cell_source("07_multi_gpu", "twin-ddp-script").splitlines()
    assert magic == "%%writefile runs/ddp_minimal.py"
    if remove is not None:
        assert sum(remove in line for line in lines) == 1
        lines = [line for line in lines if remove not in line]
    return "\n".join(lines) + "\n"


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *cmd], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "Warning" not in out + err           # the notebook stores these outputs: no warnings
    return out


def torchrun(nproc: int, script: Path, data_dir: Path, save: Path, cwd: Path) -> subprocess.Popen:
    settings = json.dumps({**SETTINGS, "data_dir": str(data_dir), "save": str(save)})
    return start(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                  str(script), settings], cwd)


def first_images(out: str) -> list[str]:
    return re.findall(r"rank 0 first images (\[[^\]]*\])", out)


def test_the_script_has_the_ddp_core():
    text = script_text()
    for piece in ["dist.init_process_group(", "DistributedSampler(", "sampler.set_epoch(epoch)",
                  "DDP(", "dist.all_reduce(", "if rank == 0", "dist.destroy_process_group()",
                  "from cifar_helpers.models import Net"]:
        assert piece in text, piece


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_in_this_process(script: Path, settings: dict, monkeypatch) -> None:
    """The script as a world of one process, without torchrun (saves starting Python again)."""
    import runpy
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", [str(script), json.dumps(settings)])
    monkeypatch.setattr(os, "_exit", lambda code: None)   # the script's last line ends a worker
    runpy.run_path(str(script), run_name="__main__")


def test_one_and_two_processes_train_like_one_plain_process(tiny_folder, tmp_path, capsys,
                                                            monkeypatch):
    """1 and 2 torchrun processes of the notebook's script end with the weights of plain
    single-process training (cifar_helpers.distributed without torchrun), same global batch."""
    from cifar_helpers import distributed
    script, unshuffled = tmp_path / "ddp_minimal.py", tmp_path / "no_set_epoch.py"
    script.write_text(script_text(), encoding="utf-8")
    unshuffled.write_text(script_text(remove="sampler.set_epoch(epoch)"), encoding="utf-8")
    runs = {n: torchrun(n, script, tiny_folder, tmp_path / f"w{n}.pt", tmp_path) for n in (1, 2)}
    s = SETTINGS                                    # meanwhile, the reference in this process
    distributed.main(["--data-dir", str(tiny_folder), "--epochs", str(s["epochs"]),
                      "--batch-size", str(s["batch_size"]), "--lr", str(s["lr"]),
                      "--momentum", str(s["momentum"]), "--seed", str(s["seed"]),
                      "--train-size", str(s["train_size"]), "--device", "cpu",
                      "--save-weights", str(tmp_path / "ref.pt")])
    ref_out = capsys.readouterr().out
    run_in_this_process(unshuffled, {**s, "data_dir": str(tiny_folder),
                                     "save": str(tmp_path / "same.pt")}, monkeypatch)
    same_order = capsys.readouterr().out
    outs = {n: finish(p) for n, p in runs.items()}

    ref = torch.load(tmp_path / "ref.pt")
    for n in (1, 2):
        weights = torch.load(tmp_path / f"w{n}.pt")
        assert list(weights) == list(ref)
        for k in ref:
            torch.testing.assert_close(weights[k], ref[k], rtol=0, atol=1e-6)
    results = {n: json.loads(outs[n].strip().splitlines()[-1]) for n in (1, 2)}
    assert [results[n]["processes"] for n in (1, 2)] == [1, 2]
    assert abs(results[1]["train_loss"] - results[2]["train_loss"]) < 1e-6
    ref_loss = float(re.findall(r"epoch 2: mean training loss ([0-9.]+)", ref_out)[0])
    assert abs(results[1]["train_loss"] - ref_loss) < 1e-4          # the package prints 4 digits
    for n in (1, 2):                                                # rank 0 alone prints
        assert outs[n].count("epoch 1:") == 1 and outs[n].count('"processes"') == 1
    # set_epoch gives every epoch its own order; without it both epochs start alike
    shuffled, same = first_images(outs[1]), first_images(same_order)
    assert len(shuffled) == len(same) == 2
    assert shuffled[0] != shuffled[1] and same[0] == same[1] == shuffled[0]


ELASTIC_CELLS = ("twin-elastic-ref", "twin-elastic-restart", "twin-elastic-compare")


def test_the_elastic_cells_restart_a_killed_group_and_end_with_the_same_weights(
        tiny_folder, tmp_path, monkeypatch, capsys):
    """Section 4's cells on tiny data: torchrun --max-restarts 1 restarts the group after rank 1
    is killed in epoch 2, and the weights equal those of the uninterrupted run."""
    from cifar_helpers import distributed
    from notebook_code import run_cell
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "ddp_elastic.pth").write_bytes(b"an earlier run's file")  # removed
    ns = {"os": os, "torch": torch, "distributed": distributed, "data_dir": str(tiny_folder),
          "train_size": 80, "seed": 0, "nproc": 2, "run_device": "cpu"}
    for tag in ELASTIC_CELLS:
        run_cell("07_multi_gpu", tag, ns)
    out = capsys.readouterr().out
    assert f"[rank 1] injected fault at step {ns['crash_step']}" in out
    assert "resumed after epoch 1" in out and "same weights: True" in out
    assert ns["same_weights"] and ns["restarted"]["resumed_from"] == 1
