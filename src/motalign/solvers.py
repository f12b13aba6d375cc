"""Exact optimal transport with uniform marginals, the building block of both MOT levels.

``exact_ot`` solves ``min_{Q in T(n, m)} <C, Q>`` (paper Eq. of Sec. 2.2.1 and Appendix A)
with marginals ``1/n`` and ``1/m``:

* equal sizes: the optimum is a scaled permutation (Birkhoff-von Neumann), found by the
  Hungarian-type assignment solver of SciPy (``linear_sum_assignment``);
* one side exactly twice the other (384 -> 768, 1024 -> 2048, ...): with integer masses
  2 per unit of the narrower side and 1 per unit of the wider one, the problem is an
  assignment problem once every narrower unit is split in two; the assignment solver on
  that square matrix is faster than the network simplex and the plan is the split
  assignment summed back (same optimal value);
* a single row or column: the only feasible plan;
* otherwise: POT's network simplex (``ot.emd``), whose solution is a vertex of the
  transport polytope.

Plans come back as ``scipy.sparse.csr_matrix``: an exact plan has at most ``n + m - 1``
non-zeros.
"""

from __future__ import annotations

import numpy as np
import ot
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment


class OTSolverError(RuntimeError):
    """The network simplex stopped before reaching the optimum."""


def exact_ot(cost: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Exact uniform-marginal OT on ``cost`` (n x m). Returns ``(plan, <cost, plan>)``."""
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"exact_ot: cost must be a non-empty 2-D array, got shape {cost.shape}")
    n, m = cost.shape
    if n == m:
        rows, cols = linear_sum_assignment(cost)
        plan = sp.csr_matrix((np.full(n, 1.0 / n), (rows, cols)), shape=(n, m))
        return plan, float(cost[rows, cols].sum() / n)
    if max(n, m) == 2 * min(n, m):
        return _split_assignment(cost)
    if n == 1 or m == 1:
        dense = np.full((n, m), 1.0 / (n * m))
        return sp.csr_matrix(dense), float(cost.mean())
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    dense, log = ot.emd(a, b, cost, numItermax=max(100_000, 50 * n * m), log=True)
    if log.get("result_code") != 1:
        raise OTSolverError(
            f"exact_ot: the network simplex did not reach the optimum on a {n} x {m} "
            f"problem ({log.get('warning')})"
        )
    plan = sp.csr_matrix(dense)
    plan.eliminate_zeros()
    return plan, float(np.einsum("ij,ij->", dense, cost))


def _split_assignment(cost: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Exact OT when one side is twice the other: split each unit of the narrower side in
    two (mass ``1/max(n, m)`` each), solve the square assignment, and sum back."""
    n, m = cost.shape
    wide = max(n, m)
    split = np.repeat(cost, 2, axis=0) if n < m else np.repeat(cost, 2, axis=1)
    rows, cols = linear_sum_assignment(split)
    value = float(split[rows, cols].sum() / wide)
    if n < m:
        rows = rows // 2
    else:
        cols = cols // 2
    plan = sp.csr_matrix((np.full(wide, 1.0 / wide), (rows, cols)), shape=(n, m))
    plan.sum_duplicates()
    return plan, value


def correlation_cost(xz: np.ndarray, yz: np.ndarray, n_stimuli: int | None = None) -> np.ndarray:
    """Correlation-distance cost ``1 - r`` between the columns of two z-scored blocks.

    ``xz`` (T x n) and ``yz`` (T x m) must be z-scored with population statistics (as
    :class:`motalign.preprocessing.LayerStats` does); a column of zeros (constant unit)
    has correlation 0 with everything, hence cost 1.
    """
    t = xz.shape[0] if n_stimuli is None else n_stimuli
    cost = xz.T @ yz
    cost *= -1.0 / t
    cost += 1.0
    return cost


def correlation_ot(xz: np.ndarray, yz: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Inner OT of MOT (SPEC §1.1-1.2): exact OT on the correlation-distance cost."""
    return exact_ot(correlation_cost(xz, yz))


def transport_marginals(plan) -> tuple[np.ndarray, np.ndarray]:
    """Row and column sums of a dense or sparse plan."""
    if sp.issparse(plan):
        return np.asarray(plan.sum(axis=1)).ravel(), np.asarray(plan.sum(axis=0)).ravel()
    plan = np.asarray(plan)
    return plan.sum(axis=1), plan.sum(axis=0)
