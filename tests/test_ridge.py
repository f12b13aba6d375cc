"""motalign.ridge.SharedRidgeLOO: RidgeCV's numbers with one decomposition per design matrix."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import RidgeCV

from motalign.baselines import DEFAULT_ALPHAS
from motalign.ridge import SharedRidgeLOO


def _data(seed, n_stimuli, n_features, n_targets):
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n_stimuli, n_features))
    k = min(n_features, n_targets)
    noise = rng.uniform(0.1, 3) * rng.standard_normal((n_stimuli, n_targets))
    X = Y[:, :k] @ rng.standard_normal((k, n_targets)) + noise
    return X, Y


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_stimuli=st.integers(4, 60),
    n_features=st.integers(1, 60),
    n_targets=st.integers(1, 8),
)
def test_equals_ridgecv_in_both_regimes(seed, n_stimuli, n_features, n_targets):
    """Gram eigendecomposition (T <= p) and thin SVD (T > p) alike: RidgeCV's penalty, LOO
    score and coefficients (fit_intercept=False, default scoring)."""
    X, Y = _data(seed, n_stimuli, n_features, n_targets)
    reference = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=False).fit(Y, X)
    fit = SharedRidgeLOO(Y, DEFAULT_ALPHAS).fit(X)
    assert fit.alpha == pytest.approx(reference.alpha_) or abs(fit.score - reference.best_score_) < 1e-9 * abs(
        reference.best_score_
    )  # a tie between penalties may be broken by round-off
    assert fit.score == pytest.approx(reference.best_score_, rel=1e-9, abs=1e-12)
    if fit.alpha == reference.alpha_:
        np.testing.assert_allclose(fit.coef, np.atleast_2d(reference.coef_), rtol=1e-7, atol=1e-9)


def test_one_decomposition_serves_every_target():
    X1, Y = _data(0, 30, 50, 4)
    X2 = np.random.default_rng(1).standard_normal((30, 7))
    ridge = SharedRidgeLOO(Y, (0.1, 10.0, 1000.0))
    assert ridge.mode == "gram"
    for X in (X1, X2):
        reference = RidgeCV(alphas=(0.1, 10.0, 1000.0), fit_intercept=False).fit(Y, X)
        fit = ridge.fit(X)
        assert fit.alpha == reference.alpha_ and fit.coef.shape == (X.shape[1], 50)
    assert SharedRidgeLOO(Y[:, :10], (1.0,)).mode == "svd"


@pytest.mark.parametrize("n_stimuli, n_features", [(30, 50), (60, 12)])  # Gram, SVD
def test_dual_form_is_the_same_map(n_stimuli, n_features):
    """fit(X, return_dual=True): same penalty and score, ``coef = dual^T Y``, and
    ``Y_new @ Y^T @ dual`` predicts as RidgeCV does; no n x p weights are formed."""
    X, Y = _data(5, n_stimuli, n_features, 9)
    ridge = SharedRidgeLOO(Y, DEFAULT_ALPHAS)
    primal, dual = ridge.fit(X), ridge.fit(X, return_dual=True)
    assert dual.coef is None and dual.dual.shape == (n_stimuli, 9) and primal.dual is None
    assert (dual.alpha, dual.score) == (primal.alpha, primal.score)
    np.testing.assert_allclose(dual.dual.T @ Y, primal.coef, rtol=1e-12, atol=1e-12)
    reference = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=False).fit(Y, X)
    Y_new = np.random.default_rng(6).standard_normal((7, n_features))
    np.testing.assert_allclose(Y_new @ Y.T @ dual.dual, reference.predict(Y_new), rtol=1e-8, atol=1e-10)


def test_the_loo_error_is_brute_force_leave_one_out():
    X, Y = _data(3, 12, 5, 2)
    alpha = 2.0
    fit = SharedRidgeLOO(Y, (alpha,)).fit(X)
    errors = []
    for i in range(12):
        keep = np.arange(12) != i
        w = np.linalg.solve(Y[keep].T @ Y[keep] + alpha * np.eye(5), Y[keep].T @ X[keep])
        errors.append(X[i] - Y[i] @ w)
    assert fit.score == pytest.approx(-np.mean(np.square(errors)), rel=1e-10)


@pytest.mark.parametrize(
    "Y, alphas, match",
    [(np.zeros((0, 3)), (1.0,), "non-empty"), (np.ones((4, 3)), (0.0,), "positive"), (np.ones((4, 3)), (), "positive")],
)
def test_bad_input_is_named(Y, alphas, match):
    with pytest.raises(ValueError, match=match):
        SharedRidgeLOO(Y, alphas)
