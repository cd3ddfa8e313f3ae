"""Notebook 09's cells against their package twins: ``twin-prepare`` (picture to input) against
``cifar_helpers.predict``, ``twin-reliability`` and ``twin-temperature`` against
``cifar_helpers.calibration``, ``twin-export`` against ``cifar_helpers.export``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from notebook_code import run_cell

from cifar_helpers import calibration, export, predict
from cifar_helpers.data import CIFAR10_MEAN, CIFAR10_STD, MEAN, STD
from cifar_helpers.models import ConvGroupNet, Net

STEM = "09_use_the_model"


@pytest.fixture(scope="module")
def imports():
    return run_cell(STEM, "imports", {})


def cells(imports, *tags, **names) -> dict:
    ns = {**imports, **names}
    for tag in tags:
        run_cell(STEM, tag, ns)
    return ns


def pictures(tmp_path) -> list:
    """Pictures of every kind the notebook may meet: sizes, modes, transparency, orientation."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (90, 140, 3), dtype=np.uint8))
    rgba = np.concatenate([np.asarray(rgb), rng.integers(0, 256, (90, 140, 1), dtype=np.uint8)], -1)
    pal = rgb.convert("P")
    exif = Image.Exif()
    exif[0x0112] = 8                               # rotated: the phone's way to store it
    made = {"wide.png": rgb, "tall.jpg": rgb.transpose(Image.Transpose.ROTATE_90),
            "cifar.png": rgb.crop((0, 0, 32, 32)), "small.png": rgb.crop((0, 0, 20, 12)),
            "gray.png": rgb.convert("L"), "palette.png": pal, "alpha.png": Image.fromarray(rgba, "RGBA"),
            "la.png": Image.fromarray(rgba, "RGBA").convert("LA"), "photo.webp": rgb}
    paths = []
    for name, img in made.items():
        img.save(tmp_path / name)
        paths.append(tmp_path / name)
    rgb.save(tmp_path / "phone.jpg", exif=exif)
    pal.save(tmp_path / "clear.png", transparency=7)
    return paths + [tmp_path / "phone.jpg", tmp_path / "clear.png"]


def test_prepare_cell_equals_the_package(imports, tmp_path):
    ns = cells(imports, "twin-prepare", mean=MEAN, std=STD, modern_mean=CIFAR10_MEAN,
               modern_std=CIFAR10_STD)
    for path in pictures(tmp_path):
        mine = ns["load_picture"](path)
        theirs = predict.load_rgb(path)
        assert mine.mode == theirs.mode == "RGB" and np.array_equal(np.asarray(mine), np.asarray(theirs)), path
        small = ns["to_cifar_size"](mine)
        assert np.array_equal(np.asarray(small), np.asarray(predict.to_cifar_size(theirs))), path
        for transform, (m, s) in ((ns["transform"], (MEAN, STD)),
                                  (ns["modern_transform"], (CIFAR10_MEAN, CIFAR10_STD))):
            inputs, package_small = predict.prepare(path, m, s)
            assert torch.equal(transform(small), inputs), path
    assert ns["to_cifar_size"](Image.new("RGB", (50, 10))).size == (32, 32)


def test_reliability_cell_equals_the_package(imports):
    ns = cells(imports, "twin-reliability")
    g = torch.Generator().manual_seed(0)
    for n, bins in ((500, 15), (37, 10), (3, 15)):
        probs = F.softmax(2 * torch.randn(n, 10, generator=g), 1)
        labels = torch.randint(0, 10, (n,), generator=g)
        mine, theirs = ns["reliability"](probs, labels, bins), calibration.reliability(probs, labels, bins)
        assert mine.keys() == theirs.keys() and mine["ece"] == theirs["ece"]
        for key in ("edges", "count", "confidence", "accuracy"):
            assert torch.equal(mine[key].nan_to_num(-1), theirs[key].nan_to_num(-1)), key
    edges = torch.tensor([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0], [0.625, 0.375]], dtype=torch.float64)
    mine, theirs = ns["reliability"](edges, torch.tensor([0, 1, 0, 1]), 4), calibration.reliability(
        edges, torch.tensor([0, 1, 0, 1]), 4)                 # confidences on the bin edges
    assert torch.equal(mine["count"], theirs["count"]) and mine["count"].tolist() == [0, 1, 2, 1]
    assert ns["reliability"].__defaults__ == (calibration.BINS,)


def test_temperature_cell_equals_the_package(imports):
    ns = cells(imports, "twin-temperature")
    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(400, 10, generator=g)
    labels = torch.multinomial(F.softmax(logits / 1.7, 1), 1, generator=g).squeeze(1)
    mine = ns["fit_temperature"](logits, labels)
    assert mine == calibration.fit_temperature(logits, labels) and 1.2 < mine < 2.4


def test_export_cell_equals_the_package(imports, tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = Net(4, 8).eval()                               # tiny: each export takes seconds
    monkeypatch.chdir(tmp_path)                          # the cell writes runs/09_export/
    cells(imports, "twin-export", nets={"net": net})
    folder = tmp_path / "runs" / "09_export"
    assert sorted(p.name for p in folder.iterdir()) == ["net.onnx", "net.pt2"]
    export.export_program(net, tmp_path / "pkg.pt2")
    export.export_onnx(net, tmp_path / "pkg.onnx")
    mine = torch.export.load(str(folder / "net.pt2"))
    theirs = torch.export.load(str(tmp_path / "pkg.pt2"))
    assert str(mine.graph) == str(theirs.graph)           # the same traced program
    assert str(mine.range_constraints) == str(theirs.range_constraints)   # any batch size >= 1
    import onnx
    mine, theirs = (onnx.load(str(p)).graph for p in (folder / "net.onnx", tmp_path / "pkg.onnx"))
    assert [n.op_type for n in mine.node] == [n.op_type for n in theirs.node]
    assert str(mine.input) == str(theirs.input) and "batch" in str(mine.input)   # dynamic batch
    assert str(mine.output) == str(theirs.output)
    x = torch.randn(5, 3, 32, 32)
    cell_runs = export.runners(net, folder / "net.pt2", folder / "net.onnx", 1)
    package_runs = export.runners(net, tmp_path / "pkg.pt2", tmp_path / "pkg.onnx", 1)
    for name in export.BACKENDS:
        assert np.array_equal(cell_runs[name](x), package_runs[name](x)), name
