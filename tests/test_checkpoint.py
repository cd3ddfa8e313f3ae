"""Checkpoints: round trip, clear errors for bad files, atomic writes."""

import pytest
import torch

from cifar_helpers import checkpoint as ckpt
from cifar_helpers.data import CIFAR10_CLASSES
from cifar_helpers.models import Net


def test_round_trip_rebuilds_the_same_model(tmp_path):
    net = Net(8, 20)
    path = ckpt.save_model(tmp_path / "sub" / "m.pth", net, CIFAR10_CLASSES, epochs=2)
    rebuilt, info = ckpt.load_model(path, expect_model="Net", expect_classes=CIFAR10_CLASSES)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(rebuilt(x), net(x))
    assert info["epochs"] == 2 and info["config"] == {"c1": 8, "c2": 20, "num_classes": 10}
    assert "state_dict" not in info


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="Run notebook 03_training"):
        ckpt.load_model(tmp_path / "none.pth")


def test_a_bare_state_dict_is_the_seeds_net(tmp_path):
    """Notebook 03 saves ``torch.save(net.state_dict(), PATH)``, as the seed does."""
    net = Net(c1=8, c2=12)
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    loaded, info = ckpt.load_model(tmp_path / "plain.pth")
    assert info["config"] == {"c1": 8, "c2": 12, "num_classes": 10}
    assert info["classes"] == list(CIFAR10_CLASSES)
    assert ckpt.normalization_of(info) == ((0.5,) * 3, (0.5,) * 3)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), net(x))


def test_truncated_checkpoint(tmp_path):
    path = ckpt.save_model(tmp_path / "m.pth", Net(), CIFAR10_CLASSES)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load_model(path)


def test_foreign_file_and_other_model_or_classes(tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ckpt.CheckpointError, match="nor the state_dict of the seed's Net"):
        ckpt.load_model(foreign)
    path = ckpt.save_model(tmp_path / "m.pth", Net(), CIFAR10_CLASSES)
    with pytest.raises(ckpt.CheckpointError, match="holds a 'Net' model, expected ResNet"):
        ckpt.load_model(path, expect_model="ResNet")
    with pytest.raises(ckpt.CheckpointError, match="trained on classes"):
        ckpt.load_model(path, expect_classes=["a", "b"])
    blob = torch.load(path, weights_only=True)
    blob["config"] = {"c1": 7, "c2": 16, "num_classes": 10}
    torch.save(blob, path)
    with pytest.raises(ckpt.CheckpointError, match="do not fit"):
        ckpt.load_model(path)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = ckpt.save_model(tmp_path / "m.pth", Net(), CIFAR10_CLASSES, epochs=1)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ckpt.CheckpointError, match="no space left on device; the previous"):
        ckpt.save_model(path, Net(), CIFAR10_CLASSES, epochs=2)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_no_import_cycle_between_checkpoint_and_data():
    """data.py imports nothing of checkpoint.py; checkpoint.py imports data.py at its top only."""
    import ast
    from pathlib import Path

    def imports(module: str) -> list[tuple[str, bool]]:
        tree = ast.parse((Path(ckpt.__file__).parent / f"{module}.py").read_text())
        top = set(map(id, tree.body))
        return [(node.module, id(node) in top) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 1]
    assert not [m for m, _ in imports("data") if m == "checkpoint"]
    assert [top for m, top in imports("checkpoint") if m == "data"] == [True]
