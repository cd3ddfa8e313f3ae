"""The time-to-accuracy helpers and the tutorial benchmark, on tiny data."""

import json

import pytest
import torch
from dataclasses import replace

from cifar_helpers import bench, data, speed
from cifar_helpers.devices import cpu_count, cpu_threads, idle_cores


def test_lr_factor_warms_up_then_decays():
    f = [speed.lr_factor(s, 100, 0.1, True) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:])) and f[-1] == pytest.approx(1 / 90)
    assert [speed.lr_factor(s, 10, 0.0, False) for s in range(10)] == [1.0] * 10


def test_thread_policy():
    assert cpu_threads(4) == 1
    assert 1 <= cpu_threads(256) <= cpu_count()
    assert 0.0 <= idle_cores(0.05) <= cpu_count()


def test_dataset_normalization_equals_torchvision(tiny_folder):
    fast = data.make_loader(tiny_folder, False, 8, mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD)
    ref = data.make_loader(tiny_folder, False, 8, fast=False, mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD)
    for (a, y), (b, z) in zip(fast, ref, strict=True):
        assert torch.equal(a, b) and torch.equal(y, z)


@pytest.mark.parametrize("recipe", [speed.SEED, speed.FAST], ids=["seed", "fast"])
def test_run_times_training_and_evaluates(tiny_folder, recipe):
    threads = torch.get_num_threads()
    res = speed.run(replace(recipe, epochs=1.5, batch_size=8, num_workers=0), str(tiny_folder),
                    eval_every=0.5)   # 80 images: 10 steps an epoch, 15 steps in all
    assert res["train_seconds"] > 0 and 0 <= res["test_accuracy"] <= 1
    assert [round(c[1], 2) for c in res["curve"]] == [0.5, 1.0, 1.5]     # epochs at each evaluation
    assert all(a[0] <= b[0] for a, b in zip(res["curve"], res["curve"][1:]))
    assert res["train_images"] == 15 * 8
    assert torch.get_num_threads() == threads                           # restored


def test_same_seed_same_result(tiny_folder):
    a, b = (speed.run(replace(speed.FAST, batch_size=16), str(tiny_folder), seed=3) for _ in range(2))
    assert a["test_accuracy"] == b["test_accuracy"] and a["threads"] == b["threads"]


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_bench_tutorial_prints_a_json_line_last(tiny_folder, capsys):
    assert bench.main(["tutorial", "--data-dir", str(tiny_folder), "--skip-baseline"]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert set(summary) == {"baseline_seconds", "baseline_accuracy", "fast_seconds", "fast_accuracy", "speedup"}
    assert summary["baseline_seconds"] is None and summary["speedup"] is None
    assert summary["fast_seconds"] > 0


def test_bench_tutorial_with_baseline(tiny_folder, capsys):
    assert bench.main(["tutorial", "--data-dir", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    summary = _last_json(out)
    b, f, e = summary["baseline_seconds"], summary["fast_seconds"], 0.005   # seconds rounded to 0.01
    assert (b - e) / (f + e) - 0.05 <= summary["speedup"] <= (b + e) / max(f - e, 1e-9) + 0.05
    assert "seed recipe (DataLoader, 2 workers)" in out and "fast recipe" in out


def test_bench_refuses_missing_data(tmp_path, capsys):
    assert bench.main(["tutorial", "--data-dir", str(tmp_path / "none")]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def test_bench_contention_reports_slowdowns(tiny_folder, capsys):
    assert bench.main(["contention", "--data-dir", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    summary = _last_json(out)
    assert set(summary) == {"fast", "seed-in-memory"}
    for s in summary.values():
        b, i, e = s["busy_seconds"], s["idle_seconds"], 0.005
        assert (b - e) / (i + e) - 0.005 <= s["slowdown"] <= (b + e) / max(i - e, 1e-9) + 0.005
    assert "busy  fast" in out


def test_bench_fast_prints_each_seed_then_the_json_summary(tiny_folder, capsys):
    code = bench.main(["fast", "--preset", "demo", "--seeds", "2", "--data-dir", str(tiny_folder),
                       "--device", "cpu", "--set", "batch_size=16", "--set", "widths=[8,16,16]"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    seeds = [line for line in lines if line.startswith("seed ")]
    assert [s.split()[1] for s in seeds] == ["0", "1"]
    assert all("train" in s and "images/s" in s and "test accuracy" in s for s in seeds)
    summary = json.loads(lines[-1])
    assert set(summary) == {"preset", "device", "seeds", "mean_test_accuracy", "min_test_accuracy",
                            "mean_train_seconds"}
    accs = [float(s.split("test accuracy ")[1].split()[0]) for s in seeds]
    assert summary["preset"] == "demo" and summary["device"] == "cpu" and summary["seeds"] == 2
    assert summary["mean_test_accuracy"] == round(sum(accs) / 2, 4)
    assert summary["min_test_accuracy"] == round(min(accs), 4) and summary["mean_train_seconds"] > 0


def test_bench_fast_with_val_size_scores_the_held_out_images_and_never_reads_the_test_set(
        tiny_folder, capsys, monkeypatch):
    read = []
    load = data.load_tensors
    monkeypatch.setattr(data, "load_tensors", lambda d, train=True, **kw: read.append(train) or load(d, train, **kw))
    code = bench.main(["fast", "--preset", "demo", "--seeds", "1", "--data-dir", str(tiny_folder),
                       "--device", "cpu", "--val-size", "20", "--set", "batch_size=16",
                       "--set", "widths=[8,16,16]"])
    assert code == 0 and read == [True]                  # the training split only
    out = capsys.readouterr().out
    assert "train 60 images, validation 20 held-out training images (test set not used)" in out
    seed = [line for line in out.splitlines() if line.startswith("seed ")][0]
    assert "val accuracy" in seed and "test accuracy" not in seed
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary) == {"preset", "device", "seeds", "mean_val_accuracy", "min_val_accuracy",
                            "mean_train_seconds"}
    assert summary["mean_val_accuracy"] == float(seed.split("val accuracy ")[1].split()[0])


def test_bench_fast_refuses_bad_presets(tiny_folder, capsys):
    assert bench.main(["fast", "--preset", "nope", "--data-dir", str(tiny_folder)]) == 2
    assert "preset='nope' is unknown" in capsys.readouterr().err
