"""The training loop — the seed's loop plus a progress bar, a loss history, per-epoch checkpoints
that resume exactly, and guards — and ``python -m cifar_helpers.train``, notebook 03 as a script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from .checkpoint import normalization_entry, save_model
from .data import CIFAR10_CLASSES
# NonFiniteLossError lives in runstate; tests and notebooks import it from here too
from .runstate import (CheckpointError, NonFiniteLossError, capture_rng, check_finite,  # noqa: F401
                       check_writable, checkpoint_lock, load_for_resume, loader_state, num_threads,
                       restore_loader, restore_rng, step_hook)


PROGRESS_ENV = "CIFAR_HELPERS_PROGRESS"   # "0": no progress bars (run_all sets it for stored runs)


def progress_bar(iterable: Iterable, total: int | None = None, desc: str | None = None,
                 enabled: bool = True) -> Iterable:
    """A tqdm bar on stderr while a person watches; the bare iterable when ``enabled`` is False
    or ``$CIFAR_HELPERS_PROGRESS`` is ``0`` (papermill runs whose outputs are stored)."""
    if not enabled or os.environ.get(PROGRESS_ENV) == "0":
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, mininterval=2.0)


def default_print_every(num_batches: int) -> int:
    """The seed prints every 2000 mini-batches; shorter epochs print about 4 times.

    ``min(2000, max(1, num_batches // 4))``; notebook 03 takes ``print_every`` as a parameter.
    """
    return min(2000, max(1, num_batches // 4))


def loader_normalization(loader) -> dict | None:
    """The ``normalization`` checkpoint entry of the batches ``loader`` gives: a ``TensorLoader``'s
    mean and std, or the ``Normalize`` in a ``DataLoader``'s dataset transform; None if neither."""
    def values(t) -> list[float]:    # float32: shortest decimals (0.4914, not 0.49140000343)
        return [float(str(v)) for v in torch.as_tensor(t).flatten().cpu().numpy()]

    if hasattr(loader, "mean") and hasattr(loader, "std"):
        return normalization_entry(values(loader.mean), values(loader.std))
    dataset = getattr(loader, "dataset", None)
    while hasattr(dataset, "dataset") and not hasattr(dataset, "transform"):
        dataset = dataset.dataset                 # a Subset: its underlying data set
    transform = getattr(dataset, "transform", None)
    for step in getattr(transform, "transforms", [transform]):
        if hasattr(step, "mean") and hasattr(step, "std"):
            return normalization_entry(step.mean, step.std)
    return None


def new_history() -> dict:
    """An empty loss history: every step's loss, and the printed ``(epoch, step, value)`` lines."""
    return {"step_loss": [], "running_loss": []}


def resume_or_start(checkpoint: str | Path | None, net: nn.Module, optimizer, trainloader,
                    run: dict | None = None, resume: bool = True, *, scheduler=None
                    ) -> tuple[int, dict]:
    """``(epochs already done, loss history)`` for a training loop about to start.

    With ``resume`` and a checkpoint file written by :func:`save_training_state`, restore from it
    the weights, the optimizer (its momentum), the scheduler, every random generator and the
    loader's position, so that the loop continues exactly where the file ends; refuse a file of
    another model or of other ``run`` settings. Otherwise (``resume`` False, or no file yet):
    ``(0, new_history())``.
    """
    if not resume or checkpoint is None:
        return 0, new_history()
    state = load_for_resume(checkpoint, dict(run or {}))
    if state is None:
        print(f"no checkpoint at {checkpoint} yet: starting at epoch 1")
        return 0, new_history()
    if state.get("model") != type(net).__name__ or state.get("config") != net.config():
        raise CheckpointError(f"{checkpoint} holds a {state.get('model')}{state.get('config')}, "
                              f"not the {type(net).__name__}{net.config()} being trained; use "
                              f"another checkpoint path or resume=False.")
    net.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    restore_loader(trainloader, state.get("loader", {}), state["epoch"])
    print(f"resumed from {checkpoint} after epoch {state['epoch']}")
    history = state["history"]
    return state["epoch"], {"step_loss": list(history["step_loss"]),
                            "running_loss": [tuple(r) for r in history["running_loss"]]}


def save_training_state(checkpoint: str | Path, net: nn.Module, optimizer, trainloader,
                        epochs_done: int, history: dict, run: dict | None = None, *,
                        classes: Sequence[str] | None = None, scheduler=None) -> None:
    """Write everything :func:`resume_or_start` needs to ``checkpoint``, atomically: weights,
    model name and config, classes, optimizer and scheduler state, random generators, the
    loader's position, ``epochs_done``, the loss history and the ``run`` settings."""
    save_model(checkpoint, net, classes or CIFAR10_CLASSES, epoch=epochs_done, run=dict(run or {}),
               optimizer=optimizer.state_dict(),
               scheduler=scheduler.state_dict() if scheduler is not None else None,
               rng=capture_rng(), loader=loader_state(trainloader),
               normalization=loader_normalization(trainloader),
               history={"step_loss": list(history["step_loss"]),
                        "running_loss": list(history["running_loss"])})


def train(net: nn.Module, trainloader: Iterable, criterion: nn.Module,
          optimizer: torch.optim.Optimizer, epochs: int, device: torch.device | str = "cpu",
          *, print_every: int | None = None, progress: bool = True, scheduler=None,
          checkpoint: str | Path | None = None, resume: bool = False,
          classes: Sequence[str] | None = None, run: dict | None = None) -> dict:
    """Train ``net`` for ``epochs`` epochs, printing the seed's running-loss lines.

    The loop of notebook 03 (its twin; ``tests/test_lesson_03.py`` checks they agree). With
    ``checkpoint``, the whole training state is written atomically after every epoch; with
    ``resume`` too, training continues exactly where that file ends. ``run`` holds the settings a
    resumed run must share (lr, batch size, seed, ...). Returns ``{"step_loss": [...],
    "running_loss": [(epoch, step, value), ...], "resumed_from": epochs already done}``.
    """
    device = torch.device(device)
    print_every = print_every or default_print_every(len(trainloader))
    if checkpoint is not None:
        check_writable(checkpoint)                # a bad path fails now, not after an epoch
    start_epoch, history = resume_or_start(checkpoint, net, optimizer, trainloader, run, resume,
                                           scheduler=scheduler)
    net.train()
    for epoch in range(start_epoch, epochs):
        running_loss = 0.0
        bar = progress_bar(trainloader, len(trainloader), f"epoch {epoch + 1}/{epochs}", progress)
        for i, (inputs, labels) in enumerate(bar):
            inputs = inputs.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()

            check_finite(loss, epoch, i, checkpoint=checkpoint)
            history["step_loss"].append(loss.item())
            running_loss += loss.item()
            if i % print_every == print_every - 1:
                line = f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / print_every:.3f}"
                tqdm.write(line) if isinstance(bar, tqdm) else print(line)
                history["running_loss"].append((epoch + 1, i + 1, running_loss / print_every))
                running_loss = 0.0
            step_hook(epoch * len(trainloader) + i + 1)     # test hook; a no-op unless set
        if isinstance(bar, tqdm):
            bar.close()
        if checkpoint is not None:
            save_training_state(checkpoint, net, optimizer, trainloader, epoch + 1, history, run,
                                classes=classes, scheduler=scheduler)
    history["resumed_from"] = start_epoch
    return history


def main(argv: Sequence[str] | None = None) -> dict:
    """Notebook 03 as a script: train ``Net`` with the classic recipe, checkpoint, evaluate."""
    from . import data
    from .devices import cpu_threads, get_device
    from .evaluate import accuracy, predict
    from .models import Net
    from .params import add_arguments, make_params

    p = argparse.ArgumentParser(prog="python -m cifar_helpers.train", description=main.__doc__)
    add_arguments(p, "data_dir")
    p.add_argument("--download", action="store_true")
    add_arguments(p, "epochs", "batch_size", "lr", "momentum", "seed", "device", "train_size",
                  "test_size", "checkpoint")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    params = make_params(data_dir=a.data_dir, download=a.download, epochs=a.epochs,
                         batch_size=a.batch_size, lr=a.lr, momentum=a.momentum, seed=a.seed,
                         device=a.device, train_size=a.train_size, test_size=a.test_size,
                         checkpoint=a.checkpoint)
    device = get_device(params.device)
    if params.checkpoint:
        check_writable(params.checkpoint)         # a bad path fails now, not after an epoch
    lock = checkpoint_lock(params.checkpoint) if params.checkpoint else contextlib.nullcontext()
    with lock, num_threads(cpu_threads(params.batch_size)):
        torch.manual_seed(params.seed)
        trainloader, testloader = data.make_loaders(
            params.data_dir, params.batch_size, seed=params.seed, train_size=params.train_size,
            test_size=params.test_size, download=params.download)
        net = Net().to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=params.lr, momentum=params.momentum)
        run = run_settings(params, len(trainloader.dataset))
        start = time.perf_counter()
        history = train(net, trainloader, nn.CrossEntropyLoss(), optimizer, params.epochs, device,
                        progress=not a.no_progress, checkpoint=params.checkpoint,
                        resume=a.resume, classes=data.CIFAR10_CLASSES, run=run)
        seconds = time.perf_counter() - start
        test_accuracy = accuracy(*predict(net, testloader, device))
    result = {"test_accuracy": test_accuracy, "epochs": params.epochs,
              "resumed_from": history["resumed_from"], "train_seconds": round(seconds, 2),
              "checkpoint": str(Path(params.checkpoint).resolve()) if params.checkpoint else None}
    print(json.dumps(result))
    return result


def run_settings(params, train_images: int) -> dict:
    """The settings a resumed run must share with the run that wrote the checkpoint."""
    return {"batch_size": params.batch_size, "lr": params.lr, "momentum": params.momentum,
            "seed": params.seed, "train_images": train_images, "fast_data": params.fast_data}


if __name__ == "__main__":
    from .data import DataError
    from .devices import DeviceError
    try:
        main()
    except (ValueError, DataError, DeviceError, NonFiniteLossError) as err:
        print(f"cifar_helpers.train: {err}", file=sys.stderr)
        sys.exit(2)
