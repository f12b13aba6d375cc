"""Exact optimal transport with uniform marginals, the building block of both MOT levels.

``exact_ot`` solves ``min_{Q in T(n, m)} <C, Q>`` (paper Eq. 2 of Sec. 2.2.1 and Appendix A)
with marginals ``1/n`` and ``1/m``:

* a single row or column: the only feasible plan;
* equal sides up to ``ASSIGNMENT_MAX_WIDTH``: SciPy's assignment solver
  (``linear_sum_assignment``; the optimum is a scaled permutation, Birkhoff-von Neumann);
* other small problems (``min(n, m) < SPARSE_MIN_WIDTH``): the assignment solver on the
  split problem when one side is exactly twice the other, POT's dense network simplex
  (``ot.emd``) otherwise;
* larger problems: column generation on POT's sparse network simplex
  (:func:`restricted_network_simplex`).  The restricted problem starts from the
  ``SPARSE_CANDIDATES`` cheapest entries of every row and column plus the north-west corner
  support (so it is always feasible); after each solve the reduced costs
  ``C_ij - u_i - v_j`` of *all* entries are priced against its duals, the most negative
  entry of each violating row is added, and the loop ends when none is below
  ``-PRICING_TOLERANCE``.  The duals are then feasible for the full problem, so the plan
  is optimal for it (LP duality; the value is within ``PRICING_TOLERANCE`` of the optimum)
  and is a vertex of the transport polytope, as a dense solve would return.

Plans come back as ``scipy.sparse.csr_matrix``: an exact plan has at most ``n + m - 1``
non-zeros.
"""

from __future__ import annotations

import os
import sys

import numpy as np

if "ot" not in sys.modules:
    # POT imports every array backend it finds when it is first imported (torch alone takes
    # seconds and gigabytes); these solvers use only its NumPy path.  A backend can still be
    # enabled by importing POT before motalign.
    for _backend in ("PYTORCH", "JAX", "CUPY", "TENSORFLOW"):
        os.environ.setdefault(f"POT_BACKEND_DISABLE_{_backend}", "1")

import ot  # noqa: E402
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

try:  # POT's sparse network simplex with warm start (POT >= 0.9.6)
    from ot.lp.emd_wrap import emd_c_sparse as _emd_c_sparse
except ImportError:  # pragma: no cover - depends on the POT build
    _emd_c_sparse = None


class OTSolverError(RuntimeError):
    """The network simplex stopped before reaching the optimum."""


#: equal widths up to this use the assignment solver (faster there; measured on
#: correlation costs, see benchmarks/inner_ot.py)
ASSIGNMENT_MAX_WIDTH = 768
#: below this width (of the narrower side) the dense solvers are used
SPARSE_MIN_WIDTH = 64
#: cheapest entries per row and per column in the first restricted problem
SPARSE_CANDIDATES = 8
#: an entry whose reduced cost is below -PRICING_TOLERANCE enters the restricted problem
PRICING_TOLERANCE = 1e-12
#: rows priced together (keeps a block of reduced costs in cache)
_PRICING_BLOCK = 128
#: columns whose cheapest entries are chosen together
_CANDIDATE_BLOCK = 256


def exact_ot(cost: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Exact uniform-marginal OT on ``cost`` (n x m). Returns ``(plan, <cost, plan>)``."""
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"exact_ot: cost must be a non-empty 2-D array, got shape {cost.shape}")
    n, m = cost.shape
    if n == 1 or m == 1:
        dense = np.full((n, m), 1.0 / (n * m))
        return sp.csr_matrix(dense), float(cost.mean())
    if n == m and n <= ASSIGNMENT_MAX_WIDTH:
        rows, cols = linear_sum_assignment(cost)
        plan = sp.csr_matrix((np.full(n, 1.0 / n), (rows, cols)), shape=(n, m))
        return plan, float(cost[rows, cols].sum() / n)
    if min(n, m) >= SPARSE_MIN_WIDTH:
        return restricted_network_simplex(cost)
    if max(n, m) == 2 * min(n, m):
        return _split_assignment(cost)
    return _dense_network_simplex(cost)


def _check_result(log, n, m, kind):
    if log.get("result_code") != 1:
        raise OTSolverError(
            f"exact_ot: the {kind} network simplex did not reach the optimum on a {n} x {m} "
            f"problem ({log.get('warning')})"
        )


def _dense_network_simplex(cost):
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    dense, log = ot.emd(a, b, cost, numItermax=max(100_000, 50 * n * m), log=True)
    _check_result(log, n, m, "dense")
    plan = sp.csr_matrix(dense)
    plan.eliminate_zeros()
    return plan, float(np.einsum("ij,ij->", dense, cost))


def north_west_corner(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (rows, cols) of the north-west corner plan for marginals 1/n and 1/m: a
    feasible basic solution with at most ``n + m - 1`` entries."""
    row_ends = np.arange(1, n + 1, dtype=np.int64) * m  # cumulative masses, scaled by n m
    col_ends = np.arange(1, m + 1, dtype=np.int64) * n
    breaks = np.union1d(row_ends, col_ends)
    midpoints = np.concatenate([[0], breaks[:-1]]) + breaks  # twice each segment's middle
    return (np.searchsorted(2 * row_ends, midpoints, side="right"),
            np.searchsorted(2 * col_ends, midpoints, side="right"))


def _cheapest_entries(cost, k):
    """Keys ``i * m + j`` of the k cheapest entries of every row and of every column, and
    of the north-west corner support."""
    n, m = cost.shape
    kr, kc = min(k, m - 1), min(k, n - 1)
    rows = np.repeat(np.arange(n, dtype=np.int64), kr) * m + np.argpartition(cost, kr, axis=1)[:, :kr].ravel()
    by_column = np.empty((m, kc), dtype=np.int64)
    for start in range(0, m, _CANDIDATE_BLOCK):  # a contiguous copy of a few columns at a time
        stop = min(start + _CANDIDATE_BLOCK, m)
        block = np.ascontiguousarray(cost[:, start:stop].T)
        by_column[start:stop] = np.argpartition(block, kc, axis=1)[:, :kc]
    cols = by_column.ravel() * m + np.repeat(np.arange(m), kc)
    nw_rows, nw_cols = north_west_corner(n, m)
    return np.concatenate([rows, cols, nw_rows.astype(np.int64) * m + nw_cols])


def price(cost, u, v):
    """For each row the entry of least reduced cost ``C_ij - u_i - v_j``: returns
    ``(arg, value)``, priced in blocks of rows that stay in cache.  Every entry is
    priced: an entry with a negative reduced cost makes its row's minimum negative."""
    n, _ = cost.shape
    arg = np.empty(n, dtype=np.int64)
    value = np.empty(n)
    for start in range(0, n, _PRICING_BLOCK):
        stop = min(start + _PRICING_BLOCK, n)
        reduced = cost[start:stop] - v
        reduced -= u[start:stop, None]
        arg[start:stop] = reduced.argmin(axis=1)
        value[start:stop] = reduced[np.arange(stop - start), arg[start:stop]]
    return arg, value


def _sparse_network_simplex(a, b, rows, cols, values, duals=None):
    """POT's network simplex on the entries (rows, cols) only; warm-started from ``duals``
    where this POT exposes its sparse solver (``ot.lp.emd_wrap.emd_c_sparse``), through
    ``ot.emd`` with a sparse cost otherwise.  Returns ``(csr plan, (u, v))``."""
    n, m = a.size, b.size
    max_iter = max(100_000, 50 * rows.size)
    if _emd_c_sparse is not None:
        warm = duals if duals is not None else ()
        flow_rows, flow_cols, flows, _, u, v, code = _emd_c_sparse(
            a, b, rows.astype(np.uint64), cols.astype(np.uint64), values, max_iter, *warm)
        _check_result({"result_code": code, "warning": f"result code {code}"}, n, m, "sparse")
        plan = sp.csr_matrix((flows, (flow_rows.astype(np.int64), flow_cols.astype(np.int64))), shape=(n, m))
    else:  # pragma: no cover - depends on the POT build
        restricted = sp.coo_matrix((values, (rows, cols)), shape=(n, m))
        plan, log = ot.emd(a, b, restricted, numItermax=max_iter, log=True)
        _check_result(log, n, m, "sparse")
        plan, u, v = sp.csr_matrix(plan), log["u"], log["v"]
    plan.sum_duplicates()
    plan.eliminate_zeros()
    return plan, (np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))


def restricted_network_simplex(cost, *, candidates: int = SPARSE_CANDIDATES,
                               tolerance: float = PRICING_TOLERANCE, max_rounds: int = 10_000):
    """Exact OT by column generation on POT's sparse network simplex; see the module
    docstring.  Returns ``(plan, <cost, plan>)`` like :func:`exact_ot`."""
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    in_set = np.zeros(n * m, dtype=bool)
    in_set[_cheapest_entries(cost, candidates)] = True
    keys = np.flatnonzero(in_set)
    duals = None
    for _ in range(max_rounds):
        rows, cols = np.divmod(keys, m)
        plan, duals = _sparse_network_simplex(a, b, rows, cols, cost[rows, cols], duals)
        arg, value = price(cost, *duals)
        bad = np.flatnonzero(value < -tolerance)
        if bad.size == 0:
            return plan, float((plan.multiply(cost)).sum())
        new = bad * m + arg[bad]
        new = new[~in_set[new]]
        in_set[new] = True
        keys = np.concatenate([keys, new])
    raise OTSolverError(f"exact_ot: column generation did not converge on a {n} x {m} problem")


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
    """Inner OT of MOT (Sec. 2.2.1, Eq. 2): exact OT on the correlation-distance cost."""
    return exact_ot(correlation_cost(xz, yz))


def transport_marginals(plan) -> tuple[np.ndarray, np.ndarray]:
    """Row and column sums of a dense or sparse plan."""
    if sp.issparse(plan):
        return np.asarray(plan.sum(axis=1)).ravel(), np.asarray(plan.sum(axis=0)).ravel()
    plan = np.asarray(plan)
    return plan.sum(axis=1), plan.sum(axis=0)


def sparse_plan(dense: np.ndarray, drop_below: float | None = None) -> sp.csr_matrix:
    """A dense plan as CSR; with ``drop_below`` entries under ``drop_below / (n m)`` are
    dropped (total mass dropped <= ``drop_below``)."""
    dense = np.asarray(dense, dtype=np.float64)
    if drop_below:
        dense = np.where(dense >= drop_below / dense.size, dense, 0.0)
    plan = sp.csr_matrix(dense)
    plan.eliminate_zeros()
    return plan
