"""Notebook 04's evaluation loops (cells ``twin-accuracy`` and ``twin-per-class``) against
``cifar_helpers.evaluate``: the same accuracy and per-class accuracy, on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from notebook_code import cell_source, run_cell

from cifar_helpers import data, evaluate
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


@pytest.fixture(params=[True, False], ids=["tensor-loader", "dataloader"])
def testloader(request, tiny_folder):
    return data.make_loader(tiny_folder, False, 6, fast=request.param)   # 40 images: a short last batch


def namespace(net, testloader) -> dict:
    ns = run_cell(STEM, "imports", {})
    ns.update(net=net, testloader=testloader, device=torch.device("cpu"),
              classes=data.CIFAR10_CLASSES)
    return ns


def test_accuracy_loop_equals_evaluate(tiny_net, testloader, capsys):
    ns = run_cell(STEM, "twin-accuracy", namespace(tiny_net, testloader))
    predicted, labels = evaluate.predict(tiny_net, testloader)
    assert ns["total"] == 40 and ns["test_accuracy"] == evaluate.accuracy(predicted, labels)
    assert 0.1 < ns["test_accuracy"] < 1.0            # a test that a wrong loop could fail
    out = capsys.readouterr().out
    assert out == f"test accuracy: {100 * ns['correct'] // 40} % ({ns['correct']}/40)\n"


def test_per_class_loop_equals_evaluate(tiny_net, testloader, capsys):
    ns = run_cell(STEM, "twin-per-class", namespace(tiny_net, testloader))
    predicted, labels = evaluate.predict(tiny_net, testloader)
    expected = evaluate.per_class_accuracy(predicted, labels, data.CIFAR10_CLASSES)
    assert ns["per_class"] == expected
    assert list(ns["total_pred"].values()) == [4] * 10
    assert len(set(expected.values())) > 1            # classes differ: the comparison means something
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"airplane   {100 * expected['airplane']:5.1f} %"
    assert len(lines) == 10


def test_the_twin_tests_can_fail(tiny_net, tiny_folder):
    """Loops with a classic slip (the lowest score as prediction; counting the batches instead
    of the images) must not agree with the package."""
    testloader = data.make_loader(tiny_folder, False, 6)
    predicted, labels = evaluate.predict(tiny_net, testloader)
    for tag, old, new, key in [
            ("twin-accuracy", "torch.max(outputs, 1)", "torch.min(outputs, 1)", "test_accuracy"),
            ("twin-accuracy", "total += labels.size(0)", "total += 1", "test_accuracy"),
            ("twin-per-class", "int(label == guess)", "int(guess == 0)", "per_class")]:
        source = cell_source(STEM, tag)
        assert old in source, (tag, old)
        ns = namespace(tiny_net, testloader)
        exec(compile(source.replace(old, new), f"{tag} mutated", "exec"), ns)
        package = (evaluate.accuracy(predicted, labels) if key == "test_accuracy" else
                   evaluate.per_class_accuracy(predicted, labels, data.CIFAR10_CLASSES))
        assert ns[key] != package, (tag, new)
