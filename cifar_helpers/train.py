"""The training loop: the seed's loop plus a progress bar, a loss history and an epoch hook."""

from __future__ import annotations

import math
import sys
from typing import Callable, Iterable

import torch
import torch.nn as nn
from tqdm import tqdm


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names epoch and step."""


def default_print_every(num_batches: int) -> int:
    """The seed prints every 2000 mini-batches; shorter epochs print about 4 times."""
    return 2000 if num_batches >= 8000 else max(1, num_batches // 4)


def train(net: nn.Module, trainloader: Iterable, criterion: nn.Module,
          optimizer: torch.optim.Optimizer, epochs: int, device: torch.device | str = "cpu",
          *, print_every: int | None = None, progress: bool = True, start_epoch: int = 0,
          scheduler=None, on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``net`` for epochs ``start_epoch .. epochs-1``, printing the seed's running-loss lines.

    Returns ``{"step_loss": [...], "running_loss": [(epoch, step, value), ...]}`` (1-based, as printed).
    """
    device = torch.device(device)
    num_batches = len(trainloader)
    print_every = print_every or default_print_every(num_batches)
    history: dict = {"step_loss": [], "running_loss": []}
    net.train()
    for epoch in range(start_epoch, epochs):
        running_loss = 0.0
        bar = tqdm(trainloader, total=num_batches, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress, file=sys.stderr, mininterval=2.0)
        for i, (inputs, labels) in enumerate(bar):
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"loss is {value} at epoch {epoch + 1}, step {i + 1}: training diverged. "
                    f"Try a lower learning rate (lr).")
            history["step_loss"].append(value)
            running_loss += value
            if i % print_every == print_every - 1:
                line = f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / print_every:.3f}"
                tqdm.write(line) if progress else print(line)
                history["running_loss"].append((epoch + 1, i + 1, running_loss / print_every))
                running_loss = 0.0
        bar.close()
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history
