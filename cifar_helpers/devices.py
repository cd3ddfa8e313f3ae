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


def no_gpu_note(several: bool = False) -> str:
    """One line for a notebook that found no GPU (``several``: fewer than two, for multi-GPU
    work): how to get them where it runs."""
    import sys
    colab, kaggle = "google.colab" in sys.modules, "KAGGLE_KERNEL_RUN_TYPE" in os.environ
    if several and kaggle:
        how = "on Kaggle, Settings > Accelerator > GPU T4 x2, then run all cells again"
    elif several:
        how = (("Colab lends one GPU; " if colab else "") + "run it on Kaggle (GPU T4 x2) or a "
               "machine with two or more NVIDIA GPUs for the GPU figures")
    elif colab:
        how = "in Colab, Runtime > Change runtime type > a GPU, then run all cells again"
    elif kaggle:
        how = "on Kaggle, Settings > Accelerator > a GPU, then run all cells again"
    else:
        how = "run it on a machine with an NVIDIA GPU or Apple silicon for the GPU figures"
    found = ("Fewer than two GPUs here, so the processes run on the CPU" if several
             else "No GPU here, so this notebook carries on with the CPU")
    return f"{found} ({how})."


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished its queued work (CUDA and MPS run asynchronously), so a
    clock read afterwards measures the work, not only its launch; a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def idle_cores(sample_seconds: float = 0.25) -> float:
    """How many cores are idle right now: sampled from /proc/stat on Linux, else the load average."""
    n = cpu_count()
    try:
        def snapshot() -> tuple[int, int]:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, total (no guest time)
        import time
        idle0, total0 = snapshot()
        time.sleep(sample_seconds)
        idle1, total1 = snapshot()
        share = (idle1 - idle0) / max(1, total1 - total0)   # /proc/stat counts every core
        return min(float(n), share * (os.cpu_count() or n))
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, n - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(n)


def cpu_threads(batch_size: int, max_threads: int | None = None) -> int:
    """The project's CPU thread policy: 1 for tiny batches, else the cores idle right now.

    A batch of a few images is too small to split (1 thread is as fast as 2 here), and every
    thread that has to share a core with another busy program stalls all the others.
    """
    if batch_size < 32:
        return 1
    limit = min(cpu_count(), max_threads or torch.get_num_threads() or cpu_count())
    return max(1, min(limit, int(idle_cores() + 0.25)))


def supports_bf16(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast is fast here: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    device = torch.device(device)
    if device.type == "cuda":   # Ampere (8.0) and newer; a T4 (7.5) only emulates bf16, slowly
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
