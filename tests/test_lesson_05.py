"""Notebook 05's lesson code against its package twins: the cells tagged ``twin-*`` in
``notebooks/05_speed.ipynb`` run on tiny generated tensors and must equal ``cifar_helpers``."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn
import torch.optim as optim

from cifar_helpers import data, speed
from cifar_helpers.devices import supports_bf16
from cifar_helpers.evaluate import accuracy, predict
from cifar_helpers.models import Net
from notebook_code import cell_source, run_cell

STEM = "05_speed"


def tiny_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("stats", [(data.MEAN, data.STD), (data.CIFAR10_MEAN, data.CIFAR10_STD)],
                         ids=["seed-stats", "real-stats"])
def test_in_memory_batches_are_the_tensorloaders(stats):
    images, labels = tiny_images(37, 0)          # 37 images: the last batch of 8 is partial
    batches = run_cell(STEM, "twin-batches", {"torch": torch})["in_memory_batches"]
    for seed in (0, 3):
        loader = data.TensorLoader(images, labels, 8, shuffle=True, seed=seed, mean=stats[0], std=stats[1])
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            ours = list(batches(images, labels, 8, *stats, seed=seed, epoch=epoch))
            theirs = list(loader)
            assert len(ours) == len(theirs) == 5
            for (x, y), (u, v) in zip(ours, theirs):
                assert torch.equal(x, u) and torch.equal(y, v)


def test_lr_factor_is_the_packages_over_all_steps():
    lr_factor = run_cell(STEM, "twin-lr-factor", {})["lr_factor"]
    for total in (1, 2, 7, 10, 391, 547, 1000):
        ours = [lr_factor(s, total) for s in range(total)]
        assert ours == [speed.lr_factor(s, total, speed.FAST.warmup, speed.FAST.decay)
                        for s in range(total)], total
    assert lr_factor(0, 100, warmup=0.0) == speed.lr_factor(0, 100, 0.0, True) == 1.0


def test_scaled_lr_is_the_packages(capsys):
    ns = run_cell(STEM, "twin-scaled-lr", {"train_labels": torch.zeros(50_000)})
    assert (ns["base_batch"], ns["base_lr"]) == (speed.SEED.batch_size, speed.SEED.lr)
    assert ns["lr"] == speed.scaled_lr(ns["base_lr"], ns["base_batch"], ns["batch_size"])
    assert ns["lr"] == pytest.approx(0.032)
    assert "12,500 steps per epoch" in capsys.readouterr().out


def fast_loop(source: str, monkeypatch, train, test, seed: int = 0) -> tuple[dict, dict]:
    """Run ``source`` (the notebook's fast loop) and ``speed.run(speed.FAST)`` on the same tensors,
    both on one thread; return (the cell's namespace, the package's result)."""
    splits = {True: train, False: test}
    monkeypatch.setattr(data, "load_tensors", lambda d, train=True, **kw: splits[train])
    monkeypatch.setattr(speed, "cpu_threads", lambda batch_size: 1)
    ns = {"torch": torch, "nn": nn, "optim": optim, "time": time, "data": data, "Net": Net,
          "accuracy": accuracy, "predict": predict, "supports_bf16": supports_bf16,
          "cpu_threads": lambda batch_size: 1, "seed": seed,
          "train_u8": train[0], "train_labels": train[1], "test_u8": test[0], "test_labels": test[1]}
    run_cell(STEM, "twin-lr-factor", ns)
    threads = torch.get_num_threads()
    try:
        exec(compile(source, f"{STEM}[twin-fast-loop]", "exec"), ns)
        res = speed.run(speed.FAST, "unused", seed=seed, return_net=True)
    finally:
        torch.set_num_threads(threads)
    return ns, res


def test_fast_loop_trains_the_same_weights_as_speed_fast(monkeypatch, capsys):
    train, test = tiny_images(640, 1), tiny_images(100, 2)   # 5 batches of 128: 7 steps in 1.4 epochs
    ns, res = fast_loop(cell_source(STEM, "twin-fast-loop"), monkeypatch, train, test, seed=2)
    assert ns["total"] == 7 and res["train_images"] == 7 * 128
    assert ns["loop_threads"] == res["threads"] == 1
    ours, theirs = ns["net"].state_dict(), res["net"].state_dict()
    assert list(ours) == list(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert ns["loop_accuracy"] == res["test_accuracy"]
    assert "steps: 7," in capsys.readouterr().out


@pytest.mark.parametrize("change", [("momentum=0.95", "momentum=0.9"), ("1.4 *", "1.5 *"),
                                    ("CIFAR10_MEAN, std=data.CIFAR10_STD)  # in memory",
                                     "MEAN, std=data.STD)  # in memory")],
                         ids=["momentum", "epochs", "normalization"])
def test_fast_loop_check_sees_a_changed_recipe(monkeypatch, change):
    source = cell_source(STEM, "twin-fast-loop")
    assert change[0] in source
    train, test = tiny_images(640, 1), tiny_images(100, 2)
    ns, res = fast_loop(source.replace(change[0], change[1]), monkeypatch, train, test)
    ours, theirs = ns["net"].state_dict(), res["net"].state_dict()
    assert not all(torch.equal(ours[k], theirs[k]) for k in ours)
