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
    ax.plot(np.arange(1, len(loss) + 1) / steps_per_epoch, loss, alpha=0.15, lw=0.5, label="step")
    ax.plot(x, smooth, lw=2, label=f"mean ({window} steps)")
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
    ax.set(xlabel="training seconds", ylabel="test accuracy (%)", xscale="log", ylim=(0, 100))
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
         fmt: str = "{:.1f}", log: bool = False, xmin: float | None = None) -> Figure:
    """Horizontal bars, first name on top, each labelled with its value.

    ``log``: a logarithmic value axis (for values that span decades); ``xmin``: where the value
    axis starts (e.g. 0, so bar lengths compare; by default it may start above 0).
    """
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.0))
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color="tab:blue")
    ax.set_yticks(y, names)
    lo, hi = min(values), max(values)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(xmin or lo / 3, hi * 4)
    else:
        ax.set_xlim(max(0.0, lo - (hi - lo) * 0.5 - 1e-9) if xmin is None else xmin,
                    hi + (hi - lo) * 0.25 + 1e-9)
    if lo < 0:                                   # gains and losses: a zero line, labels outside
        ax.axvline(0, color="black", lw=0.8)
    for yi, v in zip(y, values):
        text = " " + fmt.format(v) if v >= 0 else fmt.format(v) + " "
        ax.text(v, yi, text, va="center", ha="left" if v >= 0 else "right", fontsize=8)
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return fig


def image_rows(rows: dict[str, torch.Tensor], titles: Sequence[str]) -> Figure:
    """One row of images (floats in [0, 1], N x 3 x H x W) per entry of ``rows``, each row
    labelled on the left with its key and each column titled with ``titles``."""
    ncols = len(titles)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.2 * ncols + 1.2, 1.3 * len(rows) + 0.3),
                             squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        pics = images.detach().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for k, ax in enumerate(axes[r]):
            ax.imshow(pics[k])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(titles[k], fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def labelled_points(groups: dict[str, list[tuple[float, float, str]]], xlabel: str, ylabel: str,
                    title: str = "", logx: bool = True, connect: Sequence[str] = (),
                    legend: str = "best") -> Figure:
    """A scatter plot, one colour and marker per group; each point ``(x, y, label)`` is annotated
    with its label (none if empty, nor where the same label is already printed on the spot); the
    groups named in ``connect`` are drawn as lines through their points and annotated only where
    the label changes along the line; ``legend`` places the legend (a Matplotlib ``loc``)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    markers = "osD^v<>p*h"
    placed: list[tuple[str, float, float]] = []       # labels printed: text and data position
    every_y = [p[1] for points in groups.values() for p in points]
    near = 0.03 * (max(every_y, default=0) - min(every_y, default=0))   # "on the spot"
    for k, (name, points) in enumerate(groups.items()):
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        style = "-" if name in connect else ""
        ax.plot(xs, ys, marker=markers[k % len(markers)], ms=6, lw=1, ls=style or "none", label=name,
                zorder=3)
        shown = None
        for x, y, label in points:
            if style and label == shown:
                continue
            shown = label
            if not label or any(t == label and px == x and abs(py - y) <= near
                                for t, px, py in placed):
                continue
            placed.append((label, x, y))
            ax.annotate(label, (x, y), xytext=(5, -3) if style else (-2, 6), textcoords="offset points",
                        fontsize=7, ha="left" if style else "right")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=7)
    fig.tight_layout()
    return fig


def grouped_barh(series: dict[str, dict[str, float]], xlabel: str, title: str = "",
                 log: bool = True, fmt: str = "{:.1f}") -> Figure:
    """Horizontal bars in groups, first group on top: ``series`` maps each series name (one
    colour, in the legend) to ``{group: value}``; a group a series lacks has no bar there.
    ``log``: a logarithmic value axis, for values that span decades."""
    groups = list(dict.fromkeys(g for values in series.values() for g in values))
    k = len(series)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * k * len(groups) + 0.25 * len(groups) + 1.3))
    centers = np.arange(len(groups))[::-1].astype(float)
    for j, (name, values) in enumerate(series.items()):
        ys = [c + 0.4 - height * (j + 0.5) for c, g in zip(centers, groups) if g in values]
        vs = [values[g] for g in groups if g in values]
        ax.barh(ys, vs, height=height * 0.9, label=name)
        for y, v in zip(ys, vs):
            ax.text(v, y, " " + fmt.format(v), va="center", fontsize=7)
    ax.set_yticks(centers, groups)
    every = [v for values in series.values() for v in values.values()]
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(every) / 2, max(every) * 3)
    else:
        ax.set_xlim(0, max(every) * 1.2)
    ax.set(xlabel=xlabel, title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35 / len(groups) - 0.06),
              ncol=min(k, 3), frameon=False)
    fig.tight_layout()
    return fig


def class_accuracy_bars(per_class: dict[str, float], overall: float | None = None,
                        chance: float = 0.1) -> Figure:
    """Accuracy of every class (fractions) as bars on a 0-100 % axis, first class on top, with
    random guessing's ``chance`` (dashed red) and the ``overall`` accuracy (dotted black).
    Notebook 04."""
    names, values = list(per_class), [100 * v for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color="tab:blue")
    ax.set_yticks(y, names)
    ax.set_xlim(0, 100)
    ax.axvline(100 * chance, color="tab:red", ls="--", lw=1.2, label=f"chance ({100 * chance:.0f} %)")
    if overall is not None:
        ax.axvline(100 * overall, color="black", ls=":", lw=1.2, label=f"overall ({100 * overall:.1f} %)")
    for yi, v in zip(y, values):
        ax.text(v + 1, yi, f"{v:.1f}", va="center", fontsize=8)
    ax.set(xlabel="test accuracy (%)", title="accuracy per class")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
