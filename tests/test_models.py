"""Net against the seed's own definition, written here as the reference; ConvGroupNet's
matmul convolution against torch's conv2d."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar_helpers import models
from cifar_helpers.models import (Conv3x3, ConvGroupNet, Net, conv3x3_as_matmul,
                                   count_parameters, wide_net)


class SeedNet(nn.Module):
    """The classic tutorial's network, as it defines it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def test_net_is_the_seed_network():
    torch.manual_seed(0)
    ours = Net()
    torch.manual_seed(0)
    seed = SeedNet()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in seed.state_dict().items()}
    for a, b in zip(ours.state_dict().values(), seed.state_dict().values()):
        assert torch.equal(a, b)  # same layers in the same order: same initialization
    x = torch.randn(5, 3, 32, 32)
    assert torch.equal(ours(x), seed(x))
    assert count_parameters(ours) == 62_006


def test_wide_variant_and_config():
    wide = wide_net()
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert wide.config() == {"c1": 64, "c2": 128, "num_classes": 10}
    assert count_parameters(wide) == 604_926
    assert Net(**Net(8, 24).config()).fc1.in_features == 24 * 25


def test_bad_widths():
    with pytest.raises(ValueError, match="must all be >= 1"):
        Net(c1=0)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_conv3x3_as_matmul_is_the_convolution(size, dtype):
    """The matmul path against torch's own conv2d: output, input and weight gradients, in float32
    and under bf16 autocast (one bf16 rounding apart), in channels_last memory."""
    torch.manual_seed(0)
    x = torch.randn(6, 5, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(7, 5, 3, 3)
    g = torch.randn(6, 7, size, size)
    results = []
    for conv in (lambda x, w: F.conv2d(x, w, padding=1), conv3x3_as_matmul):
        xx, ww = x.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            y = conv(xx, ww)
        results.append((y, *torch.autograd.grad(y, (xx, ww), g.to(y.dtype))))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype is None else dict(rtol=2e-2, atol=5e-2)
    for ref, ours in zip(*results):
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        torch.testing.assert_close(ours.float(), ref.float(), **tol)
    assert results[1][0].is_contiguous(memory_format=torch.channels_last)


def test_conv3x3_takes_the_matmul_path_only_where_it_pays(monkeypatch):
    """Only in training (train mode, gradients on) on the CPU, on maps of at most 4x4 pixels;
    else torch's conv2d."""
    calls = []
    real = models.conv3x3_as_matmul
    monkeypatch.setattr(models, "conv3x3_as_matmul",
                        lambda x, w: calls.append(tuple(x.shape[-2:])) or real(x, w))
    net = ConvGroupNet((4, 8, 8))
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert calls == [(3, 3)]                      # the last group's second conv only
    calls.clear()
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    net.eval()(torch.randn(2, 3, 32, 32)).sum().backward()
    net.train()
    net.requires_grad_(False)
    net(torch.randn(2, 3, 32, 32))
    assert calls == []                            # no_grad, eval mode, frozen weights: conv2d
    conv = Conv3x3(3, 4)
    conv(torch.randn(2, 3, 4, 4))
    conv(torch.randn(2, 3, 5, 4))
    assert calls == [(4, 4)]                      # 16 pixels: matmul; 20: conv2d
