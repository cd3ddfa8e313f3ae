"""Notebook 02's ``class Net`` (the cell a learner copies) against its twin ``cifar_helpers.models.Net``."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from notebook_code import run_cell

from cifar_helpers import models


def notebook_net_class():
    return run_cell("02_network", "twin-net", {"torch": torch, "nn": nn, "F": F})["Net"]


def shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in net.state_dict().items()]


@pytest.mark.parametrize("widths", [(), (64, 128), (3, 5)], ids=["seed", "wide", "narrow"])
def test_notebook_net_is_the_package_net(widths):
    Net = notebook_net_class()
    twin = models.wide_net() if widths == (64, 128) else models.Net(*widths)
    ours = Net(*widths)
    assert shapes(ours) == shapes(twin)
    assert [type(m) for m in ours.modules()][1:] == [type(m) for m in twin.modules()][1:]
    ours.load_state_dict(twin.state_dict())          # strict: same names, nothing left over
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = ours(x)
    assert out.shape == (5, 10) and torch.equal(out, twin(x))
    out.sum().backward()
    twin(x).sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), twin.named_parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_notebook_net_starts_from_the_package_weights_for_the_same_seed():
    Net = notebook_net_class()
    torch.manual_seed(0)
    ours = Net()
    torch.manual_seed(0)
    twin = models.Net()
    assert models.count_parameters(ours) == models.count_parameters(twin) == 62_006
    for (name, p), (_, q) in zip(ours.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(p, q), name
