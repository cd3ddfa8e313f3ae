"""Parameter validation: one clear error naming every bad parameter."""

import pytest

import argparse

from cifar_helpers.params import DECLARATIONS, DEFAULTS, Params, add_arguments, make_params


def test_defaults_are_the_seed_recipe():
    p = make_params()
    assert (p.batch_size, p.lr, p.momentum, p.epochs, p.seed) == (4, 0.001, 0.9, 2, 0)
    assert p == Params() and {k: getattr(p, k) for k in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("values, message", [
    ({"epochs": 0}, "epochs=0 must be at least 1"),
    ({"batch_size": -1}, "batch_size=-1 must be at least 1"),
    ({"lr": 0.0}, "lr=0.0 must be > 0"),
    ({"momentum": 1.5}, "momentum=1.5 must be in"),
    ({"train_size": 0}, "train_size=0 must be None"),
    ({"num_workers": -2}, "num_workers=-2"),
    ({"epochs": "2"}, "epochs='2' has type str; expected int"),
    ({"epochs": True}, "epochs=True has type bool"),
    ({"download": 1}, "download=1 has type int; expected bool"),
    ({"test_size": 2.5}, "expected int or None"),
    ({"batchsize": 4}, "unknown parameter(s) ['batchsize']"),
])
def test_bad_values_are_named(values, message):
    with pytest.raises(ValueError) as err:
        make_params(**values)
    assert message in str(err.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError) as err:
        make_params(epochs=0, lr=-1)
    assert "epochs=0" in str(err.value) and "lr=-1" in str(err.value)


def test_ints_become_floats_and_paths_strings(tmp_path):
    p = make_params(lr=1, checkpoint=tmp_path / "c.pth", image_paths=[tmp_path / "a.jpg"])
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert p.checkpoint == str(tmp_path / "c.pth") and p.image_paths == [str(tmp_path / "a.jpg")]


def test_one_declaration_gives_defaults_fields_and_checks():
    assert list(DEFAULTS) == list(DECLARATIONS) == list(Params.__dataclass_fields__)
    assert make_params().budget_seconds == 120 and make_params(budget_seconds=10.5).budget_seconds == 10.5
    assert make_params(budget_seconds=None).budget_seconds is None   # the preset's own epochs
    with pytest.raises(ValueError, match="budget_seconds=5 must be None or at least 10"):
        make_params(budget_seconds=5)
    assert Params().preset_changes is not Params().preset_changes     # no shared mutable default


def parser(*names, **defaults):
    p = argparse.ArgumentParser(prog="t")
    add_arguments(p, *names, **defaults)
    return p


def test_add_arguments_uses_the_declaration(monkeypatch, capsys):
    monkeypatch.delenv("CIFAR10_DATA_DIR", raising=False)
    names = ("data_dir", "epochs", "lr", "train_size", "budget_seconds", "download")
    args = parser(*names).parse_args([])
    assert vars(args) == {k: DEFAULTS[k] for k in names}
    args = parser(*names).parse_args(["--epochs", "3", "--lr", "1", "--train-size", "None",
                                      "--budget-seconds", "12.5", "--no-download"])
    assert (args.epochs, args.lr, args.train_size, args.budget_seconds, args.download) == (
        3, 1.0, None, 12.5, False)
    assert parser("device", device="cpu").parse_args([]).device == "cpu"
    monkeypatch.setenv("CIFAR10_DATA_DIR", "/somewhere")
    assert parser("data_dir").parse_args([]).data_dir == "/somewhere"
    for argv, message in [(["--epochs", "0"], "argument --epochs: epochs=0 must be at least 1"),
                          (["--epochs", "x"], "epochs='x' is not a number"),
                          (["--lr", "-1"], "lr=-1.0 must be > 0")]:
        with pytest.raises(SystemExit) as err:
            parser("epochs", "lr").parse_args(argv)
        assert err.value.code == 2 and message in capsys.readouterr().err
    assert "passes over the training set (default: 2)" in parser("epochs").format_help()
    with pytest.raises(TypeError, match="lr"):
        parser("epochs", lr=0.1)
