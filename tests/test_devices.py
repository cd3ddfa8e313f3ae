"""Device choice: auto picks what exists, an absent device is a clear error."""

import pytest
import torch

from cifar_helpers.devices import DeviceError, available_devices, get_device, synchronize


def test_auto_picks_the_best_available():
    assert get_device("auto") == torch.device(available_devices()[0])
    assert get_device("cpu") == torch.device("cpu")
    assert available_devices()[-1] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_absent_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"device='cuda' is not available on this machine; available: \[.*'cpu'\]"):
        get_device("cuda")


def test_nonsense_device_name():
    with pytest.raises(DeviceError, match="not a device name"):
        get_device("gpu please")


def test_synchronize_waits_on_cuda_and_mps_only(monkeypatch):
    """Timers on CUDA and MPS must wait for the queued work; the CPU has nothing to wait for."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("cuda", device)))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps", None)))
    synchronize("cpu")
    synchronize(torch.device("cuda", 1))
    synchronize("mps")
    assert calls == [("cuda", torch.device("cuda", 1)), ("mps", None)]
