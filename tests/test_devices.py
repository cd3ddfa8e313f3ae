"""Device choice: auto picks what exists, an absent device is a clear error."""

import pytest
import torch

from cifar_helpers.devices import DeviceError, available_devices, get_device


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
