"""Predictions and the numbers made from them: accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn


@torch.no_grad()
def predict(net: nn.Module, loader: Iterable, device: torch.device | str = "cpu"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted, labels)`` for every batch of ``loader``, as CPU tensors."""
    was_training = net.training
    net.eval()
    predicted, truth = [], []
    for inputs, labels in loader:
        outputs = net(inputs.to(device))
        predicted.append(torch.max(outputs, 1).indices.cpu())   # as notebook 04's loops
        truth.append(labels.cpu())
    net.train(was_training)
    return torch.cat(predicted), torch.cat(truth)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of predictions equal to the labels."""
    if labels.numel() == 0:
        raise ValueError("no labels to score")
    return (predicted == labels).sum().item() / labels.numel()


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int = 10
                     ) -> torch.Tensor:
    """``cm[true, predicted]`` counts, int64 ``num_classes x num_classes``."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_accuracy(predicted: torch.Tensor, labels: torch.Tensor,
                       classes: Sequence[str]) -> dict[str, float]:
    """Class name -> fraction of that class's images predicted correctly (NaN: no images)."""
    cm = confusion_matrix(predicted, labels, len(classes))
    totals = cm.sum(dim=1)
    return {c: int(cm[i, i]) / int(totals[i]) if totals[i] else float("nan")
            for i, c in enumerate(classes)}
