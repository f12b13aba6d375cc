"""Exact correlation OT from float32 cost GEMMs with a certified float64 repair.

The inner level of MOT (Sec. 2.2.1, Eq. 2) solves ``min_Q <C, Q>`` with the
correlation-distance cost ``C = 1 - Xz^T Yz / T``.  Its GEMMs dominate at many stimuli, and a
float32 GEMM runs about twice as fast as a float64 one.  :func:`repaired_correlation_ot` uses
float32 GEMMs only to *price* entries and still returns the exact optimum for the float64
cost:

1. ``A = float32_correlation_cost(...)``: the cost from float32 z-scores, one float32 GEMM
   per chunk of ``k`` stimuli (default :data:`FLOAT32_CHUNK`), the chunks accumulated in
   float64.  Every entry obeys ``|A_ij - C_ij| <= b_ij`` with the rigorous bound ``b_ij``
   derived below (:func:`float32_bound_terms`).
2. Column generation on ``A`` (:func:`~.exact.restricted_network_simplex` machinery) gives an
   optimal basis for ``A`` and its duals.
3. Repair on the exact cost ``C``: the restricted problem holds the entries of that basis
   (and the other entries tight within ``2 b_ij``) with *exact* float64 costs, each a float64
   dot product of two unit-major z-score rows.  After each network-simplex solve with
   duals ``(u, v)``, an entry outside the restricted problem is certified non-violating when
   ``A_ij - b_ij - u_i - v_j >= -tol`` (then ``C_ij - u_i - v_j >= -tol``).  Only the entries
   failing that test are evaluated exactly, the most negative of every row and column
   first; every entry evaluated joins the restricted problem (so each is evaluated once),
   the simplex re-solves after an exact violation, and the loop ends when every uncertified
   entry has been evaluated and none has an exact reduced cost below ``-tol``.  The duals
   are then feasible for the exact cost up to ``tol``, so the plan is optimal for it (the
   same LP-duality certificate as :func:`~.exact.restricted_network_simplex`) and is a
   vertex.  The value returned is ``<C, plan>`` with the exact entries.

The bound (:func:`float32_cost_bound`).  Let ``x, y`` be two float64 z-score rows of length
``T`` and ``u = 2^-24`` (float32), ``w = 2^-53`` (float64), ``gamma_j(r) = j r / (1 - j r)``
(Higham, *Accuracy and Stability of Numerical Algorithms*, Sec. 3.1).

* Rounding to float32: ``xh = x (1 + d)``, ``|d| <= u``, so ``|xh yh - x y| <= (2u + u^2) |x y|``
  and ``|xh yh| <= (1 + u)^2 |x y|``.
* Each chunk's float32 dot product of ``k' <= k`` terms, in any order and with or without
  FMA: ``|s_c - sum_c xh yh| <= gamma_k(u) sum_c |xh yh|`` (each product passes through at
  most ``k`` roundings).
* The ``p = ceil(T / k)`` chunk sums are exact in float64 and summed there:
  ``|S - sum_c s_c| <= gamma_p(w) sum_c |s_c| <= gamma_p(w) (1 + gamma_k(u)) sum |xh yh|``.
* Together ``|S - x^T y| <= beta sum |x y| <= beta ||x|| ||y||`` (Cauchy-Schwarz) with
  ``beta = (1 + u)^2 (gamma_k(u) + gamma_p(w) (1 + gamma_k(u))) + 2u + u^2``.
* The exact entry is a float64 dot product: ``|d - x^T y| <= gamma_T(w) ||x|| ||y||``.
* Both are scaled by ``-1/T`` and shifted by 1 in float64 (three roundings each, of
  quantities at most ``1 + 2 N_ij``, ``N_ij`` as below).

Hence ``|A_ij - C_ij| <= b_ij = (beta + gamma_T(w)) N_ij (1 + 4w) + 8 w (1 + 2 N_ij) + eta``
with ``N_ij = ||x_i|| ||y_j|| / T`` (the norms computed in float64 and inflated by
``1 + 2^-30``), where ``eta = 2^-70`` covers underflow (gradual or flushed to zero: at most
``2^-126`` per operation, ``3T`` operations on terms below ``T``) for ``T < 2^30``
(:func:`float32_bound_terms`: ``b_ij = slope ||x_i|| ||y_j|| + constant``).  For z-scored
units ``||x|| = sqrt(T)``, so ``N = 1`` and ``b`` is about ``k u``: 1.2e-4 at ``k = 2048``
(3.1e-5 at 512).  A constant unit has norm 0 and ``b_ij`` of 1e-15: its entries are exactly
1 in both costs and are never evaluated.  The actual errors are far smaller (about
``sqrt(k) u`` per chunk: 1e-7 at ``T = 2,000``).  Overflow is excluded by refusing (falling
back to float64) when a row norm exceeds ``2^40``.  Heavily tied costs that would need more
than a sixteenth of the entries evaluated exactly go to the float64 cost too.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import scipy.sparse as sp

from .exact import (
    ASSIGNMENT_MAX_WIDTH,
    PRICING_TOLERANCE,
    SPARSE_CANDIDATES,
    SPARSE_MIN_WIDTH,
    DenseCost,
    OTSolverError,
    column_generation,
    correlation_cost,
    exact_ot,
    gathered_row_dots,
    sparse_network_simplex,
)

#: stimuli per float32 GEMM: the bound grows with it (1.2e-4 at 2048), the GEMMs' speed too.
#: Measured: 512 costs 25-40% over one float32 GEMM, 2048 about 5%, while the entries
#: evaluated exactly grow by 1% from 512 to 2048 (the bound is far above the actual errors)
FLOAT32_CHUNK = 2048
#: equal widths up to ``ASSIGNMENT_MAX_WIDTH`` on fewer stimuli than this keep the float64
#: cost and the assignment solver: there the float64 GEMM is cheap and the assignment solver
#: beats the repaired column generation (12 x 12 layers of 384 units, T = 2,000:
#: benchmarks/fit_time.py, MOT 2.5 s with the repair, 1.6 s without); at T = 16,000 the
#: float32 GEMM wins (384 units: 48 ms per pair against 79 ms)
REPAIR_MIN_STIMULI_SQUARE = 4096
#: z-scores above this (in magnitude) are not rounded to float32 (overflow of the products)
FLOAT32_MAX_ABS = 2.0**40
_U32, _U64 = 2.0**-24, 2.0**-53
#: rows priced together in the repair passes
_REPAIR_BLOCK = 128
#: exact entries on at most this many stimuli are evaluated on gathered blocks of rows of
#: about ``_GATHER_BYTES`` (measured per entry: 0.9 us against 4.4 us one by one at T = 800,
#: 2.5 against 3.6 at T = 2,042; at T = 16,000 one by one is faster, 17 against 22 us)
_GATHER_MAX_STIMULI = 4096
_GATHER_BYTES = 2**20


def _gamma(count: int, unit: float) -> float:
    if count * unit >= 1:
        return math.inf
    return count * unit / (1 - count * unit)


def float32_bound_terms(n_stimuli: int, length: int | None = None, chunk: int = FLOAT32_CHUNK):
    """``(slope, constant)`` with ``|A_ij - C_ij| <= slope ||x_i|| ||y_j|| + constant`` (the
    bound of the module docstring, affine in the product of the rows' float64 norms), for
    ``length`` stimuli (default ``n_stimuli``) in chunks of ``chunk`` and the cost
    ``1 - x^T y / n_stimuli``."""
    length = n_stimuli if length is None else length
    k = max(1, min(chunk, length))
    p = -(-length // k)
    gk = _gamma(k, _U32)
    beta = (1 + _U32) ** 2 * (gk + _gamma(p, _U64) * (1 + gk)) + 2 * _U32 + _U32**2
    inflate = (1 + 2.0**-30) ** 2 / n_stimuli  # norms computed in float64, rounded
    return ((beta + _gamma(length, _U64)) * (1 + 4 * _U64) + 16 * _U64) * inflate, 8 * _U64 + 2.0**-70


def float32_cost_bound(x_norm: float, y_norm: float, n_stimuli: int, length: int | None = None,
                       chunk: int = FLOAT32_CHUNK) -> float:
    """Rigorous bound on ``|A_ij - C_ij|`` (see the module docstring) for rows of float64
    norms at most ``x_norm`` and ``y_norm``, ``length`` stimuli (default ``n_stimuli``) in
    chunks of ``chunk``, cost ``1 - x^T y / n_stimuli``."""
    slope, constant = float32_bound_terms(n_stimuli, length, chunk)
    return slope * x_norm * y_norm + constant


def row_norms(zt: np.ndarray) -> np.ndarray:
    """Euclidean norm of every row of ``zt`` (float64)."""
    return np.sqrt(np.einsum("ij,ij->i", zt, zt))


def float32_correlation_cost(x32: np.ndarray, y32: np.ndarray, n_stimuli: int | None = None,
                             chunk: int = FLOAT32_CHUNK) -> np.ndarray:
    """``1 - x32^T y32 / T`` (float64, n x m) from float32 z-scores (T x n and T x m, either
    memory order), one float32 GEMM per chunk of ``chunk`` stimuli, accumulated in
    float64."""
    t, n = x32.shape
    m = y32.shape[1]
    total = np.zeros((n, m))
    part = np.empty((n, m), dtype=np.float32)
    for start in range(0, t, chunk):
        np.matmul(x32[start:start + chunk].T, y32[start:start + chunk], out=part)
        total += part
    total *= -1.0 / (t if n_stimuli is None else n_stimuli)
    total += 1.0
    return total


def exact_correlation_entries(xt: np.ndarray, yt: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                              n_stimuli: int | None = None) -> np.ndarray:
    """The float64 costs ``1 - xt[i] . yt[j] / T`` of the entries (rows, cols): dot products
    of contiguous rows of the unit-major z-scores (``xt`` n x T, ``yt`` m x T)."""
    t = xt.shape[1]
    # NumPy's own loop, not BLAS's ddot, which OpenBLAS spreads over its threads from about
    # 10,000 stimuli: a different sum per thread count, and about 250x slower when the cores
    # are busy (7.7 ms per entry)
    if t <= _GATHER_MAX_STIMULI:  # short rows: gathered in blocks, no Python per entry
        out = gathered_row_dots(xt, yt, rows, cols, _GATHER_BYTES // 16)
    else:  # long rows: read in place, no gathered copies
        out = np.empty(rows.size)
        einsum = np.einsum
        for index, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
            out[index] = einsum("i,i->", xt[i], yt[j])
    out *= -1.0 / (t if n_stimuli is None else n_stimuli)
    out += 1.0
    return out


class RepairStats:
    """What one repaired solve did: entries evaluated exactly, repair rounds."""

    def __init__(self):
        self.exact_entries = 0
        self.rounds = 0
        self.entries = 0
        self.fallback = False


class RepairTotals:
    """Totals over every :func:`repaired_correlation_ot` call of this process (read by
    benchmarks/inner_ot.py): ``solves``, ``entries`` (n m summed), ``exact_entries`` (entries
    evaluated exactly), ``rounds`` (restricted solves on the exact cost), ``fallbacks``
    (solves that went to the float64 cost because too many entries were uncertified)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.solves = self.entries = self.exact_entries = self.rounds = self.fallbacks = 0

    def add(self, stats: RepairStats) -> None:
        with self._lock:
            self.solves += 1
            self.fallbacks += stats.fallback
            self.entries += stats.entries
            self.exact_entries += stats.exact_entries
            self.rounds += stats.rounds

    def snapshot(self) -> dict:
        with self._lock:
            return {"solves": self.solves, "entries": self.entries, "exact_entries": self.exact_entries,
                    "rounds": self.rounds, "fallbacks": self.fallbacks}


#: totals of this process (thread-safe)
repair_totals = RepairTotals()


class _Bound:
    """The entrywise bound ``b_ij = slope x_norms[i] y_norms[j] + constant`` (given as
    ``(x_norms, y_norms, slope, constant)``, or a scalar: one bound for every entry).  Where
    a norm is 0 (a constant unit) ``approx`` and the exact cost are both exactly 1."""

    def __init__(self, bound, n, m):
        if np.isscalar(bound):
            bound = (np.ones(n), np.ones(m), 0.0, float(bound))
        x_norms, y_norms, slope, constant = bound
        self.zero_rows, self.zero_cols = np.asarray(x_norms) == 0, np.asarray(y_norms) == 0
        self.rows = slope * np.asarray(x_norms, dtype=np.float64)
        self.cols = np.asarray(y_norms, dtype=np.float64)
        self.constant = float(constant)
        # norms equal to round-off (z-scored units, none constant): one scalar bound, from
        # the largest norms (valid for every entry, larger than b_ij by at most 1e-6 of it)
        self.uniform = bool(not self.zero_rows.any() and not self.zero_cols.any()
                            and self.rows.max() <= self.rows.min() * (1 + 1e-6)
                            and self.cols.max() <= self.cols.min() * (1 + 1e-6))
        if self.uniform:
            self.constant += self.rows.max() * self.cols.max()

    def entries(self, rows, cols):
        return self.constant if self.uniform else self.rows[rows] * self.cols[cols] + self.constant

    def evaluate(self, approx, exact, rows, cols, stats):
        """Exact costs of the entries (rows, cols): ``approx`` itself where a row or column
        has norm 0 (a constant unit: both are exactly 1), ``exact`` elsewhere."""
        if self.uniform:
            stats.exact_entries += rows.size
            return exact(rows, cols)
        free = self.zero_rows[rows] | self.zero_cols[cols]
        values = approx[rows, cols]
        paid = np.flatnonzero(~free)
        values[paid] = exact(rows[paid], cols[paid])
        stats.exact_entries += paid.size
        return values

    def paid(self, rows, cols):
        """How many of the entries (rows, cols) need an exact evaluation."""
        if self.uniform:
            return rows.size
        return int(np.count_nonzero(~(self.zero_rows[rows] | self.zero_cols[cols])))


class _TooManyEntries(Exception):
    """The repair would evaluate too many entries exactly (heavily tied costs)."""


def _flagged(approx, u, v, bound, tolerance, members):
    """Keys ``i * m + j`` (sorted) of the entries with ``approx - b - u - v < -tolerance``
    (not certified by the float32 cost) that are not in the sorted array ``members``."""
    n, m = approx.shape
    found = []
    for start in range(0, n, _REPAIR_BLOCK):
        stop = min(start + _REPAIR_BLOCK, n)
        reduced = approx[start:stop] - v
        reduced -= u[start:stop, None]
        if not bound.uniform:
            reduced -= np.multiply.outer(bound.rows[start:stop], bound.cols)
        keys = np.flatnonzero(reduced < bound.constant - tolerance)
        if keys.size:
            found.append(keys + start * m)
    if not found:
        return np.empty(0, dtype=np.int64)
    keys = np.concatenate(found)
    if members.size:
        at = np.minimum(np.searchsorted(members, keys), members.size - 1)
        keys = keys[members[at] != keys]
    return keys


def _most_negative(reduced, rows, cols):
    """Indices (sorted) of the entry of least ``reduced`` of every row and every column."""
    chosen = []
    for line in (rows, cols):
        order = np.lexsort((reduced, line))
        first = np.ones(order.size, dtype=bool)
        first[1:] = line[order][1:] != line[order][:-1]
        chosen.append(order[first])
    return np.union1d(*chosen)


def repair(approx, bound, exact, *, candidates: int = SPARSE_CANDIDATES,
           tolerance: float = PRICING_TOLERANCE, max_rounds: int = 10_000, stats: RepairStats | None = None,
           max_exact: int | None = None):
    """Exact OT on a cost ``C`` known through ``approx`` (n x m) and ``exact(rows, cols)``
    (the exact costs of some entries), with ``|approx_ij - C_ij| <= b_ij`` where ``bound``
    is a scalar or ``(x_norms, y_norms, slope, constant)`` for
    ``b_ij = slope x_norms[i] y_norms[j] + constant`` (and ``approx_ij == C_ij`` where a
    norm is 0).
    Returns ``(plan, <C, plan>)``; see the module docstring.  Raises ``_TooManyEntries``
    when more than ``max_exact`` entries (default ``max(8 (n + m), n m / 16)``) would be
    evaluated exactly."""
    stats = stats if stats is not None else RepairStats()
    n, m = approx.shape
    bound = _Bound(bound, n, m)
    max_exact = max(8 * (n + m), n * m // 16) if max_exact is None else max_exact
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    plan, (u, v), keys, values = column_generation(DenseCost(approx), candidates=candidates,
                                                   tolerance=tolerance, max_rounds=max_rounds)
    # the first exact restricted problem: the approximate plan's support (feasible) and every
    # entry of the approximate restricted problem tight within 2 b (its whole basis)
    rows, cols = np.divmod(keys, m)
    tight = values - u[rows] - v[cols] < 2 * bound.entries(rows, cols) + tolerance
    support = plan.tocoo()
    keys = np.union1d(keys[tight], support.row.astype(np.int64) * m + support.col)
    rows, cols = np.divmod(keys, m)
    values = bound.evaluate(approx, exact, rows, cols, stats)
    members = keys  # sorted
    duals = (u, v)
    for _ in range(max_rounds):
        stats.rounds += 1
        plan, duals = sparse_network_simplex(a, b, rows, cols, values, duals)
        u, v = duals
        new = _flagged(approx, u, v, bound, tolerance, members)
        violated = False
        while new.size and not violated:
            # evaluate the most negative flagged entry of every row and column first; after
            # a violation the simplex re-solves (new duals), else the next batch is evaluated
            new_rows, new_cols = np.divmod(new, m)
            batch = _most_negative(approx[new_rows, new_cols] - u[new_rows] - v[new_cols], new_rows, new_cols)
            if stats.exact_entries + bound.paid(new_rows[batch], new_cols[batch]) > max_exact:
                raise _TooManyEntries
            new_values = bound.evaluate(approx, exact, new_rows[batch], new_cols[batch], stats)
            violated = bool(np.any(new_values - u[new_rows[batch]] - v[new_cols[batch]] < -tolerance))
            rows, cols = np.concatenate([rows, new_rows[batch]]), np.concatenate([cols, new_cols[batch]])
            values = np.concatenate([values, new_values])
            members = np.union1d(members, new[batch])
            new = np.delete(new, batch)
        if violated:
            continue
        # certified: every entry outside the restricted problem has C - u - v >= -tolerance
        support = plan.tocoo()
        plan_keys = support.row.astype(np.int64) * m + support.col
        lookup = np.argsort(rows * m + cols, kind="stable")
        at = lookup[np.searchsorted((rows * m + cols)[lookup], plan_keys)]
        stats.entries = n * m
        return plan, float(support.data @ values[at])
    raise OTSolverError(f"exact_ot: the float32 repair did not converge on a {n} x {m} problem")


def takes_float64_cost(n: int, m: int, n_stimuli: int) -> bool:
    """Whether an n x m problem on ``n_stimuli`` stimuli is solved on its float64 cost
    rather than float32-priced and repaired: narrower than ``SPARSE_MIN_WIDTH``, or equal
    widths up to ``ASSIGNMENT_MAX_WIDTH`` on fewer than :data:`REPAIR_MIN_STIMULI_SQUARE`
    stimuli (the assignment solver on the float64 cost is faster there)."""
    square = n == m <= ASSIGNMENT_MAX_WIDTH and n_stimuli < REPAIR_MIN_STIMULI_SQUARE
    return square or min(n, m) < SPARSE_MIN_WIDTH


def _dense_exact(xt, yt, n_stimuli):
    """Exact OT on the float64 cost of the unit-major z-scores (no float32 pricing)."""
    return exact_ot(correlation_cost(xt.T, yt.T, n_stimuli))


def repaired_correlation_ot(xt: np.ndarray, yt: np.ndarray, *, x32: np.ndarray | None = None,
                            y32: np.ndarray | None = None, x_norms: np.ndarray | None = None,
                            y_norms: np.ndarray | None = None, n_stimuli: int | None = None,
                            chunk: int = FLOAT32_CHUNK) -> tuple[sp.csr_matrix, float]:
    """Exact inner OT (Sec. 2.2.1, Eq. 2) on the float64 correlation-distance cost of the
    unit-major z-scores ``xt`` (n x T) and ``yt`` (m x T, float64, C-contiguous), priced
    with float32 GEMMs and repaired exactly (module docstring).  ``x32``/``y32`` (their
    float32 roundings, stimuli-major: T x n and T x m) and ``x_norms``/``y_norms`` (their
    rows' norms; the bound is entrywise, so constant units cost no exact evaluations) are
    computed when omitted.  Problems narrower than ``SPARSE_MIN_WIDTH``, equal widths up to
    ``ASSIGNMENT_MAX_WIDTH`` on fewer than :data:`REPAIR_MIN_STIMULI_SQUARE` stimuli, z-scores
    beyond ``FLOAT32_MAX_ABS``, or a repair that would evaluate more than a sixteenth of the
    entries exactly (heavily tied costs) go to :func:`~.exact.exact_ot` on the float64
    cost.  Returns ``(plan, <C, plan>)`` as :func:`~.exact.exact_ot` does."""
    t = xt.shape[1] if n_stimuli is None else n_stimuli
    n, m = xt.shape[0], yt.shape[0]
    if takes_float64_cost(n, m, xt.shape[1]):
        return _dense_exact(xt, yt, t)
    x_norms = row_norms(xt) if x_norms is None else x_norms
    y_norms = row_norms(yt) if y_norms is None else y_norms
    if not max(x_norms.max(), y_norms.max()) <= FLOAT32_MAX_ABS:  # also catches NaN
        return _dense_exact(xt, yt, t)
    x32 = xt.astype(np.float32).T if x32 is None else x32
    y32 = yt.astype(np.float32).T if y32 is None else y32
    approx = float32_correlation_cost(x32, y32, t, chunk)
    slope, constant = float32_bound_terms(t, xt.shape[1], chunk)
    stats = RepairStats()
    try:
        result = repair(approx, (x_norms, y_norms, slope, constant),
                        lambda r, c: exact_correlation_entries(xt, yt, r, c, t), stats=stats)
    except _TooManyEntries:
        del approx
        stats.fallback = True
        result = _dense_exact(xt, yt, t)
    repair_totals.add(stats)
    return result
