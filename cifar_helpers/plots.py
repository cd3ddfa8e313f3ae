"""Figures for the notebooks: image grids, loss curves, confusion matrices, mistakes."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .data import MEAN, STD


def unnormalize(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Undo ``Normalize``: back to [0, 1] for display."""
    mean = torch.as_tensor(mean).view(-1, 1, 1)
    std = torch.as_tensor(std).view(-1, 1, 1)
    return (images.cpu() * std + mean).clamp(0, 1)


def show_images(images: torch.Tensor, classes: Sequence[str], labels: torch.Tensor,
                predicted: torch.Tensor | None = None, ncols: int = 8) -> Figure:
    """A grid of normalized images titled with their labels (and predictions, red if wrong)."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.6 * nrows), squeeze=False)
    pics = unnormalize(images).permute(0, 2, 3, 1).numpy()
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(pics[k])
        title = classes[labels[k]]
        color = "black"
        if predicted is not None:
            title = f"{title}\n→ {classes[predicted[k]]}"
            color = "green" if predicted[k] == labels[k] else "red"
        ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    return fig


def loss_curve(step_loss: Sequence[float], steps_per_epoch: int, window: int = 500) -> Figure:
    """Per-step training loss, smoothed by a moving average, against epochs."""
    loss = np.asarray(step_loss, dtype=float)
    window = max(1, min(window, len(loss) // 10 or 1))
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    x = (np.arange(len(smooth)) + window) / steps_per_epoch
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(loss) + 1) / steps_per_epoch, loss, alpha=0.15, lw=0.5, label="per step")
    ax.plot(x, smooth, lw=2, label=f"mean of {window} steps")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="training loss")
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrix_plot(cm: torch.Tensor, classes: Sequence[str]) -> Figure:
    """Row-normalized confusion matrix (rows: true class, columns: predicted)."""
    cm = cm.double()
    frac = (cm / cm.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def accuracy_vs_time(curves: dict[str, tuple[Sequence[float], Sequence[float]]]) -> Figure:
    """Test accuracy against training seconds, one line per recipe."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (seconds, acc) in curves.items():
        ax.plot(seconds, np.asarray(acc) * 100, marker="o", label=name)
    ax.set(xlabel="training seconds", ylabel="test accuracy (%)", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def line(x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str = "") -> Figure:
    """One labelled line."""
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.plot(x, y)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig


def barh(names: Sequence[str], values: Sequence[float], xlabel: str, title: str = "",
         fmt: str = "{:.1f}") -> Figure:
    """Horizontal bars, first name on top, each labelled with its value."""
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.0))
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color="tab:blue")
    ax.set_yticks(y, names)
    lo, hi = min(values), max(values)
    ax.set_xlim(max(0.0, lo - (hi - lo) * 0.5 - 1e-9), hi + (hi - lo) * 0.25 + 1e-9)
    for yi, v in zip(y, values):
        ax.text(v, yi, " " + fmt.format(v), va="center", fontsize=8)
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return fig
