"""Notebook 08's technique cores (the cells a learner copies) against their twins in
cifar_helpers.modern, and the benchmark-log reader behind its last section."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from notebook_code import run_cell

from cifar_helpers import benchlog, modern, plots
from cifar_helpers.models import ConvGroupNet

STEM = "08_modern_recipe"
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def lesson(tag: str) -> dict:
    """The namespace after running the cell tagged ``tag`` with the notebook's imports."""
    return run_cell(STEM, tag, {"torch": torch, "nn": nn, "F": F, "modern": modern})


def correlated_images(n: int = 24, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Normalized-looking images whose channels and neighbouring pixels are correlated."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size, size, generator=g)
    x = torch.cat([base, 0.6 * base + 0.4 * torch.randn(n, 1, size, size, generator=g),
                   torch.randn(n, 1, size, size, generator=g)], 1)
    return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)


def test_augment_cell_matches_flip_lr_and_translate():
    ns = lesson("twin-augment")
    g = torch.Generator().manual_seed(1)
    images = torch.randn(7, 3, 32, 32, generator=g)
    mask = torch.rand(7, generator=g) < 0.5
    assert torch.equal(ns["flip_lr"](images, mask), modern.flip_lr(images, mask))
    for pad in (1, 2, 3):
        shifts = torch.randint(-pad, pad + 1, (7, 2), generator=g)
        assert torch.equal(ns["translate"](images, shifts, pad), modern.translate(images, shifts, pad))
    zero = torch.zeros(7, 2, dtype=torch.long)
    assert torch.equal(ns["translate"](images, zero, 2), images)


@pytest.mark.parametrize("eps", [5e-4, 1e-2])
def test_whitening_cell_gives_init_whitening_weights(eps):
    images = correlated_images()
    weights = lesson("twin-whitening")["whitening_weights"](images, eps)
    net = ConvGroupNet((8, 8, 8))
    modern.init_whitening(net, images, eps)
    assert weights.shape == net.whiten.weight.shape == (24, 3, 2, 2)
    assert torch.equal(weights, net.whiten.weight)


@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (20, 20)])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_newton_schulz_cell_matches_orthogonalize(shape, steps):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(steps))
    newton_schulz = lesson("twin-newton-schulz")["newton_schulz"]
    ours = newton_schulz(g, steps)
    assert ours.dtype == g.dtype and torch.equal(ours, modern.orthogonalize(g, steps))
    assert torch.equal(newton_schulz(g, steps, dtype=torch.float32),
                       modern.orthogonalize(g, steps, dtype=torch.float32))


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_muon_step_cell_matches_nesterov_muon(fast_bf16, monkeypatch):
    monkeypatch.setattr(modern, "supports_bf16", lambda device: fast_bf16)
    dtype = torch.bfloat16 if fast_bf16 else torch.float32   # NesterovMuon's choice on such a device
    muon_step = lesson("twin-newton-schulz")["muon_step"]
    g = torch.Generator().manual_seed(2)
    param = nn.Parameter(torch.randn(16, 8, 3, 3, generator=g))
    weight, buf = param.detach().clone(), torch.zeros(16, 8, 3, 3)
    optimizer = modern.NesterovMuon([dict(params=[param], lr=0.1, muon=True, momentum=0.6)], momentum=0.85)
    for _ in range(3):
        grad = torch.randn(16, 8, 3, 3, generator=g)
        param.grad = grad.clone()
        optimizer.step()
        muon_step(weight, grad, buf, lr=0.1, momentum=0.6, dtype=dtype)
        assert torch.equal(weight, param.detach())
        assert torch.equal(buf, optimizer.state[param]["momentum_buffer"])


def test_lookahead_cell_matches_lookahead_update():
    lookahead_update = lesson("twin-lookahead")["lookahead_update"]
    torch.manual_seed(3)
    ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))   # a BatchNorm brings integer buffers
    theirs = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    theirs.load_state_dict(ours.state_dict())
    average = {k: v.clone() for k, v in ours.state_dict().items() if v.is_floating_point()}
    package = modern.Lookahead(theirs)
    for decay in (0.7, 0.9, 1.0):
        step = torch.randn(3, 4)
        for net in (ours, theirs):
            with torch.no_grad():
                net[0].weight.add_(step)
                net[1].running_mean.add_(0.5)
            net[1].num_batches_tracked += 1
        lookahead_update(average, ours, decay)
        package.update(theirs, decay)
        for k, v in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), k
        assert all(torch.equal(average[k], package.average[k]) for k in package.average)


def test_tta_cell_matches_predict_logits_mirror():
    predict_mirror = lesson("twin-tta")["predict_mirror"]
    torch.manual_seed(4)
    net = ConvGroupNet((8, 8, 8))
    modern.init_whitening(net, correlated_images(8, 32))
    net.train()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    expected = modern.predict_logits(net, images, tta=1)
    assert torch.equal(predict_mirror(net, images), expected)
    assert not torch.equal(expected, modern.predict_logits(net, images, tta=0))   # the mirror counts


def test_bench_logs_are_read_whole():
    runs = benchlog.read_bench_logs(BENCHMARKS)
    summaries = sum(p.read_text().count('"mean_train_seconds"') for p in BENCHMARKS.glob("*.log"))
    assert len(runs) == summaries > 0
    h200 = [r for r in runs if r["machine"] == "H200" and r["preset"] == "gpu94"
            and r["scored_on"] == "test" and not r["compile"]]
    assert len(h200) == 1 and h200[0]["seeds"] == 5 == len(h200[0]["seed_seconds"])
    assert h200[0]["accuracy"] == 0.907 and h200[0]["train_seconds"] == 2.57
    assert {r["machine"] for r in runs} == {"H100", "H200"}
    assert {r["preset"] for r in runs if r["scored_on"] == "test"} == {"gpu94", "gpu5s"}


def test_bench_log_reader_on_a_made_up_log(tmp_path):
    preset = modern.get_preset("gpu94", widths=(8, 16, 16), epochs=2)
    (tmp_path / "run.log").write_text("\n".join([
        "# 2026-01-01, one NVIDIA A100 lent for a test",
        "# bench fast: preset gpu94 on cuda; train 45000 images, validation 5000 held-out training images",
        f"# {preset!r}",
        "seed 0  train     1.50 s   30000 images/s  val accuracy 0.5000 (TTA 2; without TTA 0.4900)",
        "seed 1  train     1.70 s   30000 images/s  val accuracy 0.5200 (TTA 2; without TTA 0.5000)",
        '{"preset": "gpu94", "seeds": 2, "mean_val_accuracy": 0.51, "min_val_accuracy": 0.5, "mean_train_seconds": 1.6}',
        '{"world_size": 1, "test_accuracy": 0.5}',
        "# bench fast: preset gpu5s on cuda; train 50000 images, test 10000",
        f"# {modern.get_preset('gpu5s', compile=True)!r}",
        "seed 0  train     9.00 s   5000 images/s  test accuracy 0.9100 (TTA 2; without TTA 0.9000)",
        '{"preset": "gpu5s", "seeds": 1, "mean_test_accuracy": 0.91, "min_test_accuracy": 0.91, "mean_train_seconds": 9.0}',
    ]) + "\n")
    val, test = benchlog.read_bench_logs(tmp_path)
    assert val == {"log": "run.log", "machine": "A100", "preset": None, "widths": (8, 16, 16),
                   "epochs": 2, "compile": False, "scored_on": "val", "seeds": 2, "accuracy": 0.51,
                   "min_accuracy": 0.5, "train_seconds": 1.6, "seed_seconds": [1.5, 1.7]}
    assert test["preset"] == "gpu5s" and test["compile"] and test["scored_on"] == "test"
    assert test["accuracy"] == 0.91 and test["seed_seconds"] == [9.0]


def test_budget_chart_labels_a_line_where_its_choice_changes():
    """Section 8's chart: a connected series names the preset where it changes along the line
    (not at every point); a scatter group names every point."""
    import matplotlib.pyplot as plt
    fig = plots.labelled_points(
        {"cpu": [(60, 82, "cpu5"), (120, 85, "cpu5"), (600, 89.7, "cpu10"), (600, 90.5, "cpu5")],
         "gpu": [(2.5, 90.7, "gpu94"), (4, 91.5, "gpu94")]},
        connect=["cpu"], xlabel="s", ylabel="%")
    assert [t.get_text() for t in fig.axes[0].texts] == ["cpu5", "cpu10", "cpu5", "gpu94", "gpu94"]
    plt.close(fig)


def test_budget_chart_prints_a_label_once_on_a_spot_and_skips_empty_ones():
    """Points that share x and nearly y and carry the same label get it once; "" gets none."""
    import matplotlib.pyplot as plt
    fig = plots.labelled_points(
        {"a": [(60, 82, ""), (600, 89.68, "cpu10"), (600, 90.5, "")],
         "b": [(600, 89.80, "cpu10"), (600, 90.2, ""), (600, 90.93, "cpu10")]},
        connect=["a", "b"], xlabel="s", ylabel="%")
    texts = fig.axes[0].texts
    assert [(t.get_text(), t.xy) for t in texts] == [("cpu10", (600, 89.68)),
                                                     ("cpu10", (600, 90.93))]
    plt.close(fig)
