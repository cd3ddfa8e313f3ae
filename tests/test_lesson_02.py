"""Notebook 02's ``class Net`` and ``class WideNet`` (the cells a learner copies) against their
twins ``cifar_helpers.models.Net`` and ``cifar_helpers.models.wide_net``."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from notebook_code import run_cell

from cifar_helpers import models


def plain_namespace() -> dict:
    return {"torch": torch, "nn": nn, "F": F}


def notebook_net_class():
    return run_cell("02_network", "twin-net", plain_namespace())["Net"]


def notebook_wide_cell() -> dict:
    """Section 7's cell, run after ``Net`` on a random batch, as in the notebook."""
    ns = run_cell("02_network", "twin-net", plain_namespace())
    ns["net"] = ns["Net"]()
    ns["inputs"] = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return run_cell("02_network", "twin-wide", ns)


def shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in net.state_dict().items()]


def assert_same_network(ours: nn.Module, twin: nn.Module) -> None:
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


@pytest.mark.parametrize("which", ["seed", "wide"])
def test_notebook_networks_are_the_package_networks(which):
    if which == "seed":
        ours, twin = notebook_net_class()(), models.Net()
    else:
        ours, twin = notebook_wide_cell()["WideNet"](), models.wide_net()
    assert_same_network(ours, twin)


def test_notebook_net_starts_from_the_package_weights_for_the_same_seed():
    Net = notebook_net_class()
    torch.manual_seed(0)
    ours = Net()
    torch.manual_seed(0)
    twin = models.Net()
    assert models.count_parameters(ours) == models.count_parameters(twin) == 62_006
    for (name, p), (_, q) in zip(ours.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(p, q), name


def test_the_multiply_adds_the_notebook_prints():
    ns = notebook_wide_cell()
    assert ns["m_net"] == 651_720 and ns["m_wide"] == 24_638_120
    assert ns["n_net"] == 62_006 and ns["n_wide"] == models.count_parameters(models.wide_net())
