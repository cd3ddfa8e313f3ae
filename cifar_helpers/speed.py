"""Time-to-accuracy for the seed's ``Net``: the seed's recipe and the project's fast one, timed
alike."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from . import data
from .checkpoint import save_model
from .evaluate import accuracy, predict
from .devices import cpu_threads, supports_bf16, synchronize
from .models import Net
from .runstate import (CheckpointError, NonFiniteLossError, capture_rng, check_finite,
                       check_writable, checkpoint_lock, load_for_resume, num_threads, restore_rng,
                       step_hook)
from .train import loader_normalization


#: torch's CPU thread count when this module was imported: what ``threads=None`` runs with, as
#: the seed's code (which never sets it) would, whatever a notebook set in between.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


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
#: The recipes by the names the command lines use.
RECIPES = {"fast": FAST, "seed-in-memory": SEED_IN_MEMORY, "seed-code": SEED}


def lr_factor(step: int, total: int, warmup: float, decay: bool) -> float:
    """Multiplier of the peak lr at ``step`` of ``total``: linear warm-up, then flat or linear
    decay."""
    w = int(round(warmup * total))
    if step < w:
        return (step + 1) / w
    if not decay:
        return 1.0
    return max(0.0, (total - step) / max(1, total - w))


def scaled_lr(base_lr: float, base_batch: int, batch_size: int) -> float:
    """The linear scaling rule: a batch ``batch_size / base_batch`` times larger, an lr as many
    times larger (batch 4 at lr 0.001 becomes batch 128 at lr 0.032)."""
    return base_lr * batch_size / base_batch


def warm_up(recipe: Recipe, device: torch.device, steps: int = 3) -> None:
    """A few untimed steps of a throwaway Net at the recipe's batch shape (one-time kernel
    set-up)."""
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
    """The recipe's loader for one split (test batches may be larger: they do not change
    results)."""
    bs = batch_size or recipe.batch_size
    if recipe.loader == "seed":  # verbatim: DataLoader(ds, batch_size=4, shuffle=.., num_workers=2)
        ds = data.subset(data.cifar10(data_dir, train=train, transform=data.seed_transform()), size)
        return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=train,
                                           num_workers=recipe.num_workers)
    stats = ((data.CIFAR10_MEAN, data.CIFAR10_STD) if recipe.normalize == "dataset"
             else (data.MEAN, data.STD))
    return data.make_loader(data_dir, train, bs, seed=seed, size=size, fast=recipe.loader == "fast",
                            num_workers=recipe.num_workers, mean=stats[0], std=stats[1])


def run(recipe: Recipe, data_dir: str, *, seed: int = 0, device: str | torch.device = "cpu",
        train_size: int | None = None, test_size: int | None = None,
        eval_every: float | None = None,
        log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None,
        resume: bool = False, return_net: bool = False) -> dict:
    """Train a fresh ``Net`` with ``recipe``; return seconds, accuracy and the accuracy-vs-time
    curve (and, with ``return_net``, the trained net under ``"net"``).

    Only training is timed: loader set-up and evaluations (every ``eval_every`` epochs, and at the
    end) stop the clock. Loading the in-memory tensors from their cache happens before timing.
    With ``checkpoint``, the whole state is saved atomically after every epoch (untimed);
    ``resume`` continues exactly from that file.
    """
    device = torch.device(device)
    threads = (cpu_threads(recipe.batch_size) if recipe.threads == "auto"
               else int(recipe.threads or TORCH_DEFAULT_THREADS))
    with num_threads(threads):
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
        settings = {"recipe": asdict(recipe), "seed": seed, "train_size": train_size,
                    "test_size": test_size, "eval_every": eval_every}
        path = Path(checkpoint) if checkpoint else None
        if path is not None:
            check_writable(path)                  # a bad path fails now, not after an epoch
        generator = getattr(trainloader, "generator", None)      # a DataLoader's shuffling
        generator = generator if isinstance(generator, torch.Generator) else None
        resumed_from = 0
        state = load_for_resume(path, settings) if path is not None and resume else None
        if state is not None:
            if state.get("model") != "Net" or state.get("config") != net.config():
                raise CheckpointError(f"{path} is not a time-to-accuracy checkpoint of Net(); use "
                                      f"another checkpoint path or resume=False.")
            net.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            # files from before runstate kept the generator's state beside "rng"
            restore_rng({"generator": state.get("generator"), **state["rng"]}, generator)
            step, seconds = state["step"], state["seconds"]
            images, curve = state["images"], state["curve"]
            resumed_from = step // steps_per_epoch

        def save() -> None:
            save_model(path, net, data.CIFAR10_CLASSES, epoch=step // steps_per_epoch, step=step,
                       seconds=seconds, images=images, curve=curve, run=settings,
                       optimizer=optimizer.state_dict(),
                       scheduler=scheduler.state_dict() if scheduler is not None else None,
                       normalization=loader_normalization(trainloader), rng=capture_rng(generator))

        def evaluate() -> float:
            acc = accuracy(*predict(net, testloader, device))
            curve.append((seconds, step / steps_per_epoch, acc))
            if log:
                log(f"  {recipe.name}: epoch {step / steps_per_epoch:.2f}  {seconds:7.2f} s  "
                    f"test accuracy {acc:.4f}")
            return acc

        net.train()
        while step < total:
            if hasattr(trainloader, "set_epoch"):
                trainloader.set_epoch(step // steps_per_epoch)   # the order: from the epoch alone
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
                if path is not None:                            # checkpointed runs: stop at once
                    check_finite(loss, (step - 1) // steps_per_epoch,
                                 (step - 1) % steps_per_epoch, checkpoint=path)
                step_hook(step)                                 # test hook; a no-op unless set
                if step in eval_steps or step == total:
                    synchronize(device)
                    seconds += time.perf_counter() - start
                    if step == total:
                        break
                    evaluate()
                    net.train()
                    start = time.perf_counter()
            else:
                seconds += time.perf_counter() - start
                if path is not None:
                    save()                                      # after every whole epoch
        if path is not None and step % steps_per_epoch:
            save()                                              # and at a fractional end
        final = evaluate()
        return {"recipe": recipe.name, "config": asdict(recipe), "train_seconds": seconds,
                "resumed_from": resumed_from,
                "test_accuracy": final, "images_per_second": images / seconds if seconds else None,
                "train_images": images, "curve": curve, "threads": torch.get_num_threads(),
                "bf16": use_bf16, **({"net": net} if return_net else {})}


def loader_throughput(loader, batches: int, threads: int | None = None) -> float:
    """Images per second for iterating ``batches`` batches of ``loader`` (no training), on
    ``threads`` torch threads in this process (None: as set now; restored afterwards)."""
    with num_threads(threads):
        start = time.perf_counter()
        n = 0
        for i, (inputs, labels) in enumerate(loader):
            n += len(labels)
            if i + 1 >= batches:
                break
        return n / (time.perf_counter() - start)


def step_throughput(batch_size: int, threads: int, steps: int = 200,
                    device: str | torch.device = "cpu", channels_last: bool = False,
                    bf16: bool = False, widths: tuple[int, int] = (6, 16),
                    force_bf16: bool = False, repeats: int = 1) -> float:
    """Images per second of ``Net`` training steps on random in-memory batches (data cost excluded):
    the best of ``repeats`` timings of ``steps`` steps each (the best is the least disturbed by
    other programs on the machine).

    ``bf16`` autocasts only where the device has fast bfloat16 (as the recipes do); ``force_bf16``
    autocasts anyway, to show what it costs without hardware support.
    """
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with num_threads(threads):
        warm_up(Recipe("probe", batch_size=batch_size), device)
        net = Net(*widths).to(device, memory_format=fmt)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (batch_size,), device=device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                  enabled=force_bf16 or (bf16 and supports_bf16(device)))
        best = float("inf")
        for i in range(3 + steps * repeats):
            if i >= 3 and (i - 3) % steps == 0:   # the first 3 steps set up kernels: not timed
                synchronize(device)               # or the clock would start before they finish
                start = time.perf_counter()
            opt.zero_grad()
            with autocast:
                loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            if i >= 3 and (i - 3) % steps == steps - 1:
                synchronize(device)
                best = min(best, time.perf_counter() - start)
        return steps * batch_size / best


#: The ``Net`` channel widths that notebook 06 times: the seed's and two wider variants.
NET_WIDTHS: dict[str, tuple[int, int]] = {"Net (6, 16)": (6, 16), "Net (32, 64)": (32, 64),
                                          "wide Net (64, 128)": (64, 128)}


def epoch_seconds(devices: Sequence[str], batch_sizes: Sequence[int] = (4, 128),
                  widths: dict[str, tuple[int, int]] = NET_WIDTHS,
                  images: int = 50_000) -> dict[tuple[str, int, str], float]:
    """Seconds per epoch of ``images`` for each ``(width name, batch size, device)``, from the
    measured step throughput (no data cost): 240 images' steps on a CPU, 50 steps elsewhere."""
    table = {}
    for name, w in widths.items():
        for b in batch_sizes:
            for d in devices:
                cpu = torch.device(d).type == "cpu"
                threads = cpu_threads(b) if cpu else torch.get_num_threads()
                steps = max(6, 240 // b) if cpu else 50
                table[name, b, d] = images / step_throughput(b, threads, steps, device=d, widths=w)
    return table


def format_epoch_table(table: dict[tuple[str, int, str], float]) -> str:
    """:func:`epoch_seconds`' table as text: one row per net and batch size, one column per
    device."""
    rows = list(dict.fromkeys((name, b) for name, b, _ in table))
    devices = list(dict.fromkeys(d for _, _, d in table))
    lines = [f"{'seconds per epoch':<22}{'batch':>6}" + "".join(f"{d:>12}" for d in devices)]
    lines += [f"{name:<22}{b:>6}" + "".join(f"{table[name, b, d]:>12.1f}" for d in devices)
              for name, b in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: one recipe's time-to-accuracy run, checkpointed every epoch; JSON last line."""
    from .params import add_arguments

    parser = argparse.ArgumentParser(prog="python -m cifar_helpers.speed", description=main.__doc__)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="fast")
    add_arguments(parser, "data_dir", "seed", "device", device="cpu")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    add_arguments(parser, "train_size", "test_size")
    parser.add_argument("--checkpoint", default=None, help="write the training state here every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    try:
        if args.epochs is not None:
            if not args.epochs > 0:
                raise ValueError(f"--epochs {args.epochs} must be > 0")
            recipe = replace(recipe, epochs=args.epochs)
        if args.resume and not args.checkpoint:
            raise ValueError("--resume needs --checkpoint (the file to continue from)")
        from .devices import get_device
        device = get_device(args.device)
        if args.checkpoint:
            check_writable(args.checkpoint)       # a bad path fails now, not after an epoch
        lock = checkpoint_lock(args.checkpoint) if args.checkpoint else contextlib.nullcontext()
        with lock:
            result = run(recipe, args.data_dir, seed=args.seed, device=device,
                         train_size=args.train_size, test_size=args.test_size,
                         checkpoint=args.checkpoint, resume=args.resume)
    except (data.DataError, CheckpointError, NonFiniteLossError, ValueError, RuntimeError) as err:
        print(f"cifar_helpers.speed: {err}", file=sys.stderr)
        raise SystemExit(2)
    result = {k: v for k, v in result.items() if k != "curve"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
