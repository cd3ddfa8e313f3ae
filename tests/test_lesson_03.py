"""Notebook 03's training loop (cell ``twin-train-loop``) against ``cifar_helpers.train.train``:
the same weights, tensor for tensor, the same losses, and an exact resume, on tiny data."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.optim as optim

from notebook_code import cell_source, run_cell

from cifar_helpers import data
from cifar_helpers.models import Net
from cifar_helpers.train import NonFiniteLossError, train

STEM = "03_training"
SETTINGS = {"epochs": 2, "batch_size": 4, "lr": 0.01, "momentum": 0.9, "seed": 0}


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(monkeypatch):
    """No progress bars; one thread, as the notebook uses for batches of 4 (faster on busy cores)."""
    monkeypatch.setenv("CIFAR_HELPERS_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fresh(tiny_folder, fast: bool, seed: int = 0):
    """Net, criterion, optimizer and trainloader as the notebook's cells make them."""
    torch.manual_seed(seed)
    net = Net()
    optimizer = optim.SGD(net.parameters(), lr=SETTINGS["lr"], momentum=SETTINGS["momentum"])
    trainloader = data.make_loader(tiny_folder, True, SETTINGS["batch_size"], seed=SETTINGS["seed"],
                                   fast=fast)
    return net, nn.CrossEntropyLoss(), optimizer, trainloader


def notebook_loop(tiny_folder, checkpoint, *, fast=True, epochs=2, resume=False, seed=0,
                  source: str | None = None, criterion: nn.Module | None = None) -> dict:
    """Run the notebook's imports and its training-loop cell; return the namespace."""
    net, default_criterion, optimizer, trainloader = fresh(tiny_folder, fast, seed)
    criterion = criterion or default_criterion
    ns = run_cell(STEM, "imports", {})
    ns.update(SETTINGS, epochs=epochs, net=net, criterion=criterion, optimizer=optimizer,
              trainloader=trainloader, device=torch.device("cpu"), fast_data=fast,
              checkpoint=str(checkpoint), resume=resume,
              print_every=min(2000, max(1, len(trainloader) // 4)))
    code = source if source is not None else cell_source(STEM, "twin-train-loop")
    exec(compile(code, f"{STEM}[twin-train-loop]", "exec"), ns)
    return ns


def package_train(tiny_folder, checkpoint, *, fast=True, epochs=2, resume=False, seed=0):
    net, criterion, optimizer, trainloader = fresh(tiny_folder, fast, seed)
    run = {"batch_size": SETTINGS["batch_size"], "lr": SETTINGS["lr"],
           "momentum": SETTINGS["momentum"], "seed": SETTINGS["seed"],
           "train_images": len(trainloader.dataset), "fast_data": fast}
    history = train(net, trainloader, criterion, optimizer, epochs, "cpu", progress=False,
                    checkpoint=checkpoint, resume=resume, run=run)
    return net, history


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def losses(history: dict) -> tuple[list, list]:
    return history["step_loss"], [tuple(r) for r in history["running_loss"]]


@pytest.mark.parametrize("fast", [True, False], ids=["tensor-loader", "dataloader"])
def test_notebook_loop_equals_package_train(tiny_folder, tmp_path, capsys, fast):
    ns = notebook_loop(tiny_folder, tmp_path / "nb.pth", fast=fast)
    notebook_out = capsys.readouterr().out
    net, history = package_train(tiny_folder, tmp_path / "pkg.pth", fast=fast)
    package_out = capsys.readouterr().out
    assert same_weights(ns["net"], net)
    assert losses(ns["history"]) == losses(history) and len(history["step_loss"]) == 40
    # the seed's lines, "[1,     5] loss: 2.316", the same in both
    lines = [line for line in notebook_out.splitlines() if line.startswith("[")]
    assert lines == package_out.splitlines() and len(lines) == 8
    assert lines[0] == f"[1,     5] loss: {sum(history['step_loss'][:5]) / 5:.3f}"
    assert notebook_out.splitlines()[-1].startswith("Finished Training: ")
    # both write the same checkpoint format, which the other can resume from
    for k, v in torch.load(tmp_path / "pkg.pth", weights_only=True)["state_dict"].items():
        assert torch.equal(torch.load(tmp_path / "nb.pth", weights_only=True)["state_dict"][k], v)


def test_notebook_loop_resumes_exactly(tiny_folder, tmp_path, capsys):
    whole = notebook_loop(tiny_folder, tmp_path / "whole.pth", epochs=3)
    notebook_loop(tiny_folder, tmp_path / "cut.pth", epochs=1)             # stops after epoch 1
    torch.manual_seed(123)                               # a new kernel: other random states
    resumed = notebook_loop(tiny_folder, tmp_path / "cut.pth", epochs=3, resume=True, seed=7)
    assert "resumed from" in capsys.readouterr().out
    assert resumed["start_epoch"] == 1
    assert same_weights(resumed["net"], whole["net"])
    assert losses(resumed["history"]) == losses(whole["history"])
    # and the package resumes the notebook's file to the same end
    net, history = package_train(tiny_folder, tmp_path / "cut.pth", epochs=4, resume=True)
    ref, ref_history = package_train(tiny_folder, tmp_path / "ref.pth", epochs=4)
    assert history["resumed_from"] == 3 and same_weights(net, ref)
    assert losses(history) == losses(ref_history)


def test_notebook_loop_stops_at_a_nan_loss(tiny_folder, tmp_path):
    class NaNAfter(nn.CrossEntropyLoss):
        """Cross-entropy that turns NaN after 25 calls: in epoch 2, step 6."""
        calls = 0

        def forward(self, outputs, labels):
            self.calls += 1
            loss = super().forward(outputs, labels)
            return loss * float("nan") if self.calls > 25 else loss

    with pytest.raises(NonFiniteLossError) as err:
        notebook_loop(tiny_folder, tmp_path / "c.pth", criterion=NaNAfter())
    message = str(err.value)
    assert "at epoch 2, step 6" in message and "lower learning rate" in message
    assert "last good checkpoint (after epoch 1) is kept" in message


def test_the_twin_test_can_fail(tiny_folder, tmp_path, capsys):
    """A loop that forgets ``optimizer.zero_grad()`` must not pass for the package's."""
    source = cell_source(STEM, "twin-train-loop")
    mutated = source.replace("optimizer.zero_grad()", "pass")
    assert mutated != source
    ns = notebook_loop(tiny_folder, tmp_path / "nb.pth", source=mutated)
    net, history = package_train(tiny_folder, tmp_path / "pkg.pth")
    assert not same_weights(ns["net"], net)
    assert losses(ns["history"]) != losses(history)
