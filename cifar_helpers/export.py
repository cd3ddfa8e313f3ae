"""Export a trained model (``torch.export`` to ``.pt2``, ONNX), check the copies against the
eager model, and time the three side by side: notebook 09's machinery and ``bench inference``.

The exported model takes any batch size (a dynamic first dimension). The timings interleave
the backends round by round, with the same thread count for all, after a warm-up, so that a
busy machine slows each of them alike.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from .runstate import num_threads

BACKENDS = ("eager", "exported", "onnxruntime")


def example_batch(n: int = 2, seed: int = 0) -> torch.Tensor:
    """Random inputs of CIFAR-10's shape. Export needs ``n >= 2``: with a batch of 1 it would
    fix the batch size at 1 (a dimension of size 1 is treated as a constant)."""
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def export_program(net: nn.Module, path: str | Path, example: torch.Tensor | None = None):
    """``torch.export`` of ``net`` (eval mode) with a dynamic batch size, saved to ``path``
    (a ``.pt2`` file); returns the ``ExportedProgram``."""
    example = example_batch() if example is None else example
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: batch},))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(exported, str(path))
    return exported


def export_onnx(net: nn.Module, path: str | Path, example: torch.Tensor | None = None) -> Path:
    """``torch.onnx.export(..., dynamo=True)`` of ``net`` (eval mode) with a dynamic batch size,
    input named ``images`` and output ``logits``; returns ``path``."""
    example = example_batch() if example is None else example
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net.eval(), (example,), str(path), dynamo=True, input_names=["images"],
                      output_names=["logits"], dynamic_shapes=({0: "batch"},), external_data=False,
                      verbose=False)
    return Path(path)


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for the model at ``path`` with ``threads`` threads within an
    operator (default: torch's current count) and one between operators; all graph
    optimizations on (ONNX Runtime's default: constant folding, BatchNorm folded into the
    convolutions, fused activations, blocked memory layouts)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3                 # errors only: no notices on stderr
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runners(net: nn.Module, program_path: str | Path, onnx_path: str | Path,
            threads: int | None = None) -> dict[str, Callable[[torch.Tensor], np.ndarray]]:
    """The three ways to run the model, each a function from a batch of normalized images to
    its logits as a NumPy array: ``eager`` (the ``nn.Module``), ``exported`` (the ``.pt2`` file
    loaded back), ``onnxruntime`` (the ``.onnx`` file)."""
    net = net.eval()
    program = torch.export.load(str(program_path)).module()
    session = ort_session(onnx_path, threads)
    name = session.get_inputs()[0].name

    def eager(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return net(x).numpy()

    def exported(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return program(x).numpy()

    def onnxruntime(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {name: x.numpy()})[0]

    return {"eager": eager, "exported": exported, "onnxruntime": onnxruntime}


def agreement(runs: dict[str, Callable], inputs: torch.Tensor, batch_size: int = 500) -> dict:
    """Per backend other than ``eager``: the largest absolute difference from eager's logits
    and how many predicted classes differ, over ``inputs``."""
    found = {name: {"max_abs_diff": 0.0, "argmax_differs": 0} for name in runs if name != "eager"}
    for batch in inputs.split(batch_size):
        reference = runs["eager"](batch)
        for name in found:
            out = runs[name](batch)
            found[name]["max_abs_diff"] = max(found[name]["max_abs_diff"],
                                              float(np.abs(out - reference).max()))
            found[name]["argmax_differs"] += int((out.argmax(1) != reference.argmax(1)).sum())
    return found


def time_backends(runs: dict[str, Callable[[torch.Tensor], Any]], batch_size: int = 256,
                  calls: int = 300, batches: int = 20, rounds: int = 5, warmup: int = 10,
                  threads: int | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per backend: batch-1 latency (``latency_ms`` median, ``latency_p95_ms``) over ``calls``
    single-image calls, and ``images_per_s`` over ``batches`` batches of ``batch_size``.

    Every backend first runs ``warmup`` single images and two batches untimed. Then, ``rounds``
    times, each backend in turn does its share of the calls and the batches; so a slow spell of
    a busy machine falls on all of them, not on one. ``threads`` (default: torch's current
    count) is set for torch here and should be the one the ONNX Runtime session was made with.
    """
    with num_threads(threads), torch.inference_mode():
        latencies, batch_seconds = _time(runs, batch_size, calls, batches, rounds, warmup, seed)
    result = {}
    for name in runs:
        ms = sorted(1000 * t for t in latencies[name])
        result[name] = {"latency_ms": statistics.median(ms),
                        "latency_p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))],
                        "images_per_s": batches * batch_size / batch_seconds[name]}
    return result


def _time(runs, batch_size, calls, batches, rounds, warmup, seed):
    """Warm up, then the interleaved rounds: per backend its call times and batch seconds."""
    g = torch.Generator().manual_seed(seed)
    one = torch.randn(1, 3, 32, 32, generator=g)
    many = torch.randn(batch_size, 3, 32, 32, generator=g)
    for run in runs.values():
        for _ in range(warmup):
            run(one)
        for _ in range(2):
            run(many)
    latencies: dict[str, list[float]] = {name: [] for name in runs}
    batch_seconds = dict.fromkeys(runs, 0.0)
    for r in range(rounds):
        share_calls = calls // rounds + (r < calls % rounds)
        share_batches = batches // rounds + (r < batches % rounds)
        for name, run in runs.items():
            for _ in range(share_calls):
                start = time.perf_counter()
                run(one)
                latencies[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(share_batches):
                run(many)
            batch_seconds[name] += time.perf_counter() - start
    return latencies, batch_seconds


def format_table(times: dict[str, dict[str, float]], batch_size: int = 256) -> str:
    """The timings as a small table, one line per backend."""
    lines = [f"{'backend':<13}{'latency median':>16}{'p95':>11}{f'batch {batch_size}':>18}"]
    for name, t in times.items():
        lines.append(f"{name:<13}{t['latency_ms']:>13.3f} ms{t['latency_p95_ms']:>8.3f} ms"
                     f"{t['images_per_s']:>11,.0f} img/s")
    return "\n".join(lines)
