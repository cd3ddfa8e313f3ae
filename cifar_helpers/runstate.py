"""What a training run writes and reads back: the atomic save, random-number and data-order state,
resume with its same-settings check, the NaN guard, the test hooks and the thread-count context.

Every training loop (``train``, ``speed``, ``modern``, ``distributed``) uses this one module.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

FAULT_ENV = "CIFAR_HELPERS_FAULT"        # tests only: "rank=R,step=S" exits rank R at step S
DELAY_ENV = "CIFAR_HELPERS_STEP_DELAY"   # tests only: seconds to sleep after every step
RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unwritable or made for another model or run."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names epoch and step."""


def _full_disk(err: BaseException) -> bool:
    """Whether ``err`` is a full disk: ENOSPC, or torch's zip writer failing to write."""
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    return isinstance(err, RuntimeError) and "inline_container" in str(err)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file, flush it to disk, then rename it over ``path``.

    A crash or a failed write leaves any previous file at ``path`` intact (CheckpointError).
    """
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if not isinstance(err, OSError) and not _full_disk(err):
            raise
        kept = "the previous checkpoint is kept" if path.exists() else "nothing was saved"
        if _full_disk(err):
            why, fix = "no space left on device", "Free space or choose another path."
        else:
            why, fix = (getattr(err, "strerror", None) or str(err)).lower(), "Choose another path."
        raise CheckpointError(f"could not write {path}: {why}; {kept}. {fix}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any training, a ``path`` whose folder cannot be made or written to."""
    path = Path(path).absolute()
    if path.is_dir():
        raise CheckpointError(f"cannot write {path}: it is a folder; give a file name such as "
                              f"{path / 'cifar_net.pth'}.")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise CheckpointError(f"cannot write {path}: {folder} is a file, not a folder; choose "
                              f"another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write {path}: the folder {folder} is not writable; choose "
                              f"another path.")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (assumed so where that cannot be told)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(lock: Path) -> int | None:
    """The pid in ``lock``, or None when the file is gone or holds no pid."""
    try:
        return int(lock.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@contextlib.contextmanager
def checkpoint_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold ``<path>.lock`` (it holds this process's pid) while a run writes ``path``.

    A lock of another live process is refused; one left by a dead process is taken over.
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = lock.with_name(f".{lock.name}.{os.getpid()}.tmp")
    mine.write_text(f"{os.getpid()}\n")
    try:
        try:
            os.link(mine, lock)                   # atomic: fails if the lock exists
        except FileExistsError:
            pid = _holder(lock)
            if pid is not None and _alive(pid):
                raise CheckpointError(f"{path} is being written by another run (pid {pid}); wait "
                                      f"for it to finish, stop it, or choose another checkpoint "
                                      f"path (no such run? delete {lock}).") from None
            os.replace(mine, lock)                # stale (its process is gone): take it over
    finally:
        mine.unlink(missing_ok=True)
    try:
        yield
    finally:
        if _holder(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def capture_rng(generator: torch.Generator | None = None) -> dict:
    """Every random-number state a training step may draw from (torch, CUDA, Python's
    ``random``) and, if given, ``generator``'s (a DataLoader's shuffling order)."""
    state: dict = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    """Set the states :func:`capture_rng` returned (``generator``'s too, if both have one)."""
    torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def _as_tuple(x: Any) -> Any:
    """``random.getstate()`` read back from a checkpoint: lists turned into tuples again."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def loader_state(loader: Any) -> dict:
    """What fixes a loader's next epoch order: its pass counter (``TensorLoader``) or its
    shuffling generator (``DataLoader``); empty for a loader with neither."""
    if hasattr(loader, "set_epoch") and isinstance(getattr(loader, "epoch", None), int):
        return {"epoch": loader.epoch}
    generator = getattr(loader, "generator", None)
    return {"generator": generator.get_state()} if isinstance(generator, torch.Generator) else {}


def restore_loader(loader: Any, state: dict, epochs_done: int) -> None:
    """Set what :func:`loader_state` returned; a state without it sets the pass counter."""
    if "epoch" in state:
        loader.set_epoch(state["epoch"])
    elif "generator" in state:
        loader.generator.set_state(state["generator"])
    elif hasattr(loader, "set_epoch"):           # a checkpoint from before the counter was saved
        loader.set_epoch(epochs_done)


def check_same_run(state: dict, run: dict, path: str | os.PathLike) -> None:
    """Refuse to resume ``state`` with settings other than the ``run`` that wrote it."""
    saved = state.get("run", {})
    changed = {k: (saved.get(k), v) for k, v in run.items() if saved.get(k) != v}
    if changed:
        what = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now"
                         for k, (a, b) in changed.items())
        raise CheckpointError(f"cannot resume {path} with other settings ({what}); use the same "
                              f"parameters, or start again without resuming.")


def read_state(path: str | os.PathLike) -> Any:
    """``torch.load`` of an existing file, ``weights_only=True``; CheckpointError if corrupt."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch.load's reason can run over many lines: keep its first
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({reason}). Delete it "
                              f"and train again with the notebook that wrote it (03_training or "
                              f"08_modern_recipe).") from err


def load_for_resume(path: str | os.PathLike, run: dict) -> dict | None:
    """The training state saved at ``path``, checked against ``run``'s settings; None when
    there is no file yet. CheckpointError for a corrupt file, weights only, or other settings."""
    path = Path(path)
    if not path.exists():
        return None
    state = read_state(path)
    if not isinstance(state, dict) or "optimizer" not in state:
        raise CheckpointError(f"{path} holds only model weights, no training state to resume "
                              f"from; start without resuming or use another checkpoint path.")
    check_same_run(state, run, path)
    return state


def check_finite(loss: torch.Tensor | float, epoch: int, step: int, *,
                 checkpoint: str | os.PathLike | None = None) -> None:
    """Raise NonFiniteLossError when ``loss`` is NaN or infinite.

    ``epoch`` and ``step`` count from 0 (as ``range`` and ``enumerate``); the message counts from 1
    and, when ``checkpoint`` exists, says the one written after epoch ``epoch`` is kept.
    """
    value = float(loss.item() if isinstance(loss, torch.Tensor) else loss)
    if math.isfinite(value):
        return
    kept = (f" The last good checkpoint (after epoch {epoch}) is kept at {checkpoint}."
            if checkpoint is not None and Path(checkpoint).exists() else "")
    raise NonFiniteLossError(f"loss is {value} at epoch {epoch + 1}, step {step + 1}: training "
                             f"diverged. Try a lower learning rate (lr).{kept}")


def step_hook(step: int, rank: int = 0) -> None:
    """Per-step test hook, a no-op unless set: sleep ``$CIFAR_HELPERS_STEP_DELAY`` seconds; exit
    (code 3) when ``$CIFAR_HELPERS_FAULT`` is ``rank=R,step=S`` with R == ``rank``, S == ``step``
    (steps done so far), unless torchelastic has restarted the job (so the fault fires once)."""
    delay = os.environ.get(DELAY_ENV)
    if delay:
        time.sleep(float(delay))
    spec = os.environ.get(FAULT_ENV)
    if spec and os.environ.get(RESTART_ENV, "0") == "0":
        try:
            fault = {k.strip(): int(v) for k, v in (kv.split("=") for kv in spec.split(","))}
            at = (fault["rank"], fault["step"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"${FAULT_ENV}={spec!r} must be 'rank=R,step=S'") from err
        if at == (rank, step):
            print(f"[rank {rank}] injected fault at step {step}", file=sys.stderr, flush=True)
            os._exit(3)


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (None: leave it), restored afterwards."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
