"""The inner-OT engine: MOT's inner level for many layer pairs at once.

The inner level of MOT (paper Sec. 2.2.1, Eq. 2; MOT+R, Sec. 2.3) solves one OT problem
per layer pair ``(l, m)``: ``C[l, m] = min_{Q in T(n_l, n_m)} <1 - corr(X_l, Y_m), Q>``
(or the MOT+R reconstruction cost).  This module runs those L x M problems:

CPU, ``solver="exact"`` (the default; results identical to a per-pair loop)
    every layer is z-scored once with its fit statistics (SPEC §1.4); a pair's cost block
    is one GEMM ``1 - Xz_l^T Yz_m / T``; equal widths go to an assignment solver, other
    widths to the network simplex (:func:`motalign.solvers.exact_ot`); ``n_jobs`` layer
    pairs run in parallel threads (the GEMMs and both solvers release the GIL, and BLAS is
    held to one thread per worker); at most ``n_jobs`` cost blocks exist at any time, so
    memory grows with one layer pair's cost matrix (times ``n_jobs``), not with L x M of
    them; plans are kept sparse (at most ``n_l + n_m - 1`` non-zeros).

Torch device (``device="cuda"``, or ``"auto"`` when a GPU is present; see
:mod:`motalign.batched`)
    the cost GEMMs of equal-shaped layer pairs run batched on the device.  With
    ``solver="exact"`` the problems are still solved exactly on the CPU (costs identical to
    the CPU path up to float64 round-off); with ``solver="sinkhorn"`` they are solved on the
    device by batched log-domain Sinkhorn with epsilon-scaling and rounding
    (:mod:`motalign.sinkhorn`), and every pair reports a certified bound on its gap to
    the exact optimum.  MOT+R runs its Procrustes SVDs batched.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .preprocessing import LayerStats
from .rotation import rotation_alignment
from .solvers import correlation_cost, exact_ot

SOLVERS = ("exact", "sinkhorn")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class InnerAlignment:
    """Inner level of MOT for a set of layer pairs: costs ``C`` (L x M, NaN for pairs not
    computed), neuron plans ``Q_lm`` (sparse, total mass 1), MOT+R rotations and objective
    histories, and for ``solver="sinkhorn"`` a certified bound on each pair's gap to the
    exact optimum (``gap_bound``, L x M; 0 for exact solves)."""

    cost: np.ndarray
    plans: list | None
    rotations: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    gap_bound: np.ndarray | None = None


@dataclass(frozen=True)
class EngineOptions:
    """How the inner level runs (validated by :func:`engine_options`)."""

    solver: str = "exact"
    device: str = "cpu"
    n_jobs: int = 1
    epsilon: float = 1e-3
    batch_bytes: int = 2 * 1024**3


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
        import torch
    except ImportError as error:
        if device == "auto":
            return "cpu"
        raise ValueError("device='cuda' needs PyTorch: pip install 'motalign[models]'") from error
    if torch.cuda.is_available():
        return "cuda"
    if device == "auto":
        return "cpu"
    raise ValueError("device='cuda' was asked for, but torch.cuda.is_available() is False")


def engine_options(solver="exact", device="cpu", n_jobs=None, epsilon=1e-3,
                   batch_bytes=2 * 1024**3) -> EngineOptions:
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


def _blas_single_thread(n_jobs: int):
    """Hold BLAS to one thread per worker while ``n_jobs > 1`` workers run GEMMs."""
    if n_jobs <= 1:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _check_pairs(pairs, n_x: int, n_y: int) -> list[tuple[int, int]]:
    if pairs is None:
        return [(l, m) for l in range(n_x) for m in range(n_y)]
    checked = []
    for pair in pairs:
        l, m = (int(v) for v in pair)
        if not (0 <= l < n_x and 0 <= m < n_y):
            raise ValueError(f"layer pair ({l}, {m}) is out of range for {n_x} x {n_y} layers")
        checked.append((l, m))
    if len(set(checked)) != len(checked):
        raise ValueError("inner alignment: a layer pair is listed twice")
    return sorted(checked)


def _check_used_layers(x_arrays, y_arrays, pairs) -> None:
    """Every layer a pair uses is a finite-shaped 2-D array, all on the same stimuli."""
    rows = None
    for side, arrays, used in (("X", x_arrays, {l for l, _ in pairs}), ("Y", y_arrays, {m for _, m in pairs})):
        for index in sorted(used):
            layer = arrays[index]
            shape = getattr(layer, "shape", None)
            if shape is None or len(shape) != 2 or 0 in shape:
                raise ValueError(f"inner alignment: layer {index} of {side} must be a non-empty "
                                 f"(stimuli x units) array, got {shape if shape is not None else type(layer).__name__}")
            if rows is None:
                rows = shape[0]
            elif shape[0] != rows:
                raise ValueError(f"inner alignment: layer {index} of {side} has {shape[0]} stimuli, "
                                 f"other layers have {rows}")


class Standardized:
    """Z-scores of a network's layers with fit statistics (fitted on first use when not
    given): ``std(i)`` computes once and keeps, ``std.compute(i)`` does not keep."""

    def __init__(self, arrays, stats=None):
        self.arrays = arrays
        self.stats = list(stats) if stats is not None else [None] * len(arrays)
        self._z = {}

    def __call__(self, index: int) -> np.ndarray:
        if index not in self._z:
            self._z[index] = self.compute(index)
        return self._z[index]

    def compute(self, index: int) -> np.ndarray:
        """The z-scores of one layer, not kept."""
        if self.stats[index] is None:
            self.stats[index], z = LayerStats.fit_transform(self.arrays[index])
            return z
        return self.stats[index].transform(self.arrays[index])


def align_pair(xz, yz, *, rotation=False, gram_x=None, max_iter=30, tol=1e-7):
    """Inner alignment of one layer pair of z-scored layers on the CPU: exact correlation
    OT (Sec. 2.2.1, Eq. 2) or MOT+R (Sec. 2.3).  Returns ``(plan, cost, history,
    rotation_matrix)``; the last two are None without rotation."""
    if rotation:
        result = rotation_alignment(xz, yz, gram_x=gram_x, max_iter=max_iter, tol=tol)
        return result.plan, result.cost, result.history, result.rotation
    plan, value = exact_ot(correlation_cost(xz, yz))
    return plan, value, None, None


def inner_alignment(
    x_arrays,
    y_arrays,
    x_stats=None,
    y_stats=None,
    *,
    pairs=None,
    rotation: bool = False,
    max_iter: int = 30,
    tol: float = 1e-7,
    keep_plans: bool = True,
    keep_rotations: bool = True,
    options: EngineOptions | None = None,
) -> InnerAlignment:
    """Inner OT of MOT (Eq. 2) or MOT+R (Sec. 2.3) for ``pairs`` (default: every pair).

    ``x_arrays`` / ``y_arrays``: the fit activations of each layer (T x n_l); entries of
    layers that no pair uses may be None.  ``x_stats`` / ``y_stats``: their
    :class:`~motalign.preprocessing.LayerStats` (fitted here when omitted).
    """
    options = options or EngineOptions()
    n_x, n_y = len(x_arrays), len(y_arrays)
    pairs = _check_pairs(pairs, n_x, n_y)
    _check_used_layers(x_arrays, y_arrays, pairs)
    x_std, y_std = Standardized(x_arrays, x_stats), Standardized(y_arrays, y_stats)
    result = InnerAlignment(
        cost=np.full((n_x, n_y), np.nan),
        plans=[[None] * n_y for _ in range(n_x)] if keep_plans else None,
        gap_bound=np.zeros((n_x, n_y)),
    )
    if options.device == "cpu" and options.solver == "exact":
        _run_cpu(x_std, y_std, pairs, result, rotation, max_iter, tol, keep_plans,
                 keep_rotations, options.n_jobs)
    else:
        from .batched import run_batched

        run_batched(x_std, y_std, pairs, result, rotation=rotation, max_iter=max_iter, tol=tol,
                    keep_plans=keep_plans, keep_rotations=keep_rotations, options=options)
    return result


def _store(result, key, outcome, rotation, keep_plans, keep_rotations):
    plan, value, history, rotation_matrix = outcome
    l, m = key
    result.cost[l, m] = value
    if keep_plans:
        result.plans[l][m] = plan
    if rotation:
        result.histories[key] = history
        if keep_rotations:
            result.rotations[key] = rotation_matrix


def _run_cpu(x_std, y_std, pairs, result, rotation, max_iter, tol, keep_plans, keep_rotations,
             n_jobs):
    """Pairs in source-layer order.  Serial (``n_jobs == 1``): a source layer is z-scored
    when its first pair comes and dropped after its last; target layers are z-scored
    once and kept.  Parallel: the z-scoring itself runs in the pool too (every target
    layer at the start, each source layer one row ahead), and at most ``n_jobs + 1`` pair
    tasks are queued, so at most ``n_jobs`` cost blocks exist at once."""
    last_use = {l: i for i, (l, _) in enumerate(pairs)}

    def source(l):
        xz = x_std.compute(l)
        return xz, (xz.T @ xz if rotation else None)

    if n_jobs == 1:
        current = None
        for i, (l, m) in enumerate(pairs):
            if current is None or current[0] != l:
                current = (l, *source(l))
            outcome = align_pair(current[1], y_std(m), rotation=rotation, gram_x=current[2],
                                 max_iter=max_iter, tol=tol)
            if last_use[l] == i:
                current = None
            _store(result, (l, m), outcome, rotation, keep_plans, keep_rotations)
        return

    def pair_task(x_future, y_future):
        (xz, gram_x), yz = x_future.result(), y_future.result()
        return align_pair(xz, yz, rotation=rotation, gram_x=gram_x, max_iter=max_iter, tol=tol)

    rows = sorted(last_use, key=last_use.get)
    next_row = dict(zip(rows, rows[1:]))
    with _blas_single_thread(n_jobs), ThreadPoolExecutor(max_workers=n_jobs) as pool:
        # A task only waits on futures submitted before it, so FIFO workers cannot deadlock.
        x_ready = {rows[0]: pool.submit(source, rows[0])}
        y_ready = {m: pool.submit(y_std, m) for m in sorted({m for _, m in pairs})}
        pending = deque()
        for i, (l, m) in enumerate(pairs):
            if l not in x_ready:
                x_ready[l] = pool.submit(source, l)
            following = next_row.get(l)
            if following is not None and following not in x_ready:
                x_ready[following] = pool.submit(source, following)
            pending.append(((l, m), pool.submit(pair_task, x_ready[l], y_ready[m])))
            if last_use[l] == i:
                del x_ready[l]
            while len(pending) > n_jobs:  # bounds the cost blocks alive at once
                key, future = pending.popleft()
                _store(result, key, future.result(), rotation, keep_plans, keep_rotations)
        while pending:
            key, future = pending.popleft()
            _store(result, key, future.result(), rotation, keep_plans, keep_rotations)


def sparse_plan(dense: np.ndarray, drop_below: float | None = None) -> sp.csr_matrix:
    """A dense plan as CSR; with ``drop_below`` entries under ``drop_below / (n m)`` are
    dropped (total mass dropped <= ``drop_below``)."""
    dense = np.asarray(dense, dtype=np.float64)
    if drop_below:
        dense = np.where(dense >= drop_below / dense.size, dense, 0.0)
    plan = sp.csr_matrix(dense)
    plan.eliminate_zeros()
    return plan
