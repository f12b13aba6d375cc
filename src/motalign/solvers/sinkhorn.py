"""Batched entropic OT with uniform marginals, for many layer pairs at once (torch).

The inner level of MOT (paper Sec. 2.2.1, Eq. 2) is an exact OT per layer pair.  On a GPU
the exact solvers are sequential and stay on the CPU; this module is the alternative that
runs the whole batch of equal-shaped problems ``cost`` (B x n x m) on the device:

1. log-domain Sinkhorn (stable for small epsilon) on ``min <C, Q> - eps H(Q)`` over the
   transport polytope ``T(n, m)`` with marginals ``1/n`` and ``1/m``, with
   epsilon-scaling: epsilon starts at the cost spread and is halved down to the target;
2. rounding onto ``T(n, m)`` (Altschuler, Weed & Rigollet 2017, Alg. 2), so that every
   returned plan is feasible and ``<C, Q>`` is an upper bound on the exact optimum;
3. a certified lower bound on the exact optimum from the c-transform of the row
   potential (a feasible dual point of the exact problem), so that every problem comes
   with ``gap_bound = upper - lower >= <C, Q> - OT(C) >= 0`` without running an exact
   solver.

Everything works on whatever device and floating dtype ``cost`` has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SinkhornResult:
    """Plans (B x n x m, rows sum to 1/n, columns to 1/m), their costs ``<C, Q>``, the
    certified lower bounds on the exact optimum and the iterations used."""

    plan: torch.Tensor
    cost: torch.Tensor
    lower_bound: torch.Tensor
    n_iter: int
    marginal_error: float
    potentials: tuple = ()

    @property
    def gap_bound(self) -> torch.Tensor:
        """Upper bound on ``<C, Q> - OT(C)`` per problem."""
        return torch.clamp(self.cost - self.lower_bound, min=0.0)


def epsilon_schedule(spread: float, epsilon: float, factor: float = 0.5) -> list[float]:
    """Epsilon-scaling: from ``max(spread, epsilon)`` down to ``epsilon`` by ``factor``."""
    if not epsilon > 0:
        raise ValueError(f"sinkhorn: epsilon must be positive, got {epsilon!r}")
    if not 0 < factor < 1:
        raise ValueError(f"sinkhorn: epsilon scaling factor must be in (0, 1), got {factor!r}")
    schedule = [max(float(spread), epsilon)]
    while schedule[-1] > epsilon:
        schedule.append(max(schedule[-1] * factor, epsilon))
    return schedule


def round_to_polytope(plan: torch.Tensor) -> torch.Tensor:
    """Project nearly feasible plans (B x n x m) onto the uniform transport polytope
    (Altschuler et al. 2017, Alg. 2): scale rows down to ``1/n``, columns down to ``1/m``,
    then add the rank-one correction ``err_r err_c^T / |err_r|_1``."""
    _, n, m = plan.shape
    a, b = 1.0 / n, 1.0 / m
    plan = plan * torch.clamp(a / plan.sum(dim=2).clamp_min(torch.finfo(plan.dtype).tiny), max=1.0)[:, :, None]
    plan = plan * torch.clamp(b / plan.sum(dim=1).clamp_min(torch.finfo(plan.dtype).tiny), max=1.0)[:, None, :]
    err_r = (a - plan.sum(dim=2)).clamp_min(0.0)
    err_c = (b - plan.sum(dim=1)).clamp_min(0.0)
    mass = err_r.sum(dim=1).clamp_min(torch.finfo(plan.dtype).tiny)
    return plan + err_r[:, :, None] * err_c[:, None, :] / mass[:, None, None]


def dual_lower_bound(cost: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Lower bound on the exact OT value of each problem: with ``g = min_i (C_ij - f_i)``
    (the c-transform), ``(f, g)`` is feasible for the dual of the exact problem, so
    ``mean(f) + mean(g) <= OT(C)`` (weak duality)."""
    g = torch.amin(cost - f[:, :, None], dim=1)
    return f.mean(dim=1) + g.mean(dim=1)


def _row_error(cost, f, g, eps, log_a):
    log_rows = torch.logsumexp((f[:, :, None] + g[:, None, :] - cost) / eps, dim=2)
    return float(torch.abs(torch.exp(log_rows) - math.exp(log_a)).sum(dim=1).max())


def sinkhorn_uniform(
    cost: torch.Tensor,
    *,
    epsilon: float = 1e-3,
    max_iter: int = 2000,
    tol: float = 1e-4,
    stage_iter: int = 100,
    check_every: int = 10,
    init: tuple | None = None,
) -> SinkhornResult:
    """Entropic OT with uniform marginals on a batch of costs (B x n x m), log domain with
    epsilon-scaling, then rounded onto the transport polytope.

    ``epsilon`` is the final regularisation (in cost units; correlation costs lie in
    [0, 2]); each intermediate epsilon runs at most ``stage_iter`` iterations, the final one
    at most ``max_iter``, each stopping once the L1 row-marginal error of every problem is
    below ``tol`` (checked every ``check_every`` iterations).  ``init``: potentials
    ``(f, g)`` of a previous, similar batch (``result.potentials``); the solve then starts
    from them at the final epsilon, without epsilon-scaling (MOT+R's successive Q steps).
    """
    if cost.ndim != 3 or 0 in cost.shape:
        raise ValueError(f"sinkhorn: cost must be a non-empty B x n x m tensor, got {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError("sinkhorn: cost has NaN or infinite entries")
    _, n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    if init is not None:
        f, g = (p.to(cost.device, cost.dtype) for p in init)
        if f.shape != cost.shape[:2] or g.shape != (cost.shape[0], m):
            raise ValueError("sinkhorn: init potentials do not match the cost batch")
        schedule = epsilon_schedule(epsilon, epsilon)
    else:
        f = torch.zeros(cost.shape[:2], dtype=cost.dtype, device=cost.device)
        g = torch.zeros((cost.shape[0], m), dtype=cost.dtype, device=cost.device)
        schedule = epsilon_schedule(float(cost.max() - cost.min()), epsilon)
    n_iter, error = 0, math.inf
    for stage, eps in enumerate(schedule):
        last = stage == len(schedule) - 1
        budget = max_iter if last else stage_iter
        for it in range(1, budget + 1):
            f = eps * (log_a - torch.logsumexp((g[:, None, :] - cost) / eps, dim=2))
            g = eps * (log_b - torch.logsumexp((f[:, :, None] - cost) / eps, dim=1))
            n_iter += 1
            if it % check_every == 0 or it == budget:
                error = _row_error(cost, f, g, eps, log_a)
                if error <= tol:
                    break
    eps = schedule[-1]
    plan = torch.exp((f[:, :, None] + g[:, None, :] - cost) / eps)
    plan = round_to_polytope(plan)
    value = (plan * cost).sum(dim=(1, 2))
    return SinkhornResult(plan=plan, cost=value, lower_bound=dual_lower_bound(cost, f),
                          n_iter=n_iter, marginal_error=error, potentials=(f, g))
