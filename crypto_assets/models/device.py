"""Device choice, seeding and determinism for torch training (DESIGN.md §3.1 `gpu_id`, §3.6).

Every random stream of a training run is seeded from (experiment seed, asset, partition) through
`derive_seed`, so runs in any order or process agree; `deterministic()` pins the torch settings that make
the same seed give bit-identical weights on the same machine and package versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager

import numpy as np
import torch

# cuBLAS needs a fixed workspace to be deterministic (CUDA ≥ 10.2); it is read when cuBLAS initialises,
# so it must be in the environment before the first CUDA matmul.
CUBLAS_WORKSPACE = ":4096:8"


def select_device(gpu_id: int | None) -> torch.device:
    """`cuda:{gpu_id}` when CUDA is available and the id exists; CPU otherwise.

    `None` forces CPU silently (the config's explicit choice). An id that cannot be honoured (no CUDA build,
    no driver, or id ≥ device count) falls back to CPU with a warning naming the requested id, so a config
    written for a GPU workstation still runs on a laptop or CI. A negative id is a config error.
    """
    if gpu_id is None:
        return torch.device("cpu")
    if isinstance(gpu_id, bool) or not isinstance(gpu_id, int) or gpu_id < 0:
        raise ValueError(f"gpu_id must be an int ≥ 0 or None (CPU), got {gpu_id!r}")
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if gpu_id < count:
        return torch.device(f"cuda:{gpu_id}")
    reason = "CUDA is not available" if not available else f"only {count} CUDA device(s) present"
    message = f"gpu_id={gpu_id} requested but {reason}: falling back to CPU"
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return torch.device("cpu")


def derive_seed(root_seed: int, *parts: str) -> int:
    """A stable 32-bit seed from the experiment seed and names, e.g. `derive_seed(7, "forecaster", "2024-03-01")`.

    sha256 of the JSON list `[root_seed, *parts]` (JSON so that ("a/b",) and ("a", "b") differ), first 4 bytes
    big-endian. Unlike `hash()`, it does not change between processes (PYTHONHASHSEED) or Python versions.
    """
    if isinstance(root_seed, bool) or not isinstance(root_seed, int):
        raise TypeError(f"root_seed must be an int, got {root_seed!r}")
    payload = json.dumps([root_seed, *[str(p) for p in parts]], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "big")


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's legacy global RNG, torch's CPU RNG and every CUDA device's RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices (lazily, without initialising CUDA)


@contextlib.contextmanager
def deterministic(threads: int = 1, *, warn_only: bool = False) -> Iterator[None]:
    """Determinism-sensitive torch settings for the body of a `with` block, restored on exit.

    - `torch.use_deterministic_algorithms(True, warn_only=...)`: ops without a deterministic kernel raise
      (or warn with `warn_only=True`) instead of silently varying between runs;
    - `torch.set_num_threads(threads)`: one thread by default — a different thread count changes the
      summation order of CPU reductions, hence the last bits of the weights;
    - cuDNN deterministic on, benchmark (autotuner) off;
    - `CUBLAS_WORKSPACE_CONFIG` set if absent (left set afterwards: cuBLAS reads it once per process).
    """
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1, got {threads}")
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        enabled, was_warn_only, n_threads, cudnn_det, cudnn_bench = previous
        torch.use_deterministic_algorithms(enabled, warn_only=was_warn_only)
        torch.set_num_threads(n_threads)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench


def autocast(device: torch.device | str, bf16: bool) -> AbstractContextManager[object]:
    """`torch.autocast(bfloat16)` on `device` when `bf16`, else a no-op (full fp32, the reproducible default).

    bf16 keeps fp32's exponent range, so no loss scaler is needed (unlike fp16). Losses should still be
    computed in fp32 outside or after casting the outputs.
    """
    if not bf16:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def precision_name(bf16: bool) -> str:
    """Label stored with a trained model: `bf16-autocast` or `fp32`."""
    return "bf16-autocast" if bf16 else "fp32"
