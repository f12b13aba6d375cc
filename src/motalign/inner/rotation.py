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
``f`` decreases by less than ``tol`` (relative) or after ``max_iter`` rounds.  The recorded
objective history is therefore non-increasing.

Everything after the first two GEMMs works on n x n and n x m Gram blocks, so one
iteration costs O(n^3 + n m) instead of O(T n m).

The final rotation is the Procrustes step (b) of the plan that was current when the last
accepted step ran (its *rotation-defining plan*, which need not be the final plan: a
later Q update may still have been kept), or the identity when no step was accepted.
:func:`rotation_from_plan` rebuilds it from that sparse plan with one GEMM and one n x n
SVD, by the same :func:`procrustes_step` that the alternation uses, so the workflow stores
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
    """``1 - corr(Xz R, Yz)`` from Gram blocks: ``cross = Xz^T Yz``, ``gram_x = Xz^T Xz``."""
    numerator = rotation.T @ cross
    xr_norm = np.sqrt(np.maximum(np.einsum("ij,ij->j", rotation, gram_x @ rotation), 0.0))
    denominator = np.outer(xr_norm, y_norm)
    corr = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=corr, where=denominator > 0)
    return 1.0 - corr


def plan_weights(plan, n: int) -> sp.csr_matrix:
    """``W = n Q``: the row-stochastic form of the plan ``Q`` (n x m), sparse."""
    return sp.csr_matrix(plan * n)


def procrustes_step(weights, cross: np.ndarray) -> np.ndarray:
    """MOT+R's step (b), the orthogonal Procrustes rotation for fixed weights ``W = n Q``:
    ``R = U V^T`` with ``U S V^T = svd(Xz^T Yz W^T)``; ``cross = Xz^T Yz`` (n x m)."""
    u, _, vt = np.linalg.svd((weights @ cross.T).T)
    return u @ vt


def rotation_from_plan(plan, cross: np.ndarray) -> np.ndarray:
    """The MOT+R rotation defined by ``plan`` (the :attr:`RotationAlignment.rotation_plan`
    of an alternation on the same z-scored data, ``cross = Xz^T Yz``): one Procrustes step,
    the identity when ``plan`` is None or empty.  Equals the alternation's rotation up to
    round-off."""
    n = cross.shape[0]
    if plan is None or plan.nnz == 0:
        return np.eye(n)
    return procrustes_step(plan_weights(plan, n), cross)


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
    if gram_x is None:
        gram_x = xz.T @ xz
    y_norm = np.sqrt(np.einsum("ij,ij->j", yz, yz))
    total_x = float(np.trace(gram_x))
    scale = 1.0 / (t * n)

    def objective(rotation, weights):
        reconstruction = weights @ yz.T  # (n x T) = (Yz W^T)^T, W sparse
        fit_term = float(np.sum(rotation * (weights @ cross.T).T))
        return (total_x - 2.0 * fit_term + float(np.sum(reconstruction**2))) * scale

    def plan_for(rotation):
        plan, _ = exact_ot(_rotated_correlation_cost(rotation, gram_x, cross, y_norm))
        return plan

    rotation, rotation_plan = np.eye(n), None
    plan = plan_for(rotation)
    weights = plan_weights(plan, n)
    value = objective(rotation, weights)
    history = [value]
    for _ in range(max_iter):
        new_rotation = procrustes_step(weights, cross)
        new_value = objective(new_rotation, weights)
        if new_value > value:  # cannot happen for an exact Procrustes step, but be safe
            break
        rotation, rotation_plan = new_rotation, plan
        new_plan = plan_for(rotation)
        new_weights = plan_weights(new_plan, n)
        plan_value = objective(rotation, new_weights)
        if plan_value <= new_value:
            plan, weights, new_value = new_plan, new_weights, plan_value
        improvement = value - new_value
        value = new_value
        history.append(value)
        if improvement <= tol * max(1.0, abs(value)):
            break
    return RotationAlignment(cost=value, plan=plan, rotation=rotation, history=history, rotation_plan=rotation_plan)
