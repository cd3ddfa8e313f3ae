"""The tutorial's parameters: the one place their defaults, types and ranges live."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

#: The seed's recipe. Notebooks repeat these as literals in their ``parameters`` cell
#: (papermill needs literals); ``tests/test_notebooks.py`` checks that they agree.
DEFAULTS: dict[str, Any] = {
    "data_dir": "data",          # CIFAR-10 root: torchvision's download or an image-folder copy
    "download": True,            # fetch the original archive through torchvision if missing
    "epochs": 2,                 # passes over the training set
    "batch_size": 4,             # images per step
    "lr": 0.001,                 # SGD learning rate
    "momentum": 0.9,             # SGD momentum
    "seed": 0,                   # seeds weights and data order
    "device": "auto",            # "auto", "cpu", "cuda", "cuda:1", "mps"
    "num_workers": 0,            # DataLoader worker processes (0 = load in the main process)
    "train_size": None,          # use the first N training images (None = all 50,000)
    "test_size": None,           # use the first N test images (None = all 10,000)
    "checkpoint": "checkpoints/cifar_net.pth",  # where notebook 03 saves and 04 loads the model
    "fast_data": True,           # batches from decoded in-memory tensors instead of a DataLoader
    "resume": False,             # continue training from the checkpoint if it exists
    "print_every": 2000,         # notebook 03: print the running loss every N mini-batches
    "resume_batches": 1000,      # notebook 03: mini-batches trained after its save-and-resume
    # the modern recipe (notebook 08; cifar_helpers.modern)
    "preset": "demo",            # "demo", "cpu5", "cpu10", "gpu94", "gpu5s", or "auto" (by device)
    "preset_changes": {},        # changes to the preset's fields, e.g. {"epochs": 5}
    "val_fraction": 0.1,         # share of the training images held out for validation
    "ladder_epochs": 2,          # epochs of each run in notebook 08's technique comparison
    "ladder_train_size": 10_000,  # training images of each of those runs (None = the whole split)
    "modern_checkpoint": "checkpoints/modern_net.pth",  # notebook 08's per-epoch checkpoint
    # data parallelism (notebook 07)
    "ddp_train_size": 10_000,    # training images of each torchrun run in notebook 07 (None = all)
    # using the model (notebook 09; cifar_helpers.predict)
    "image_paths": [],           # pictures to classify (JPEG, PNG, WebP, any size); empty: test images saved large
}

_TYPES: dict[str, tuple[type, ...]] = {
    "data_dir": (str, os.PathLike),
    "download": (bool,),
    "epochs": (int,),
    "batch_size": (int,),
    "lr": (float, int),
    "momentum": (float, int),
    "seed": (int,),
    "device": (str,),
    "num_workers": (int,),
    "train_size": (int, type(None)),
    "test_size": (int, type(None)),
    "checkpoint": (str, os.PathLike),
    "fast_data": (bool,),
    "resume": (bool,),
    "print_every": (int,),
    "resume_batches": (int,),
    "preset": (str,),
    "preset_changes": (dict,),
    "val_fraction": (float,),
    "ladder_epochs": (int, float),
    "ladder_train_size": (int, type(None)),
    "modern_checkpoint": (str, os.PathLike),
    "ddp_train_size": (int, type(None)),
    "image_paths": (list, tuple),
}


@dataclass(frozen=True)
class Params:
    """A validated, immutable set of the tutorial's parameters."""

    data_dir: str = DEFAULTS["data_dir"]
    download: bool = DEFAULTS["download"]
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    lr: float = DEFAULTS["lr"]
    momentum: float = DEFAULTS["momentum"]
    seed: int = DEFAULTS["seed"]
    device: str = DEFAULTS["device"]
    num_workers: int = DEFAULTS["num_workers"]
    train_size: int | None = DEFAULTS["train_size"]
    test_size: int | None = DEFAULTS["test_size"]
    checkpoint: str = DEFAULTS["checkpoint"]
    fast_data: bool = DEFAULTS["fast_data"]
    resume: bool = DEFAULTS["resume"]
    print_every: int = DEFAULTS["print_every"]
    resume_batches: int = DEFAULTS["resume_batches"]
    preset: str = DEFAULTS["preset"]
    preset_changes: dict = field(default_factory=dict)
    val_fraction: float = DEFAULTS["val_fraction"]
    ladder_epochs: float = DEFAULTS["ladder_epochs"]
    ladder_train_size: int | None = DEFAULTS["ladder_train_size"]
    modern_checkpoint: str = DEFAULTS["modern_checkpoint"]
    ddp_train_size: int | None = DEFAULTS["ddp_train_size"]
    image_paths: list = field(default_factory=list)

    def replace(self, **changes: Any) -> "Params":
        """A copy with ``changes`` applied and validated."""
        return make_params(**{**self.__dict__, **changes})


def default_data_dir() -> str:
    """``$CIFAR10_DATA_DIR`` if set, else ``"data"``."""
    return os.environ.get("CIFAR10_DATA_DIR") or DEFAULTS["data_dir"]


def make_params(**values: Any) -> Params:
    """Validate ``values`` (names, types, ranges) and return them as :class:`Params`.

    Raises ``ValueError`` naming every bad parameter and what it should be.
    """
    known = {f.name for f in fields(Params)}
    problems = []
    unknown = sorted(set(values) - known)
    if unknown:
        problems.append(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
    for name, value in values.items():
        if name not in known:
            continue
        types = _TYPES[name]
        # bool is an int in Python; refuse True where a count is meant.
        if isinstance(value, bool) and bool not in types:
            value_ok = False
        else:
            value_ok = isinstance(value, types)
        if not value_ok:
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{name}={value!r} has type {type(value).__name__}; expected {wanted}")
            continue
        msg = _range_problem(name, value)
        if msg:
            problems.append(msg)
    if problems:
        raise ValueError("Bad parameter(s): " + "; ".join(problems))
    clean = {k: (os.fspath(v) if k in ("data_dir", "checkpoint", "modern_checkpoint") else v)
             for k, v in values.items()}
    if "image_paths" in clean:
        clean["image_paths"] = [os.fspath(v) for v in clean["image_paths"]]
    for k in ("lr", "momentum"):
        if k in clean:
            clean[k] = float(clean[k])
    return replace(Params(), **clean)


def _range_problem(name: str, value: Any) -> str | None:
    if name in ("epochs", "batch_size", "print_every", "resume_batches") and value < 1:
        return f"{name}={value} must be at least 1"
    if name == "lr" and not value > 0:
        return f"lr={value} must be > 0 (try 0.001)"
    if name == "momentum" and not 0 <= value < 1:
        return f"momentum={value} must be in [0, 1)"
    if name == "num_workers" and value < 0:
        return f"num_workers={value} must be >= 0"
    if name in ("train_size", "test_size", "ddp_train_size") and value is not None and value < 1:
        return f"{name}={value} must be None (all images) or at least 1"
    if name == "seed" and value < 0:
        return f"seed={value} must be >= 0"
    if name == "val_fraction" and not 0 < value < 1:
        return f"val_fraction={value} must be between 0 and 1 (0.1 holds out 5,000 of 50,000 images)"
    if name == "ladder_epochs" and not value > 0:
        return f"ladder_epochs={value} must be > 0"
    if name == "ladder_train_size" and value is not None and value < 1:
        return f"ladder_train_size={value} must be None (the whole training split) or at least 1"
    if name == "preset_changes" and not all(isinstance(k, str) for k in value):
        return f"preset_changes={value!r} must map field names (strings) to values"
    if name in ("data_dir", "checkpoint", "preset", "modern_checkpoint") and not os.fspath(value):
        return f"{name} must not be empty"
    if name == "image_paths" and not all(isinstance(v, (str, os.PathLike)) and os.fspath(v)
                                         for v in value):
        return (f"image_paths={value!r} must be a list of file paths (strings), e.g. "
                f"['photos/cat.jpg'], or [] for the built-in examples")
    return None
