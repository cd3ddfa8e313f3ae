"""Choosing the device (CUDA, Apple MPS, CPU) and the CPU thread count."""

from __future__ import annotations

import os

import torch


class DeviceError(RuntimeError):
    """The asked-for device does not exist here; the message lists what does."""


def available_devices() -> list[str]:
    """Device names usable here, best first."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names + ["cpu"]


def get_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; any other name must exist here."""
    available = available_devices()
    if name == "auto":
        return torch.device(available[0])
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"device={name!r} is not a device name ({err}); use 'auto' or one of "
                          f"{available}") from err
    wanted = str(device) if device.index is not None or device.type != "cuda" else "cuda:0"
    if wanted not in available:
        raise DeviceError(f"device={name!r} is not available on this machine; available: "
                          f"{available}. Use device='auto' to pick the best one.")
    return device


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
