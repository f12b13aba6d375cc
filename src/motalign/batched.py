"""Batched inner level on a torch device (the GPU path of :mod:`motalign.engine`).

Layer pairs of equal shape ``(n_l, n_m)`` are processed together, as many per batch as
``batch_bytes`` allows:

* cost blocks ``1 - Xz_l^T Yz_m / T`` by GEMMs on the device (every layer is z-scored once
  on the host with its fit statistics and uploaded once);
* ``solver="exact"``: the batch's costs (float64) go to the host and are solved exactly by
  :func:`motalign.solvers.exact_ot` in ``n_jobs`` threads, so results equal the CPU path
  up to float64 round-off of the GEMMs;
* ``solver="sinkhorn"``: batched log-domain Sinkhorn with epsilon-scaling, rounded onto
  the transport polytope (:func:`motalign.sinkhorn.sinkhorn_uniform`, float32), with a
  certified bound on each pair's gap to the exact optimum;
* MOT+R (Sec. 2.3): the alternation of :mod:`motalign.rotation` run for the whole batch
  at once from Gram blocks (``Xz^T Xz``, ``Xz^T Yz``, ``Yz^T Yz``), with batched
  Procrustes SVDs; each pair keeps its own stopping rule and monotone history.  With
  Sinkhorn the alternation first runs on soft plans (each Q step warm-started from the
  previous one's potentials), then is polished with exact Q steps from the rotations it
  reached until the exact objective stalls, so that plans are vertices and costs are the
  MOT+R objective of Sec. 2.3, comparable with solver="exact" (the recorded history is
  that of the exact phase).
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .solvers import exact_ot

#: Sinkhorn plans are stored sparse without entries below this mass / (n m); the total
#: mass dropped per plan is at most this.
SINKHORN_DROP_MASS = 1e-6


def _torch():
    import torch

    return torch


def _batches(keys, per_pair_bytes, budget):
    size = max(1, int(budget // max(per_pair_bytes, 1)))
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


class _DeviceLayers:
    """Z-scored layers uploaded to the device once, with their Gram matrices on demand."""

    def __init__(self, standardized, device, dtype):
        self.standardized, self.device, self.dtype = standardized, device, dtype
        self._z, self._gram = {}, {}

    def __call__(self, index):
        if index not in self._z:
            torch = _torch()
            self._z[index] = torch.as_tensor(self.standardized.compute(index), dtype=self.dtype).to(self.device)
        return self._z[index]

    def gram(self, index):
        if index not in self._gram:
            z = self(index)
            self._gram[index] = z.T @ z
        return self._gram[index]

    def width(self, index):
        return self.standardized.arrays[index].shape[1]


class _Solver:
    """Solves a batch of costs (B x n x m, on the device): returns dense plans on the
    device, their values, sparse host plans and gap bounds.  For Sinkhorn, ``warm``
    (potentials of an earlier, similar batch) skips the epsilon-scaling, and the
    potentials of the last solve are in ``self.potentials``."""

    def __init__(self, options, pool):
        self.options, self.pool = options, pool
        self.potentials = None

    def __call__(self, cost, warm=None):
        torch = _torch()
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
        from .engine import sparse_plan
        from .sinkhorn import sinkhorn_uniform

        out = sinkhorn_uniform(cost, epsilon=self.options.epsilon, init=warm)
        self.potentials = out.potentials
        host = out.plan.detach().to("cpu", torch.float64).numpy()
        plans = [sparse_plan(p, drop_below=SINKHORN_DROP_MASS) for p in host]
        return (out.plan, out.cost.detach().cpu().double().numpy(), plans,
                out.gap_bound.detach().cpu().double().numpy())


def run_batched(x_std, y_std, pairs, result, *, rotation, max_iter, tol, keep_plans,
                keep_rotations, options):
    torch = _torch()
    device = torch.device("cpu" if options.device == "torch-cpu" else options.device)
    dtype = torch.float64 if options.solver == "exact" else torch.float32
    itemsize = 8 if dtype == torch.float64 else 4
    xs, ys = _DeviceLayers(x_std, device, dtype), _DeviceLayers(y_std, device, dtype)
    groups = defaultdict(list)
    for l, m in pairs:
        groups[xs.width(l), ys.width(m)].append((l, m))
    pool = ThreadPoolExecutor(options.n_jobs) if options.n_jobs > 1 else None
    solve = _Solver(options, pool)
    exact = _Solver(replace(options, solver="exact"), pool)
    try:
        with torch.no_grad():
            for (n, m), keys in groups.items():
                per_pair = itemsize * (6 * n * m + (2 * m * m + 3 * n * n if rotation else 0))
                for batch in _batches(keys, per_pair, options.batch_bytes):
                    if rotation:
                        rot = None
                        if options.solver == "sinkhorn":  # the alternation on soft plans
                            rot = _rotation_batch(xs, ys, batch, solve, None, max_iter, tol,
                                                  keep_plans, keep_rotations)
                        # exact Q steps: the whole alternation, or the polish from the
                        # Sinkhorn phase's rotations until the exact objective stalls
                        _rotation_batch(xs, ys, batch, exact, result, max_iter, tol,
                                        keep_plans, keep_rotations, initial=rot)
                    else:
                        _correlation_batch(xs, ys, batch, solve, result, keep_plans)
    finally:
        if pool is not None:
            pool.shutdown()


def _cross(xs, ys, batch):
    torch = _torch()
    first = xs(batch[0][0])
    n, m = first.shape[1], ys(batch[0][1]).shape[1]
    cross = torch.empty((len(batch), n, m), dtype=first.dtype, device=first.device)
    for k, (l, mm) in enumerate(batch):
        torch.matmul(xs(l).T, ys(mm), out=cross[k])
    return cross, first.shape[0]


def _correlation_batch(xs, ys, batch, solve, result, keep_plans):
    cross, t = _cross(xs, ys, batch)
    cost = cross.mul_(-1.0 / t).add_(1.0)  # 1 - Xz^T Yz / T, in place
    _, values, plans, gaps = solve(cost)
    for k, (l, m) in enumerate(batch):
        result.cost[l, m] = values[k]
        result.gap_bound[l, m] = gaps[k]
        if keep_plans:
            result.plans[l][m] = plans[k]


def _rotation_batch(xs, ys, batch, solve, result, max_iter, tol, keep_plans, keep_rotations,
                    initial=None):
    """MOT+R for a batch of equal-shaped pairs; the same alternation, acceptance rule and
    stopping rule per pair as :func:`motalign.rotation.rotation_alignment`, starting from
    the rotations ``initial`` (identity when None).  Writes into ``result`` unless it is
    None; returns the final rotations (B x n x n, on the device)."""
    torch = _torch()
    cross, t = _cross(xs, ys, batch)  # K = Xz^T Yz
    gram_x = torch.stack([xs.gram(l) for l, _ in batch])
    gram_y = torch.stack([ys.gram(m) for _, m in batch])
    b, n, _ = cross.shape
    y_norm = torch.sqrt(torch.diagonal(gram_y, dim1=1, dim2=2).clamp_min(0))
    total_x = torch.diagonal(gram_x, dim1=1, dim2=2).sum(dim=1)
    scale = 1.0 / (t * n)

    def objective(rot, weights, idx):
        """f(R, Q) = (tr Gx - 2 <R, K W^T> + tr(W Gy W^T)) / (T n), W = n Q."""
        fit = (rot * (cross[idx] @ weights.transpose(1, 2))).sum(dim=(1, 2))
        recon = ((weights @ gram_y[idx]) * weights).sum(dim=(1, 2))
        return (total_x[idx] - 2.0 * fit + recon) * scale

    def q_cost(rot, idx):
        """1 - corr(Xz R, Yz) from Gram blocks."""
        numerator = rot.transpose(1, 2) @ cross[idx]
        xr = torch.sqrt(((gram_x[idx] @ rot) * rot).sum(dim=1).clamp_min(0))
        denominator = xr[:, :, None] * y_norm[idx][:, None, :]
        positive = denominator > 0
        corr = torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)
        return 1.0 - corr

    def procrustes(weights, idx):
        u, _, vh = torch.linalg.svd(cross[idx] @ weights.transpose(1, 2))
        return u @ vh

    every = torch.arange(b, device=cross.device)
    if initial is None:
        rot = torch.eye(n, dtype=cross.dtype, device=cross.device).repeat(b, 1, 1)
    else:
        rot = initial.to(cross.dtype).clone()
    dense, _, plans, _ = solve(q_cost(rot, every))
    potentials = solve.potentials  # Sinkhorn: warm starts for the next Q steps
    plans = list(plans)
    weights = dense * n
    value = objective(rot, weights, every)
    history = [[v] for v in value.cpu().double().tolist()]
    active = np.ones(b, dtype=bool)
    for _ in range(max_iter):
        idx_np = np.flatnonzero(active)
        if idx_np.size == 0:
            break
        idx = torch.as_tensor(idx_np, device=cross.device)
        new_rot = procrustes(weights[idx], idx)
        new_value = objective(new_rot, weights[idx], idx)
        better = (new_value <= value[idx]).cpu().numpy()
        active[idx_np[~better]] = False  # an exact Procrustes step cannot raise f; be safe
        if not better.any():
            break
        keep = torch.as_tensor(better, device=cross.device)
        idx_np, idx, new_rot, new_value = idx_np[better], idx[keep], new_rot[keep], new_value[keep]
        rot[idx] = new_rot
        warm = None if potentials is None else tuple(p[idx] for p in potentials)
        q_dense, _, q_plans, _ = solve(q_cost(new_rot, idx), warm)
        if potentials is not None:
            for p, new in zip(potentials, solve.potentials):
                p[idx] = new
        q_weights = q_dense * n
        plan_value = objective(new_rot, q_weights, idx)
        accept_t = plan_value <= new_value
        accept = accept_t.cpu().numpy()
        if accept.any():
            weights[idx[accept_t]] = q_weights[accept_t]
            for j in np.flatnonzero(accept):
                plans[idx_np[j]] = q_plans[j]
        new_value = torch.where(accept_t, plan_value, new_value)
        improvement = (value[idx] - new_value).cpu().double().numpy()
        value[idx] = new_value
        for j, (k, v) in enumerate(zip(idx_np, new_value.cpu().double().tolist())):
            history[k].append(v)
            if improvement[j] <= tol * max(1.0, abs(v)):
                active[k] = False
    if result is None:
        return rot
    rot_host = rot.cpu().double().numpy()
    for k, (l, mm) in enumerate(batch):
        result.cost[l, mm] = history[k][-1]
        result.gap_bound[l, mm] = np.nan  # the Q steps' bounds do not bound the MOT+R cost
        result.histories[l, mm] = history[k]
        if keep_plans:
            result.plans[l][mm] = sp.csr_matrix(plans[k])
        if keep_rotations:
            result.rotations[l, mm] = rot_host[k]
    return rot
