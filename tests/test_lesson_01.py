"""Notebook 01's data code (the cells a learner copies) against its twins in cifar_helpers.data."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from notebook_code import run_cell  # noqa: E402

from cifar_helpers import data, plots  # noqa: E402

STEM = "01_data"


def lesson_namespace(root, **params) -> dict:
    """What the cells before the dataset cell define: imports, parameters and the transform."""
    ns = {"os": os, "torch": torch, "torchvision": torchvision, "data": data,
          "transform": data.seed_transform(), "data_dir": str(root), "download": False,
          "batch_size": 4, "seed": 0, "num_workers": 0, "train_size": None, "test_size": None}
    ns.update(params)
    return ns


def datasets_from_cells(root, **params) -> dict:
    ns = run_cell(STEM, "twin-dataset", lesson_namespace(root, **params))
    return run_cell(STEM, "twin-subset", ns)


def assert_same_samples(ours, theirs):
    assert len(ours) == len(theirs)
    for i in range(len(theirs)):
        (x, y), (x_pkg, y_pkg) = ours[i], theirs[i]
        assert y == y_pkg and torch.equal(x, x_pkg), i


@pytest.mark.parametrize("layout", ["folder", "torchvision"])
def test_dataset_cell_gives_the_package_datasets(layout, request, capsys):
    root = request.getfixturevalue("tiny_folder" if layout == "folder" else "tiny_tv")
    ns = datasets_from_cells(root)
    assert f"data source: {layout} layout" in capsys.readouterr().out
    assert ns["layout"] == data.find_layout(root) == layout
    assert ns["classes"] == tuple(ns["trainset"].classes) == data.CIFAR10_CLASSES
    for train, name in [(True, "trainset"), (False, "testset")]:
        twin = data.cifar10(root, train=train, transform=data.seed_transform())
        assert type(ns[name]) is type(twin) and tuple(twin.classes) == ns["classes"]
        assert_same_samples(ns[name], twin)


def test_subset_cell_picks_the_package_subset(tiny_folder):
    ns = datasets_from_cells(tiny_folder, train_size=20, test_size=7)
    for train, name, size in [(True, "trainset", 20), (False, "testset", 7)]:
        twin = data.subset(data.cifar10(tiny_folder, train=train, transform=data.seed_transform()), size)
        assert isinstance(ns[name], torch.utils.data.Subset)
        assert ns[name].indices == twin.indices
        assert_same_samples(ns[name], twin)


def test_dataset_cell_says_how_to_provide_missing_data(tmp_path):
    with pytest.raises(data.DataError, match="CIFAR-10 not found"):
        run_cell(STEM, "twin-dataset", lesson_namespace(tmp_path))


def test_loader_cell_gives_the_package_batches(tiny_folder):
    ns = run_cell(STEM, "twin-loader", datasets_from_cells(tiny_folder, seed=3))
    for ours, twin in [(ns["trainloader"], data.dataloader(ns["trainset"], 4, shuffle=True, seed=3)),
                       (ns["testloader"], data.dataloader(ns["testset"], 4, shuffle=False))]:
        batches, twin_batches = list(ours), list(twin)
        assert len(batches) == len(twin_batches) > 1
        for (x, y), (x_pkg, y_pkg) in zip(batches, twin_batches):
            assert torch.equal(x, x_pkg) and torch.equal(y, y_pkg)


def test_imshow_cell_shows_what_plots_unnormalize_gives(tiny_folder, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "imshow", lambda arr, *a, **k: shown.append(np.array(arr)))
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    ns = run_cell(STEM, "twin-imshow", {"plt": plt, "np": np})
    dataset = data.cifar10(tiny_folder, train=True, transform=data.seed_transform())
    grid = torchvision.utils.make_grid(torch.stack([dataset[i][0] for i in range(4)]))
    for img in (grid, dataset[5][0]):
        ns["imshow"](img)
        expected = plots.unnormalize(img).permute(1, 2, 0).numpy()
        assert shown[-1].shape == expected.shape == (img.shape[1], img.shape[2], 3)
        assert np.array_equal(shown[-1], expected)
    plt.close("all")
