"""``cifar_helpers.export`` and ``bench inference``: the exported copies (``.pt2``, ONNX run by
ONNX Runtime) compute what the eager model computes, for any batch size; the timings are
complete and positive. Tiny models only (each export takes a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cifar_helpers import bench, export
from cifar_helpers.checkpoint import save_model
from cifar_helpers.data import CIFAR10_CLASSES
from cifar_helpers.models import ConvGroupNet, Net


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = Net(4, 8) if kind == "net" else ConvGroupNet((4, 8, 8))
    for m in net.modules():                      # BatchNorm in eval mode with real statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


@pytest.fixture(scope="module", params=["net", "modern"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    net = tiny(request.param)
    export.export_program(net, folder / "m.pt2")
    export.export_onnx(net, folder / "m.onnx")
    return net, export.runners(net, folder / "m.pt2", folder / "m.onnx", threads=1)


def test_exported_copies_agree_with_eager_for_any_batch(exported):
    net, runs = exported
    assert list(runs) == list(export.BACKENDS)
    for n in (1, 3, 64):                         # the example had 2: the batch size is dynamic
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            reference = net(x).numpy()
        for name, run in runs.items():
            out = run(x)
            assert out.shape == (n, 10) and out.dtype == np.float32
            assert np.abs(out - reference).max() < 1e-4, name
            assert (out.argmax(1) == reference.argmax(1)).all(), name
    found = export.agreement(runs, torch.randn(37, 3, 32, 32), batch_size=16)
    assert set(found) == {"exported", "onnxruntime"}
    assert found["exported"]["max_abs_diff"] == 0.0      # the same PyTorch kernels
    assert all(f["argmax_differs"] == 0 and f["max_abs_diff"] < 1e-4 for f in found.values())


def test_agreement_counts_differences():
    runs = {"eager": lambda x: np.eye(10, dtype=np.float32)[np.arange(len(x)) % 10],
            "other": lambda x: np.eye(10, dtype=np.float32)[(np.arange(len(x)) + (np.arange(len(x)) == 4)) % 10]}
    found = export.agreement(runs, torch.zeros(12, 3, 32, 32), batch_size=5)
    assert found == {"other": {"max_abs_diff": 1.0, "argmax_differs": 2}}   # batches of 5, 5, 2


def test_time_backends_reports_every_backend(exported):
    _, runs = exported
    times = export.time_backends(runs, batch_size=8, calls=10, batches=3, rounds=2, warmup=1,
                                 threads=1)
    assert list(times) == list(export.BACKENDS)
    for t in times.values():
        assert set(t) == {"latency_ms", "latency_p95_ms", "images_per_s"}
        assert 0 < t["latency_ms"] <= t["latency_p95_ms"] and t["images_per_s"] > 0
    table = export.format_table(times, 8).splitlines()
    assert len(table) == 4 and "batch 8" in table[0] and table[3].startswith("onnxruntime")


def test_time_backends_interleaves_and_restores_threads():
    calls = []
    runs = {name: (lambda x, name=name: calls.append((name, len(x)))) for name in ("a", "b")}
    before = torch.get_num_threads()
    export.time_backends(runs, batch_size=4, calls=4, batches=2, rounds=2, warmup=1, threads=1)
    assert torch.get_num_threads() == before
    timed = calls[2 * (1 + 2):]                   # after each one's warm-up (1 call, 2 batches)
    order = [name for name, _ in timed]
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3     # round by round
    assert [n for _, n in timed[:3]] == [1, 1, 4]


def test_bench_inference_prints_the_comparison_and_json(tmp_path, capsys):
    save_model(tmp_path / "net.pth", tiny("net"), CIFAR10_CLASSES)
    code = bench.main(["inference", "--checkpoint", str(tmp_path / "net.pth"), "--threads", "1",
                       "--calls", "10", "--batches", "2", "--keep", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and (tmp_path / "model.pt2").is_file() and (tmp_path / "model.onnx").is_file()
    assert out[0].startswith("# bench inference: Net") and "1 threads for every backend" in out[0]
    assert any("onnxruntime: max |difference| from eager" in line and "differs on 0 of 1000" in line
               for line in out)
    summary = json.loads(out[-1])
    assert list(summary) == ["model", "eager_latency_ms", "exported_latency_ms",
                             "onnxruntime_latency_ms", "eager_images_per_s",
                             "exported_images_per_s", "onnxruntime_images_per_s"]
    assert summary["model"] == "Net" and all(v > 0 for k, v in summary.items() if k != "model")


def test_bench_inference_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert bench.main(["inference", "--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "No checkpoint at" in capsys.readouterr().err
