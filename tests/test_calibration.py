"""``cifar_helpers.calibration``: reliability bins and ECE by hand, temperature scaling that
finds the temperature a synthetic model was made with."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cifar_helpers import calibration


def test_reliability_by_hand():
    # confidences 0.95, 0.95 (one right), 0.55 (right), 0.35 (wrong) in 10 bins
    probs = torch.tensor([[0.95, 0.05, 0.0], [0.05, 0.95, 0.0], [0.55, 0.45, 0.0], [0.35, 0.33, 0.32]])
    labels = torch.tensor([0, 0, 0, 1])
    r = calibration.reliability(probs, labels, bins=10)
    assert r["count"].tolist() == [0, 0, 0, 1, 0, 1, 0, 0, 0, 2]
    assert r["accuracy"][9].item() == 0.5 and math.isclose(r["confidence"][9].item(), 0.95, abs_tol=1e-6)
    assert r["accuracy"][5].item() == 1.0 and r["accuracy"][3].item() == 0.0
    expected = (2 * abs(0.5 - 0.95) + abs(1 - 0.55) + abs(0 - 0.35)) / 4
    assert math.isclose(r["ece"], expected, abs_tol=1e-6)      # float32 probabilities
    assert torch.isnan(r["accuracy"][0])                  # empty bins: no accuracy


def test_bin_edges_belong_to_the_lower_bin():
    # exact binary fractions: confidence 0.75 sits on an edge and belongs to (0.5, 0.75]
    probs = torch.tensor([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0], [0.3, 0.7]], dtype=torch.float64)
    r = calibration.reliability(probs, torch.tensor([0, 1, 0, 1]), bins=4)   # edges .25 .5 .75
    assert r["count"].tolist() == [0, 1, 2, 1]


def test_a_calibrated_model_has_a_small_ece():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20_000, 10, generator=g)
    labels = torch.multinomial(F.softmax(logits, 1), 1, generator=g).squeeze(1)  # true to its word
    assert calibration.reliability(F.softmax(logits, 1), labels)["ece"] < 0.015
    sharp = calibration.reliability(F.softmax(3 * logits, 1), labels)["ece"]     # over-confident
    assert sharp > 0.1


def test_fit_temperature_finds_the_temperature_the_data_was_made_with():
    g = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(5_000, 10, generator=g)
    for t_true in (0.5, 2.0):
        labels = torch.multinomial(F.softmax(logits / t_true, 1), 1, generator=g).squeeze(1)
        t = calibration.fit_temperature(logits, labels)
        assert abs(t - t_true) / t_true < 0.1, (t, t_true)
        grid = torch.linspace(0.25, 3.0, 56, dtype=torch.float64)     # brute force agrees
        nll = torch.stack([F.cross_entropy(logits.double() / s, labels) for s in grid])
        best = grid[nll.argmin()].item()
        assert abs(t - best) <= 0.025
        before = calibration.scores(logits, labels)
        after = calibration.scores(logits, labels, t)
        assert after["accuracy"] == before["accuracy"] and after["nll"] <= before["nll"]
