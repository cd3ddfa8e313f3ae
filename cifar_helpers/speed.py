"""Time-to-accuracy for the seed's ``Net``: the seed's recipe and the project's fast one, timed alike."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn as nn

from . import data
from .evaluate import accuracy, predict
from .devices import cpu_threads, supports_bf16
from .models import Net


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how ``Net`` is trained; ``loader`` says where batches come from."""

    name: str
    epochs: float = 2            # fractions allowed: 1.5 = one and a half passes
    batch_size: int = 4
    lr: float = 0.001            # peak learning rate
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup: float = 0.0          # fraction of steps with a linear warm-up (0: constant lr)
    decay: bool = False          # linear decay to zero after the warm-up
    label_smoothing: float = 0.0
    normalize: str = "seed"      # "seed": (0.5, 0.5); "dataset": CIFAR-10's real mean and std
    channels_last: bool = False  # NHWC memory layout: faster convolutions on CPUs and GPUs
    bf16: bool = False           # bfloat16 autocast for training steps, where the device has it
    loader: str = "fast"         # "fast": in-memory batches; "seed": DataLoader, 2 workers
    num_workers: int = 2         # only for loader="seed"
    threads: int | str | None = None  # torch CPU threads: a number, "auto" (devices.cpu_threads),
                                      # or None (torch's default, as the seed runs)


#: The seed's recipe exactly as the seed writes it: per-image decoding in 2 DataLoader workers.
SEED = Recipe("seed recipe (DataLoader, 2 workers)", loader="seed")
#: The same hyper-parameters, batches from memory: what notebook 03 runs.
SEED_IN_MEMORY = replace(SEED, name="seed recipe, in-memory batches", loader="fast", threads="auto")
#: The project's fastest recipe for the same Net that beats the seed's accuracy: 1.4 epochs,
#: batch 128, Nesterov SGD with warm-up and linear decay, real mean/std normalization,
#: channels_last and bf16 autocast (where the hardware has it), threads fitted to idle cores.
FAST = Recipe("fast recipe", epochs=1.4, batch_size=128, lr=0.04, momentum=0.95, nesterov=True,
              weight_decay=5e-4, warmup=0.1, decay=True, normalize="dataset", loader="fast",
              channels_last=True, bf16=True, threads="auto")


def lr_factor(step: int, total: int, warmup: float, decay: bool) -> float:
    """Multiplier of the peak lr at ``step`` of ``total``: linear warm-up, then flat or linear decay."""
    w = int(round(warmup * total))
    if step < w:
        return (step + 1) / w
    if not decay:
        return 1.0
    return max(0.0, (total - step) / max(1, total - w))


def warm_up(recipe: Recipe, device: torch.device, steps: int = 3) -> None:
    """A few untimed steps of a throwaway Net at the recipe's batch shape (one-time kernel set-up)."""
    net = Net().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(recipe.batch_size, 3, 32, 32, device=device)
    y = torch.zeros(recipe.batch_size, dtype=torch.int64, device=device)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def make_loader(recipe: Recipe, data_dir: str, train: bool, seed: int,
                size: int | None = None, batch_size: int | None = None):
    """The recipe's loader for one split (test batches may be larger: they do not change results)."""
    bs = batch_size or recipe.batch_size
    if recipe.loader == "seed":  # verbatim: DataLoader(dataset, batch_size=4, shuffle=..., num_workers=2)
        ds = data.subset(data.cifar10(data_dir, train=train, transform=data.seed_transform()), size)
        return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=train, num_workers=recipe.num_workers)
    stats = ((data.CIFAR10_MEAN, data.CIFAR10_STD) if recipe.normalize == "dataset"
             else (data.MEAN, data.STD))
    return data.make_loader(data_dir, train, bs, seed=seed, size=size, fast=recipe.loader == "fast",
                            num_workers=recipe.num_workers, mean=stats[0], std=stats[1])


def run(recipe: Recipe, data_dir: str, *, seed: int = 0, device: str | torch.device = "cpu",
        train_size: int | None = None, test_size: int | None = None, eval_every: float | None = None,
        log: Callable[[str], None] | None = None) -> dict:
    """Train a fresh ``Net`` with ``recipe``; return seconds, accuracy and the accuracy-vs-time curve.

    Only training is timed: loader set-up and evaluations (every ``eval_every`` epochs, and at the
    end) stop the clock. Loading the in-memory tensors from their cache happens before timing.
    """
    device = torch.device(device)
    old_threads = torch.get_num_threads()
    if recipe.threads == "auto":
        torch.set_num_threads(cpu_threads(recipe.batch_size))
    elif recipe.threads:
        torch.set_num_threads(int(recipe.threads))
    try:
        warm_up(recipe, device)
        torch.manual_seed(seed)
        trainloader = make_loader(recipe, data_dir, True, seed, train_size)
        # evaluation is untimed and does not change results: always from memory, in big batches
        testloader = make_loader(replace(recipe, loader="fast"), data_dir, False, seed, test_size,
                                 batch_size=1000)
        net = Net().to(device)
        memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        net = net.to(memory_format=memory_format)
        use_bf16 = recipe.bf16 and supports_bf16(device)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16
                    else contextlib.nullcontext())
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        optimizer = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
        steps_per_epoch = len(trainloader)
        total = max(1, int(round(recipe.epochs * steps_per_epoch)))
        scheduler = (torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total, recipe.warmup, recipe.decay))
            if recipe.warmup or recipe.decay else None)   # the seed's loop has no scheduler
        eval_steps = set()
        if eval_every:
            every = max(1, int(round(eval_every * steps_per_epoch)))
            eval_steps = set(range(every, total, every))
        curve, seconds, step, images = [], 0.0, 0, 0

        def evaluate() -> float:
            acc = accuracy(*predict(net, testloader, device))
            curve.append((seconds, step / steps_per_epoch, acc))
            if log:
                log(f"  {recipe.name}: epoch {step / steps_per_epoch:.2f}  {seconds:7.2f} s  "
                    f"test accuracy {acc:.4f}")
            return acc

        net.train()
        while step < total:
            start = time.perf_counter()
            for inputs, labels in trainloader:
                inputs = inputs.to(device, non_blocking=True, memory_format=memory_format)
                labels = labels.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = criterion(net(inputs), labels)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                images += len(labels)
                if step in eval_steps or step == total:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds += time.perf_counter() - start
                    if step == total:
                        break
                    evaluate()
                    net.train()
                    start = time.perf_counter()
            else:
                seconds += time.perf_counter() - start
        final = evaluate()
        return {"recipe": recipe.name, "config": asdict(recipe), "train_seconds": seconds,
                "test_accuracy": final, "images_per_second": images / seconds if seconds else None,
                "train_images": images, "curve": curve, "threads": torch.get_num_threads(),
                "bf16": use_bf16}
    finally:
        torch.set_num_threads(old_threads)


def loader_throughput(loader, batches: int) -> float:
    """Images per second for iterating ``batches`` batches of ``loader`` (no training)."""
    start = time.perf_counter()
    n = 0
    for i, (inputs, labels) in enumerate(loader):
        n += len(labels)
        if i + 1 >= batches:
            break
    return n / (time.perf_counter() - start)


def step_throughput(batch_size: int, threads: int, steps: int = 200,
                    device: str | torch.device = "cpu", channels_last: bool = False,
                    bf16: bool = False, widths: tuple[int, int] = (6, 16)) -> float:
    """Images per second of ``Net`` training steps on random in-memory batches (data cost excluded)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    try:
        warm_up(Recipe("probe", batch_size=batch_size), device)
        net = Net(*widths).to(device, memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (batch_size,), device=device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and supports_bf16(device))
        for i in range(steps + 3):
            if i == 3:
                start = time.perf_counter()
            opt.zero_grad()
            with autocast:
                loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(old)
