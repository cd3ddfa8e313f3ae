"""Classify any picture with a saved model: the command line and notebook 09's tested twin.

    python -m cifar_helpers.predict IMAGE... --checkpoint PATH [--top K] [--json]

Each picture (PNG, JPEG, WebP, ...; any size; grayscale, palette or with transparency) becomes
what the network was trained on: an RGB image, its centre square cropped and scaled to 32x32
with antialiasing, normalized with the statistics that the checkpoint records. The checkpoint
says which model it holds (the seed's ``Net`` of notebook 03, the modern recipe's
``ConvGroupNet`` of notebook 08). Every bad file gets one line on stderr naming it and the
problem; the good ones are still classified. Exit status: 0 all classified, 1 some pictures
failed, 2 nothing could be classified (a bad checkpoint, bad arguments).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import reprlib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoint import CheckpointError, load_model, normalization_of, read_checkpoint
from .data import normalize
from .models import MODELS

PROG = "cifar_helpers.predict"   # the prefix of its one-line errors
IMAGE_SIZE = 32          # CIFAR-10's images are 32 x 32
#: Which notebook writes each default checkpoint, for the "run notebook ... first" message.
MADE_BY = {"checkpoints/cifar_net.pth": "03_training",
           "checkpoints/modern_net.pth": "08_modern_recipe"}


class ImageError(ValueError):
    """A picture that cannot be classified (missing, not an image, truncated); the message
    names it."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The picture at ``path`` as an RGB image, upright (EXIF orientation applied); transparent
    parts become white, grayscale and palette images become RGB."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file (a folder?)")
    try:
        with Image.open(path) as img:
            img.load()                            # decode now: a truncated file fails here
            img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too many pixels to open safely ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: truncated or corrupt image ({err})") from None
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):   # 16-bit, 32-bit or float grayscale
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max()                           # guess the range: [0, 1], 8 bits, 16 bits, other
        scale = 1 / 255 if top <= 1 else 1.0 if top <= 255 else 257.0 if top <= 65535 else top / 255
        img = Image.fromarray(np.clip(arr / scale, 0, 255).round().astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img.convert("RGB")


def to_cifar_size(image: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """The centre square of ``image`` cropped, then scaled to ``size`` x ``size`` (bicubic;
    Pillow widens the filter when it shrinks, which is the antialiasing): the aspect ratio stays."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BICUBIC)


def to_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB image as a uint8 ``3 x H x W`` tensor, like the decoded CIFAR-10 tensors."""
    pixels = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def prepare(path: str | os.PathLike, mean: Sequence[float], std: Sequence[float]
            ) -> tuple[torch.Tensor, Image.Image]:
    """``(inputs, small)``: the picture as the network's input (``3 x 32 x 32`` floats,
    normalized with ``mean``/``std``) and the 32 x 32 picture itself."""
    small = to_cifar_size(load_rgb(path))
    return normalize(to_uint8(small), mean, std), small


def load_classifier(path: str | os.PathLike, made_by: str | None = None
                    ) -> tuple[nn.Module, dict, tuple, tuple]:
    """``(net, info, mean, std)``: the checkpoint's model in eval mode on the CPU, its other
    entries, and the normalization it expects. A missing file names the notebook that writes it
    (``made_by``, else guessed from the default paths)."""
    path = Path(path)
    if not path.is_file():
        made_by = made_by or next((nb for tail, nb in MADE_BY.items()
                                   if path.as_posix().endswith(tail)), None)
        run = (f"run notebook {made_by} first (it saves one there), or " if made_by else "")
        raise CheckpointError(f"No checkpoint at {path}: {run}give the path of a checkpoint saved "
                              f"by cifar_helpers (03_training's or 08_modern_recipe's).")
    try:
        check_entries(path, read_checkpoint(path))     # before any model is built
    except CheckpointError as err:
        refused = re.search(r"GLOBAL ([\w.]+) was not an allowed global", str(err.__cause__))
        if not refused:
            raise
        name = refused.group(1)
        what = ("a whole pickled model" if ".nn." in name or name.split(".")[-1] in MODELS
                else "a pickled Python object")
        raise CheckpointError(f"{path} is {what} ({name}, as torch.save(net) writes), not a state "
                              f"dict, and cannot be loaded safely; where it was made, re-save it "
                              f"with torch.save(net.state_dict(), {str(path)!r})") from None
    net, info = load_model(path)
    return net.eval(), info, *normalization_of(info)


def check_entries(path: Path, blob: dict) -> None:
    """Refuse a checkpoint whose class names, ``config.num_classes`` or normalization cannot be
    right (a damaged or hand-made file), naming the file and the field, before building a model."""
    if blob.get("model") not in MODELS:
        return                                  # load_model names the unknown model
    classes, config = blob.get("classes"), blob.get("config")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: field 'classes' is {reprlib.repr(classes)}, not a list of "
                              f"class names; train the model again")
    n = config.get("num_classes") if isinstance(config, dict) else None
    if type(n) is not int or n != len(classes):
        raise CheckpointError(f"{path}: field 'config.num_classes' is {reprlib.repr(n)}, but "
                              f"'classes' names {len(classes)}; the file is damaged or not from "
                              f"cifar_helpers: train the model again")
    entry = blob.get("normalization")
    for name in ("mean", "std") if entry is not None else ():
        values = entry.get(name) if isinstance(entry, dict) else None
        if not (isinstance(values, (list, tuple)) and len(values) == 3
                and all(type(v) in (int, float) and math.isfinite(v) and (name == "mean" or v > 0)
                        for v in values)):
            need = "3 finite numbers" + (" > 0" if name == "std" else "")
            raise CheckpointError(f"{path}: field 'normalization.{name}' is "
                                  f"{reprlib.repr(values)}; it must be {need} (one per RGB "
                                  f"channel): train the model again")


def train_missing(checkpoint: str | os.PathLike, modern_checkpoint: str | os.PathLike,
                  data_dir: str | os.PathLike, download: bool = True, *, preset: str = "demo",
                  changes: dict | None = None, log=print) -> list[str]:
    """Train whichever of the two checkpoints is missing, as notebooks 03 and 08 do by default
    (the seed's recipe; the modern recipe's ``preset``), so that notebook 09 runs alone.
    Returns the paths it wrote; logs one line for each. With fewer training images than one
    batch of the preset, the batch holds them all."""
    import time

    from . import data, modern, train
    from .models import Net
    made = []
    if not Path(checkpoint).is_file():
        start = time.perf_counter()
        torch.manual_seed(0)
        loader = data.make_loader(data_dir, True, 4, seed=0, download=download)
        net = Net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        with contextlib.redirect_stdout(io.StringIO()):          # no running-loss lines
            train.train(net, loader, nn.CrossEntropyLoss(), optimizer, 2, progress=False,
                        checkpoint=checkpoint, classes=data.CIFAR10_CLASSES)
        made.append(str(checkpoint))
        log(f"No {checkpoint}: trained the seed's Net as notebook 03 does "
            f"(2 epochs, batch 4) in {time.perf_counter() - start:.0f} s")
    if not Path(modern_checkpoint).is_file():
        start = time.perf_counter()
        data.load_tensors(data_dir, train=True, download=download)
        recipe = modern.get_preset(preset, "cpu", **(changes or {}))
        x, y, *_ = modern.load_split(data_dir)
        if len(y) < recipe.batch_size:        # a few images only (a quick try): one batch
            recipe = modern.get_preset(preset, "cpu", **{**(changes or {}),
                                                         "batch_size": len(y)})
        modern.train(recipe, x, y, checkpoint=modern_checkpoint, log=None)
        made.append(str(modern_checkpoint))
        log(f"No {modern_checkpoint}: trained the modern recipe ({preset!r}) as notebook 08 "
            f"does in {time.perf_counter() - start:.0f} s")
    return made


@torch.no_grad()
def probabilities(net: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Softmax of ``net``'s outputs for a batch of normalized inputs (eval mode, float32)."""
    net.eval()
    return F.softmax(net(inputs).float(), dim=1)


def top_k(probs: torch.Tensor, classes: Sequence[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """Per image, the ``k`` most probable ``(class, probability)`` pairs, most probable first."""
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(classes[j], float(v)) for v, j in zip(vs, js)]
            for vs, js in zip(values.tolist(), indices.tolist())]


def classify_files(paths: Sequence[str | os.PathLike], net: nn.Module, classes: Sequence[str],
                   mean: Sequence[float], std: Sequence[float], k: int = 3) -> list[dict]:
    """One result per path, in order: ``{"image", "top": [{"class", "probability"}...]}`` or
    ``{"image", "error"}``; the good pictures are classified in one batch."""
    results: list[dict] = []
    batch, where = [], []
    for path in paths:
        try:
            inputs, _ = prepare(path, mean, std)
        except ImageError as err:
            results.append({"image": str(path), "error": str(err)})
            continue
        where.append(len(results))
        results.append({"image": str(path)})
        batch.append(inputs)
    if batch:
        tops = top_k(probabilities(net, torch.stack(batch)), classes, k)
        for i, top in zip(where, tops):
            results[i]["top"] = [{"class": c, "probability": round(p, 4)} for c, p in top]
    return results


def format_result(result: dict) -> str:
    """``cat.jpg: cat 0.8120, dog 0.1030, deer 0.0210``."""
    return f"{result['image']}: " + ", ".join(f"{t['class']} {t['probability']:.4f}"
                                              for t in result["top"])


#: The test images notebook 09 classifies by default: the first of each of these classes.
EXAMPLE_CLASSES = ("cat", "ship", "airplane", "frog")


def save_examples(images_uint8: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                  folder: str | os.PathLike, names: Sequence[str] = EXAMPLE_CLASSES,
                  scale: int = 8) -> list[Path]:
    """Pictures that are not 32 x 32: the first test image of each class in ``names``, enlarged
    ``scale`` times (bicubic) and saved as JPEG in ``folder``. Every other one is set in a wider
    frame with grey margins (4:3), which the centre crop removes again. Returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, name in enumerate(names):
        i = int((labels == list(classes).index(name)).nonzero()[0])
        arr = images_uint8[i].permute(1, 2, 0).contiguous().numpy()
        side = 32 * scale
        big = Image.fromarray(arr, "RGB").resize((side, side), Image.Resampling.BICUBIC)
        if n % 2:
            frame = Image.new("RGB", (side * 4 // 3, side), (128, 128, 128))
            frame.paste(big, ((frame.width - side) // 2, 0))
            big = frame
        path = folder / f"{name}_{i}.jpg"
        big.save(path, quality=90)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_helpers.predict",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: 0 all classified, 1 some pictures "
                                            "failed, 2 bad checkpoint or arguments.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="pictures to classify")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a checkpoint of notebook 03 (Net) or 08 (ConvGroupNet)")
    parser.add_argument("--top", type=int, default=3, metavar="K",
                        help="classes to show (default 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    try:
        net, info, mean, std = load_classifier(args.checkpoint)
    except CheckpointError as err:
        print(f"{PROG}: " + " ".join(str(err).split()), file=sys.stderr)    # one line
        return 2
    classes = info["classes"]
    if not 1 <= args.top <= len(classes):
        print(f"{PROG}: --top {args.top} must be between 1 and {len(classes)} (the classes)",
              file=sys.stderr)
        return 2
    failed = 0
    for result in classify_files(args.images, net, classes, mean, std, args.top):
        if "error" in result:
            failed += 1
            print(f"{PROG}: {result['error']}", file=sys.stderr)
        elif args.json:
            print(json.dumps(result))
        else:
            print(format_result(result))
    if failed:
        print(f"{PROG}: {failed} of {len(args.images)} pictures could not be classified",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
