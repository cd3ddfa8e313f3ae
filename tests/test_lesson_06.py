"""Notebook 06's cells against the package: the training step, the device mistakes, the H200 log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from cifar_helpers import benchlog, speed, train
from cifar_helpers.models import Net
from notebook_code import NOTEBOOKS, run_cell

STEM = "06_gpu"


def tiny_batch(n: int = 4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def lesson_namespace(**extra) -> dict:
    return {"torch": torch, "nn": nn, "Net": Net, "device": torch.device("cpu"), **extra}


def test_the_training_step_is_the_package_loops_step(capsys):
    """twin-train-step: one step of the cell = one step of cifar_helpers.train.train."""
    batch = tiny_batch()
    torch.manual_seed(0)
    ns = run_cell(STEM, "twin-train-step", lesson_namespace(trainloader=[batch]))
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    train.train(net, [batch], nn.CrossEntropyLoss(), optimizer, 1, "cpu", progress=False)
    mine, theirs = ns["net"].state_dict(), net.state_dict()
    assert list(mine) == list(theirs)
    for k in theirs:
        assert torch.equal(mine[k], theirs[k]), k
    assert ns["optimizer"].state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    assert "parameters on: cpu | inputs on: cpu" in capsys.readouterr().out


def test_a_model_rebuilt_after_its_optimizer_does_not_train():
    inputs, labels = tiny_batch()
    ns = run_cell(STEM, "optimizer-order", lesson_namespace(inputs=inputs, labels=labels,
                                                            criterion=nn.CrossEntropyLoss()))
    assert ns["wrong_order"] is False and ns["right_order"] is True
    # the right-order model is what the notebook keeps, with its own optimizer
    assert ns["optimizer"].param_groups[0]["params"][0] is ns["net"].conv1.weight


def test_the_device_mistakes_raise_real_errors_without_a_gpu(capsys):
    inputs, labels = tiny_batch()
    run_cell(STEM, "device-mistakes", lesson_namespace(
        accelerator=False, net=Net(), inputs=inputs, labels=labels, criterion=nn.CrossEntropyLoss()))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("RuntimeError:" in line and "device" in line for line in lines)
    assert lines[0].startswith("model on meta, inputs on cpu")
    assert lines[1].startswith("outputs on meta, labels on cpu")


def logged_rows(log: Path, heading: str) -> list[dict]:
    """The JSON line right after ``heading`` in the log, read without the package."""
    lines = log.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    return json.loads(next(line for line in lines[start:] if line.startswith("{")))["rows"]


def test_the_h200_table_is_read_from_the_committed_log(monkeypatch, capsys):
    monkeypatch.chdir(NOTEBOOKS)                  # the cell names the log relative to notebooks/
    ns = run_cell(STEM, "h200-log", {"os": os, "benchlog": benchlog, "speed": speed})
    rows = logged_rows(NOTEBOOKS.parent / "benchmarks" / "2026-11-27_h200_gpu_check.log",
                       "## 3. seconds per epoch")
    names = {"cpu": "16-core CPU", "cuda": "H200"}
    assert ns["h200"] == {(r["net"], r["batch_size"], names[r["device"]]): r["seconds_per_epoch"]
                          for r in rows}
    out = capsys.readouterr().out
    assert "15.9x" in out and "12,500 steps" in out


def test_benchlog_says_what_is_missing(tmp_path):
    import pytest
    log = tmp_path / "x.log"
    log.write_text('# header\n## 1. first\n{"a": 1}\ntext\n{"a": 2}\n## 2. empty\nno json\n', encoding="utf-8")
    assert benchlog.json_lines(log, "## 1.") == [{"a": 1}, {"a": 2}]
    with pytest.raises(benchlog.LogError, match="has no JSON line"):
        benchlog.json_lines(log, "## 2.")
    with pytest.raises(benchlog.LogError, match=r"0 sections start with '## 3\.'.*## 1\. first"):
        benchlog.json_lines(log, "## 3.")
    with pytest.raises(benchlog.LogError, match="missing.log not found"):
        benchlog.json_lines(tmp_path / "missing.log", "## 1.")
