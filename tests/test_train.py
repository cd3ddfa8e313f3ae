"""The training loop against the seed's plain loop, and its guard against divergence."""

import pytest
import torch
import torch.nn as nn
import torch.optim as optim

from cifar_helpers import data
from cifar_helpers.models import Net
from cifar_helpers.train import NonFiniteLossError, default_print_every, train


def fresh(seed=0, lr=0.001):
    torch.manual_seed(seed)
    net = Net()
    return net, nn.CrossEntropyLoss(), optim.SGD(net.parameters(), lr=lr, momentum=0.9)


def test_train_equals_the_seed_loop(tiny_folder, capsys):
    images, labels = data.load_tensors(tiny_folder, train=True)
    net, criterion, optimizer = fresh()
    history = train(net, data.TensorLoader(images, labels, 4, shuffle=True), criterion, optimizer,
                    epochs=2, progress=False)

    ref, criterion, optimizer = fresh()
    loader = data.TensorLoader(images, labels, 4, shuffle=True)
    losses = []
    for epoch in range(2):                       # the classic loop, verbatim in spirit
        for i, (inputs, targets) in enumerate(loader):
            optimizer.zero_grad()
            loss = criterion(ref(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    assert history["step_loss"] == losses
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    lines = capsys.readouterr().out.splitlines()
    every = default_print_every(len(loader))
    assert lines[0] == f"[1, {every:5d}] loss: {sum(losses[:every]) / every:.3f}"
    assert len(lines) == 2 * (len(loader) // every) == len(history["running_loss"])


def test_print_every_follows_the_seed():
    assert default_print_every(12_500) == 2000
    assert default_print_every(100) == 25 and default_print_every(2) == 1


def test_training_learns_on_tiny_data(tiny_folder):
    images, labels = data.load_tensors(tiny_folder, train=True)
    net, criterion, optimizer = fresh(lr=0.01)
    history = train(net, data.TensorLoader(images, labels, 8, shuffle=True), criterion, optimizer,
                    epochs=15, progress=False)
    first, last = history["step_loss"][:10], history["step_loss"][-10:]
    assert sum(last) / 10 < 0.6 * sum(first) / 10


def test_nonfinite_loss_stops_with_epoch_and_step(tiny_folder):
    images, labels = data.load_tensors(tiny_folder, train=True)
    net, criterion, optimizer = fresh(lr=1e6)
    with pytest.raises(NonFiniteLossError, match=r"at epoch \d+, step \d+.*lower learning rate"):
        train(net, data.TensorLoader(images, labels, 4, shuffle=True), criterion, optimizer,
              epochs=20, progress=False)
