"""Parameter validation: one clear error naming every bad parameter."""

import pytest

from cifar_helpers.params import DEFAULTS, Params, default_data_dir, make_params


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


def test_replace_validates_and_ints_become_floats():
    p = make_params(lr=1)
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert p.replace(epochs=3).epochs == 3
    with pytest.raises(ValueError):
        p.replace(epochs=0)


def test_data_dir_reads_environment(monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA_DIR", "/somewhere")
    assert default_data_dir() == "/somewhere"
    monkeypatch.delenv("CIFAR10_DATA_DIR")
    assert default_data_dir() == "data"
