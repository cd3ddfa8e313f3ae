"""The seed's ``Net``, its wider variant (the seed's exercise), and the modern recipe's ``ConvGroupNet``."""

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


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the shift is learned) and a fast-moving average."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def conv3x3_as_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution (padding 1, stride 1, no bias) as one matrix product of the 3x3
    patches (im2col) and the filters; the result is in channels_last memory order."""
    n, c, h, w = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))          # N x H+2 x W+2 x C
    patches = torch.cat([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], 3)
    filters = weight.permute(0, 2, 3, 1).reshape(len(weight), 9 * c)   # same (i, j, c) order
    out = patches.reshape(n * h * w, 9 * c) @ filters.T
    return out.view(n, h, w, len(weight)).permute(0, 3, 1, 2)


class Conv3x3(nn.Conv2d):
    """3x3 conv, padding 1, no bias. Training on the CPU on maps of at most 4x4 pixels (the last
    group's second conv), it runs as :func:`conv3x3_as_matmul`: there oneDNN's weight gradient
    took 5-9 times as long as the forward pass (bf16, 2 cores; docs/benchmarks.md)."""

    SMALL = 16       # pixels per map, at most

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.training and x.device.type == "cpu" and torch.is_grad_enabled()
                and self.weight.requires_grad and x.shape[-2] * x.shape[-1] <= self.SMALL):
            return conv3x3_as_matmul(x, self.weight)
        return super().forward(x)


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU: halves height and width."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = Conv3x3(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(c_out)
        self.conv2 = Conv3x3(c_out, c_out)
        self.norm2 = BatchNorm(c_out)
        for conv in (self.conv1, self.conv2):   # identity on the first channels: an implicit
            nn.init.dirac_(conv.weight.data[:conv.in_channels])  # residual path at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        return F.gelu(self.norm2(self.conv2(x)))


class ConvGroupNet(nn.Module):
    """The modern recipe's network (after airbench94): a fixed 2x2 whitening conv, three conv
    groups of ``widths`` channels (31 -> 15 -> 7 -> 3 pixels), a max-pool
    and one linear layer whose output is scaled by ``scale``."""

    def __init__(self, widths: tuple[int, int, int] | list[int] = (64, 256, 256),
                 num_classes: int = 10, scale: float = 1 / 9):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1 or num_classes < 1:
            raise ValueError(f"widths={widths} must be three numbers >= 1, num_classes={num_classes} >= 1")
        self.widths, self.num_classes, self.scale = widths, num_classes, scale
        self.whiten = nn.Conv2d(3, 24, 2)          # set from the data by modern.init_whitening
        self.whiten.weight.requires_grad_(False)
        self.group1 = ConvGroup(24, widths[0])
        self.group2 = ConvGroup(widths[0], widths[1])
        self.group3 = ConvGroup(widths[1], widths[2])
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))                 # 3x32x32 -> 24x31x31
        x = self.group3(self.group2(self.group1(x)))   # -> widths[2] x 3 x 3
        return self.head(torch.flatten(self.pool(x), 1)) * self.scale

    def config(self) -> dict:
        """The arguments that rebuild this network (stored in checkpoints)."""
        return {"widths": list(self.widths), "num_classes": self.num_classes, "scale": self.scale}


MODELS = {"Net": Net, "ConvGroupNet": ConvGroupNet}


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
