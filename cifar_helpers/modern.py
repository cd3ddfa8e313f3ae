"""The modern recipe: ConvGroupNet, batched tensor augmentation, lookahead/EMA, TTA, presets.

Everything random in a run is derived from ``(seed, epoch)``, so an epoch-boundary checkpoint
resumes bit-identically. Hyper-parameters follow airbench94 (Keller Jordan) in its "decoupled"
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

from .checkpoint import CheckpointError, check_same_run, normalization_entry, read_checkpoint
from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from .devices import cpu_threads, supports_bf16, synchronize
from .models import ConvGroupNet
from .train import NonFiniteLossError, save_checkpoint, set_step_delay_from_env, step_delay


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


def get_preset(name: str, device: torch.device | str = "cpu", **changes) -> Preset:
    """A preset by name (``"auto"``: by device), with ``changes`` to its fields, validated."""
    device = torch.device(device)
    if name == "auto":
        name = "gpu94" if device.type == "cuda" else "cpu10"
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; choose 'auto' or one of {sorted(PRESETS)}")
    unknown = set(changes) - set(Preset.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown preset field(s) {sorted(unknown)}; known: "
                         f"{sorted(Preset.__dataclass_fields__)}")
    p = replace(PRESETS[name], **changes)
    try:
        p = replace(p, widths=tuple(int(w) for w in p.widths))
    except (TypeError, ValueError):
        raise ValueError(f"widths={p.widths!r} must be three whole numbers, e.g. [64, 256, 256]") from None
    checks = [(p.epochs > 0, "epochs must be > 0"), (p.batch_size >= 1, "batch_size must be >= 1"),
              (p.lr > 0, "lr must be > 0"), (0 <= p.momentum < 1, "momentum must be in [0, 1)"),
              (p.weight_decay >= 0, "weight_decay must be >= 0"),
              (0 <= p.warmup < 1, "warmup must be in [0, 1)"),
              (0 <= p.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
              (0 <= p.translate <= 8, "translate must be 0..8 pixels"),
              (p.tta in (0, 1, 2), "tta must be 0, 1 or 2"),
              (0 < p.ema_decay < 1, "ema_decay must be in (0, 1)"),
              (p.whiten_eps > 0, "whiten_eps must be > 0"),
              (isinstance(p.batch_size, int) and isinstance(p.translate, int),
               "batch_size and translate must be whole numbers"),
              (len(p.widths) == 3 and min(p.widths) >= 1, "widths must be three numbers >= 1"),
              (p.precision in ("auto", "bf16", "fp16", "fp32"),
               "precision must be 'auto', 'bf16', 'fp16' or 'fp32'")]
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        raise ValueError(f"preset {name!r} with {changes}: " + "; ".join(bad))
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


def warm_up(preset: Preset, device: torch.device | str) -> None:
    """Untimed steps of a throwaway net at the preset's shapes: one-time set-up (oneDNN
    primitives on CPU, cuDNN autotuning and the eigen-solver's library load on CUDA) stays out
    of the timed runs."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    step_throughput(preset, device, steps=1)
    net = ConvGroupNet(preset.widths).to(device)
    init_whitening(net, torch.randn(64, 3, 32, 32, device=device), preset.whiten_eps)
    predict_logits(net, torch.zeros(1000, 3, 32, 32, dtype=torch.uint8), preset.tta,
                   dtype=autocast_dtype(preset, device), channels_last=preset.channels_last)


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


def step_throughput(preset: Preset, device: torch.device | str = "cpu", steps: int = 10) -> float:
    """Images per second of the preset's training steps on random data (no data or eval cost)."""
    device = torch.device(device)
    dtype = autocast_dtype(preset, device)
    fmt = torch.channels_last if preset.channels_last else torch.contiguous_format
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(preset.batch_size))
    try:
        net = ConvGroupNet(preset.widths).to(device, memory_format=fmt)
        compiled = torch.compile(net) if preset.compile else net
        optimizer = make_optimizer(net, preset)
        x = torch.randn(preset.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (preset.batch_size,), device=device)
        for i in range(steps + 2):
            if i == 2:                            # the first steps set up kernels: not timed
                synchronize(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(compiled(x), y, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        return steps * preset.batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)


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


# ----------------------------------------------------------------------------- training

def _state(net, optimizer, lookahead, epoch, step, seconds, history, run) -> dict:
    return dict(epoch=epoch, step=step, seconds=seconds, history=history, run=run,
                optimizer=optimizer.state_dict(),
                lookahead=lookahead.state_dict() if lookahead is not None else None)


def train(preset: Preset, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
          device: torch.device | str = "cpu", val: tuple[torch.Tensor, torch.Tensor] | None = None,
          checkpoint: str | Path | None = None, resume: bool = False,
          log: Callable[[str], None] | None = print) -> tuple[ConvGroupNet, dict]:
    """Train a fresh ``ConvGroupNet`` with ``preset`` on uint8 ``images``; return it and a report.

    Only training is timed (``train_seconds``): the whitening set-up and every step, not the
    per-epoch validation (with ``val``) nor checkpoint writes. With ``checkpoint`` the whole state
    is saved atomically after each epoch; ``resume`` continues exactly from that file.
    """
    device = torch.device(device)
    if len(labels) < preset.batch_size:
        raise ValueError(f"{len(labels)} training images are fewer than one batch "
                         f"(batch_size={preset.batch_size}); lower batch_size or use more images.")
    dtype = autocast_dtype(preset, device)
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(preset.batch_size))
    try:
        return _train(preset, images, labels, seed, device, val, checkpoint, resume, log, dtype)
    finally:
        torch.set_num_threads(old_threads)


def _train(preset, images, labels, seed, device, val, checkpoint, resume, log, dtype):
    fmt = torch.channels_last if preset.channels_last else torch.contiguous_format
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    images, labels = images.to(device), labels.to(device)
    torch.manual_seed(seed)
    net = ConvGroupNet(preset.widths).to(device)
    steps_per_epoch = len(labels) // preset.batch_size
    total = max(1, math.ceil(preset.epochs * steps_per_epoch))
    ema_every = max(1, round(5 * 1024 / preset.batch_size))   # update every ~5,120 examples
    ema_base = preset.ema_decay ** (ema_every * preset.batch_size / 1024)
    flip_base = (torch.rand(len(labels), generator=epoch_generator(seed, -1)) < 0.5).to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=preset.label_smoothing, reduction="sum")
    run = {"preset": asdict(preset), "seed": seed, "train_images": len(labels)}
    history: dict = {"epoch": [], "train_loss": [], "val_accuracy": [], "seconds": []}
    path = Path(checkpoint) if checkpoint else None

    seconds, step, start_epoch, lookahead = 0.0, 0, 0, None
    clock = time.perf_counter()
    prepared = prepare(images, preset, dtype)
    if preset.whiten:
        sample = torch.randperm(len(labels), generator=epoch_generator(seed, -2))[:5000]
        init_whitening(net, normalize(images[sample.to(images.device)]), preset.whiten_eps)
    else:
        net.whiten.weight.requires_grad_(True)
    net = net.to(memory_format=fmt)
    optimizer = make_optimizer(net, preset)
    seconds += time.perf_counter() - clock

    if path is not None and resume and path.exists():
        state = read_checkpoint(path)
        if "optimizer" not in state or state.get("model") != "ConvGroupNet":
            raise CheckpointError(f"{path} is not a modern-recipe training checkpoint; use another "
                                  f"checkpoint path or resume=False.")
        check_same_run(state, run, path)
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if state["lookahead"] is not None:
            lookahead = Lookahead(net)
            lookahead.load_state_dict(state["lookahead"])
        start_epoch, step, seconds, history = state["epoch"], state["step"], state["seconds"], state["history"]
        if log:
            log(f"resumed from {path} after epoch {start_epoch} ({seconds:.1f} s of training)")
    compiled = torch.compile(net) if preset.compile else net
    # float16 (a GPU without fast bfloat16, such as Colab's T4) needs a loss scaler; with
    # bfloat16 or float32 it is switched off and each call passes straight through. Its scale
    # is not checkpointed: a resumed float16 run starts it again.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    net.train()
    for epoch in range(start_epoch, math.ceil(total / steps_per_epoch)):
        clock = time.perf_counter()
        net.whiten.bias.requires_grad_(epoch < preset.whiten_bias_epochs)
        losses = []
        for inputs, targets in epoch_batches(prepared, labels, preset, seed, epoch, flip_base):
            factor = lr_factor(step, total, preset.warmup, preset.lr_start, preset.lr_end)
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
            if preset.lookahead and epoch >= preset.ema_start and step % ema_every == 0:
                if lookahead is None:
                    lookahead = Lookahead(net)
                else:
                    lookahead.update(net, ema_base * (step / total) ** 3)
            step_delay()                          # test hook; a no-op unless set
            if step >= total:
                break
        if lookahead is not None:
            lookahead.update(net, 1.0)            # end every epoch on the averaged weights
        losses = torch.stack(losses).float() / preset.batch_size     # one sync per epoch
        synchronize(device)
        seconds += time.perf_counter() - clock
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            kept = (f" The checkpoint after epoch {epoch} is kept at {path}."
                    if path is not None and path.exists() else "")
            raise NonFiniteLossError(
                f"loss is {losses[i].item()} at epoch {epoch + 1}, step {i + 1}: training diverged. "
                f"Try a lower learning rate (lr).{kept}")
        train_loss = losses.mean().item()
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(train_loss)
        history["seconds"].append(seconds)
        val_acc = None
        if val is not None:
            val_acc = accuracy(predict_logits(net, val[0], 0, dtype=dtype,
                                              channels_last=preset.channels_last), val[1])
        history["val_accuracy"].append(val_acc)
        if log:
            log(f"epoch {epoch + 1:2d}  train loss {train_loss:.4f}  " +
                (f"val accuracy {val_acc:.4f}  " if val_acc is not None else "") +
                f"{seconds:7.1f} s")
        if path is not None:
            save_checkpoint(path, net, CIFAR10_CLASSES, f"after epoch {epoch + 1}",
                            normalization=normalization_entry(CIFAR10_MEAN, CIFAR10_STD),
                            **_state(net, optimizer, lookahead, epoch + 1, step, seconds, history, run))
    report = {"preset": preset.name, "seed": seed, "resumed_from": start_epoch,
              "device": str(device), "train_seconds": seconds,
              "train_images": step * preset.batch_size, "steps": step,
              "images_per_second": step * preset.batch_size / seconds if seconds else None,
              "precision": str(dtype).replace("torch.", "") if dtype else "float32",
              "threads": torch.get_num_threads(), "history": history}
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


def _preset_from_repr(text: str) -> Preset:
    """The :class:`Preset` printed as ``Preset(name='gpu94', widths=(64, 256, 256), ...)``."""
    call = ast.parse(text.strip(), mode="eval").body
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Preset"):
        raise ValueError(f"not a Preset: {text[:60]!r}")
    return Preset(**{k.arg: ast.literal_eval(k.value) for k in call.keywords})


def preset_name_of(preset: Preset) -> str | None:
    """The name of the preset in :data:`PRESETS` with ``preset``'s settings (its name and
    ``compile`` aside), or None."""
    same = lambda p: replace(p, name="", compile=False)
    return next((n for n, p in PRESETS.items() if same(p) == same(preset)), None)


def read_bench_logs(folder: str | Path) -> list[dict]:
    """One row per ``bench fast`` run in the logs ``folder/*.log`` (as committed in ``benchmarks/``):
    ``log``, ``machine`` (the GPU named in the log's first line), ``preset`` (a name from
    :data:`PRESETS` or None), ``widths``, ``epochs``, ``compile``, ``scored_on`` ("test" or
    "val"), ``seeds``, ``accuracy`` (mean), ``min_accuracy``, ``train_seconds`` (mean) and
    ``seed_seconds`` (each seed's)."""
    import re

    rows = []
    for path in sorted(Path(folder).glob("*.log")):
        lines = path.read_text(encoding="utf-8").splitlines()
        found = re.search(r"NVIDIA (\w+)", lines[0]) if lines else None
        machine = found.group(1) if found else None
        block = None
        for line in lines:
            if line.startswith("# bench fast:"):
                block = {"scored_on": "val" if "validation" in line else "test", "seconds": []}
            elif block is not None and line.startswith("# Preset("):
                block["preset"] = _preset_from_repr(line[2:])
            elif block is not None and line.startswith("seed "):
                block["seconds"].append(float(line.split("train")[1].split()[0]))
            elif block is not None and line.startswith("{") and "mean_train_seconds" in line:
                summary, p = json.loads(line), block["preset"]
                key = "test" if block["scored_on"] == "test" else "val"
                rows.append({"log": path.name, "machine": machine, "preset": preset_name_of(p),
                             "widths": p.widths, "epochs": p.epochs, "compile": p.compile,
                             "scored_on": block["scored_on"], "seeds": summary["seeds"],
                             "accuracy": summary[f"mean_{key}_accuracy"],
                             "min_accuracy": summary[f"min_{key}_accuracy"],
                             "train_seconds": summary["mean_train_seconds"],
                             "seed_seconds": block["seconds"]})
                block = None
    return rows


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
    import os

    from .data import DataError
    from .devices import DeviceError, get_device

    parser = argparse.ArgumentParser(prog="python -m cifar_helpers.modern", description=main.__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("CIFAR10_DATA_DIR") or "data")
    parser.add_argument("--preset", default="auto", help=f"auto or one of {sorted(PRESETS)}")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a preset field, e.g. --set epochs=5 --set widths=(48,192,192)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--val-size", type=int, default=0,
                        help="hold out this many training images and score on them, not the test set")
    parser.add_argument("--checkpoint", default=None, help="write the training state here every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    args = parser.parse_args(argv)
    set_step_delay_from_env()
    try:
        changes = parse_changes(args.set)
        if args.resume and not args.checkpoint:
            raise ValueError("--resume needs --checkpoint (the file to continue from)")
        device = get_device(args.device)
        preset = get_preset(args.preset, device, **changes)
        x, y, score_x, score_y, scored = load_split(args.data_dir, args.val_size)
        net, report = train(preset, x, y, seed=args.seed, device=device,
                            val=(score_x, score_y) if args.val_size else None,
                            checkpoint=args.checkpoint, resume=args.resume,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    except (DataError, DeviceError, CheckpointError, ValueError) as err:
        print(f"modern: {err}", file=sys.stderr)
        raise SystemExit(2)
    result = {k: v for k, v in report.items() if k != "history"}
    result.update(evaluate(net, preset, score_x, score_y, device), scored_on=scored)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
