"""Notebook 03 on tiny data: its training loop (cell ``twin-train-loop``) against
``cifar_helpers.train.train`` (the same weights, tensor for tensor, and the same printed lines),
its save-and-resume cells (bit-identical weights), and the whole notebook with its exercises."""

from __future__ import annotations

import re

import matplotlib
import nbformat
import pytest
import torch

from notebook_code import cell_source, notebook_path, run_cell

from cifar_helpers import models
from cifar_helpers.train import train

STEM = "03_training"
TINY = {"lr": 0.01, "print_every": 5}   # 80 images: 20 mini-batches an epoch, 4 printed lines


@pytest.fixture(autouse=True)
def _restore_cpu_settings():
    """The notebook's device cell sets one thread and turns oneDNN off; undo both afterwards."""
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn


def notebook(tiny_folder, tmp_path, net_class=None, **overrides) -> dict:
    """A fresh namespace after the notebook's cells up to the model, on tiny data."""
    ns = run_cell(STEM, "parameters", run_cell(STEM, "imports", {}))
    ns.update(data_dir=str(tiny_folder), checkpoint=str(tmp_path / "ck" / "cifar_net.pth"),
              **{**TINY, **overrides})
    for tag in ("data", "decode", "device", "net"):
        run_cell(STEM, tag, ns)
    if net_class is not None:
        ns["Net"] = net_class
    return run_cell(STEM, "model", ns)


def run_source(source: str, ns: dict, name: str = "cell") -> dict:
    exec(compile(source, f"{STEM}[{name}]", "exec"), ns)
    return ns


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def package_run(tiny_folder, tmp_path, capsys) -> tuple[dict, dict, str]:
    """``cifar_helpers.train.train`` (and ``models.Net``) on the notebook's own loader."""
    ns = notebook(tiny_folder, tmp_path / "pkg", net_class=models.Net)
    capsys.readouterr()
    history = train(ns["net"], ns["trainloader"], ns["criterion"], ns["optimizer"], ns["epochs"],
                    ns["device"], print_every=ns["print_every"], progress=False)
    return ns, history, capsys.readouterr().out


def test_notebook_loop_equals_package_train(tiny_folder, tmp_path, capsys):
    nb = notebook(tiny_folder, tmp_path / "nb")
    capsys.readouterr()
    run_cell(STEM, "twin-train-loop", nb)
    nb_out = capsys.readouterr().out.splitlines()
    pkg, history, pkg_out = package_run(tiny_folder, tmp_path, capsys)

    assert same_weights(nb["net"], pkg["net"])
    assert nb["losses"] == history["step_loss"] and len(nb["losses"]) == 40
    lines = [line for line in nb_out if line.startswith("[")]
    assert lines == pkg_out.splitlines() and len(lines) == 8      # the seed's "[1,     5] loss: …"
    assert lines[0] == f"[1,     5] loss: {sum(nb['losses'][:5]) / 5:.3f}"
    assert nb_out[-2] == "Finished Training" and nb_out[-1].startswith("training took ")


def test_the_twin_test_can_fail(tiny_folder, tmp_path, capsys):
    """A loop that forgets ``optimizer.zero_grad()`` must not pass for the package's."""
    source = cell_source(STEM, "twin-train-loop")
    mutated = source.replace("optimizer.zero_grad()", "pass")
    assert mutated != source
    nb = run_source(mutated, notebook(tiny_folder, tmp_path / "nb"))
    pkg, history, _ = package_run(tiny_folder, tmp_path, capsys)
    assert not same_weights(nb["net"], pkg["net"]) and nb["losses"] != history["step_loss"]


def test_the_net_is_notebook_02s():
    assert cell_source(STEM, "net") == cell_source("02_network", "twin-net")


def trained(tiny_folder, tmp_path) -> dict:
    ns = notebook(tiny_folder, tmp_path, epochs=1, resume_batches=15)
    run_cell(STEM, "twin-train-loop", ns)
    for tag in ("save-model", "load-model", "save-state", "continue-run"):
        run_cell(STEM, tag, ns)
    return ns


def test_save_and_resume_give_bit_identical_weights(tiny_folder, tmp_path, capsys):
    ns = trained(tiny_folder, tmp_path)
    run_cell(STEM, "resume-run", ns)
    assert capsys.readouterr().out.splitlines()[-2:] == ["True", "True"]   # loaded; resumed
    assert ns["same_outputs"] and ns["same_weights"]
    assert same_weights(ns["resumed_net"], ns["net"])
    assert not same_weights(ns["loaded_net"], ns["net"])         # the run did go on
    # notebook 04 loads a bare state_dict from `checkpoint`; the state file was renamed in place
    saved = torch.load(ns["checkpoint"], weights_only=True)
    assert list(saved) == list(models.Net().state_dict())
    folder = (tmp_path / "ck")
    assert sorted(p.name for p in folder.iterdir()) == ["cifar_net.pth", "training_state.pth"]
    state = torch.load(folder / "training_state.pth", weights_only=True)
    assert sorted(state) == ["data_order", "epoch", "model", "optimizer", "rng"]


@pytest.mark.parametrize("line", ['resumed_optimizer.load_state_dict(state["optimizer"])',
                                  'resumed_generator.set_state(state["data_order"])'])
def test_resume_without_a_piece_of_the_state_is_not_identical(tiny_folder, tmp_path, line):
    source = cell_source(STEM, "resume-run")
    assert line in source
    ns = run_source(source.replace(line, "pass"), trained(tiny_folder, tmp_path))
    assert not ns["same_weights"]


def code_cells() -> list[str]:
    nb = nbformat.read(str(notebook_path(STEM)), as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def solutions() -> list[str]:
    """The exercises' solution blocks (indented ```python fences in the last Markdown cell)."""
    nb = nbformat.read(str(notebook_path(STEM)), as_version=4)
    text = next(c.source for c in reversed(nb.cells) if "## Exercises" in c.source)
    blocks = re.findall(r"^( +)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    return ["\n".join(line[len(indent):] for line in body.splitlines()) for indent, body in blocks]


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_the_notebook_and_its_exercises_run_on_tiny_data(tiny_folder, tmp_path, monkeypatch,
                                                         capsys):
    """All cells with the default print_every (which never fires on 20 mini-batches), then
    every solution, in one namespace."""
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    cells = code_cells()
    ns: dict = {}
    run_source(cells[0], ns)
    run_source(cells[1], ns)
    ns["data_dir"] = str(tiny_folder)
    for k, source in enumerate(cells[2:], start=2):
        run_source(source, ns, f"cell {k}")
    out = capsys.readouterr().out
    assert "loss:" not in out and "Finished Training" in out
    assert "All checks passed. Last 40 mini-batches: mean loss" in out
    assert (tmp_path / "checkpoints" / "cifar_net.pth").is_file()
    found = solutions()
    assert len(found) == 4
    for k, source in enumerate(found, start=1):
        run_source(source, ns, f"solution {k}")
    out = capsys.readouterr().out
    assert "lr 0.1:" in out and "same weights: False" in out


def test_both_data_layouts_give_the_same_training_tensor(tiny_folder, tiny_tv, tmp_path):
    """The data cell's two branches (class folders, torchvision's files) decode the same pixels."""
    folder = notebook(tiny_folder, tmp_path / "a")["train_data"].tensors
    tv = notebook(tiny_tv, tmp_path / "b", download=False)["train_data"].tensors
    assert folder[0].shape == tv[0].shape == (80, 3, 32, 32)

    def rows(images, labels):    # the two layouts list the images in different orders
        return sorted(zip(labels.tolist(), images.flatten(1).tolist()))
    assert rows(*folder) == rows(*tv)
