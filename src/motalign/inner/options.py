"""Validation of the inner-OT engine's settings; errors name the offending parameter."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .types import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_DEVICE,
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    DEFAULT_SOLVER,
    DEFAULT_TOL,
    DEVICES,
    SOLVERS,
    Alternation,
    EngineOptions,
)

#: the keys of an engine-settings mapping (the workflow's ``mot`` section, less its
#: resource keys, with ``threads`` as ``n_jobs``), as :func:`engine_settings` takes them
SETTINGS = ("solver", "device", "n_jobs", "epsilon", "max_iter", "tol")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_n_jobs(n_jobs) -> int:
    """scikit-learn convention: None -> 1, -1 -> every available core, k -> k."""
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer, -1 (all cores) or None, got {n_jobs!r}")
    return available_cores() if n_jobs == -1 else int(n_jobs)


def _gpu_visible() -> bool:
    """Cheap check (no torch import) whether an NVIDIA driver is present at all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def resolve_device(device) -> str:
    """``"cpu"``, ``"cuda"`` (error if CUDA is not available) or ``"auto"`` (CUDA when torch
    sees a GPU; torch is imported only when an NVIDIA driver is present)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"
    if device == "auto" and not _gpu_visible():
        return "cpu"
    try:
        import torch  # deferred: torch is optional and slow to import
    except ImportError as error:
        if device == "auto":
            return "cpu"
        raise ValueError("device='cuda' needs PyTorch: pip install 'motalign[models]'") from error
    if torch.cuda.is_available():
        return "cuda"
    if device == "auto":
        return "cpu"
    raise ValueError("device='cuda' was asked for, but torch.cuda.is_available() is False")


def engine_options(solver=DEFAULT_SOLVER, device=DEFAULT_DEVICE, n_jobs=None,
                   epsilon=DEFAULT_EPSILON, batch_bytes=DEFAULT_BATCH_BYTES) -> EngineOptions:
    """Validate the engine's settings; errors name the offending parameter."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if device not in DEVICES and not str(device).startswith(("cuda:", "cpu")):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")
    if not (isinstance(epsilon, (int, float, np.floating)) and np.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    if not isinstance(batch_bytes, (int, np.integer)) or batch_bytes <= 0:
        raise ValueError(f"batch_bytes must be a positive integer, got {batch_bytes!r}")
    device = str(device)
    if device.startswith("cuda:"):
        resolve_device("cuda")  # raises when CUDA is not available
        resolved = device
    else:
        resolved = resolve_device(device)
    if solver == "sinkhorn" and resolved == "cpu":
        resolved = "torch-cpu"  # Sinkhorn always runs in torch
    return EngineOptions(solver=solver, device=resolved, n_jobs=resolve_n_jobs(n_jobs),
                         epsilon=float(epsilon), batch_bytes=int(batch_bytes))


def alternation(max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL) -> Alternation:
    """Validate MOT+R's stopping rule."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not isinstance(tol, (int, float, np.floating)) or not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    return Alternation(max_iter=int(max_iter), tol=float(tol))


def engine_settings(settings=None) -> tuple[EngineOptions, Alternation]:
    """Validated ``(EngineOptions, Alternation)`` from a mapping with any of the keys
    :data:`SETTINGS` (missing keys take the defaults); unknown keys are an error.  Every job
    function of the workflow that runs MOT takes its engine settings this way."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown engine settings {unknown}; known: {list(SETTINGS)}")
    options = engine_options(**{k: settings[k] for k in ("solver", "device", "n_jobs", "epsilon")
                                if k in settings})
    return options, alternation(**{k: settings[k] for k in ("max_iter", "tol") if k in settings})
