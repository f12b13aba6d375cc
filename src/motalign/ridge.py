"""Ridge regression with efficient leave-one-out selection of the penalty, for many targets
against one design matrix (paper, Appendix H: pairwise linear predictivity).

The penalties are absolute, in units of the squared entries of ``Y``: the ridge is meant for
z-scored data (the baselines pass it z-scores, which are of order 1 whatever the scale of
the activations, :mod:`motalign.preprocessing`).  Data whose squares overflow float64 raise a
``ValueError`` rather than selecting a penalty on infinite errors.

:class:`SharedRidgeLOO` decomposes the design matrix ``Y`` (``T x p``, no intercept) once and
then fits any number of target matrices ``X`` over a penalty grid, each in a few matrix
products per penalty.  The numbers are those of
:class:`sklearn.linear_model.RidgeCV` (``fit_intercept=False``, default scoring, one penalty
shared by all columns of a target): the same leave-one-out errors (Golub, Heath & Wahba's
closed form), the same score (minus the mean squared LOO error over stimuli and columns),
the same choice of penalty (the first of the grid with the best score) and the same
coefficients, up to round-off.  What differs is the cost: RidgeCV decomposes ``Y`` for every
fit, so L x M layer pairs cost L x M decompositions; here they cost M.

Decomposition, as RidgeCV picks it:

* ``T <= p`` (more units than stimuli): the eigendecomposition of the Gram matrix
  ``Y Y^T = Q diag(lam) Q^T``; then ``G = (Y Y^T + a I)^-1 = Q diag(1/(lam + a)) Q^T``;
* ``T > p``: the thin SVD ``Y = U diag(s) V^T``; then
  ``G = U diag(1/(s^2 + a) - 1/a) U^T + I / a``.

The dual coefficients are ``c = G X``, the LOO residuals ``c / diag(G)`` and the primal
coefficients ``c^T Y`` (``n x p``, as ``RidgeCV.coef_``).  ``fit(X, return_dual=True)``
returns ``c`` (``T x n``) instead and never forms the primal weights: predictions are
``Y_new @ Y^T @ c``, in memory ``O(T (n + p))`` rather than ``n p`` (the global linear
predictivity baseline, where n and p are whole networks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SharedRidgeLOO", "RidgeFit"]


@dataclass(frozen=True)
class RidgeFit:
    """The selected penalty of one target, its LOO score and coefficients (primal, or dual
    with ``SharedRidgeLOO.fit(X, return_dual=True)``)."""

    alpha: float
    score: float  #: minus the mean squared leave-one-out error (higher is better)
    coef: np.ndarray | None  #: (n_targets, p): ``X_hat = Y @ coef.T``; None in dual form
    dual: np.ndarray | None = None  #: (T, n_targets): ``X_hat = Y_new @ Y.T @ dual``; None in primal form


class SharedRidgeLOO:
    """One decomposition of the design matrix ``Y`` (``T x p``), shared by every target.

    Parameters
    ----------
    Y : array, shape (T, p)
        The design matrix (here: a target network's z-scored layer); no intercept is fitted.
    alphas : sequence of positive float
        The penalty grid, tried in order.
    """

    def __init__(self, Y, alphas):
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2 or 0 in Y.shape:
            raise ValueError(f"Y must be a non-empty 2-D array, got shape {Y.shape}")
        alphas = [float(a) for a in np.atleast_1d(np.asarray(alphas, dtype=float))]
        if not alphas or not all(np.isfinite(a) and a > 0 for a in alphas):
            raise ValueError(f"alphas must be positive and finite, got {alphas}")
        _check_squares(Y, "SharedRidgeLOO")
        self.Y, self.alphas = Y, alphas
        n_samples, n_features = Y.shape
        if n_samples <= n_features:
            self.mode = "gram"
            eigvals, self._basis = np.linalg.eigh(Y @ Y.T)
            self._spectrum = eigvals
        else:
            self.mode = "svd"
            self._basis, singular, _ = np.linalg.svd(Y, full_matrices=False)
            self._spectrum = singular**2
        self._basis_sq = self._basis**2

    def _solve(self, alpha, X, projected):
        if self.mode == "gram":
            w = 1.0 / (self._spectrum + alpha)
            dual = self._basis @ (w[:, None] * projected)
            g_diag = self._basis_sq @ w
        else:
            w = 1.0 / (self._spectrum + alpha) - 1.0 / alpha
            dual = self._basis @ (w[:, None] * projected) + X / alpha
            g_diag = self._basis_sq @ w + 1.0 / alpha
        return dual, g_diag

    def fit(self, X, *, return_dual: bool = False) -> RidgeFit:
        """The ridge map from ``Y`` to ``X`` (``T x n``) at the penalty with the best LOO score.

        With ``return_dual`` the map is returned as its dual coefficients ``c`` (``T x n``,
        ``RidgeFit.dual``; ``coef = c^T Y`` is not formed): same penalty and score.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[0] != self.Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows, Y has {self.Y.shape[0]}")
        projected = self._basis.T @ X
        best = None
        for alpha in self.alphas:
            dual, g_diag = self._solve(alpha, X, projected)
            score = -float(np.mean((dual / g_diag[:, None]) ** 2))
            if best is None or score > best[1]:
                best = (alpha, score, dual)
        alpha, score, dual = best
        if not np.isfinite(score):
            raise ValueError(
                f"SharedRidgeLOO.fit: the leave-one-out errors overflow float64 (largest |X| = "
                f"{np.abs(X).max():.3g}); z-score X (motalign.preprocessing.LayerStats) first"
            )
        if return_dual:
            return RidgeFit(alpha, score, None, dual)
        return RidgeFit(alpha, score, dual.T @ self.Y)


def _check_squares(Y, who: str) -> None:
    """The sum of squares of ``Y`` (which bounds every eigenvalue of ``Y Y^T``) must be
    finite: the penalties are in units of ``Y``'s squared entries, so the ridge is meant for
    z-scored data (as the baselines pass it); raw activations of 1e155 and more overflow."""
    if not np.isfinite(np.einsum("ij,ij->", Y, Y)):
        raise ValueError(
            f"{who}: the squares of Y overflow float64 (largest |Y| = "
            f"{np.abs(Y).max():.3g}); z-score Y (motalign.preprocessing.LayerStats) first: "
            "the penalties are in units of its squared entries"
        )


def loo_score_table(Y, alphas, grams, widths) -> np.ndarray:
    """Leave-one-out scores of the ridge maps from ``Y`` (``T x p``) to many targets at
    every penalty, from the targets' ``T x T`` Gram matrices ``K_l = X_l X_l^T`` only.

    The LOO residuals of target ``X_l`` are ``R = diag(1/g) G X_l`` with
    ``G = (Y Y^T + a I)^-1`` and ``g = diag(G)`` (as in :class:`SharedRidgeLOO`), so
    ``||R||_F^2 = trace(M K_l)`` with ``M = G diag(1/g^2) G``: one ``T x T`` matrix per
    penalty, shared by every target, and a dot product of two ``T x T`` matrices per target
    and penalty.  Per target this costs ``T^2`` per penalty instead of ``T^2 n``, which is
    what makes the L x M x penalties pairwise fits of Appendix H cheap when ``T`` is a few
    thousand.  Returns ``scores[a, l] = -||R||^2 / (T n_l)`` (RidgeCV's score).
    """
    Y = np.asarray(Y, dtype=np.float64)
    t = Y.shape[0]
    _check_squares(Y, "loo_score_table")
    eigvals, basis = np.linalg.eigh(Y @ Y.T)
    eigvals = np.maximum(eigvals, 0.0)
    basis_sq = basis**2
    scores = np.empty((len(alphas), len(grams)))
    for a, alpha in enumerate(alphas):
        w = 1.0 / (eigvals + alpha)
        g = basis_sq @ w
        G = (basis * w) @ basis.T
        M = (G / g**2) @ G  # G diag(1/g^2) G: G is symmetric
        for l, (gram, width) in enumerate(zip(grams, widths)):
            scores[a, l] = -float(np.vdot(M, gram)) / (t * width)
    return scores
