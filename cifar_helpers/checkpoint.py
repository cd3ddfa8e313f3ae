"""Saving a trained model atomically and rebuilding it from the file (``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, MEAN, STD
from .models import MODELS
# CheckpointError, check_same_run and save_atomic live in runstate; imported from here too
from .runstate import CheckpointError, check_same_run, read_state, save_atomic  # noqa: F401

FORMAT = "cifar_helpers.checkpoint/1"


def save_model(path: str | os.PathLike, net: nn.Module, classes: Sequence[str],
               **extra: Any) -> Path:
    """Save ``net``'s weights with what rebuilds it: model name, its config, class names."""
    name = type(net).__name__
    if name not in MODELS:
        raise CheckpointError(f"cannot save a {name}: known models are {sorted(MODELS)}")
    return save_atomic({"format": FORMAT, "model": name, "config": net.config(),
                        "classes": list(classes), "state_dict": net.state_dict(), **extra}, path)


def normalization_entry(mean: Sequence[float], std: Sequence[float]) -> dict:
    """The checkpoint entry that says how inputs were normalized: ``{"mean": [...], "std": [...]}``
    (per channel, applied to pixels scaled to [0, 1], as ``transforms.Normalize`` does)."""
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def normalization_of(info: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` that the checkpoint's model expects its inputs normalized with.

    Checkpoints record them (entry ``normalization``). Older ones, written before that entry
    existed, get what every training path of this package used: CIFAR-10's own statistics for a
    ``ConvGroupNet`` (``modern.normalize``) and for a ``Net`` trained by a recipe with
    ``normalize="dataset"`` (``speed.py``), the seed's (0.5, 0.5, 0.5) for any other ``Net``.
    """
    entry = info.get("normalization")
    if entry is not None:
        mean, std = tuple(float(m) for m in entry["mean"]), tuple(float(s) for s in entry["std"])
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise CheckpointError(f"the checkpoint's normalization {entry} is not a mean and a "
                                  f"positive std per channel")
        return mean, std
    recipe = (info.get("run") or {}).get("recipe") or {}
    if info.get("model") == "ConvGroupNet" or recipe.get("normalize") == "dataset":
        return CIFAR10_MEAN, CIFAR10_STD
    return MEAN, STD


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path.resolve()}. Run notebook 03_training "
                              f"(it saves one there), or set `checkpoint` to the file you saved.")
    blob = read_state(path)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return blob
    bare = from_state_dict(blob)
    if bare is None:
        raise CheckpointError(f"{path} is neither a cifar_helpers checkpoint (no format "
                              f"{FORMAT!r}) nor the state_dict of the seed's Net; save one with "
                              f"torch.save(net.state_dict(), PATH) as notebook 03_training does.")
    return bare


def from_state_dict(blob: Any) -> dict | None:
    """A checkpoint dict for a bare ``state_dict`` of a ``Net`` (what the seed's
    ``torch.save(net.state_dict(), PATH)`` writes), or None if ``blob`` is not one.

    The seed's lesson normalizes with (0.5, 0.5, 0.5) and uses CIFAR-10's ten classes.
    """
    keys = ("conv1.weight", "conv2.weight", "fc1.weight", "fc3.weight")
    if not isinstance(blob, dict) or not all(isinstance(blob.get(k), torch.Tensor) for k in keys):
        return None
    c1, c2, classes = blob["conv1.weight"].shape[0], blob["conv2.weight"].shape[0], \
        blob["fc3.weight"].shape[0]
    return {"format": FORMAT, "model": "Net",
            "config": {"c1": c1, "c2": c2, "num_classes": classes},
            "classes": list(CIFAR10_CLASSES) if classes == 10 else [str(i) for i in range(classes)],
            "state_dict": dict(blob), "normalization": normalization_entry(MEAN, STD)}


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu",
               expect_model: str | None = None, expect_classes: Sequence[str] | None = None
               ) -> tuple[nn.Module, dict]:
    """Rebuild the saved model; also return the checkpoint's other entries (classes, extras).

    Refuses a checkpoint made for another model or other classes.
    """
    blob = read_checkpoint(path)
    name = blob["model"]
    if name not in MODELS or (expect_model is not None and name != expect_model):
        raise CheckpointError(f"{path} holds a {name!r} model, expected "
                              f"{expect_model or sorted(MODELS)}.")
    if expect_classes is not None and list(expect_classes) != blob["classes"]:
        raise CheckpointError(f"{path} was trained on classes {blob['classes']}, not "
                              f"{list(expect_classes)}.")
    net = MODELS[name](**blob["config"])
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit {name}({blob['config']}): "
                              f"{err}") from err
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return net.to(device), info
