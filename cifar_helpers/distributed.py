"""Data-parallel training of ``Net`` with DistributedDataParallel, launched by torchrun.

    torchrun --standalone --nproc_per_node N -m cifar_helpers.distributed [options]
    torchrun --nnodes 2 --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT \\
             --nproc_per_node N -m cifar_helpers.distributed [options]

With ``torchrun --max-restarts 1 ... --checkpoint FILE --resume``, a group that torchrun restarts
after a failure goes on from the last epoch's checkpoint and ends with the same weights.
Without torchrun it runs as one process. gloo on CPU, nccl on CUDA, chosen automatically.
Each process trains on its shard of every global batch (``DistributedSampler`` with
``set_epoch``); DDP averages the gradients, so N processes with ``--batch-size B`` (the global
batch) follow the same path as one process with batch B. Only rank 0 logs and saves. The last
line printed is JSON with ``world_size``, ``test_accuracy`` and ``train_seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from typing import NoReturn, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

from . import data
from .checkpoint import save_model
from .devices import DeviceError, synchronize
from .models import Net
from .params import add_arguments, make_params
from .runstate import (FAULT_ENV, RESTART_ENV, CheckpointError,  # noqa: F401 (FAULT_ENV: tests)
                       NonFiniteLossError, check_finite, check_writable, checkpoint_lock,
                       load_for_resume, step_hook)


class LaunchError(RuntimeError):
    """The launch cannot work here (backend, devices, world size); the message says why."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="torchrun ... -m cifar_helpers.distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, "data_dir", "epochs")
    p.add_argument("--batch-size", type=int, default=128, help="global batch (all processes together)")
    p.add_argument("--lr", type=float, default=0.032)
    add_arguments(p, "momentum", "seed", "train_size", "test_size")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--backend", default="auto", help="auto (nccl on CUDA, else gloo), gloo or nccl")
    p.add_argument("--width", type=int, nargs=2, default=(6, 16), metavar=("C1", "C2"),
                   help="conv channels of Net (the seed's 6 16; the wide variant 64 128)")
    p.add_argument("--checkpoint", default=None,
                   help="rank 0 saves the training state here after every epoch (optional)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--save-weights", default=None, help=argparse.SUPPRESS)  # tests: raw state_dict
    return p.parse_args(argv)


def choose(args: argparse.Namespace, world_size: int, local_rank: int) -> tuple[torch.device, str]:
    """The device and backend for this process, or a LaunchError saying why it cannot work."""
    if args.device not in ("auto", "cpu", "cuda"):
        raise LaunchError(f"--device {args.device!r}: use auto, cpu or cuda")
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        raise DeviceError("--device cuda, but CUDA is not available here; use --device cpu")
    use_cuda = cuda and args.device != "cpu"
    if use_cuda:
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise LaunchError(f"{world_size} processes need one GPU each, but this node has {n} "
                              f"GPU(s): use --nproc_per_node {n} or fewer (or --device cpu)")
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise LaunchError(f"--backend {backend!r}: use auto, gloo or nccl")
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not available:
        raise LaunchError(f"backend {backend} is not available in this PyTorch build; "
                          f"use --backend gloo")
    if backend == "nccl" and device.type != "cuda":
        raise LaunchError("backend nccl needs CUDA GPUs; on CPU use --backend gloo (or auto)")
    return device, backend


def _attempt_store(timeout: timedelta) -> dist.Store:
    """torchrun's store, with keys of their own for each attempt: a group that torchrun restarts
    (``--max-restarts``) shares the store with the failed one and must not read its addresses."""
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"attempt_{os.environ.get(RESTART_ENV) or 0}", store)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    make_params(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                seed=args.seed, train_size=args.train_size, test_size=args.test_size)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.batch_size % world_size:
        raise LaunchError(f"--batch-size {args.batch_size} must be divisible by the "
                          f"{world_size} processes")
    device, backend = choose(args, world_size, local_rank)
    if args.checkpoint:
        check_writable(args.checkpoint)
    distributed = "RANK" in os.environ
    if distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # a dead peer ends a collective after the timeout instead of hanging forever
        timeout = timedelta(seconds=60)
        dist.init_process_group(backend, store=_attempt_store(timeout), rank=rank,
                                world_size=world_size, timeout=timeout,
                                device_id=device if device.type == "cuda" else None)
    try:
        with (checkpoint_lock(args.checkpoint) if rank == 0 and args.checkpoint
              else contextlib.nullcontext()):
            return _train(args, rank, world_size, device, backend, distributed)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(args, rank: int, world_size: int, device: torch.device, backend: str,
           distributed: bool) -> dict:
    log = print if rank == 0 else (lambda *a, **k: None)
    torch.manual_seed(args.seed)                      # same initial weights on every rank
    images, labels = data.load_tensors(args.data_dir, train=True)
    idx = data.subset_indices(len(labels), args.train_size)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    images, labels = images.to(device), labels.to(device)
    sampler = DistributedSampler(range(len(labels)), num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=args.seed, drop_last=True)
    local_batch = args.batch_size // world_size
    net = Net(*args.width).to(device)                 # move first, then build the optimizer
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    run = {"world_size": world_size, "global_batch": args.batch_size, "lr": args.lr,
           "momentum": args.momentum, "seed": args.seed, "train_images": len(labels)}
    start_epoch = 0
    state = load_for_resume(args.checkpoint, run) if args.resume and args.checkpoint else None
    if state is not None:                             # every rank, before DDP
        start_epoch = _resume(args.checkpoint, state, net, optimizer)
        log(f"resumed from {args.checkpoint} after epoch {start_epoch}")
    model = (DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
             if distributed else net)
    criterion = nn.CrossEntropyLoss()
    restart = int(os.environ.get(RESTART_ENV) or 0)   # > 0: torchrun restarted the group
    log(f"{f'restart {restart}: ' if restart else ''}world size {world_size}, "
        f"backend {backend if distributed else 'none'}, device {device}, "
        f"global batch {args.batch_size} = {world_size} x {local_batch}, "
        f"{len(sampler)} images per process")
    step, seconds = 0, 0.0
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)                      # a new order every epoch, same on all ranks
        order = torch.tensor(list(sampler), device=device)
        start = time.perf_counter()
        loss_sum = torch.zeros(2, device=device)      # summed loss, images
        model.train()
        for b in range(0, len(order), local_batch):
            i = order[b:b + local_batch]
            inputs = data.normalize(images[i])
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels[i])
            loss.backward()                           # DDP all-reduces (averages) the gradients
            optimizer.step()
            loss_sum += torch.stack([loss.detach() * len(i),
                                     torch.tensor(float(len(i)), device=device)])
            step += 1
            step_hook(step, rank)                     # tests: a delay, or this rank dies here
        synchronize(device)
        seconds += time.perf_counter() - start
        if distributed:
            dist.all_reduce(loss_sum)                 # every rank joins; only rank 0 prints
        mean_loss = loss_sum[0].item() / loss_sum[1].item()   # the same on every rank
        check_finite(mean_loss, epoch, b // local_batch, checkpoint=args.checkpoint)
        log(f"epoch {epoch + 1}: mean training loss {mean_loss:.4f}")
        if rank == 0 and args.checkpoint:              # identical on every rank: rank 0 writes
            save_model(args.checkpoint, net, data.CIFAR10_CLASSES, epoch=epoch + 1, run=run,
                       optimizer=optimizer.state_dict())
    accuracy = _evaluate(net, args, rank, world_size, device, distributed)
    result = {"world_size": world_size, "test_accuracy": accuracy,
              "train_seconds": round(seconds, 3),
              "backend": backend if distributed else None, "device": str(device),
              "global_batch": args.batch_size, "epochs": args.epochs}
    result["resumed_from"] = start_epoch
    if rank == 0:
        if args.save_weights:
            torch.save({k: v.cpu() for k, v in net.state_dict().items()}, args.save_weights)
        print(json.dumps(result), flush=True)
    return result


def _resume(path: str, state: dict, net: nn.Module, optimizer) -> int:
    """Load the state rank 0 saved (checked: same settings) into ``net`` and ``optimizer``.
    Returns the epochs done."""
    if state.get("config") != net.config():
        raise CheckpointError(f"{path} is not a training state of this Net{net.config()}; use "
                              f"another --checkpoint or drop --resume")
    net.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"]


@torch.no_grad()
def _evaluate(net: nn.Module, args, rank: int, world_size: int, device: torch.device,
              distributed: bool) -> float:
    """Test accuracy: each rank scores every world_size-th test image; counts are all-reduced."""
    images, labels = data.load_tensors(args.data_dir, train=False)
    idx = data.subset_indices(len(labels), args.test_size)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    loader = data.TensorLoader(images[rank::world_size], labels[rank::world_size], 1000,
                               device=device)
    net.eval()
    counts = torch.zeros(2, device=device)
    for inputs, targets in loader:
        counts += torch.stack([(net(inputs).argmax(1) == targets).sum().float(),
                               torch.tensor(float(len(targets)), device=device)])
    if distributed:
        dist.all_reduce(counts)
    return counts[0].item() / counts[1].item()


TORCHRUN_LOG = re.compile(r"^[DIWE]\d{4} [\d:.]+ +\d+ \S+\] (.*)$")   # torchrun's own logger
WORKER_TRACE = re.compile(r"^\[rank\d+\]:")                            # a worker's traceback


def launch(nproc: int, args: Sequence[object], log=print, max_restarts: int = 0,
           env: dict[str, str] | None = None) -> dict:
    """Run ``torchrun --standalone --nproc_per_node nproc --max-restarts max_restarts
    -m cifar_helpers.distributed args`` (``env``: extra variables) and return its JSON result.

    Streams the workers' lines through ``log``, torchrun's notes as ``torchrun: ...``, but not the
    workers' tracebacks (``[rankN]:`` lines); a failure raises with the last lines of everything.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "--max-restarts", str(max_restarts), "-m", "cifar_helpers.distributed",
           *map(str, args)]
    env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}   # torchrun's default, quietly
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        note = TORCHRUN_LOG.match(lines[-1])
        if note:
            log(f"torchrun: {note[1].split(' of binary: ')[0]}")   # no machine path
        elif line.strip() and not line.startswith("*****") and not WORKER_TRACE.match(line):
            log(lines[-1])
    if proc.wait() != 0:
        tail = "\n".join(lines[-25:])
        raise RuntimeError(f"torchrun exited with {proc.returncode}:\n{tail}")
    return json.loads(next(l for l in reversed(lines) if l.startswith("{")))


def _leave(code: int) -> NoReturn:
    """Flush and end this worker at once, skipping interpreter shutdown. Once DDP has wrapped a
    model, gloo's threads outlive destroy_process_group; shutting the interpreter and C++ down
    around them can abort the process (``terminate called without an active exception``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        main()
    except (LaunchError, DeviceError, data.DataError, ValueError, CheckpointError,
            NonFiniteLossError) as err:
        print(f"cifar_helpers.distributed: {err}", file=sys.stderr)
        _leave(2)
    _leave(0)
