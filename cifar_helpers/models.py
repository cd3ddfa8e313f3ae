"""The seed's ``Net`` and its wider variant (the seed's exercise)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """The seed's CNN: two 5x5 conv + max-pool stages, then three linear layers.

    ``c1``/``c2`` are the two convolutions' output channels: 6 and 16 in the seed; the seed's
    exercise widens them.
    """

    def __init__(self, c1: int = 6, c2: int = 16, num_classes: int = 10):
        super().__init__()
        if min(c1, c2, num_classes) < 1:
            raise ValueError(f"c1={c1}, c2={c2}, num_classes={num_classes} must all be >= 1")
        self.c1, self.c2, self.num_classes = c1, c2, num_classes
        self.conv1 = nn.Conv2d(3, c1, 5)         # 3x32x32 -> c1x28x28
        self.pool = nn.MaxPool2d(2, 2)           # halves height and width
        self.conv2 = nn.Conv2d(c1, c2, 5)        # c1x14x14 -> c2x10x10
        self.fc1 = nn.Linear(c2 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)                  # every dimension but the batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def config(self) -> dict[str, int]:
        """The arguments that rebuild this network (stored in checkpoints)."""
        return {"c1": self.c1, "c2": self.c2, "num_classes": self.num_classes}


def wide_net(num_classes: int = 10) -> Net:
    """The seed's exercise: a wider ``Net`` (conv channels 6/16 -> 64/128)."""
    return Net(c1=64, c2=128, num_classes=num_classes)


MODELS = {"Net": Net}


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
