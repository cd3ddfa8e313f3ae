"""Accuracy, per-class accuracy and the confusion matrix against plain loops."""

import torch

from cifar_helpers import data, evaluate
from cifar_helpers.models import Net


def test_metrics_against_loops():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=g)
    predicted = torch.where(torch.rand(500, generator=g) < 0.6, labels, torch.randint(0, 10, (500,), generator=g))
    correct = sum(int(p == y) for p, y in zip(predicted, labels))
    assert evaluate.accuracy(predicted, labels) == correct / 500
    cm = evaluate.confusion_matrix(predicted, labels, 10)
    ref = torch.zeros(10, 10, dtype=torch.int64)
    for p, y in zip(predicted, labels):
        ref[y, p] += 1
    assert torch.equal(cm, ref)
    per_class = evaluate.per_class_accuracy(predicted, labels, data.CIFAR10_CLASSES)
    for i, name in enumerate(data.CIFAR10_CLASSES):
        mask = labels == i
        assert per_class[name] == (predicted[mask] == i).sum().item() / mask.sum().item()


def test_predict_matches_direct_call_and_restores_mode(tiny_folder):
    images, labels = data.load_tensors(tiny_folder, train=False)
    loader = data.TensorLoader(images, labels, 6)
    net = Net()
    net.train()
    predicted, truth = evaluate.predict(net, loader)
    assert net.training
    with torch.no_grad():
        direct = net(loader.normalize(images)).argmax(1)
    assert torch.equal(predicted, direct) and torch.equal(truth, labels)
