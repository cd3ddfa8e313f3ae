"""The modern recipe: ConvGroupNet, batched tensor augmentation, lookahead/EMA, TTA, presets.

Everything random in a run is derived from ``(seed, epoch)``, so an epoch-boundary checkpoint
resumes bit-identically. A run within a time budget (:func:`plan_budget`, ``--budget``) follows
the clock instead of the step count, so it is not bit-reproducible. Hyper-parameters follow airbench94 (Keller Jordan) in its "decoupled"
form: ``lr`` and ``weight_decay`` are per 1,024 examples, independent of batch size and momentum.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import normalization_entry, save_model
from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from .devices import cpu_threads, supports_bf16, synchronize
from .models import ConvGroupNet
from .runstate import (CheckpointError, capture_rng, check_finite, check_same_run, check_writable,
                       load_for_resume, num_threads, read_state, restore_rng, step_hook)


@dataclass(frozen=True)
class Preset:
    """All knobs of one modern-recipe run; the presets below differ in widths, epochs and batch."""

    name: str
    widths: tuple[int, int, int] = (64, 256, 256)  # channels of the three conv groups
    epochs: float = 9.9              # passes over the training images (fractions allowed)
    batch_size: int = 1024
    lr: float = 11.5                 # per 1,024 examples, decoupled from momentum
    momentum: float = 0.85           # Nesterov
    weight_decay: float = 0.0153     # per 1,024 examples, decoupled from lr
    bias_scaler: float = 64.0        # BatchNorm shifts learn this much faster (same decay)
    warmup: float = 0.23             # lr rises linearly from start to peak over this fraction...
    lr_start: float = 0.2            # ...of the steps, from lr_start * lr
    lr_end: float = 0.07             # then falls linearly to lr_end * lr at the last step
    label_smoothing: float = 0.2
    flip: bool = True                # random left-right flip, alternated every epoch
    translate: int = 2               # random shift by up to this many pixels (reflect padding)
    whiten: bool = True              # first conv = PCA whitening of 2x2 patches, frozen
    whiten_bias_epochs: float = 3    # its bias learns for this many epochs, then freezes
    whiten_eps: float = 5e-4         # added to the patch variances before 1/sqrt: damps noise
    lookahead: bool = True           # pull weights toward their moving average every few steps
    ema_start: float = 3             # epoch at which the average starts
    ema_decay: float = 0.95          # per 1,024 examples; rises as (progress ** 3) over training
    tta: int = 2                     # test-time augmentation: 0 none, 1 +flip, 2 +flip +shift
    precision: str = "auto"          # "auto" (bf16 where fast), "bf16", "fp16" (CUDA), "fp32"
    channels_last: bool = True       # NHWC memory layout
    compile: bool = False            # torch.compile the training forward pass
    muon_lr: float = 0.0             # > 0: train the 3x3 filters with Muon at this lr per step
    muon_momentum: float = 0.6


def shorten(preset: Preset, epochs: float, name: str | None = None) -> Preset:
    """``preset`` over ``epochs`` epochs, its epoch-counted phases (averaging start, whitening
    bias) scaled to the same share of the run."""
    k = epochs / preset.epochs
    return replace(preset, name=name or preset.name, epochs=epochs, ema_start=preset.ema_start * k,
                   whiten_bias_epochs=preset.whiten_bias_epochs * k)


#: The presets, chosen on the validation split (notebook 08). ``auto`` picks gpu94 on CUDA and
#: cpu10 elsewhere; every preset runs on any device, just slower.
PRESETS: dict[str, Preset] = {
    # airbench94's shape and budget: batch 1024, 9.9 epochs, lookahead (94 % on the original data)
    "gpu94": Preset("gpu94"),
    # the best of gpu94's longer and wider variants in 5 s on one H100/H200 (validation split)
    "gpu5s": Preset("gpu5s", widths=(96, 384, 384), epochs=12),
    # the same net on 2 CPU cores: batch 128 (as fast per image as 1024 here, better per epoch)
    "cpu10": Preset("cpu10", batch_size=128, epochs=12),
    # narrower first groups (time here goes to the 31x31 and 15x15 layers); Muon for the
    # filters at batch 512, lr decaying linearly to 0 (chosen on the validation split)
    "cpu5": Preset("cpu5", widths=(32, 128, 256), epochs=11, batch_size=512, muon_lr=0.12,
                   lookahead=False, warmup=0.0, lr_start=1.0, lr_end=0.0),
}
PRESETS["demo"] = shorten(PRESETS["cpu5"], 2, "demo")            # about a minute on 2 cores


#: Upper bounds of the numeric fields: far above any useful value, low enough that a typo
#: (``lr=1e30``) or an overflow (``epochs=1e999``) is refused before training, not met as a NaN.
LIMITS = {"epochs": 1000, "batch_size": 50_000, "lr": 1000.0, "muon_lr": 10.0,
          "weight_decay": 10.0, "bias_scaler": 1000.0, "whiten_bias_epochs": 1000,
          "ema_start": 1000, "width": 4096}


def _check_type(field: str, value: object, example: object) -> object:
    """``value`` for preset ``field``, checked against the field's declared type: bools only
    True/False, whole numbers for ints (5.0 becomes 5), finite numbers for floats."""
    kind = Preset.__dataclass_fields__[field].type          # a string: annotations are lazy

    def bad(what: str) -> ValueError:
        return ValueError(f"preset field {field}={value!r} must be {what}, e.g. "
                          f"{field}={example!r}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("True or False")
    elif kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
    elif kind.startswith("tuple"):
        if not (isinstance(value, (tuple, list)) and len(value) == 3 and all(
                isinstance(w, int) and not isinstance(w, bool) for w in value)):
            raise bad("three whole numbers")
        return tuple(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad("a whole number" if kind == "int" else "a number")
    elif not math.isfinite(value):
        raise bad("a finite number")
    elif kind == "int":
        if value != int(value):
            raise bad("a whole number")
        return int(value)
    return value


def get_preset(name: str, device: torch.device | str = "cpu", **changes) -> Preset:
    """A preset by name (``"auto"``: by device), with ``changes`` to its fields, validated: each
    change has its field's type, and every field a sane range (see :data:`LIMITS`)."""
    device = torch.device(device)
    if name == "auto":
        name = "gpu94" if device.type == "cuda" else "cpu10"
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; choose 'auto' or one of {sorted(PRESETS)}")
    unknown = set(changes) - set(Preset.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown preset field(s) {sorted(unknown)}; known: "
                         f"{sorted(Preset.__dataclass_fields__)}")
    base = PRESETS[name]
    p = replace(base, **{k: _check_type(k, v, getattr(base, k)) for k, v in changes.items()})
    top = LIMITS
    checks = [(0 < p.epochs <= top["epochs"], f"epochs must be in (0, {top['epochs']}]"),
              (1 <= p.batch_size <= top["batch_size"],
               f"batch_size must be in [1, {top['batch_size']}]"),
              (0 < p.lr <= top["lr"], f"lr must be > 0 and <= {top['lr']:g}"),
              (0 <= p.muon_lr <= top["muon_lr"], f"muon_lr must be in [0, {top['muon_lr']:g}]"),
              (0 <= p.momentum < 1, "momentum must be in [0, 1)"),
              (0 <= p.muon_momentum < 1, "muon_momentum must be in [0, 1)"),
              (0 <= p.weight_decay <= top["weight_decay"],
               f"weight_decay must be in [0, {top['weight_decay']:g}]"),
              (0 < p.bias_scaler <= top["bias_scaler"],
               f"bias_scaler must be in (0, {top['bias_scaler']:g}]"),
              (0 <= p.warmup < 1, "warmup must be in [0, 1)"),
              (0 <= p.lr_start <= 1 and 0 <= p.lr_end <= 1,
               "lr_start and lr_end must be in [0, 1]"),
              (0 <= p.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
              (0 <= p.translate <= 8, "translate must be 0..8 pixels"),
              (p.tta in (0, 1, 2), "tta must be 0, 1 or 2"),
              (0 < p.ema_decay < 1, "ema_decay must be in (0, 1)"),
              (0 <= p.ema_start <= top["ema_start"],
               f"ema_start must be in [0, {top['ema_start']}]"),
              (0 <= p.whiten_bias_epochs <= top["whiten_bias_epochs"],
               f"whiten_bias_epochs must be in [0, {top['whiten_bias_epochs']}]"),
              (0 < p.whiten_eps < 1, "whiten_eps must be in (0, 1)"),
              (1 <= min(p.widths) and max(p.widths) <= top["width"],
               f"widths must be three numbers in [1, {top['width']}]"),
              (p.precision in ("auto", "bf16", "fp16", "fp32"),
               "precision must be 'auto', 'bf16', 'fp16' or 'fp32'")]
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        own = ", ".join(f"{k}={getattr(base, k)!r}" for k in changes)
        raise ValueError(f"preset {name!r} with {changes}: " + "; ".join(bad) +
                         (f" (e.g. the preset's own {own})" if own else ""))
    return p


def autocast_dtype(preset: Preset, device: torch.device) -> torch.dtype | None:
    """The autocast dtype this preset gets on ``device`` (None: fp32)."""
    if preset.precision == "fp32":
        return None
    if preset.precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device: CPUs have no fast fp16 "
                             "convolutions (measured 370 images/s here). Use 'bf16' or 'auto'.")
        return torch.float16
    if supports_bf16(device):
        return torch.bfloat16
    if preset.precision == "bf16":
        raise ValueError(f"precision='bf16' is not fast on {device} (no bf16 support found); "
                         f"use 'auto' or 'fp32'.")
    return torch.float16 if device.type == "cuda" else None


# ----------------------------------------------------------------------------- data

def split_train(labels: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: ``val_size`` images held out at random, the same for every run seed."""
    n = len(labels)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size={val_size} must be in [0, {n}) for {n} training images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def load_split(data_dir: str | Path, val_size: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Training images and labels (less ``val_size`` held out), the images and labels to score,
    and their name: the held-out ones ("val", the test set is then never read), else "test"."""
    from . import data                     # looked up at call time (tests record the reads)
    x, y = data.load_tensors(data_dir, train=True)
    keep, held = split_train(y, val_size)
    if val_size:
        return x[keep], y[keep], x[held], y[held], "val"
    return (x, y, *data.load_tensors(data_dir, train=False), "test")   # all kept: no copy


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float, standardized with CIFAR-10's mean and std."""
    mean = torch.tensor(CIFAR10_MEAN, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.float() / 255 - mean) / std


def flip_lr(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``mask`` (one bool per image) is True."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def crop(padded: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """From images padded by ``pad``, cut each one's window shifted by ``shifts[i] = (dy, dx)``.

    One gather for the whole batch: output pixel (y, x) reads padded pixel (y + pad + dy, x + pad + dx).
    """
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    rows = (torch.arange(h, device=padded.device) + pad).view(1, h) + shifts[:, :1]   # n x h
    cols = (torch.arange(w, device=padded.device) + pad).view(1, w) + shifts[:, 1:]   # n x w
    idx = (rows.view(n, 1, h, 1) * wp + cols.view(n, 1, 1, w)).expand(n, c, h, w)
    return padded.flatten(2).gather(2, idx.reshape(n, c, h * w)).view(n, c, h, w)


def translate(images: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by ``shifts[i] = (dy, dx)`` pixels (|d| <= pad), reflecting at the border."""
    if pad == 0:
        return images
    return crop(F.pad(images, (pad,) * 4, mode="reflect"), shifts, pad)


def prepare(images_uint8: torch.Tensor, preset: Preset, dtype: torch.dtype | None) -> torch.Tensor:
    """The training images once per run: normalized, reflect-padded for ``translate``, and stored
    in the autocast dtype (the first conv would cast them to it anyway)."""
    x = normalize(images_uint8)
    if preset.translate:
        x = F.pad(x, (preset.translate,) * 4, mode="reflect")
    return x.to(dtype or torch.float32)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The one source of randomness for epoch ``epoch`` of a run with ``seed`` (order, flips, shifts)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + 17)


def epoch_batches(prepared: torch.Tensor, labels: torch.Tensor, preset: Preset, seed: int,
                  epoch: int, flip_base: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield one epoch of augmented ``(inputs, labels)`` batches from :func:`prepare`'s images
    (the last short batch is dropped).

    Flips alternate: image ``i`` is mirrored in epoch ``e`` when ``flip_base[i] xor (e odd)``, so
    every image is seen both ways in any two consecutive epochs.
    """
    g = epoch_generator(seed, epoch)
    n, bs = len(labels), preset.batch_size
    order = torch.randperm(n, generator=g)
    shifts = torch.randint(-preset.translate, preset.translate + 1, (n, 2), generator=g)
    order, shifts = order.to(prepared.device), shifts.to(prepared.device)
    for start in range(0, n - bs + 1, bs):
        idx = order[start:start + bs]
        x = prepared[idx]
        if preset.translate:
            x = crop(x, shifts[start:start + bs], preset.translate)
        if preset.flip and flip_base is not None:
            x = flip_lr(x, flip_base[idx] ^ bool(epoch % 2))
        yield x, labels[idx]


# ----------------------------------------------------------------------------- network set-up

def init_whitening(net: ConvGroupNet, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the first conv to whiten 2x2 patches of ``images`` (normalized floats): its 12 filters
    are the patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue), and their negatives."""
    c, (h, w) = images.shape[1], net.whiten.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w).double()
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps).view(-1, 1)).flip(0)
    filters = filters.reshape(c * h * w, c, h, w)    # patches were flattened in (c, h, w) order
    with torch.no_grad():
        net.whiten.weight.copy_(torch.cat([filters, -filters]).float())
        net.whiten.bias.zero_()


def lr_factor(step: int, total: int, warmup: float, start: float, end: float) -> float:
    """Multiplier of the peak lr at ``step`` (0-based) of ``total``: a triangle from ``start``
    up to 1 at ``warmup * total``, then down to ``end`` at the last step."""
    peak = int(warmup * total)
    if step < peak:
        return start + (1 - start) * step / peak
    return 1 + (end - 1) * (step - peak) / max(1, total - peak)


class Lookahead:
    """A moving average of the weights that the weights are pulled back to at each update."""

    def __init__(self, net: nn.Module):
        self.average = {k: v.detach().clone() for k, v in net.state_dict().items()
                        if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        """average <- decay * average + (1 - decay) * weights; then weights <- average."""
        for k, v in net.state_dict().items():
            if k in self.average:
                self.average[k].lerp_(v, 1 - decay)
                v.copy_(self.average[k])

    def state_dict(self) -> dict:
        return self.average

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.average[k].copy_(v)


def orthogonalize(g: torch.Tensor, steps: int = 3, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Roughly ``U V^T`` of ``g = U S V^T`` (all singular values pushed towards 1) by a quintic
    Newton-Schulz iteration in ``dtype``: bfloat16 as in Keller Jordan's Muon optimizer, float32
    where bfloat16 is slow (a CPU without AVX512-BF16 emulates it, 25 times slower here)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    x = x / (x.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class NesterovMuon(torch.optim.Optimizer):
    """Nesterov SGD for every group, except groups with ``muon=True``: there each filter bank is
    rescaled to a fixed norm and the momentum step is orthogonalized (Muon), in bfloat16 where
    the device has fast bfloat16 and in float32 elsewhere."""

    def __init__(self, groups: list[dict], momentum: float):
        super().__init__(groups, dict(momentum=momentum, weight_decay=0.0, muon=False))
        self._ns_dtypes: dict[torch.device, torch.dtype] = {}

    def ns_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of the Newton-Schulz iteration on ``device``."""
        if device not in self._ns_dtypes:
            self._ns_dtypes[device] = torch.bfloat16 if supports_bf16(device) else torch.float32
        return self._ns_dtypes[device]

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            m, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if not wd else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(m).add_(g)
                g = g.add(buf, alpha=m)
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    update = orthogonalize(g.reshape(len(g), -1), dtype=self.ns_dtype(p.device))
                    p.add_(update.view_as(p), alpha=-lr)
                else:
                    p.add_(g, alpha=-lr)


def make_optimizer(net: ConvGroupNet, preset: Preset) -> torch.optim.Optimizer:
    """Nesterov SGD in the decoupled form: BN shifts get ``bias_scaler`` x the lr, same decay.
    With ``preset.muon_lr``, the 3x3 filters are trained by Muon instead."""
    scale = 1024 * (1 + 1 / (1 - preset.momentum))        # steps ~ lr x gradient, any momentum
    lr = preset.lr / scale
    wd = preset.weight_decay * preset.batch_size / scale
    lr_bias = lr * preset.bias_scaler
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    filters = [p for n, p in named if preset.muon_lr and p.ndim == 4]
    norm = [p for n, p in named if "norm" in n]
    other = [p for n, p in named if "norm" not in n and not (preset.muon_lr and p.ndim == 4)]
    groups = [dict(params=norm, lr=lr_bias, weight_decay=wd / lr_bias, initial_lr=lr_bias),
              dict(params=other, lr=lr, weight_decay=wd / lr, initial_lr=lr)]
    if not filters:
        return torch.optim.SGD(groups, momentum=preset.momentum, nesterov=True)
    groups.append(dict(params=filters, lr=preset.muon_lr, initial_lr=preset.muon_lr, muon=True,
                       momentum=preset.muon_momentum))
    return NesterovMuon(groups, momentum=preset.momentum)


def warm_up(preset: Preset, device: torch.device | str) -> float:
    """Untimed steps of a throwaway net at the preset's shapes: one-time set-up (oneDNN
    primitives on CPU, cuDNN autotuning and the eigen-solver's library load on CUDA) stays out
    of the timed runs. Returns the images/s of its one timed step (a rough speed)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rough = step_throughput(preset, device, steps=1)
    net = ConvGroupNet(preset.widths).to(device)
    init_whitening(net, torch.randn(64, 3, 32, 32, device=device), preset.whiten_eps)
    predict_logits(net, torch.zeros(1000, 3, 32, 32, dtype=torch.uint8), preset.tta,
                   dtype=autocast_dtype(preset, device), channels_last=preset.channels_last)
    return rough


def ladder(base: Preset) -> dict[str, Preset]:
    """``base`` with its accuracy techniques switched off, then back on one at a time (cumulative)."""
    plain = replace(base, whiten=False, warmup=0.0, lr_start=1.0, lr_end=1.0, flip=False,
                    translate=0, label_smoothing=0.0, lookahead=False, muon_lr=0.0, tta=0)
    steps = {"plain: constant lr, no augmentation": plain}
    steps["+ whitening first conv"] = plain = replace(plain, whiten=True)
    steps["+ warm-up/decay schedule"] = plain = replace(
        plain, warmup=base.warmup, lr_start=base.lr_start, lr_end=base.lr_end)
    steps["+ flip & translate"] = plain = replace(plain, flip=base.flip, translate=base.translate)
    steps["+ label smoothing"] = plain = replace(plain, label_smoothing=base.label_smoothing)
    if base.lookahead:
        steps["+ lookahead (weight EMA)"] = plain = replace(plain, lookahead=True)
    if base.muon_lr:
        steps["+ Muon for the 3x3 filters"] = plain = replace(plain, muon_lr=base.muon_lr)
    return steps


def whiten_bias_learns(preset: Preset, step: int) -> bool:
    """Whether the whitening bias learns in throughput-probe step ``step``: in the share of
    steps training gives it (``whiten_bias_epochs / epochs``), spread evenly, the first one."""
    share = 1.0 if not preset.whiten else round(
        min(1.0, preset.whiten_bias_epochs / preset.epochs), 3)
    return math.ceil((step + 1) * share) > math.ceil(step * share)


def step_throughput(preset: Preset, device: torch.device | str = "cpu", steps: int = 10,
                    seconds: float | None = None, warm_steps: int = 2,
                    clock: Callable[[], float] = time.perf_counter) -> float:
    """Images per second of the preset's training steps on random data (no data or eval cost):
    ``warm_steps`` untimed, then ``steps`` timed, fewer (at least one) where another would end
    the call past ``seconds``. As in training, the whitening bias learns in only its share of
    the steps (a quarter for the presets); a frozen first conv skips its backward pass."""
    device = torch.device(device)
    dtype = autocast_dtype(preset, device)
    fmt = torch.channels_last if preset.channels_last else torch.contiguous_format
    called = clock()
    with num_threads(cpu_threads(preset.batch_size) if device.type == "cpu" else None):
        net = ConvGroupNet(preset.widths).to(device, memory_format=fmt)
        net.whiten.weight.requires_grad_(not preset.whiten)
        compiled = torch.compile(net) if preset.compile else net
        optimizer = make_optimizer(net, preset)
        x = torch.randn(preset.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (preset.batch_size,), device=device)
        done = -warm_steps
        while done < steps:
            net.whiten.bias.requires_grad_(whiten_bias_learns(preset, done + warm_steps))
            if done == 0:                         # the first steps set up kernels: not timed
                synchronize(device)
                start = last = clock()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(compiled(x), y, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done > 0 and seconds is not None:
                synchronize(device)
                now = clock()
                if now - called + (now - last) > seconds:   # the next step would end past it
                    break
                last = now
        synchronize(device)
        return done * preset.batch_size / (clock() - start)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_logits(net: nn.Module, images_uint8: torch.Tensor, tta: int = 0,
                   batch_size: int = 1000, dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images; ``tta`` 1 averages with the mirror image, 2 also
    with the (mirrored) images shifted one pixel up-left and down-right (reflect padding)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return net(x.contiguous(memory_format=fmt)).float()

    def mirror(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * run(x) + 0.5 * run(x.flip(-1))

    out = []
    for batch in images_uint8.split(batch_size):
        x = normalize(batch.to(device))
        if tta == 0:
            logits = run(x)
        elif tta == 1:
            logits = mirror(x)
        else:
            p = F.pad(x, (1, 1, 1, 1), mode="reflect")
            h, w = x.shape[-2:]
            shifted = 0.5 * mirror(p[..., :h, :w]) + 0.5 * mirror(p[..., 2:, 2:])
            logits = 0.5 * mirror(x) + 0.5 * shifted
        out.append(logits.cpu())
    net.train(was_training)
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``logits.argmax(1)`` equal to ``labels``."""
    return (logits.argmax(1) == labels.cpu()).float().mean().item()


# ----------------------------------------------------------------------------- time budget

#: What ``--budget`` chooses from, best first. The rule: the first candidate whose probed speed
#: gives it its :data:`MIN_EPOCHS` (else its preset's epochs) times :data:`SPEED_MARGIN` within
#: the budget's training time, else the last (fastest) one; either way it trains for the whole
#: time, on a schedule that follows the clock. On the CPU the wide net (``cpu10``) pays off from
#: about 10 epochs: 64/256/256 reached 90.84-91.02 % on the validation split after 10 epochs,
#: 90.32 % after 7.5, the narrow ``cpu5`` 90.62 % after 16 (docs/benchmarks.md). Measured:
#:
#: ================================ =========== =========== ================================
#: machine (probe, img/s)           cpu5        cpu10       choice
#: ================================ =========== =========== ================================
#: 2-core Intel Xeon VM, AMX bf16   915-2,467   327-1,180   cpu5 at 60-600 s; cpu10 at 600 s
#:                                                          when the probe gives it 12 epochs
#: ================================ =========== =========== ================================
#:
#: On CUDA the candidates are ``gpu5s`` (12 epochs) and ``gpu94``; not yet measured on a GPU.
BUDGET_CANDIDATES: dict[str, tuple[str, ...]] = {"cpu": ("cpu10", "cpu5"),
                                                 "cuda": ("gpu5s", "gpu94")}
MIN_EPOCHS: dict[str, float] = {"cpu10": 10.0}   # fewer than the preset's 12 still beat cpu5
SPEED_MARGIN = 1.2        # a candidate asks for a fifth more epochs than it needs: a shared
                          # VM (or a hot laptop) can slow down after the probe
PROBE_SHARE = 0.05        # the throughput probe's share of the budget, at most
PROBE_ROUNDS = 4          # it measures the candidates in turn, this many times each
MIN_BUDGET = 10.0         # seconds: below this the probe and one epoch's set-up dominate


@dataclass(frozen=True)
class Budget:
    """What :func:`plan_budget` chose for ``budget_seconds``: the preset, the training seconds
    left after the probe, the probe's measurements and the reason, in one line."""

    budget_seconds: float
    preset: Preset
    train_seconds: float
    probe_seconds: float
    warmup_seconds: float                 # kernel set-up before the probe: not in the budget
    images_per_second: dict[str, float]   # by candidate preset name
    reason: str

    def record(self) -> dict:
        """The plan as a checkpoint stores it (plain types); :meth:`from_record` reads it back."""
        return {**asdict(self), "preset": asdict(self.preset)}

    @classmethod
    def from_record(cls, record: dict) -> Budget:
        return cls(**{**record, "preset": Preset(**record["preset"])})


def check_budget(budget_seconds: float) -> float:
    """``budget_seconds`` as a float, refused unless a finite number >= :data:`MIN_BUDGET`."""
    if isinstance(budget_seconds, bool) or not isinstance(budget_seconds, (int, float)) or not (
            math.isfinite(budget_seconds) and budget_seconds >= MIN_BUDGET):
        raise ValueError(f"budget={budget_seconds!r} must be a number of seconds >= "
                         f"{MIN_BUDGET:g}, e.g. --budget 120")
    return float(budget_seconds)


def plan_budget(budget_seconds: float, device: torch.device | str = "cpu", *,
                train_images: int = 50_000, clock: Callable[[], float] = time.perf_counter,
                measure: Callable[..., float] = step_throughput, warm: bool = True,
                candidates: Sequence[Preset] | None = None) -> Budget:
    """Probe this machine's speed for each candidate (at most :data:`PROBE_SHARE` of the
    budget, counted in it) and choose the preset and epochs that fit (see
    :data:`BUDGET_CANDIDATES`, or ``candidates``, best first). ``warm``: set up each
    candidate's kernels first, not counted; ``clock`` and ``measure`` are for tests."""
    budget_seconds, device = check_budget(budget_seconds), torch.device(device)
    presets = list(candidates or [PRESETS[n] for n in
                                  BUDGET_CANDIDATES["cuda" if device.type == "cuda" else "cpu"]])
    usable = [p for p in presets if p.batch_size <= train_images]
    if not usable:
        sizes = ", ".join(f"{p.name} {p.batch_size}" for p in presets)
        raise ValueError(f"{train_images} training images are fewer than one batch of every "
                         f"budget candidate ({sizes}); train a preset instead "
                         f"(budget_seconds=None, with preset_changes), or use more images")
    presets = usable
    began = clock()
    rough = {p.name: warm_up(p, device) for p in presets} if warm else {}
    probe_start = clock()
    share = 0.8 * PROBE_SHARE * budget_seconds / len(presets)   # 20 % margin: steps vary
    speed, from_warm_up, rounds = {}, [], {}
    for p in presets:                # one step longer than its share: the warm-up's speed
        if p.name in rough and p.batch_size / rough[p.name] > share:
            speed[p.name] = rough[p.name]
            from_warm_up.append(p.name)
        else:                        # up to PROBE_ROUNDS rounds of at least 3 steps each
            fit = int(share * rough[p.name] / (3 * p.batch_size)) if p.name in rough else 99
            rounds[p.name] = max(1, min(PROBE_ROUNDS, fit))
    measured = {name: [] for name in rounds}
    for r in range(max(rounds.values(), default=0)):   # interleaved: the machine's speed
        for p in presets:                                 # changes by the minute here
            if r < rounds.get(p.name, 0):
                measured[p.name].append(measure(p, device, steps=1000, warm_steps=0,
                                                seconds=share / rounds[p.name], clock=clock))
    speed.update({name: sum(v) / len(v) for name, v in measured.items()})
    speed = {p.name: speed[p.name] for p in presets}
    probe = clock() - probe_start
    train_seconds = budget_seconds - probe
    fits = {p.name: speed[p.name] * train_seconds / train_images for p in presets}
    need = {p.name: MIN_EPOCHS.get(p.name, p.epochs) for p in presets}
    ask = {name: round(SPEED_MARGIN * n, 2) for name, n in need.items()}
    chosen = next(p for p in presets if fits[p.name] >= ask[p.name] or p is presets[-1])
    reserve = f"+ {SPEED_MARGIN - 1:.0%} in reserve"
    if len(presets) == 1:
        why = "the only candidate"
    elif chosen is presets[0]:
        why = (f"{chosen.name} gets the {ask[chosen.name]:g} epochs it asks for "
               f"({need[chosen.name]:g} {reserve})")
    else:
        why = ", ".join(f"{p.name} would get {fits[p.name]:.1f} of the {ask[p.name]:g} epochs "
                        f"it asks for ({need[p.name]:g} {reserve})" for p in presets
                        if p is not chosen and fits[p.name] < ask[p.name])
    if fits[chosen.name] * train_images < chosen.batch_size:
        raise ValueError(f"budget={budget_seconds:g} s leaves {train_seconds:.1f} s of training, "
                         f"less than one batch of {chosen.name}; give a larger budget.")
    epochs = round(fits[chosen.name], 2)
    probed = ", ".join(f"{n} {v:,.0f} img/s" + (" (warm-up)" * (n in from_warm_up))
                       for n, v in speed.items())
    w = ",".join(map(str, chosen.widths))
    reason = (f"budget {budget_seconds:g} s: probe {probe:.1f} s ({probed}) -> {chosen.name} net "
              f"({w}), batch {chosen.batch_size}, about {epochs:g} epochs in {train_seconds:.1f} "
              f"s ({why}); timed, so not bit-reproducible")
    return Budget(budget_seconds, shorten(chosen, epochs), train_seconds, probe,
                  probe_start - began, speed, reason)


def resume_or_plan(budget_seconds: float, device: torch.device | str = "cpu",
                   checkpoint: str | Path | None = None, resume: bool = False, **kw) -> Budget:
    """The plan saved in ``checkpoint`` when resuming a budget run (CheckpointError for another
    budget or a run without one), else a fresh :func:`plan_budget` (``kw`` go to it)."""
    budget_seconds = check_budget(budget_seconds)
    path = Path(checkpoint) if checkpoint else None
    if not (resume and path is not None and path.exists()):
        return plan_budget(budget_seconds, device, **kw)
    state = read_state(path)
    state = state if isinstance(state, dict) else {}
    check_same_run(state, {"budget_seconds": budget_seconds}, path)   # a run without: None
    plan = Budget.from_record(state["run"]["budget"])
    if kw.get("warm", True):
        warm_up(plan.preset, device)
    return plan


# ----------------------------------------------------------------------------- training

def _state(net, optimizer, lookahead, epoch, step, seconds, history, run, finished) -> dict:
    return dict(epoch=epoch, step=step, seconds=seconds, history=history, run=run,
                finished=finished, rng=capture_rng(), optimizer=optimizer.state_dict(),
                lookahead=lookahead.state_dict() if lookahead is not None else None)


def train(preset: Preset, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
          device: torch.device | str = "cpu", val: tuple[torch.Tensor, torch.Tensor] | None = None,
          checkpoint: str | Path | None = None, resume: bool = False,
          log: Callable[[str], None] | None = print, budget: Budget | None = None,
          clock: Callable[[], float] = time.perf_counter) -> tuple[ConvGroupNet, dict]:
    """Train a fresh ``ConvGroupNet`` with ``preset`` on uint8 ``images``; return it and a report.

    Only training is timed (``train_seconds``): the whitening set-up and every step, not the
    per-epoch validation (with ``val``) nor checkpoint writes. With ``checkpoint`` the whole state
    is saved atomically after each epoch; ``resume`` continues exactly from that file. With a
    ``budget`` (:func:`plan_budget`; ``preset`` must be its choice) the schedule follows the
    training seconds spent, not the steps, and training stops when they reach the budget's.
    """
    device = torch.device(device)
    if budget is not None and budget.preset != preset:
        raise ValueError(f"train(budget=...) needs the budget's own preset, {budget.preset.name!r} "
                         f"over {budget.preset.epochs} epochs; pass preset=budget.preset.")
    if len(labels) < preset.batch_size:
        raise ValueError(f"{len(labels)} training images are fewer than one batch "
                         f"(batch_size={preset.batch_size}); lower batch_size or use more images.")
    if checkpoint is not None:
        check_writable(checkpoint)
    dtype = autocast_dtype(preset, device)
    with num_threads(cpu_threads(preset.batch_size) if device.type == "cpu" else None):
        return _train(preset, images, labels, seed, device, val, checkpoint, resume, log, dtype,
                      budget, clock)


def _train(preset, images, labels, seed, device, val, checkpoint, resume, log, dtype, budget,
           clock):
    fmt = torch.channels_last if preset.channels_last else torch.contiguous_format
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    images, labels = images.to(device), labels.to(device)
    torch.manual_seed(seed)
    net = ConvGroupNet(preset.widths).to(device)
    steps_per_epoch = len(labels) // preset.batch_size
    total = max(1, math.ceil(preset.epochs * steps_per_epoch))   # a budget: what it planned
    resolution = total if budget is None else 1_000_000          # of the lr schedule's steps
    ema_every = max(1, round(5 * 1024 / preset.batch_size))   # update every ~5,120 examples
    ema_base = preset.ema_decay ** (ema_every * preset.batch_size / 1024)
    flip_base = (torch.rand(len(labels), generator=epoch_generator(seed, -1)) < 0.5).to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing, reduction="sum")
    run = {"preset": asdict(preset), "seed": seed, "train_images": len(labels),
           "budget_seconds": budget.budget_seconds if budget is not None else None}
    if budget is not None:
        run["budget"] = budget.record()
    history: dict = {"epoch": [], "train_loss": [], "val_accuracy": [], "seconds": []}
    path = Path(checkpoint) if checkpoint else None

    def where(steps: int, epoch: int, seconds: float) -> tuple[float, float]:
        """(progress in [0, 1], position in epochs) of the schedule: by steps, or by training
        time with a budget."""
        if budget is None:
            return steps / total, epoch
        progress = min(1.0, seconds / budget.train_seconds)
        return progress, progress * preset.epochs

    seconds, step, start_epoch, lookahead, finished = 0.0, 0, 0, None, False
    start = clock()
    prepared = prepare(images, preset, dtype)
    if preset.whiten:
        sample = torch.randperm(len(labels), generator=epoch_generator(seed, -2))[:5000]
        init_whitening(net, normalize(images[sample.to(images.device)]), preset.whiten_eps)
    else:
        net.whiten.weight.requires_grad_(True)
    net = net.to(memory_format=fmt)
    optimizer = make_optimizer(net, preset)
    seconds += clock() - start

    state = load_for_resume(path, run) if path is not None and resume else None
    if state is not None:
        if state.get("model") != "ConvGroupNet":
            raise CheckpointError(f"{path} is not a modern-recipe training checkpoint; use another "
                                  f"checkpoint path or resume=False.")
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if state["lookahead"] is not None:
            lookahead = Lookahead(net)
            lookahead.load_state_dict(state["lookahead"])
        if "rng" in state:
            restore_rng(state["rng"])
        start_epoch, step, seconds, history = (state["epoch"], state["step"], state["seconds"],
                                               state["history"])
        finished = state.get("finished", False)
        if log:
            log(f"resumed from {path} after epoch {start_epoch} ({seconds:.1f} s of training)")
    compiled = torch.compile(net) if preset.compile else net
    # float16 (a GPU without fast bfloat16, such as Colab's T4) needs a loss scaler; with
    # bfloat16 or float32 it is switched off and each call passes straight through. Its scale
    # is not checkpointed: a resumed float16 run starts it again.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    net.train()
    factor, epoch, previous = None, start_epoch, None   # a budget: when the last step began
    last_epoch = math.ceil(total / steps_per_epoch) if budget is None else sys.maxsize
    while not finished and epoch < last_epoch:
        start = clock()
        net.whiten.bias.requires_grad_(where(step, epoch, seconds)[1] < preset.whiten_bias_epochs)
        losses = []
        for inputs, targets in epoch_batches(prepared, labels, preset, seed, epoch, flip_base):
            if budget is None:
                progress, at = where(step, epoch, 0.0)
                finished = step + 1 >= total
            else:                                # timed: the step that would end past the
                synchronize(device)              # budget is the last, at the schedule's end
                began = seconds + clock() - start
                step_seconds, previous = began - (began if previous is None else previous), began
                progress, at = where(step, epoch, began)
                finished = began + step_seconds >= budget.train_seconds
                progress = 1.0 if finished else progress
            factor = lr_factor(round(progress * resolution), resolution, preset.warmup,
                               preset.lr_start, preset.lr_end)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            with autocast:
                loss = criterion(compiled(inputs.contiguous(memory_format=fmt)), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()         # float16 only: gradients kept from underflow
            scaler.step(optimizer)
            scaler.update()
            step += 1
            losses.append(loss.detach())
            if preset.lookahead and at >= preset.ema_start and step % ema_every == 0:
                if lookahead is None:
                    lookahead = Lookahead(net)
                else:
                    done = 1.0 if finished else where(step, epoch, seconds + clock() - start)[0]
                    lookahead.update(net, ema_base * done ** 3)
            step_hook(step)                       # test hook; a no-op unless set
            if finished:
                break
        if lookahead is not None:
            lookahead.update(net, 1.0)            # end every epoch on the averaged weights
        losses = torch.stack(losses).float() / preset.batch_size     # one sync per epoch
        synchronize(device)
        seconds += clock() - start
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            check_finite(losses[int(bad[0])], epoch, int(bad[0]), checkpoint=path)
        epoch += 1
        finished = finished or epoch >= last_epoch
        train_loss = losses.mean().item()
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["seconds"].append(seconds)
        val_acc = None
        if val is not None:
            val_acc = accuracy(predict_logits(net, val[0], 0, dtype=dtype,
                                              channels_last=preset.channels_last), val[1])
        history["val_accuracy"].append(val_acc)
        if log:
            log(f"epoch {epoch:2d}  train loss {train_loss:.4f}  " +
                (f"val accuracy {val_acc:.4f}  " if val_acc is not None else "") +
                f"{seconds:7.1f} s")
        if path is not None:
            save_model(path, net, CIFAR10_CLASSES,
                       normalization=normalization_entry(CIFAR10_MEAN, CIFAR10_STD),
                       **_state(net, optimizer, lookahead, epoch, step, seconds, history, run,
                                finished))
    report = {"preset": preset.name, "seed": seed, "resumed_from": start_epoch,
              "device": str(device), "train_seconds": seconds,
              "train_images": step * preset.batch_size, "steps": step,
              "epochs_done": step * preset.batch_size / len(labels),
              "images_per_second": step * preset.batch_size / seconds if seconds else None,
              "precision": str(dtype).replace("torch.", "") if dtype else "float32",
              "threads": torch.get_num_threads(), "final_lr_factor": factor,
              "budget_seconds": run["budget_seconds"], "history": history}
    return net, report


def evaluate(net: nn.Module, preset: Preset, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device | str = "cpu") -> dict:
    """Accuracy of ``net`` on uint8 ``images`` without TTA and with the preset's TTA level."""
    dtype = autocast_dtype(preset, torch.device(device))
    plain = accuracy(predict_logits(net, images, 0, dtype=dtype,
                                    channels_last=preset.channels_last), labels)
    tta = (accuracy(predict_logits(net, images, preset.tta, dtype=dtype,
                                   channels_last=preset.channels_last), labels)
           if preset.tta else plain)
    return {"accuracy": tta, "accuracy_no_tta": plain, "tta": preset.tta}


def parse_changes(items: Sequence[str]) -> dict:
    """``["epochs=5", "widths=[48,192,192]"]`` -> ``{"epochs": 5, "widths": [48, 192, 192]}``."""
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: write FIELD=VALUE, e.g. --set epochs=5")
        try:
            changes[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[key] = value
    return changes


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: train one preset, checkpoint every epoch, score the test set (or, with
    ``--val-size``, the held-out images) once, print JSON."""
    from .data import DataError
    from .devices import DeviceError, get_device
    from .params import add_arguments

    parser = argparse.ArgumentParser(prog="python -m cifar_helpers.modern", description=main.__doc__)
    add_arguments(parser, "data_dir")
    parser.add_argument("--preset", default="auto", help=f"auto or one of {sorted(PRESETS)}")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a preset field, e.g. --set epochs=5 --set widths=(48,192,192)")
    add_arguments(parser, "seed", "device")
    parser.add_argument("--val-size", type=int, default=0,
                        help="hold out this many training images and score on them, not the test set")
    parser.add_argument("--checkpoint", default=None, help="write the training state here every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="train for this many seconds (probe included): the recipe chooses "
                             "the net and epochs that fit; replaces --preset and --set")
    args = parser.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)   # noqa: E731
    try:
        changes = parse_changes(args.set)
        if args.resume and not args.checkpoint:
            raise ValueError("--resume needs --checkpoint (the file to continue from)")
        if args.budget is not None:
            check_budget(args.budget)
            if args.preset != "auto" or changes:
                raise ValueError("--budget chooses the preset itself; leave out --preset and --set")
        device = get_device(args.device)
        preset = get_preset(args.preset, device, **changes)
        setup = time.perf_counter()
        x, y, score_x, score_y, scored = load_split(args.data_dir, args.val_size)
        plan = None
        if args.budget is not None:
            plan = resume_or_plan(args.budget, device, args.checkpoint, args.resume,
                                  train_images=len(y))
            preset = plan.preset
            log(plan.reason)
        setup = time.perf_counter() - setup - (plan.probe_seconds if plan else 0.0)
        net, report = train(preset, x, y, seed=args.seed, device=device,
                            val=(score_x, score_y) if args.val_size else None,
                            checkpoint=args.checkpoint, resume=args.resume, log=log, budget=plan)
    except (DataError, DeviceError, CheckpointError, ValueError) as err:
        print(f"cifar_helpers.modern: {err}", file=sys.stderr)
        raise SystemExit(2)
    result = {k: v for k, v in report.items() if k != "history"}
    if plan is not None:
        result.update(probe_seconds=plan.probe_seconds, choice=plan.reason)
    result.update(reproducible=plan is None)
    start = time.perf_counter()
    result.update(evaluate(net, preset, score_x, score_y, device), scored_on=scored,
                  setup_seconds=setup, eval_seconds=time.perf_counter() - start)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
