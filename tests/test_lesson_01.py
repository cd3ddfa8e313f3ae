"""Notebook 01's taught cells (plain torch/torchvision) against references: the package's
``cifar_helpers.data`` / ``plots`` twins and direct computations on the generated pixels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from notebook_code import notebook_path, run_cell  # noqa: E402

from cifar_helpers import data, plots  # noqa: E402

STEM = "01_data"


def lesson_namespace(root, **params) -> dict:
    """What the imports and parameters cells define, with ``data_dir`` pointing at ``root``."""
    ns = run_cell(STEM, "parameters", run_cell(STEM, "imports", {}))
    ns.update(data_dir=str(root), **params)
    return ns


def datasets_from_cell(root, **params) -> dict:
    return run_cell(STEM, "twin-dataset", lesson_namespace(root, **params))


def assert_same_samples(ours, theirs):
    assert len(ours) == len(theirs)
    for i in range(len(theirs)):
        (x, y), (x_pkg, y_pkg) = ours[i], theirs[i]
        assert y == y_pkg and torch.equal(x, x_pkg), i


@pytest.mark.parametrize("layout", ["folder", "torchvision"])
def test_dataset_cell_gives_the_package_datasets(layout, request):
    root = request.getfixturevalue("tiny_folder" if layout == "folder" else "tiny_tv")
    ns = datasets_from_cell(root)          # download=True, the default: found, nothing fetched
    assert data.find_layout(root) == layout
    assert tuple(ns["classes"]) == data.CIFAR10_CLASSES
    for train, name in [(True, "trainset"), (False, "testset")]:
        twin = data.cifar10(root, train=train, transform=data.seed_transform())
        assert type(ns[name]) is type(twin) and tuple(twin.classes) == tuple(ns["classes"])
        assert_same_samples(ns[name], twin)


def test_dataset_cell_without_data_and_download_off_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="Dataset not found"):
        datasets_from_cell(tmp_path / "missing", download=False)


def test_loader_cell_shuffles_all_training_images_repeatably(tiny_folder):
    def batches(seed):
        ns = run_cell(STEM, "twin-loader", datasets_from_cell(tiny_folder, seed=seed))
        return ns, list(ns["trainloader"])

    ns, first = batches(3)
    _, again = batches(3)
    _, other = batches(4)
    assert all(x.shape == (4, 3, 32, 32) for x, _ in first) and len(first) == len(ns["trainloader"])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    # every training image exactly once per epoch: the same multiset of (label, pixel sum)
    seen = sorted((int(y), round(float(x.sum()), 3)) for xs, ys in first for x, y in zip(xs, ys))
    twin = data.cifar10(tiny_folder, train=True, transform=data.seed_transform())
    assert seen == sorted((y, round(float(x.sum()), 3)) for x, y in twin)
    test_twin = data.dataloader(ns["testset"], 4, shuffle=False)        # in order, unshuffled
    for (x, y), (x_pkg, y_pkg) in zip(ns["testloader"], test_twin, strict=True):
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


def test_stats_cell_agrees_with_a_direct_computation(tiny_tv, tiny_pixels, capsys):
    """The cell's mean/std of every tenth image, against the generated uint8 pixels / 255."""
    ns = run_cell(STEM, "twin-stats", datasets_from_cell(tiny_tv))
    pixels = torch.from_numpy(tiny_pixels[0][0][::10]).double().div(255)   # N, H, W, C
    assert len(ns["x"]) == len(pixels)
    torch.testing.assert_close(ns["mean"].double(), pixels.mean(dim=(0, 1, 2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(ns["std"].double(), pixels.std(dim=(0, 1, 2)), atol=1e-6, rtol=0)
    out = capsys.readouterr().out
    assert f"images measured: {len(pixels)}" in out and str(tiny_tv) not in out


def test_the_notebook_runs_on_tiny_data_with_plain_code_only(tiny_folder, monkeypatch, capsys):
    """Every code cell, in order, in one namespace (figures not drawn); the closing checks
    pass, nothing imports cifar_helpers, and no output shows the data folder's path."""
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    nb = nbformat.read(str(notebook_path(STEM)), as_version=4)
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert "cifar_helpers" not in cell.source
        exec(compile(cell.source, STEM, "exec"), ns)
        if "parameters" in cell.metadata.get("tags", []):
            ns["data_dir"] = str(tiny_folder)
    out = capsys.readouterr().out
    assert "All checks passed" in out and str(tiny_folder) not in out
