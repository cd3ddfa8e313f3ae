"""Benchmarks that print their figures side by side with a baseline measured in the same run.

    python -m cifar_helpers.bench tutorial [--data-dir D] [--skip-baseline] [--seed S] [--device D]
                                           [--train-size N] [--test-size N]
    python -m cifar_helpers.bench contention [--data-dir D] [--with-seed-code] [--seed S]
    python -m cifar_helpers.bench fast [--preset P] [--set F=V]... [--seeds N] [--first-seed S]
                                       [--val-size N] [--data-dir D] [--device D]
    python -m cifar_helpers.bench fast --budget S [--seeds N] [--first-seed S] [--val-size N]
                                       [--data-dir D] [--device D]
    python -m cifar_helpers.bench budget --budget S [--seed S] [--val-size N] [--data-dir D]
                                         [--device D]
    python -m cifar_helpers.bench epochs [--device D]
    python -m cifar_helpers.bench inference --checkpoint PATH [--threads N] [--calls N]
                                            [--batches N] [--keep DIR]

Each subcommand's --help gives its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Sequence

import torch

from . import data, modern, speed
from .devices import cpu_count, get_device
from .params import add_arguments


def _line(result: dict) -> str:
    return (f"{result['recipe']:<40} train {result['train_seconds']:8.2f} s   "
            f"test accuracy {result['test_accuracy']:.4f}   "
            f"{result['images_per_second']:9.0f} images/s   ({result['threads']} threads)")


RECIPES = speed.RECIPES


def run_isolated(name: str, data_dir: str, seed: int = 0, device: str = "cpu",
                 train_size: int | None = None, test_size: int | None = None) -> dict:
    """``speed.run`` of one named recipe in a fresh Python process, so no run inherits another's state."""
    cmd = [sys.executable, "-m", "cifar_helpers.bench", "_one", name, "--data-dir", data_dir,
           "--seed", str(seed), "--device", device]
    for flag, value in (("--train-size", train_size), ("--test-size", test_size)):
        if value is not None:
            cmd += [flag, str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"recipe {name!r} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tutorial(data_dir: str, skip_baseline: bool = False, seed: int = 0, device: str = "cpu",
             train_size: int | None = None, test_size: int | None = None) -> dict:
    """(a) the seed's recipe as the seed writes it, (b) the fast recipe; returns the JSON summary."""
    device = get_device(device)
    print(f"# bench tutorial: Net on {os.path.abspath(data_dir)} ({data.find_layout(data_dir)} layout), "
          f"device {device}, {cpu_count()} cores, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    for train in (True, False):          # decode/cache outside any timing
        data.load_tensors(data_dir, train=train)
    results = {}
    recipes = ([] if skip_baseline else [("baseline", "seed-code")]) + [("fast", "fast")]
    for key, name in recipes:
        print(f"# {key}: {RECIPES[name]}", flush=True)
        results[key] = run_isolated(name, data_dir, seed, str(device), train_size, test_size)
        print(_line(results[key]), flush=True)
    base, fast = results.get("baseline"), results["fast"]
    summary = {
        "baseline_seconds": round(base["train_seconds"], 2) if base else None,
        "baseline_accuracy": round(base["test_accuracy"], 4) if base else None,
        "fast_seconds": round(fast["train_seconds"], 2),
        "fast_accuracy": round(fast["test_accuracy"], 4),
        "speedup": round(base["train_seconds"] / fast["train_seconds"], 1) if base else None,
    }
    if base:
        print(f"speedup {summary['speedup']}x; fast accuracy {'>=' if fast['test_accuracy'] >= base['test_accuracy'] else '<'} baseline")
    print(json.dumps(summary))
    return summary




def contention(data_dir: str, names: Sequence[str], seed: int = 0) -> dict:
    """Each recipe on an idle machine, then beside a process spinning on one core; the slowdowns."""
    print(f"# bench contention: {os.path.abspath(data_dir)}, {cpu_count()} cores, torch {torch.__version__}")
    for train in (True, False):
        data.load_tensors(data_dir, train=train)
    seconds: dict[str, dict[str, float]] = {n: {} for n in names}
    for condition in ("idle", "busy"):
        hog = None
        if condition == "busy":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for name in names:
                res = run_isolated(name, data_dir, seed)
                seconds[name][condition] = res["train_seconds"]
                print(f"{condition:<5} {name:<16} train {res['train_seconds']:8.2f} s   test accuracy "
                      f"{res['test_accuracy']:.4f}   ({res['threads']} threads)", flush=True)
        finally:
            if hog:
                hog.kill()
                hog.wait()
    summary = {n: {"idle_seconds": round(s["idle"], 2), "busy_seconds": round(s["busy"], 2),
                   "slowdown": round(s["busy"] / s["idle"], 2)} for n, s in seconds.items()}
    for n, s in summary.items():
        print(f"{n:<16} slowdown beside a busy process: {s['slowdown']}x")
    print(json.dumps(summary))
    return summary


def machine() -> dict:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``), its cores, the GPU's name."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": name, "cores": cpu_count(), "gpu": gpu}


def budget(data_dir: str, budget_seconds: float, device: str = "auto", seeds: int = 1,
           first_seed: int = 0, val_size: int = 0) -> list[dict]:
    """The modern recipe within ``budget_seconds`` (:func:`modern.plan_budget` chooses, probe
    included), one JSON line per seed: the choice, the seconds of each part, the accuracy.

    Trains on the 50,000 training images and scores the test images once (``val_size``: the
    held-out ones); nothing is chosen on them. Data decoding, the kernel warm-up and the
    evaluation are outside the budget and reported apart (``setup_seconds``, ``eval_seconds``).
    """
    modern.check_budget(budget_seconds)
    dev = get_device(device)
    start = time.perf_counter()
    train_x, train_y, score_x, score_y, scored = modern.load_split(data_dir, val_size)
    loading = time.perf_counter() - start
    print(f"# bench budget: {budget_seconds:g} s on {dev}, {machine()}, torch {torch.__version__}; "
          f"data {os.path.abspath(data_dir)}; train {len(train_y)} images, {scored} "
          f"{len(score_y)} (scored once per seed)", flush=True)
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        plan = modern.plan_budget(budget_seconds, dev, train_images=len(train_y))
        print(f"# {plan.reason}", flush=True)
        net, report = modern.train(plan.preset, train_x, train_y, seed=seed, device=dev,
                                   log=None, budget=plan)
        start = time.perf_counter()
        score = modern.evaluate(net, plan.preset, score_x, score_y, dev)
        p = plan.preset
        row = {"budget_seconds": budget_seconds, "train_seconds": round(report["train_seconds"], 2),
               "probe_seconds": round(plan.probe_seconds, 2),
               "setup_seconds": round(loading + plan.warmup_seconds, 2),
               "eval_seconds": round(time.perf_counter() - start, 2),
               "total_seconds": round(report["train_seconds"] + plan.probe_seconds, 2),
               "preset": p.name, "widths": list(p.widths), "batch_size": p.batch_size,
               "epochs_planned": p.epochs, "epochs": round(report["epochs_done"], 2),
               "precision": report["precision"], f"{scored}_accuracy": round(score["accuracy"], 4),
               f"{scored}_accuracy_no_tta": round(score["accuracy_no_tta"], 4),
               "images_per_second_probed": {k: round(v) for k, v in plan.images_per_second.items()},
               "seed": seed, "device": str(dev), **machine(), "threads": report["threads"],
               "bf16": report["precision"] == "bfloat16", "reproducible": False}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def fast(data_dir: str, preset: str = "auto", seeds: int = 3, device: str = "auto",
         val_size: int = 0, first_seed: int = 0, changes: dict | None = None,
         budget_seconds: float | None = None) -> dict | list[dict]:
    """The modern recipe's preset over ``seeds`` seeds: per-seed lines, then one JSON summary;
    with ``budget_seconds``, :func:`budget` (the preset is chosen, one JSON line per seed).

    Each seed trains on the 50,000 training images and is scored once on the 10,000 test images;
    with ``val_size`` it trains on the rest and is scored on those held-out images instead (the
    test set is not read). Training seconds exclude data loading and evaluation.
    """
    if seeds < 1:
        raise ValueError(f"--seeds {seeds} must be at least 1")
    if budget_seconds is not None:
        if preset != "auto" or changes:
            raise ValueError("--budget chooses the preset itself; leave out --preset and --set")
        return budget(data_dir, budget_seconds, device, seeds, first_seed, val_size)
    dev = get_device(device)
    p = modern.get_preset(preset, dev, **(changes or {}))
    train_x, train_y, score_x, score_y, scored = modern.load_split(data_dir, val_size)
    what = (f"validation {len(score_y)} held-out training images (test set not used)"
            if scored == "val" else f"test {len(score_y)}")
    print(f"# bench fast: preset {p.name} on {dev} ({cpu_count()} cores), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}; data {os.path.abspath(data_dir)}; "
          f"train {len(train_y)} images, {what} (scored once per seed)")
    print(f"# {p}", flush=True)
    modern.warm_up(p, dev)
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        net, report = modern.train(p, train_x, train_y, seed=seed, device=dev, log=None)
        score = modern.evaluate(net, p, score_x, score_y, dev)
        rows.append({**{k: v for k, v in report.items() if k != "history"}, **score})
        print(f"seed {seed}  train {report['train_seconds']:8.2f} s  {report['images_per_second']:7.0f} "
              f"images/s  {scored} accuracy {score['accuracy']:.4f} (TTA {p.tta}; without TTA "
              f"{score['accuracy_no_tta']:.4f})  {report['precision']}, {report['threads']} threads",
              flush=True)
    accs = [r["accuracy"] for r in rows]
    summary = {"preset": p.name, "device": str(dev), "seeds": len(rows),
               f"mean_{scored}_accuracy": round(sum(accs) / len(accs), 4),
               f"min_{scored}_accuracy": round(min(accs), 4),
               "mean_train_seconds": round(sum(r["train_seconds"] for r in rows) / len(rows), 2)}
    print(json.dumps(summary))
    return summary


def epochs(device: str = "auto") -> dict:
    """Notebook 06's table: seconds per epoch of ``Net`` and wider variants at batch 4 and 128,
    on the CPU and on ``device`` side by side; then one JSON line."""
    dev = get_device(device)
    devices = ["cpu"] + ([str(dev)] if dev.type != "cpu" else [])
    print(f"# bench epochs: {', '.join(devices)} ({cpu_count()} cores), torch {torch.__version__}; "
          f"training steps on random batches, 50,000 images per epoch, data cost excluded", flush=True)
    table = speed.epoch_seconds(devices)
    print(speed.format_epoch_table(table))
    rows = [{"net": n, "batch_size": b, "device": d, "seconds_per_epoch": round(t, 2)}
            for (n, b, d), t in table.items()]
    summary = {"devices": devices, "rows": rows}
    print(json.dumps(summary))
    return summary


def inference(checkpoint: str, threads: int | None = None, calls: int = 300, batches: int = 20,
              batch_size: int = 256, folder: str | None = None) -> dict:
    """Eager PyTorch, the ``torch.export`` program (``.pt2``) and ONNX Runtime (``.onnx``) for one
    checkpoint's model on the CPU, in the same run with the same threads: batch-1 latency
    (median, p95) and batch throughput; the exported copies are checked against eager first."""
    import tempfile

    import onnxruntime

    from . import export
    from .predict import load_classifier

    check_counts(threads=threads, calls=calls, batches=batches, batch_size=batch_size)
    net, info, _, _ = load_classifier(checkpoint)
    threads = threads or torch.get_num_threads()
    print(f"# bench inference: {info['model']} {info['config']} from {checkpoint}; {threads} threads "
          f"for every backend ({cpu_count()} cores), torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {platform.processor() or platform.machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        where = folder or tmp
        program, onnx_file = os.path.join(where, "model.pt2"), os.path.join(where, "model.onnx")
        clock = time.perf_counter()
        export.export_program(net, program)
        export.export_onnx(net, onnx_file)
        print(f"# exported to .pt2 and .onnx in {time.perf_counter() - clock:.1f} s", flush=True)
        runs = export.runners(net, program, onnx_file, threads)
        for name, found in export.agreement(runs, export.example_batch(1000, seed=1)).items():
            print(f"# {name}: max |difference| from eager {found['max_abs_diff']:.2e}, predicted "
                  f"class differs on {found['argmax_differs']} of 1000 random inputs", flush=True)
        times = export.time_backends(runs, batch_size, calls, batches, threads=threads)
    print(export.format_table(times, batch_size))
    eager = times["eager"]
    fastest = min(times, key=lambda b: times[b]["latency_ms"])
    busiest = max(times, key=lambda b: times[b]["images_per_s"])
    print(f"batch 1: {fastest} {eager['latency_ms'] / times[fastest]['latency_ms']:.1f}x below eager's "
          f"latency; batch {batch_size}: {busiest} {times[busiest]['images_per_s'] / eager['images_per_s']:.1f}x "
          f"eager's images/s")
    summary = {"model": info["model"]}
    summary.update({f"{b}_latency_ms": round(times[b]["latency_ms"], 4) for b in export.BACKENDS})
    summary.update({f"{b}_images_per_s": round(times[b]["images_per_s"], 1) for b in export.BACKENDS})
    print(json.dumps(summary))
    return summary


def check_counts(**counts: int | None) -> None:
    """Refuse a count below 1 (None: its default), naming the option: ``--threads 0`` is no
    request for the default."""
    for name, value in counts.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value} must be at least 1, e.g. {flag} 2")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_helpers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tutorial", help="the seed's recipe vs the fast recipe for the same Net")
    add_arguments(t, "data_dir")
    t.add_argument("--skip-baseline", action="store_true", help="run only the fast recipe")
    add_arguments(t, "seed", "device", "train_size", "test_size", device="cpu")
    c = sub.add_parser("contention", help="each recipe idle, then beside a busy process")
    add_arguments(c, "data_dir")
    c.add_argument("--with-seed-code", action="store_true",
                   help="also the seed's code as written (about 15 minutes beside a busy process)")
    add_arguments(c, "seed")
    f = sub.add_parser("fast", help="the modern recipe (notebook 08): a preset over several seeds")
    f.add_argument("--preset", default="auto", help=f"auto (by device) or one of {sorted(modern.PRESETS)}")
    f.add_argument("--seeds", type=int, default=3)
    f.add_argument("--first-seed", type=int, default=0)
    add_arguments(f, "data_dir", "device")
    f.add_argument("--val-size", type=int, default=0,
                   help="hold out this many training images and score on them instead of the "
                        "test set (for choosing settings)")
    f.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a preset field, e.g. --set epochs=5")
    b = sub.add_parser("budget", help="the modern recipe within a time budget: it chooses the net")
    for command in (f, b):
        command.add_argument("--budget", type=float, default=None, required=command is b,
                             metavar="SECONDS", help="training seconds, the speed probe included")
    add_arguments(b, "seed", "data_dir", "device")
    b.add_argument("--val-size", type=int, default=0,
                   help="hold out this many training images and score on them, not the test set")
    e = sub.add_parser("epochs", help="seconds per epoch of Net and wider variants, CPU vs --device")
    add_arguments(e, "device")
    i = sub.add_parser("inference", help="eager vs torch.export vs ONNX Runtime for one checkpoint (CPU)")
    i.add_argument("--checkpoint", required=True, help="a checkpoint of notebook 03 or 08")
    i.add_argument("--threads", type=int, default=None, help="for every backend (default: torch's)")
    i.add_argument("--calls", type=int, default=300, help="single-image calls per backend")
    i.add_argument("--batches", type=int, default=20, help="batches of 256 per backend")
    i.add_argument("--keep", default=None, metavar="DIR", help="write the .pt2 and .onnx files here")
    one = sub.add_parser("_one")  # internal: one recipe, one JSON line (used by run_isolated)
    one.add_argument("recipe", choices=sorted(RECIPES))
    one.add_argument("--data-dir", required=True)
    add_arguments(one, "seed", "device", "train_size", "test_size", device="cpu")
    args = parser.parse_args(argv)
    try:
        check_counts(**{k: getattr(args, k, None)
                        for k in ("threads", "calls", "batches", "seeds")})
        if args.command == "_one":
            res = speed.run(RECIPES[args.recipe], args.data_dir, seed=args.seed,
                            device=args.device, train_size=args.train_size, test_size=args.test_size)
            print(json.dumps({k: v for k, v in res.items() if k != "curve"}))
        elif args.command == "tutorial":
            tutorial(args.data_dir, args.skip_baseline, args.seed, args.device,
                     args.train_size, args.test_size)
        elif args.command == "epochs":
            epochs(args.device)
        elif args.command == "inference":
            inference(args.checkpoint, args.threads, args.calls, args.batches, folder=args.keep)
        elif args.command == "fast":
            fast(args.data_dir, args.preset, args.seeds, args.device, args.val_size, args.first_seed,
                 modern.parse_changes(args.set), args.budget)
        elif args.command == "budget":
            budget(args.data_dir, args.budget, args.device, 1, args.seed, args.val_size)
        else:
            names = ["fast", "seed-in-memory"] + (["seed-code"] if args.with_seed_code else [])
            contention(args.data_dir, names, args.seed)
    except (data.DataError, ValueError, RuntimeError) as err:  # DeviceError is a RuntimeError,
        # CheckpointError a ValueError
        print(f"cifar_helpers.bench: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
