"""Net against the seed's own definition, written here as the reference."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar_helpers.models import Net, count_parameters, wide_net


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
