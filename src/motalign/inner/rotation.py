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

    def procrustes(weights):
        u, _, vt = np.linalg.svd((weights @ cross.T).T)
        return u @ vt

    def plan_for(rotation):
        plan, _ = exact_ot(_rotated_correlation_cost(rotation, gram_x, cross, y_norm))
        return plan

    rotation = np.eye(n)
    plan = plan_for(rotation)
    weights = sp.csr_matrix(plan * n)
    value = objective(rotation, weights)
    history = [value]
    for _ in range(max_iter):
        new_rotation = procrustes(weights)
        new_value = objective(new_rotation, weights)
        if new_value > value:  # cannot happen for an exact Procrustes step, but be safe
            break
        rotation = new_rotation
        new_plan = plan_for(rotation)
        new_weights = sp.csr_matrix(new_plan * n)
        plan_value = objective(rotation, new_weights)
        if plan_value <= new_value:
            plan, weights, new_value = new_plan, new_weights, plan_value
        improvement = value - new_value
        value = new_value
        history.append(value)
        if improvement <= tol * max(1.0, abs(value)):
            break
    return RotationAlignment(cost=value, plan=plan, rotation=rotation, history=history)
