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
  entry of each violating row and of each violating column is added, and the loop ends
  when none is below ``-PRICING_TOLERANCE``.  The duals are then feasible for the full
  problem, so the plan is optimal for it (LP duality; the value is within
  ``PRICING_TOLERANCE`` of the optimum) and is a vertex of the transport polytope, as a
  dense solve would return.  The entries already in the restricted problem are left out of
  pricing: the simplex solved it optimally, and their reduced costs carry only the
  round-off of its duals (about 1e-12 at a few thousand units, which used to stall the
  loop there).  :mod:`.repair` runs this loop on a float32-priced cost and then repairs it
  to the exact float64 optimum.

The column generation reads the cost through an oracle: a matrix in memory
(:class:`DenseCost`) or the correlation-distance cost computed block by block from the
z-scored data (:class:`CorrelationCost`, used by :func:`correlation_ot` above
``ON_DEMAND_MIN_ENTRIES`` entries: the global baselines of Appendix F), so that no n x m
array is ever held on that path.  There every pass over all entries costs a GEMM, so the
first pass also keeps a pool of the next cheapest entries of every row, which is priced
before all entries are (see :func:`restricted_network_simplex`): typically one pass for
the candidates and one that certifies the optimum.  Memory on that path:
``O((n + m) T + ON_DEMAND_POOL * max(n, m) + ON_DEMAND_BLOCK_ENTRIES)``.

Plans come back as ``scipy.sparse.csr_matrix``: an exact plan has at most ``n + m - 1``
non-zeros.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from .._pot import import_pot

# POT without its array backends (unless it was imported before motalign): motalign._pot
ot = import_pot()

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
#: :func:`correlation_ot` computes the cost on demand (:class:`CorrelationCost`) above this
#: many entries (32 MB of float64): the global baselines' 15,000 x 15,000 problems (App. F)
#: then need no 1.8 GB matrix; the inner-OT engine keeps its dense blocks (exact_ot)
ON_DEMAND_MIN_ENTRIES = 4 * 2**20
#: costs per block computed on demand (32 MB of float64)
ON_DEMAND_BLOCK_ENTRIES = 4 * 2**20
#: cheap entries per row and per column kept from the first pass over an on-demand cost
ON_DEMAND_POOL = 128


def exact_ot(cost: np.ndarray) -> tuple[sp.csr_matrix, float]:
    """Exact uniform-marginal OT on ``cost`` (n x m). Returns ``(plan, <cost, plan>)``."""
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"exact_ot: cost must be a non-empty 2-D array, got shape {cost.shape}")
    if not (np.isfinite(cost.max()) and np.isfinite(cost.min())):
        raise ValueError(
            f"exact_ot: the {cost.shape[0]} x {cost.shape[1]} cost has "
            f"{cost.size - np.count_nonzero(np.isfinite(cost))} non-finite entries (NaN or inf)"
        )
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
    return (
        np.searchsorted(2 * row_ends, midpoints, side="right"),
        np.searchsorted(2 * col_ends, midpoints, side="right"),
    )


#: tile of :func:`transposed_copy` (128 x 128 float64: 128 KB, kept in cache)
_TRANSPOSE_TILE = 128


def transposed_copy(a: np.ndarray, dtype=None) -> np.ndarray:
    """``a.T`` as a new C-contiguous array (of ``dtype``, default ``a``'s), copied tile by
    tile when ``a`` is not F-contiguous: NumPy's own transposing copy of a C-ordered block
    (or of a slice of columns) reads it with a stride of a whole row and is two to three
    times slower on blocks of a few MB."""
    a = np.asarray(a)
    if a.ndim != 2 or a.flags.f_contiguous:
        return np.ascontiguousarray(a.T, dtype=dtype)
    rows, cols = a.shape
    out = np.empty((cols, rows), dtype=a.dtype if dtype is None else dtype)
    tile = _TRANSPOSE_TILE
    for j in range(0, cols, tile):
        for i in range(0, rows, tile):
            out[j:j + tile, i:i + tile] = a[i:i + tile, j:j + tile].T
    return out


def gathered_row_dots(xt: np.ndarray, yt: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      entries_per_block: int) -> np.ndarray:
    """``xt[rows[k]] . yt[cols[k]]`` for every k, on gathered blocks of rows holding about
    ``entries_per_block`` floats of each side (NumPy's ``einsum``: no BLAS threads)."""
    out = np.empty(len(rows))
    step = max(1, entries_per_block // max(xt.shape[1], 1))
    for start in range(0, out.size, step):
        stop = start + step
        out[start:stop] = np.einsum("ij,ij->i", xt[rows[start:stop]], yt[cols[start:stop]])
    return out


class DenseCost:
    """Cost oracle of a cost matrix held in memory (what :func:`exact_ot` solves).

    The column generation of :func:`restricted_network_simplex` reads costs only through an
    oracle: ``shape``, ``rows(start, stop)`` (a block of rows), ``columns(start, stop)`` (a
    block of columns, transposed and contiguous), ``entries(keys)`` (the costs of the keys
    ``i * m + j``), ``total(plan)`` (``<C, plan>``), ``row_block`` and ``column_block`` (the
    block sizes), ``writable_rows`` (whether ``rows`` returns a fresh array) and, optionally,
    ``pool`` (the candidate pool of :func:`restricted_network_simplex`; none here: a pass
    over a matrix in memory is cheap).
    """

    row_block = _PRICING_BLOCK
    column_block = _CANDIDATE_BLOCK
    writable_rows = False  # rows() returns a view of the matrix

    def __init__(self, cost: np.ndarray):
        self.cost = cost
        self.shape = cost.shape

    def rows(self, start, stop):
        return self.cost[start:stop]

    def columns(self, start, stop):
        return transposed_copy(self.cost[:, start:stop])

    def entries(self, keys):
        rows, cols = np.divmod(keys, self.shape[1])
        return self.cost[rows, cols]

    def total(self, plan):
        return float(plan.multiply(self.cost).sum())


class CorrelationCost:
    """Cost oracle of the correlation-distance cost ``1 - xz^T yz / T`` that never holds the
    n x m matrix: a block of rows (or columns) is one GEMM of the z-scored blocks, computed
    when asked for, and single entries are dot products of length T.

    Holds the transposed blocks (``(n + m) T`` floats) and, while a block is in use, one
    block of about ``ON_DEMAND_BLOCK_ENTRIES`` costs.  ``xz`` (T x n) and ``yz`` (T x m)
    are z-scored as for :func:`correlation_cost`; an F-ordered ``xz`` (e.g. ``a.T`` of a
    C-ordered ``a``) is used without a copy.
    """

    writable_rows = True  # rows() returns a fresh array the caller may overwrite
    pool = ON_DEMAND_POOL

    def __init__(self, xz: np.ndarray, yz: np.ndarray, n_stimuli: int | None = None):
        if xz.ndim != 2 or yz.ndim != 2 or xz.shape[0] != yz.shape[0] or 0 in xz.shape + yz.shape:
            raise ValueError(f"CorrelationCost: need T x n and T x m blocks, got {xz.shape} and {yz.shape}")
        self._xt = transposed_copy(xz, np.float64)  # n x T
        self._yt = transposed_copy(yz, np.float64)  # m x T
        self._scale = -1.0 / (xz.shape[0] if n_stimuli is None else n_stimuli)
        n, m = self.shape = (xz.shape[1], yz.shape[1])
        self.row_block = max(1, ON_DEMAND_BLOCK_ENTRIES // m)
        self.column_block = max(1, ON_DEMAND_BLOCK_ENTRIES // n)

    def _cost(self, a, b):
        block = a @ b.T
        block *= self._scale
        block += 1.0
        return block

    def rows(self, start, stop):
        return self._cost(self._xt[start:stop], self._yt)

    def columns(self, start, stop):
        return self._cost(self._yt[start:stop], self._xt)

    def entries(self, keys):
        rows, cols = np.divmod(np.asarray(keys, dtype=np.int64), self.shape[1])
        out = gathered_row_dots(self._xt, self._yt, rows, cols, ON_DEMAND_BLOCK_ENTRIES // 2)
        out *= self._scale
        out += 1.0
        return out

    def total(self, plan):
        plan = plan.tocoo()
        return float(plan.data @ self.entries(plan.row.astype(np.int64) * self.shape[1] + plan.col))


def _oracle(cost):
    return cost if hasattr(cost, "entries") else DenseCost(cost)


def _cheapest_entries(cost, k):
    """Keys ``i * m + j`` of the k cheapest entries of every row and of every column, and
    of the north-west corner support; ``cost`` is a matrix or a cost oracle, read one block
    of rows and one block of columns at a time."""
    oracle = _oracle(cost)
    n, m = oracle.shape
    kr, kc = min(k, m - 1), min(k, n - 1)
    by_row = np.empty((n, kr), dtype=np.int64)
    for start in range(0, n, oracle.row_block):
        stop = min(start + oracle.row_block, n)
        by_row[start:stop] = np.argpartition(oracle.rows(start, stop), kr, axis=1)[:, :kr]
    rows = np.repeat(np.arange(n, dtype=np.int64), kr) * m + by_row.ravel()
    by_column = np.empty((m, kc), dtype=np.int64)
    for start in range(0, m, oracle.column_block):
        stop = min(start + oracle.column_block, m)
        by_column[start:stop] = np.argpartition(oracle.columns(start, stop), kc, axis=1)[:, :kc]
    cols = by_column.ravel() * m + np.repeat(np.arange(m), kc)
    nw_rows, nw_cols = north_west_corner(n, m)
    return np.concatenate([rows, cols, nw_rows.astype(np.int64) * m + nw_cols])


class _ColumnMinimum:
    """Running minimum (and its first row) of every column over blocks of rows."""

    def __init__(self, m):
        self.value = np.full(m, np.inf)
        self.arg = np.zeros(m, dtype=np.int64)

    def update(self, block, start):
        lower = np.flatnonzero(block.min(axis=0) < self.value)
        if lower.size == self.value.size:
            arg = block.argmin(axis=0)
        elif lower.size:
            arg = block[:, lower].argmin(axis=0)
        else:
            return
        self.arg[lower] = arg + start
        self.value[lower] = block[arg, lower]


def price(cost, u, v, exclude=None, columns=False):
    """For each row the entry of least reduced cost ``C_ij - u_i - v_j``: returns
    ``(arg, value)``, priced in blocks of rows (of a matrix, or of a cost oracle).  Every
    entry is priced, except the keys ``i * m + j`` in the sorted array ``exclude`` (the
    restricted problem's own entries, whose reduced costs carry only the round-off of the
    simplex's duals): an entry with a negative reduced cost makes its row's minimum
    negative.  A row with every entry excluded gets value ``inf``.  With ``columns`` the
    same for each column is returned too: ``(arg, value, column_arg, column_value)``."""
    oracle = _oracle(cost)
    n, m = oracle.shape
    arg = np.empty(n, dtype=np.int64)
    value = np.empty(n)
    by_column = _ColumnMinimum(m) if columns else None
    for start in range(0, n, oracle.row_block):
        stop = min(start + oracle.row_block, n)
        block = oracle.rows(start, stop)
        reduced = np.subtract(block, v, out=block if oracle.writable_rows else None)
        reduced -= u[start:stop, None]
        if exclude is not None:
            lo, hi = np.searchsorted(exclude, (start * m, stop * m))
            reduced.reshape(-1)[exclude[lo:hi] - start * m] = np.inf
        arg[start:stop] = reduced.argmin(axis=1)
        value[start:stop] = reduced[np.arange(stop - start), arg[start:stop]]
        if columns:
            by_column.update(reduced, start)
    if columns:
        return arg, value, by_column.arg, by_column.value
    return arg, value


def sparse_network_simplex(a, b, rows, cols, values, duals=None):
    """POT's network simplex on the entries (rows, cols) only; warm-started from ``duals``
    where this POT exposes its sparse solver (``ot.lp.emd_wrap.emd_c_sparse``), through
    ``ot.emd`` with a sparse cost otherwise.  Returns ``(csr plan, (u, v))``."""
    n, m = a.size, b.size
    max_iter = max(100_000, 50 * rows.size)
    if _emd_c_sparse is not None:
        warm = duals if duals is not None else ()
        flow_rows, flow_cols, flows, _, u, v, code = _emd_c_sparse(
            a, b, rows.astype(np.uint64), cols.astype(np.uint64), values, max_iter, *warm
        )
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


def _pooled_entries(oracle, k, per_row):
    """One pass over the rows of an on-demand cost: the first restricted problem (the k
    cheapest entries of every row, the cheapest of every column and the north-west corner
    support) and the pool (the next ``per_row - k`` cheapest entries of every row), with
    their costs.  Returns sorted disjoint ``(keys, values, pool_keys, pool_values)``."""
    n, m = oracle.shape
    kp = min(per_row, m)
    row_cols, row_vals = np.empty((n, kp), dtype=np.int64), np.empty((n, kp))
    by_column = _ColumnMinimum(m)
    for start in range(0, n, oracle.row_block):
        stop = min(start + oracle.row_block, n)
        block = oracle.rows(start, stop)
        row_cols[start:stop] = np.argpartition(block, kp - 1, axis=1)[:, :kp]
        row_vals[start:stop] = np.take_along_axis(block, row_cols[start:stop], axis=1)
        by_column.update(block, start)
    row_cols += np.arange(n, dtype=np.int64)[:, None] * m  # now the keys i * m + j
    first = np.ones((n, kp), dtype=bool)  # the k cheapest of every row
    if k < kp:
        first[:] = False
        np.put_along_axis(first, np.argpartition(row_vals, k - 1, axis=1)[:, :k], True, axis=1)
    # the costs of these come from the GEMM blocks; of the north-west corner, from dot products
    keys, index = np.unique(np.concatenate([row_cols[first], by_column.arg * m + np.arange(m)]), return_index=True)
    values = np.concatenate([row_vals[first], by_column.value])[index]
    nw_rows, nw_cols = north_west_corner(n, m)
    corner = np.setdiff1d(nw_rows.astype(np.int64) * m + nw_cols, keys)
    order = np.argsort(np.concatenate([keys, corner]), kind="stable")
    keys = np.concatenate([keys, corner])[order]
    values = np.concatenate([values, oracle.entries(corner)])[order]
    np.logical_not(first, out=first)
    pool_keys, pool_values = row_cols[first], row_vals[first]
    del row_cols, row_vals, first
    order = np.argsort(pool_keys)
    pool_keys, pool_values = pool_keys[order], pool_values[order]
    del order
    rest = np.searchsorted(keys, pool_keys)
    np.minimum(rest, keys.size - 1, out=rest)
    rest = keys[rest] != pool_keys  # not already in the first restricted problem
    return keys, values, pool_keys[rest], pool_values[rest]


def _price_pool(keys, values, u, v, m, tolerance):
    """Indices (sorted) into the pool of its most negative reduced cost in every row and in
    every column that has one below ``-tolerance``."""
    rows, cols = np.divmod(keys, m)
    reduced = values - u[rows] - v[cols]
    bad = np.flatnonzero(reduced < -tolerance)
    chosen = []
    for line in (rows[bad], cols[bad]):
        order = np.lexsort((reduced[bad], line))
        first = np.ones(order.size, dtype=bool)
        first[1:] = line[order][1:] != line[order][:-1]
        chosen.append(bad[order[first]])
    return np.union1d(*chosen)


def restricted_network_simplex(
    cost,
    *,
    candidates: int = SPARSE_CANDIDATES,
    tolerance: float = PRICING_TOLERANCE,
    max_rounds: int = 10_000,
    pool: int | None = None,
):
    """Exact OT by column generation on POT's sparse network simplex; see the module
    docstring.  ``cost`` is an n x m matrix or a cost oracle (:class:`DenseCost`,
    :class:`CorrelationCost`).  Returns ``(plan, <cost, plan>)`` like :func:`exact_ot`.

    ``pool`` (default: the oracle's ``pool``; 0 for a matrix) is for costs computed on
    demand, where every pass over all entries costs a GEMM: the first pass then keeps the
    ``candidates`` cheapest entries of every row and the cheapest of every column for the
    first restricted problem, and the next ``pool * ceil(m / n)`` cheapest of every row,
    with their costs, as a pool.  After each solve the pool is priced first (its most
    negative entry of every row and every column enters); all entries are priced only
    when no pool entry has a negative reduced cost, and then the most negative entry of
    every row and of every column enters.  The certificate is the same: the loop ends only
    after a pass over all entries finds none below ``-tolerance``.

    The restricted problem's entries are kept as keys ``i * m + j`` (in the order they
    entered, with their costs, plus a sorted copy for membership), never as an n x m
    array.
    """
    oracle = _oracle(cost)
    plan, _, _, _ = column_generation(oracle, candidates=candidates, tolerance=tolerance,
                                      max_rounds=max_rounds, pool=pool)
    return plan, oracle.total(plan)


def column_generation(oracle, *, candidates: int = SPARSE_CANDIDATES, tolerance: float = PRICING_TOLERANCE,
                      max_rounds: int = 10_000, pool: int | None = None):
    """The loop of :func:`restricted_network_simplex` on a cost oracle.  Returns
    ``(plan, (u, v), keys, values)``: the optimal plan, the duals of the last restricted
    solve (feasible for the whole cost up to ``tolerance``), and the restricted problem's
    keys ``i * m + j`` with their costs (used by :mod:`.repair`)."""
    n, m = oracle.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    pool = getattr(oracle, "pool", 0) if pool is None else pool
    if pool:
        per_row = candidates + pool * -(-m // n)  # a row of a wide problem sends mass to ~m/n columns
        keys, values, pool_keys, pool_values = _pooled_entries(oracle, candidates, per_row)
    else:
        keys = np.unique(_cheapest_entries(oracle, candidates))
        values, pool_keys, pool_values = oracle.entries(keys), keys[:0], np.empty(0)
    members = keys
    duals = None
    for _ in range(max_rounds):
        rows, cols = np.divmod(keys, m)
        plan, duals = sparse_network_simplex(a, b, rows, cols, values, duals)
        chosen = _price_pool(pool_keys, pool_values, *duals, m, tolerance) if pool_keys.size else []
        if len(chosen):
            new, new_values = pool_keys[chosen], pool_values[chosen]
            pool_keys, pool_values = np.delete(pool_keys, chosen), np.delete(pool_values, chosen)
        else:
            # every entry is priced; the restricted problem's (and the pool's, priced above)
            # are left out; the most negative entry of every violating row and column enters
            exclude = np.union1d(members, pool_keys) if pool else members
            arg, value, col_arg, col_value = price(oracle, *duals, exclude=exclude, columns=True)
            new, bad = np.flatnonzero(value < -tolerance), np.flatnonzero(col_value < -tolerance)
            new = np.union1d(new * m + arg[new], col_arg[bad] * m + bad)
            if new.size == 0:
                return plan, duals, keys, values
            new_values = oracle.entries(new)
        keys = np.concatenate([keys, new])
        values = np.concatenate([values, new_values])
        members = np.insert(members, np.searchsorted(members, new), new)  # new is sorted
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
    """Inner OT of MOT (Sec. 2.2.1, Eq. 2): exact OT on the correlation-distance cost of
    the z-scored blocks ``xz`` (T x n) and ``yz`` (T x m).

    Up to ``ON_DEMAND_MIN_ENTRIES`` entries (or when a side is narrower than
    ``SPARSE_MIN_WIDTH``) the cost is built and solved by :func:`exact_ot`; above, by column
    generation on the cost computed on demand (:class:`CorrelationCost`), in memory
    ``O((n + m) T + candidates + block)`` instead of ``8 n m`` bytes.  Both are exact.
    """
    n, m = xz.shape[1], yz.shape[1]
    if n * m > ON_DEMAND_MIN_ENTRIES and min(n, m) >= SPARSE_MIN_WIDTH:
        return restricted_network_simplex(CorrelationCost(xz, yz))
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
