"""The tutorial's parameters: each declared once (default, types, range, help); ``DEFAULTS``,
:class:`Params`, :func:`make_params` and the command lines' :func:`add_arguments` come from it."""

from __future__ import annotations

import argparse
import copy
import os
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any, Callable, Union

PATH = (str, os.PathLike)
OPTIONAL_INT = (int, type(None))


@dataclass(frozen=True)
class Declaration:
    """One parameter: its default, accepted types, range check (``ok``; ``need`` completes the
    message ``name=value ...``), help text, and the environment variable command lines read."""

    default: Any
    types: tuple[type, ...]
    help: str
    ok: Callable[[Any], bool] = lambda value: True
    need: str = ""
    env: str | None = None


def _at_least_1(value: Any) -> bool:
    return value >= 1


def _none_or_at_least_1(value: Any) -> bool:
    return value is None or value >= 1


def _not_empty(value: Any) -> bool:
    return bool(os.fspath(value))


def _paths(value: Any) -> bool:
    return all(isinstance(v, PATH) and os.fspath(v) for v in value)


_POSITIVE = dict(ok=lambda v: v > 0, need="must be > 0")
_COUNT = dict(ok=_at_least_1, need="must be at least 1")
_SIZE = dict(ok=_none_or_at_least_1, need="must be None (all images) or at least 1")
_NOT_EMPTY = dict(ok=_not_empty, need="must not be empty")

#: The seed's recipe and the later lessons' settings. Notebooks repeat these as literals in their
#: ``parameters`` cell (papermill needs literals); ``tests/test_notebooks.py`` checks they agree.
DECLARATIONS: dict[str, Declaration] = {
    "data_dir": Declaration("data", PATH, "CIFAR-10 root: torchvision's download or an "
                            "image-folder copy", env="CIFAR10_DATA_DIR", **_NOT_EMPTY),
    "download": Declaration(True, (bool,), "fetch the original archive through torchvision "
                            "if missing"),
    "epochs": Declaration(2, (int,), "passes over the training set", **_COUNT),
    "batch_size": Declaration(4, (int,), "images per step", **_COUNT),
    "lr": Declaration(0.001, (float, int), "SGD learning rate", ok=lambda v: v > 0,
                      need="must be > 0 (try 0.001)"),
    "momentum": Declaration(0.9, (float, int), "SGD momentum", ok=lambda v: 0 <= v < 1,
                            need="must be in [0, 1)"),
    "seed": Declaration(0, (int,), "seeds weights and data order", ok=lambda v: v >= 0,
                        need="must be >= 0"),
    "device": Declaration("auto", (str,), '"auto", "cpu", "cuda", "cuda:1", "mps"',
                          **_NOT_EMPTY),
    "num_workers": Declaration(0, (int,), "DataLoader worker processes (0 = load in the main "
                               "process)", ok=lambda v: v >= 0, need="must be >= 0"),
    "train_size": Declaration(None, OPTIONAL_INT, "use the first N training images (None = all "
                              "50,000)", **_SIZE),
    "test_size": Declaration(None, OPTIONAL_INT, "use the first N test images (None = all "
                             "10,000)", **_SIZE),
    "checkpoint": Declaration("checkpoints/cifar_net.pth", PATH, "where notebook 03 saves and "
                              "04 loads the model", **_NOT_EMPTY),
    "fast_data": Declaration(True, (bool,), "batches from decoded in-memory tensors instead of "
                             "a DataLoader"),
    "resume": Declaration(False, (bool,), "continue training from the checkpoint if it exists"),
    "print_every": Declaration(2000, (int,), "notebook 03: print the running loss every N "
                               "mini-batches", **_COUNT),
    "resume_batches": Declaration(1000, (int,), "notebook 03: mini-batches trained after its "
                                  "save-and-resume", **_COUNT),
    # the modern recipe (notebook 08; cifar_helpers.modern)
    "preset": Declaration("demo", (str,), '"demo", "cpu5", "cpu10", "gpu94", "gpu5s", or "auto" '
                          "(by device)", **_NOT_EMPTY),
    "preset_changes": Declaration({}, (dict,), 'changes to the preset\'s fields, e.g. '
                                  '{"epochs": 5}', ok=lambda v: all(isinstance(k, str) for k in v),
                                  need="must map field names (strings) to values"),
    "val_fraction": Declaration(0.1, (float,), "share of the training images held out for "
                                "validation", ok=lambda v: 0 < v < 1,
                                need="must be between 0 and 1 (0.1 holds out 5,000 of 50,000 "
                                     "images)"),
    "ladder_epochs": Declaration(2, (int, float), "epochs of each run in notebook 08's technique "
                                 "comparison", **_POSITIVE),
    "ladder_train_size": Declaration(10_000, OPTIONAL_INT, "training images of each of those "
                                     "runs (None = the whole split)", ok=_none_or_at_least_1,
                                     need="must be None (the whole training split) or at least 1"),
    "budget_seconds": Declaration(120, (int, float, type(None)), "notebook 08: training "
                                  "seconds of the modern recipe's time budget (None: the "
                                  "preset's own epochs)", ok=lambda v: v is None or v >= 10,
                                  need="must be None or at least 10 (seconds)"),
    "modern_checkpoint": Declaration("checkpoints/modern_net.pth", PATH, "notebook 08's "
                                     "per-epoch checkpoint", **_NOT_EMPTY),
    # data parallelism (notebook 07)
    "ddp_train_size": Declaration(10_000, OPTIONAL_INT, "training images of each torchrun run in "
                                  "notebook 07 (None = all)", **_SIZE),
    # using the model (notebook 09; cifar_helpers.predict)
    "image_paths": Declaration([], (list, tuple), "pictures to classify (JPEG, PNG, WebP, any "
                               "size); empty: test images saved large", ok=_paths,
                               need="must be a list of file paths (strings), e.g. "
                                    "['photos/cat.jpg'], or [] for the built-in examples"),
}

DEFAULTS: dict[str, Any] = {name: d.default for name, d in DECLARATIONS.items()}


def _annotation(types: tuple[type, ...]) -> Any:
    return Union[types] if len(types) > 1 else types[0]


def _field(d: Declaration) -> Any:
    if isinstance(d.default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(d.default))
    return field(default=d.default)


Params = make_dataclass(
    "Params", [(name, _annotation(d.types), _field(d)) for name, d in DECLARATIONS.items()],
    frozen=True, namespace={"__doc__": "A validated, immutable set of the tutorial's parameters.",
                            "__module__": __name__})


def problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for parameter ``name`` (type, then range), or None."""
    d = DECLARATIONS[name]
    # bool is an int in Python; refuse True where a count is meant.
    if isinstance(value, bool) and bool not in d.types or not isinstance(value, d.types):
        wanted = " or ".join("None" if t is type(None) else t.__name__ for t in d.types
                             if t is not os.PathLike)
        return f"{name}={value!r} has type {type(value).__name__}; expected {wanted}"
    return None if d.ok(value) else f"{name}={value!r} {d.need}"


def _clean(name: str, value: Any) -> Any:
    """``value`` as :class:`Params` stores it: paths as strings, learning rates as floats."""
    types = DECLARATIONS[name].types
    if os.PathLike in types:
        return os.fspath(value)
    if name == "image_paths":
        return [os.fspath(v) for v in value]
    return float(value) if types == (float, int) else value


def make_params(**values: Any) -> Params:
    """Validate ``values`` (names, types, ranges) and return them as :class:`Params`.

    Raises ``ValueError`` naming every bad parameter and what it should be.
    """
    problems = []
    unknown = sorted(set(values) - set(DECLARATIONS))
    if unknown:
        problems.append(f"unknown parameter(s) {unknown}; known: {sorted(DECLARATIONS)}")
    problems += [p for name, value in values.items()
                 if name in DECLARATIONS and (p := problem(name, value))]
    if problems:
        raise ValueError("Bad parameter(s): " + "; ".join(problems))
    return replace(Params(), **{k: _clean(k, v) for k, v in values.items()})


def _from_text(name: str) -> Callable[[str], Any]:
    """argparse's ``type=`` for ``name``: the text converted and checked like make_params."""
    types = DECLARATIONS[name].types

    def convert(text: str) -> Any:
        value: Any = text
        try:
            if type(None) in types and text == "None":
                value = None
            elif int in types and float not in types:
                value = int(text)
            elif float in types:
                value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}={text!r} is not a number") from None
        msg = problem(name, value)
        if msg:
            raise argparse.ArgumentTypeError(msg)
        return _clean(name, value)

    convert.__name__ = name      # argparse names it in "invalid ... value" messages
    return convert


def add_arguments(parser: argparse.ArgumentParser, *names: str, **defaults: Any) -> None:
    """Add ``--name`` options (``_`` as ``-``) with the declared default, type, checks and help;
    ``defaults`` replace a declared default where a command line means another."""
    if set(defaults) - set(names):
        raise TypeError(f"defaults for {sorted(set(defaults) - set(names))}: not among {names}")
    for name in names:
        d = DECLARATIONS[name]
        default = defaults.get(name, (d.env and os.environ.get(d.env)) or d.default)
        flag = "--" + name.replace("_", "-")
        if d.types == (bool,):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{d.help} (default: %(default)s)")
        else:
            parser.add_argument(flag, type=_from_text(name), default=default,
                                help=f"{d.help} (default: %(default)s)")
