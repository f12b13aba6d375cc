"""The inner level of MOT for many layer pairs at once: checks, backend choice, and the
combined result.

The inner level (paper Sec. 2.2.1, Eq. 2; MOT+R, Sec. 2.3) solves one OT problem per layer
pair ``(l, m)``: ``C[l, m] = min_{Q in T(n_l, n_m)} <1 - corr(X_l, Y_m), Q>`` (or the MOT+R
reconstruction cost).  :func:`inner_alignment` hands the pairs to a backend,

* :mod:`.cpu` for ``solver="exact"`` on ``device="cpu"`` (the default; results identical
  to a per-pair loop), or
* :mod:`.torch_backend` for a CUDA device or ``solver="sinkhorn"`` (batched GEMMs, batched
  Sinkhorn with certified gap bounds, batched MOT+R),

and assembles the :class:`~.types.PairResult` they yield into one
:class:`~.types.InnerAlignment`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .cpu import run_cpu
from .layers import Standardized
from .types import Alternation, EngineOptions, InnerAlignment, PairResult


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


def align_pairs(x_arrays, y_arrays, x_stats=None, y_stats=None, *, pairs=None,
                rotation: bool = False, alternation: Alternation | None = None,
                options: EngineOptions | None = None) -> Iterator[PairResult]:
    """Yield the :class:`~.types.PairResult` of every layer pair in ``pairs`` (default:
    every pair), from the backend that ``options`` selects; arguments as for
    :func:`inner_alignment`.  The workflow's inner-OT shards write these as they come."""
    options = options or EngineOptions()
    alternation = alternation or Alternation()
    pairs = _check_pairs(pairs, len(x_arrays), len(y_arrays))
    _check_used_layers(x_arrays, y_arrays, pairs)
    x_std, y_std = Standardized(x_arrays, x_stats, "network X"), Standardized(y_arrays, y_stats, "network Y")
    if options.device == "cpu" and options.solver == "exact":
        return run_cpu(x_std, y_std, pairs, rotation=rotation, alternation=alternation,
                       n_jobs=options.n_jobs)
    from .torch_backend import run_torch  # deferred: imports torch

    return run_torch(x_std, y_std, pairs, rotation=rotation, alternation=alternation,
                     options=options)


def inner_alignment(
    x_arrays,
    y_arrays,
    x_stats=None,
    y_stats=None,
    *,
    pairs=None,
    rotation: bool = False,
    alternation: Alternation | None = None,
    keep_plans: bool = True,
    keep_rotations: bool = True,
    options: EngineOptions | None = None,
) -> InnerAlignment:
    """Inner OT of MOT (Eq. 2) or MOT+R (Sec. 2.3) for ``pairs`` (default: every pair).

    ``x_arrays`` / ``y_arrays``: the fit activations of each layer (T x n_l); entries of
    layers that no pair uses may be None.  ``x_stats`` / ``y_stats``: their
    :class:`~motalign.preprocessing.LayerStats` (fitted here when omitted).
    ``alternation``: MOT+R's stopping rule; ``options``: solver, device, threads.
    """
    results = align_pairs(x_arrays, y_arrays, x_stats, y_stats, pairs=pairs, rotation=rotation,
                          alternation=alternation, options=options)
    n_x, n_y = len(x_arrays), len(y_arrays)
    combined = InnerAlignment(
        cost=np.full((n_x, n_y), np.nan),
        plans=[[None] * n_y for _ in range(n_x)] if keep_plans else None,
        gap_bound=np.zeros((n_x, n_y)),
    )
    for result in results:
        l, m = result.pair
        combined.cost[l, m] = result.cost
        combined.gap_bound[l, m] = result.gap_bound
        if keep_plans:
            combined.plans[l][m] = result.plan
        if rotation:
            combined.histories[l, m] = result.history
            combined.rotation_plans[l, m] = result.rotation_plan
            if keep_rotations:
                combined.rotations[l, m] = result.rotation
    return combined
