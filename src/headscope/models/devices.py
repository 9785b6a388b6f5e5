"""Where a model runs and in what precision, and how many CPU threads torch uses.

`--device auto|cpu|cuda|cuda:N|mps` and `--dtype float32|bfloat16|float16` are checked here,
before any weights are read: a device this machine does not have, or a precision the device
cannot multiply in, is one `DeviceError` line naming the value and the fix.

Threads: torch's default (one thread per core) is fastest on a quiet machine for large matrices,
but the organism's and GPT-2's matrices are small, and when another process holds a core each
parallel region waits for the slowest thread: 5 to 14 times slower. `choose_threads` picks a
count per model from its width and the cores idle when the model is loaded; `--threads N`
overrides it. What the count may change: a product with few rows and a long inner dimension
(an MLP's output projection on one short batch) may be split along its sum, so the last bits of
floats can differ between thread counts; ranks, top-k lists and counts then differ only at float
ties. Importing this module asks MKL for a fixed summation order (`MKL_CBWR=AUTO,STRICT`), which
some processors honour and others ignore: nothing relies on it (tests/models/test_devices.py
compares thread counts within float32 rounding, tie-aware).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import psutil
import torch

from headscope.errors import HeadscopeError

# Read by MKL at its first call (a user's own setting wins); a no-op for other BLAS libraries and
# on processors where MKL does not honour it. Best effort: no result depends on it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_CUDA = re.compile(r"^cuda(?::(\d+))?$")

# Below this width one thread is at least as fast as two on a CPU (benchmarks/threads.py):
# a matmul of [tokens, d_model] x [d_model, d_model] is too small to share. At or above it,
# threads help on a quiet machine, and `choose_threads` still takes one when the others' load
# leaves no idle core (a thread that has to wait for a core stalls every parallel region).
THREADED_WIDTH = 512
IDLE_SAMPLE_S = 0.2  # how long `idle_cores` watches the cores before a model is loaded


class DeviceError(HeadscopeError):
    """A device, precision or thread count this machine cannot use; the message names the fix."""


# ---- devices ---------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """The torch device a --device value names ('auto': the first GPU if any, else the CPU);
    a DeviceError for a bad name or a device this machine does not have."""
    text = str(name).strip().lower()
    if text == "auto":
        return _first_accelerator()
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        return _mps(name)
    found = _CUDA.match(text)
    if found is None:
        raise DeviceError(f"device={name!r} is not a device; use {DEVICE_NAMES}")
    return _cuda(name, int(found.group(1) or 0))


def _first_accelerator() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _mps(name: str) -> torch.device:
    if not _mps_available():
        raise DeviceError(
            f"device={name!r}: this machine has no Apple GPU (MPS) that torch can use; "
            "use --device cpu, or auto to take whatever GPU there is"
        )
    return torch.device("mps")


def _cuda(name: str, index: int) -> torch.device:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceError(
            f"device={name!r}: {why}; use --device cpu, or auto to take a GPU when there is one"
        )
    if index >= count:
        raise DeviceError(
            f"device={name!r}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
            f"(cuda:0 to cuda:{count - 1}); pick one of those"
        )
    return torch.device("cuda", index)


# ---- precision -------------------------------------------------------------------------------


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype a --dtype value names, checked on `device` by running the operations a
    forward pass needs (matmul, layer norm, softmax, GELU) in it; a DeviceError when it cannot."""
    dtype = DTYPES.get(str(name).strip().lower())
    if dtype is None:
        raise DeviceError(f"dtype={name!r} is not a precision; use {', '.join(get_args(DType))}")
    try:
        _probe(dtype, device)
    except (RuntimeError, TypeError, NotImplementedError) as error:
        why = " ".join(str(error).split()) or type(error).__name__
        raise DeviceError(
            f"dtype={name!r}: {device} cannot compute in {name} ({why[:120]}); use --dtype float32"
            + ("" if dtype == torch.bfloat16 or device.type == "cpu" else " or bfloat16")
        ) from error
    return dtype


def _probe(dtype: torch.dtype, device: torch.device) -> None:
    """Run each kind of operation a transformer's forward pass uses, in `dtype` on `device`."""
    x = torch.linspace(-1, 1, 64, device=device).reshape(4, 16).to(dtype)  # [4, 16]
    w = torch.eye(16, device=device, dtype=dtype)
    y = torch.nn.functional.layer_norm(x @ w, (16,))
    y = torch.nn.functional.gelu(y, approximate="tanh").softmax(-1)
    if not bool(torch.isfinite(y.float()).all()):
        raise RuntimeError("a test matmul gave non-finite values")


# ---- CPU threads -----------------------------------------------------------------------------


def check_threads(threads: int | None) -> int | None:
    """A --threads value: None (choose per model) or a count from 1 to this machine's cores."""
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise DeviceError(f"threads={threads}: give 1 to {cores} (this machine's cores), or leave it out")
    return threads


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the system keeps one (Linux), else
    every core (macOS, Windows)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def idle_cores(sample_s: float = IDLE_SAMPLE_S) -> int:
    """Cores idle right now: the idle share of each core this process may use, summed over a short
    sample (psutil, on any system), at least 1. Unlike a load average, a run that has just ended
    no longer counts."""
    busy = psutil.cpu_percent(interval=sample_s, percpu=True)  # [core] percent busy
    affinity = getattr(os, "sched_getaffinity", None)
    allowed = affinity(0) if affinity is not None else range(len(busy))
    idle = sum(100.0 - busy[c] for c in allowed if c < len(busy)) / 100.0
    return max(1, min(usable_cores(), int(idle + 0.5)))


def choose_threads(d_model: int, device: torch.device) -> int:
    """How many CPU threads a model of width `d_model` runs fastest with: 1 on an accelerator
    (the CPU only feeds it) or below THREADED_WIDTH, else the cores the machine's load leaves idle."""
    if device.type != "cpu" or d_model < THREADED_WIDTH:
        return 1
    return idle_cores()


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
