"""MOT+R for one layer pair on the CPU (paper Sec. 2.3), in NumPy.

For z-scored layers ``Xz`` (T x n) and ``Yz`` (T x m) MOT+R minimises the reconstruction
cost

    f(R, Q) = || Xz R - Yz (n Q)^T ||_F^2 / (T n),     R in O(n),  Q in T(n, m)

by alternating

(a) Q <- exact correlation-distance OT between the rotated units ``Xz R`` and ``Yz``;
(b) R <- orthogonal Procrustes: ``R = U V^T`` with ``U S V^T = svd(Xz^T Yz (n Q)^T)``.

``n Q`` is the row-stochastic form of the plan (each reconstructed unit is a convex
combination of target units), and dividing by ``T n`` makes the cost a mean squared error
per z-scored entry, comparable across layers of different widths (the paper's Frobenius
cost up to that per-layer constant).  Step (b) is an exact minimiser; step (a) optimises a
surrogate, so a Q update is kept only when it does not raise ``f``; the loop stops when
``f`` decreases by less than ``tol`` (relative), when a Q step leaves the plan unchanged
(rejected, or the same plan again: the next round would repeat the same Procrustes step and
gain nothing), or after ``max_iter`` rounds.  The recorded objective history is therefore
non-increasing.  (Before the rule on unchanged plans, the alternation ran that repeated round and
recorded its value twice: histories were one entry longer, with the same final result.)

Everything after the first two GEMMs works on n x n and n x m Gram blocks, so one
iteration costs O(n^3 + n m) instead of O(T n m).  The plan's weights ``W`` are sparse
(at most n + m - 1 non-zeros), so ``Xz^T Yz W^T`` is a row gather and the reconstruction
norm ``||Yz W^T||_F^2`` needs the stimuli only for the rows of ``W`` with more than one
non-zero (none when n = m, where ``W`` is a permutation).  The Procrustes rotation is the
orthogonal polar factor of that n x n matrix, computed by :func:`polar_factor`: from the
eigendecomposition of its Gram matrix when its a-posteriori checks pass, by an SVD otherwise.

The final rotation is the Procrustes step (b) of the plan that was current when the last
accepted step ran (its *rotation-defining plan*, which need not be the final plan: a
later Q update may still have been kept), or the identity when no step was accepted.
:func:`rotation_from_plan` rebuilds it from that sparse plan with one sparse product and one
n x n polar factor, by the same :func:`procrustes_step` that the alternation uses, so the workflow stores
the plan (at most n + m - 1 entries) instead of the dense n x n rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..solvers import exact_ot
from .types import Alternation


@dataclass
class RotationAlignment:
    """Result of MOT+R on one layer pair."""

    cost: float
    plan: sp.csr_matrix
    rotation: np.ndarray
    history: list = field(default_factory=list)
    #: the plan that defines ``rotation`` (None: the identity), see :func:`rotation_from_plan`
    rotation_plan: sp.csr_matrix | None = None

    @property
    def n_iter(self) -> int:
        return len(self.history) - 1


def _rotated_correlation_cost(rotation, gram_x, cross, y_norm):
    """``1 - corr(Xz R, Yz)`` from Gram blocks: ``cross = Xz^T Yz``, ``gram_x = Xz^T Xz``;
    ``rotation=None`` is the identity (no GEMM; the same values as with ``np.eye(n)``)."""
    if rotation is None:
        numerator = cross
        xr_norm = np.sqrt(np.maximum(np.diagonal(gram_x), 0.0))
    else:
        numerator = rotation.T @ cross
        xr_norm = np.sqrt(np.maximum(np.einsum("ij,ij->j", rotation, gram_x @ rotation), 0.0))
    denominator = np.outer(xr_norm, y_norm)
    if rotation is not None and xr_norm.min(initial=1.0) > 0 and y_norm.min(initial=1.0) > 0:
        corr = np.divide(numerator, denominator, out=numerator)  # a fresh product: in place
        return np.subtract(1.0, corr, out=corr)
    corr = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=corr, where=denominator > 0)
    return 1.0 - corr


def plan_weights(plan, n: int) -> sp.csr_matrix:
    """``W = n Q``: the row-stochastic form of the plan ``Q`` (n x m), sparse."""
    return sp.csr_matrix(plan * n)


#: :func:`polar_factor` tries the eigendecomposition path when the smallest eigenvalue of
#: ``M^T M`` is at least this fraction of the largest (condition number of M up to 1e6;
#: beyond it the eigenvalues carry no accurate digits and the checks below would fail)
POLAR_EIGH_MIN_RATIO = 1e-12
#: ... and keeps its result when the first-order estimate of its distance to the exact polar
#: factor (Frobenius norm; it includes the round-off of its own evaluation, and a bound on
#: the second-order term of the Newton-Schulz step) is below this
POLAR_TOLERANCE = 1e-9
#: ... and adds a Newton-Schulz step when ``max |R^T R - I|`` exceeds this
ORTHOGONALITY_TOLERANCE = 1e-14
#: ... which it takes only when ``||R^T R - I||_F`` is at most this: one step then leaves
#: at most ``3/4 g^2 + g^3/4 < 1e-14`` (``g`` this norm), orthogonal to round-off
NEWTON_SCHULZ_LIMIT = 1e-7


def polar_factor(matrix: np.ndarray) -> np.ndarray:
    """The orthogonal polar factor ``P = U V^T`` of a square ``matrix = M = U S V^T``,
    which maximises ``<R, M>`` over orthogonal R (orthogonal Procrustes).

    Fast path: one symmetric eigendecomposition ``M^T M = V diag(s^2) V^T`` (LAPACK's
    divide and conquer ``syevd``; at n = 384 on one thread about half the time of an SVD),
    ``B = M V diag(s)^-1`` (= U in exact arithmetic) and ``R = B V^T``.  It is checked a
    posteriori through ``C = B^T B``, ``G = C - I`` (both Gram matrices by ``syrk``):

    * ``R^T R = V C V^T``, so ``||R^T R - I|| = ||G||`` (V orthonormal to round-off); when
      ``max |G|`` exceeds round-off
      (``ORTHOGONALITY_TOLERANCE``; eigenvalue errors only move R's singular values, by
      about ``eps cond(M)^2``) one Newton-Schulz step in V's basis,
      ``B <- B (3 I - C) / 2``, takes them back to 1: it leaves
      ``R^T R - I = V (-3 G^2 / 4 + G^3 / 4) V^T``, below 1e-14 when
      ``||G||_F <= NEWTON_SCHULZ_LIMIT`` (beyond it, the SVD);
    * writing ``R = P exp(F)`` with F skew, ``Y = V^T R^T M V = q(C) diag(s)`` with
      ``q(C) = C`` (no step) or ``(3 I - C) C / 2 = I + G / 2 - G^2 / 2`` (one step), and
      ``skew(Y) = -(F' S + S F') / 2`` (``F' = V^T F V``) to first order, so
      ``F'_ij = -q_ij (s_j - s_i) / (s_i + s_j)`` element by element.  The estimate
      ``||F||_F`` is ``||G o D||_F`` (no step) or ``||G o D||_F / 2 + ||G||_F^2 / 2``
      (one step; the second term bounds the ``G^2`` part), with
      ``D_ij = (s_j - s_i) / (s_i + s_j)``, ``|D_ij| < 1``.  This catches eigenvectors made
      inaccurate by close eigenvalues.  (The previous bound divided every element by
      ``s_min`` and ignored the step's halving: on the benchmark's matrices it overstated the
      measured distance 3 to 9,000 times, and with its limit of cond 1e4 sent 10 of 144 to
      the SVD.)

    The result is kept when ``s_min^2 >= POLAR_EIGH_MIN_RATIO s_max^2`` and that estimate
    is below ``POLAR_TOLERANCE``; otherwise (ill-conditioned or singular M, e.g. a source
    layer wider than its target, or constant units) the factor comes from an SVD.  Measured
    (Frobenius) distance to the SVD's factor on the fast path: the estimate to a few per cent
    wherever it exceeds 1e-12; on the 144 Procrustes matrices of ``benchmarks/fit_time.py``
    (cond 10 to 2e5) one goes to the SVD (ten did with the previous check) and no entry of the
    others differs by more than 1e-11 (Frobenius: 5e-10).
    ``tests/test_rotation_speed_paths.py`` checks both paths against the SVD to 1e-10, on
    adversarial spectra too."""
    rotation = _polar_by_eigh(matrix)
    if rotation is None:
        u, _, vt = np.linalg.svd(matrix)
        rotation = u @ vt
    return rotation


def _polar_by_eigh(matrix: np.ndarray) -> np.ndarray | None:
    """:func:`polar_factor`'s fast path; None where its checks fail.  NumPy's BLAS and LAPACK
    only: SciPy ships a second OpenBLAS, and alternating between the two thread pools makes
    each wait for the other's spinning threads (measured: 2-3 times slower on two cores)."""
    gram = matrix.T @ matrix  # NumPy computes a product with its own transpose by syrk
    if not np.isfinite(np.diagonal(gram)).all():  # a non-finite entry of M shows on the diagonal
        return None
    lam, vectors = np.linalg.eigh(gram)  # LAPACK syevd
    if not (np.isfinite(lam).all() and lam[-1] > 0 and lam[0] >= POLAR_EIGH_MIN_RATIO * lam[-1]):
        return None
    s = np.sqrt(lam)
    basis = matrix @ vectors
    basis /= s
    deviation = basis.T @ basis  # C = B^T B (syrk)
    deviation[np.diag_indices_from(deviation)] -= 1.0  # G = C - I
    g_norm = float(np.sqrt(np.einsum("ij,ij->", deviation, deviation)))
    step = max(deviation.max(), -deviation.min()) > ORTHOGONALITY_TOLERANCE
    if step and g_norm > NEWTON_SCHULZ_LIMIT:
        return None
    # ||G o D||_F <= ||G||_F (|D_ij| < 1): the elementwise estimate only when that bound fails
    if (g_norm / 2 + g_norm * g_norm / 2 if step else g_norm) > POLAR_TOLERANCE:
        spread = np.subtract.outer(s, s)
        spread /= np.add.outer(s, s)  # -D_ij (zero on the diagonal)
        spread *= deviation
        skew = float(np.sqrt(np.einsum("ij,ij->", spread, spread)))  # ||G o D||_F
        if (skew / 2 + g_norm * g_norm / 2 if step else skew) > POLAR_TOLERANCE:
            return None
    if step:  # one Newton-Schulz step: B (3 I - C) / 2
        basis -= 0.5 * (basis @ deviation)
    return basis @ vectors.T


def _weighted_cross(weights, cross_t: np.ndarray) -> np.ndarray:
    """``(Xz^T Yz W^T)^T = W (Xz^T Yz)^T`` (n x n) from ``cross_t = (Xz^T Yz)^T``, C-ordered."""
    return np.asarray(weights @ cross_t)


def procrustes_step(weights, cross: np.ndarray) -> np.ndarray:
    """MOT+R's step (b), the orthogonal Procrustes rotation for fixed weights ``W = n Q``:
    the polar factor ``R = U V^T`` of ``Xz^T Yz W^T = U S V^T`` (:func:`polar_factor`);
    ``cross = Xz^T Yz`` (n x m)."""
    return polar_factor(_weighted_cross(weights, np.ascontiguousarray(cross.T)).T)


def rotation_from_plan(plan, cross: np.ndarray) -> np.ndarray:
    """The MOT+R rotation defined by ``plan`` (the :attr:`RotationAlignment.rotation_plan`
    of an alternation on the same z-scored data, ``cross = Xz^T Yz``): one Procrustes step,
    the identity when ``plan`` is None or empty.  Equals the alternation's rotation (the
    same computation on the same inputs)."""
    n = cross.shape[0]
    if plan is None or plan.nnz == 0:
        return np.eye(n)
    return procrustes_step(plan_weights(plan, n), cross)


def _reconstruction_norm(weights, yz: np.ndarray, y_squared: np.ndarray) -> float:
    """``||Yz W^T||_F^2`` for sparse ``W`` (n x m): a row of W with one non-zero ``w`` at
    column ``j`` adds ``w^2 ||y_j||^2`` (``y_squared``); only the other rows are
    reconstructed from the stimuli."""
    counts = np.diff(weights.indptr)
    single = counts == 1
    total = 0.0
    if single.any():
        starts = weights.indptr[:-1][single]
        total += float(np.sum(weights.data[starts] ** 2 * y_squared[weights.indices[starts]]))
    multi = np.flatnonzero(counts > 1)
    if multi.size:
        total += float(np.sum((yz @ weights[multi].T) ** 2))
    return total


def rotation_alignment(
    xz: np.ndarray,
    yz: np.ndarray,
    *,
    gram_x: np.ndarray | None = None,
    alternation: Alternation | None = None,
) -> RotationAlignment:
    """MOT+R inner step for one layer pair; see the module docstring for the objective.
    Its batched torch twin is :func:`.rotation_torch.rotation_batch`; both follow the same
    steps, acceptance rule and stopping rule (``tests/test_inner_contract.py``)."""
    alternation = alternation or Alternation()
    max_iter, tol = alternation.max_iter, alternation.tol
    t, n = xz.shape
    cross = xz.T @ yz
    cross_t = np.ascontiguousarray(cross.T)
    if gram_x is None:
        gram_x = xz.T @ xz
    y_squared = np.einsum("ij,ij->j", yz, yz)
    y_norm = np.sqrt(y_squared)
    total_x = float(np.trace(gram_x))
    scale = 1.0 / (t * n)

    def objective(rotation, weights, weighted):
        """f(R, W) with ``weighted = W (Xz^T Yz)^T``; ``rotation=None`` is the identity."""
        fit_term = float(np.trace(weighted)) if rotation is None else float(np.sum(rotation * weighted.T))
        return (total_x - 2.0 * fit_term + _reconstruction_norm(weights, yz, y_squared)) * scale

    def plan_for(rotation):
        plan, _ = exact_ot(_rotated_correlation_cost(rotation, gram_x, cross, y_norm))
        return plan, plan_weights(plan, n)

    rotation, rotation_plan = None, None  # None: the identity
    plan, weights = plan_for(rotation)
    weighted = _weighted_cross(weights, cross_t)
    value = objective(rotation, weights, weighted)
    history = [value]
    for _ in range(max_iter):
        new_rotation = polar_factor(weighted.T)  # = procrustes_step(weights, cross)
        new_value = objective(new_rotation, weights, weighted)
        if new_value > value:  # cannot happen for an exact Procrustes step, but be safe
            break
        rotation, rotation_plan = new_rotation, plan
        new_plan, new_weights = plan_for(rotation)
        new_weighted = _weighted_cross(new_weights, cross_t)
        plan_value = objective(rotation, new_weights, new_weighted)
        changed = plan_value <= new_value and (new_weights != weights).nnz > 0
        if plan_value <= new_value:
            plan, weights, weighted, new_value = new_plan, new_weights, new_weighted, plan_value
        improvement = value - new_value
        value = new_value
        history.append(value)
        if not changed or improvement <= tol * max(1.0, abs(value)):
            break
    if rotation is None:
        rotation = np.eye(n)
    return RotationAlignment(cost=value, plan=plan, rotation=rotation, history=history, rotation_plan=rotation_plan)
