"""Notebook 04's evaluation cells (``twin-accuracy``, ``twin-per-class``, ``twin-confusion``)
against ``cifar_helpers.evaluate`` on tiny data, and the shape of its ``metrics`` cell."""

from __future__ import annotations

import json
import math

import IPython.display
import nbformat
import pytest
import torch
import torch.nn as nn

from notebook_code import cell_source, notebook_path, run_cell

from cifar_helpers import data, evaluate, run_all
from cifar_helpers.models import Net
from cifar_helpers.train import train

STEM = "04_evaluation"


@pytest.fixture(autouse=True)
def _single_threaded():
    """One thread, as for batches of 4 in the notebooks (much faster on busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def code_cells() -> list:
    nb = nbformat.read(str(notebook_path(STEM)), as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


def cell_with(text: str) -> str:
    """The source of the one code cell that contains ``text``."""
    found = [c.source for c in code_cells() if text in c.source]
    assert len(found) == 1, f"{STEM}: expected one code cell with {text!r}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def tiny_net(tiny_folder):
    """A Net trained briefly on the tiny set: better than chance, far from perfect."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = Net()
    images, labels = data.load_tensors(tiny_folder, train=True, cache=False)
    train(net, data.TensorLoader(images, labels, 8, shuffle=True), nn.CrossEntropyLoss(),
          torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9), 6, progress=False)
    torch.set_num_threads(threads)
    return net.eval()


def namespace(net, tiny_folder, **params) -> dict:
    """The notebook's imports, parameters and data cell run on the tiny set, plus ``net``."""
    cells = code_cells()
    ns: dict = {}
    exec(cells[0].source, ns)                                  # imports
    exec(cell_source(STEM, "parameters"), ns)
    ns.update(data_dir=str(tiny_folder), **params)
    exec(cell_with("testloader = "), ns)                       # the data cell
    ns.update(net=net, device=torch.device("cpu"))
    return ns


def same(a: dict, b: dict) -> bool:
    """Dicts equal in keys, order and values, NaN equal to NaN."""
    return list(a) == list(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.values(), b.values()))


# batch 6: 40 images end in a short batch; test_size 10: a short batch and classes with no image
LOADERS = [dict(batch_size=6), dict(batch_size=4, test_size=10)]


@pytest.mark.parametrize("params", LOADERS, ids=["all-40", "sample-10"])
def test_evaluation_cells_equal_the_package(tiny_net, tiny_folder, params, capsys):
    ns = namespace(tiny_net, tiny_folder, **params)
    assert list(ns["classes"]) == list(data.CIFAR10_CLASSES)
    predicted, labels = evaluate.predict(tiny_net, ns["testloader"])
    n = params.get("test_size") or 40
    capsys.readouterr()

    run_cell(STEM, "twin-accuracy", ns)
    assert ns["total"] == n and ns["test_accuracy"] == evaluate.accuracy(predicted, labels)
    out = capsys.readouterr().out
    assert out == f"accuracy on the {n} test images: {100 * ns['test_accuracy']:.1f} %\n"

    run_cell(STEM, "twin-per-class", ns)
    expected = evaluate.per_class_accuracy(predicted, labels, data.CIFAR10_CLASSES)
    assert same(ns["per_class"], expected)
    assert sum(ns["total_pred"].values()) == n
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].startswith(f"airplane   {100 * expected['airplane']:5.1f} %")

    run_cell(STEM, "twin-confusion", ns)
    assert torch.equal(ns["predictions"], predicted) and torch.equal(ns["truth"], labels)
    assert torch.equal(ns["confusion"], evaluate.confusion_matrix(predicted, labels, 10))
    assert capsys.readouterr().out == "right answers on the diagonal: True\n"


def test_the_tiny_comparison_means_something(tiny_net, tiny_folder):
    """Better than chance, not perfect, and the classes differ: a wrong cell could fail."""
    ns = run_cell(STEM, "twin-per-class", run_cell(STEM, "twin-accuracy",
                                                   namespace(tiny_net, tiny_folder)))
    assert 0.1 < ns["test_accuracy"] < 1.0
    assert len(set(ns["per_class"].values())) > 1


def test_the_twin_tests_can_fail(tiny_net, tiny_folder):
    """Cells with a classic slip (the lowest score as prediction; counting the batches instead
    of the images; rows and columns swapped) must not agree with the package."""
    base = namespace(tiny_net, tiny_folder, batch_size=6)
    predicted, labels = evaluate.predict(tiny_net, base["testloader"])
    package = {"test_accuracy": evaluate.accuracy(predicted, labels),
               "per_class": evaluate.per_class_accuracy(predicted, labels, data.CIFAR10_CLASSES),
               "confusion": evaluate.confusion_matrix(predicted, labels, 10)}
    for tag, old, new, key in [
            ("twin-accuracy", "torch.max(outputs, 1)", "torch.min(outputs, 1)", "test_accuracy"),
            ("twin-accuracy", "total += labels.size(0)", "total += 1", "test_accuracy"),
            ("twin-per-class", "int(label == guess)", "int(guess == 0)", "per_class"),
            ("twin-confusion", "confusion[t, p] += 1", "confusion[p, t] += 1", "confusion")]:
        source = cell_source(STEM, tag)
        assert old in source, (tag, old)
        ns = dict(base, correct=0)
        exec(compile(source.replace(old, new), f"{tag} mutated", "exec"), ns)
        got = ns[key]
        assert not (torch.equal(got, package[key]) if key == "confusion" else got == package[key]), (
            tag, new)


def test_metrics_cell_shows_the_results_as_json(tiny_net, tiny_folder, monkeypatch):
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.append((objs, kw)))
    for params, some_class_empty in [({}, False), ({"test_size": 5}, True)]:
        ns = namespace(tiny_net, tiny_folder, **params)
        for tag in ("twin-accuracy", "twin-per-class", "metrics"):
            run_cell(STEM, tag, ns)
        (objs, kw), = shown
        shown.clear()
        assert kw == {"raw": True} and len(objs) == 1 and list(objs[0]) == ["application/json"]
        metrics = objs[0]["application/json"]
        assert list(metrics) == ["test_accuracy", "per_class_accuracy"]
        assert list(metrics["per_class_accuracy"]) == list(data.CIFAR10_CLASSES)
        values = [metrics["test_accuracy"], *metrics["per_class_accuracy"].values()]
        for v in values:
            assert v is None or (0.0 <= v <= 1.0 and round(v, 4) == v)
        assert metrics["test_accuracy"] == round(ns["test_accuracy"], 4)
        assert (None in values) == some_class_empty              # None: a class with no image
        json.dumps(metrics, allow_nan=False)                     # strict JSON
        nb = {"cells": [{"metadata": {"tags": ["metrics"]},
                         "outputs": [{"data": {"application/json": metrics}}]}]}
        assert run_all.read_metrics(nb) == metrics


def test_metrics_cell_is_hidden_plain_code():
    cell, = [c for c in code_cells() if "metrics" in c.metadata.get("tags", [])]
    assert "remove-cell" in cell.metadata["tags"]
    assert cell.source.startswith("from IPython.display import display\n")
    assert "cifar_helpers" not in "".join(c.source for c in code_cells())


@pytest.mark.parametrize("accuracy, ok", [(0.54, True), (0.49, False)])
def test_check_cell_holds_the_full_test_set_to_one_in_two(accuracy, ok):
    total, correct = 10_000, round(accuracy * 10_000)
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    confusion[0, 0], confusion[0, 1] = correct, total - correct
    ns = {"test_accuracy": correct / total, "total": total, "correct": correct,
          "testset": range(total), "confusion": confusion, "correct_pred": {"a": correct}}
    check = code_cells()[-1].source
    if ok:
        exec(check, ns)
    else:
        with pytest.raises(AssertionError, match="below 0.50"):
            exec(check, ns)
