"""Torch backend of the inner level (``device="cuda"``, or ``solver="sinkhorn"`` anywhere).

Layer pairs of equal shape ``(n_l, n_m)`` are processed together, as many per batch as
``batch_bytes`` allows:

* cost blocks ``1 - Xz_l^T Yz_m / T`` by GEMMs on the device (every layer is z-scored once
  on the host with its fit statistics and uploaded once);
* ``solver="exact"``: the batch's costs (float64) go to the host and are solved exactly by
  :func:`motalign.solvers.exact_ot` in ``n_jobs`` threads, so results equal the CPU backend
  up to float64 round-off of the GEMMs;
* ``solver="sinkhorn"``: batched log-domain Sinkhorn with epsilon-scaling, rounded onto
  the transport polytope (:func:`motalign.solvers.sinkhorn.sinkhorn_uniform`, float32),
  with a certified bound on each pair's gap to the exact optimum;
* MOT+R (Sec. 2.3): :func:`.rotation_torch.rotation_batch`, the batched twin of
  :func:`.rotation.rotation_alignment`.  With Sinkhorn the alternation first runs on soft
  plans (each Q step warm-started from the previous one's potentials), then is polished
  with exact Q steps from the rotations it reached until the exact objective stalls, so
  that plans are vertices and costs are the MOT+R objective of Sec. 2.3, comparable with
  solver="exact" (the recorded history is that of the exact phase).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch

from ..solvers import exact_ot, sparse_plan
from ..solvers.sinkhorn import sinkhorn_uniform
from .rotation_torch import cross_blocks, rotation_batch
from .types import Alternation, EngineOptions, PairResult

#: Sinkhorn plans are stored sparse without entries below this mass / (n m); the total
#: mass dropped per plan is at most this.
SINKHORN_DROP_MASS = 1e-6


def _batches(keys, per_pair_bytes, budget):
    size = max(1, int(budget // max(per_pair_bytes, 1)))
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


class DeviceLayers:
    """Z-scored layers uploaded to the device once, with their Gram matrices on demand."""

    def __init__(self, standardized, device, dtype):
        self.standardized, self.device, self.dtype = standardized, device, dtype
        self._z, self._gram = {}, {}

    def __call__(self, index):
        if index not in self._z:
            self._z[index] = torch.as_tensor(self.standardized.compute(index), dtype=self.dtype).to(self.device)
        return self._z[index]

    def gram(self, index):
        if index not in self._gram:
            z = self(index)
            self._gram[index] = z.T @ z
        return self._gram[index]

    def width(self, index):
        return self.standardized.width(index)


class BatchSolver:
    """Solves a batch of costs (B x n x m, on the device): returns dense plans on the
    device, their values, sparse host plans and gap bounds.  For Sinkhorn, ``warm``
    (potentials of an earlier, similar batch) skips the epsilon-scaling, and the
    potentials of the last solve are in ``self.potentials``."""

    def __init__(self, options: EngineOptions, pool):
        self.options, self.pool = options, pool
        self.potentials = None

    def __call__(self, cost, warm=None):
        if self.options.solver == "exact":
            host = cost.detach().to("cpu", torch.float64).numpy()
            solved = list(self.pool.map(exact_ot, host)) if self.pool else [exact_ot(c) for c in host]
            dense = torch.zeros_like(cost)
            for k, (plan, _) in enumerate(solved):
                coo = plan.tocoo()
                dense[k, torch.as_tensor(coo.row), torch.as_tensor(coo.col)] = torch.as_tensor(
                    coo.data, dtype=cost.dtype).to(cost.device)
            values = np.array([v for _, v in solved])
            return dense, values, [p for p, _ in solved], np.zeros(len(solved))
        out = sinkhorn_uniform(cost, epsilon=self.options.epsilon, init=warm)
        self.potentials = out.potentials
        host = out.plan.detach().to("cpu", torch.float64).numpy()
        plans = [sparse_plan(p, drop_below=SINKHORN_DROP_MASS) for p in host]
        return (out.plan, out.cost.detach().cpu().double().numpy(), plans,
                out.gap_bound.detach().cpu().double().numpy())


def run_torch(x_std, y_std, pairs, *, rotation: bool, alternation: Alternation,
              options: EngineOptions) -> Iterator[PairResult]:
    """Yield the :class:`PairResult` of every pair, batch by batch of equal shapes."""
    device = torch.device("cpu" if options.device == "torch-cpu" else options.device)
    dtype = torch.float64 if options.solver == "exact" else torch.float32
    itemsize = 8 if dtype == torch.float64 else 4
    xs, ys = DeviceLayers(x_std, device, dtype), DeviceLayers(y_std, device, dtype)
    groups = defaultdict(list)
    for l, m in pairs:
        groups[xs.width(l), ys.width(m)].append((l, m))
    pool = ThreadPoolExecutor(options.n_jobs) if options.n_jobs > 1 else None
    solve = BatchSolver(options, pool)
    exact = BatchSolver(replace(options, solver="exact"), pool)
    try:
        with torch.no_grad():
            for (n, m), keys in groups.items():
                per_pair = itemsize * (6 * n * m + (2 * m * m + 3 * n * n if rotation else 0))
                for batch in _batches(keys, per_pair, options.batch_bytes):
                    if not rotation:
                        yield from _correlation_batch(xs, ys, batch, solve)
                        continue
                    initial = initial_plans = None
                    if options.solver == "sinkhorn":  # the alternation on soft plans
                        soft, initial = rotation_batch(xs, ys, batch, solve, alternation)
                        initial_plans = [r.rotation_plan for r in soft]
                    # exact Q steps: the whole alternation, or the polish from the
                    # Sinkhorn phase's rotations until the exact objective stalls
                    results, _ = rotation_batch(xs, ys, batch, exact, alternation, initial=initial,
                                                initial_plans=initial_plans)
                    for result in results:  # the Q steps' bounds do not bound MOT+R
                        result.gap_bound = float("nan")
                    yield from results
    finally:
        if pool is not None:
            pool.shutdown()


def _correlation_batch(xs, ys, batch, solve) -> list[PairResult]:
    cross, t = cross_blocks(xs, ys, batch)
    cost = cross.mul_(-1.0 / t).add_(1.0)  # 1 - Xz^T Yz / T, in place
    _, values, plans, gaps = solve(cost)
    return [PairResult(pair, float(values[k]), plans[k], gap_bound=float(gaps[k]))
            for k, pair in enumerate(batch)]
