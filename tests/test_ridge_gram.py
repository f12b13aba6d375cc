"""motalign.ridge.loo_score_table: RidgeCV's leave-one-out scores from Gram matrices, and
the pairwise linear predictivity path that uses it (paper, Appendix H)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import RidgeCV

import motalign.baselines as baselines
from motalign.baselines import DEFAULT_ALPHAS, PairwiseLinearPredictivity
from motalign.ridge import loo_score_table


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_stimuli=st.integers(4, 50), n_features=st.integers(1, 60),
       widths=st.lists(st.integers(1, 9), min_size=1, max_size=3))
def test_scores_equal_ridgecv_at_every_penalty(seed, n_stimuli, n_features, widths):
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n_stimuli, n_features))
    Xs = [Y[:, :1] @ rng.standard_normal((1, w)) + rng.uniform(0.1, 2) * rng.standard_normal((n_stimuli, w))
          for w in widths]
    alphas = DEFAULT_ALPHAS[::3]
    table = loo_score_table(Y, alphas, [X @ X.T for X in Xs], widths)
    for l, X in enumerate(Xs):
        for a, alpha in enumerate(alphas):
            reference = RidgeCV(alphas=[alpha], fit_intercept=False).fit(Y, X).best_score_
            assert table[a, l] == pytest.approx(reference, rel=1e-7, abs=1e-10)


def _networks(seed, t=120):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((t, 6))
    X = [z @ rng.standard_normal((6, w)) + rng.standard_normal((t, w)) for w in (150, 200, 90)]
    Y = [z @ rng.standard_normal((6, w)) + 2 * rng.standard_normal((t, w)) for w in (160, 220, 300, 80)]
    return X, Y


def test_gram_path_selects_and_fits_as_the_direct_path(monkeypatch):
    X, Y = _networks(0)
    assert baselines._gram_scores_cheaper([x - x.mean(0) for x in X], Y, len(DEFAULT_ALPHAS))
    gram = PairwiseLinearPredictivity().fit(X, Y)
    monkeypatch.setattr(baselines, "_gram_scores_cheaper", lambda *args: False)
    direct = PairwiseLinearPredictivity().fit(X, Y)
    np.testing.assert_allclose(gram.cv_score_, direct.cv_score_, rtol=1e-7)
    np.testing.assert_array_equal(gram.alpha_, direct.alpha_)
    np.testing.assert_array_equal(gram.best_match_, direct.best_match_)
    for a, b in zip(gram.coef_, direct.coef_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    held_x, held_y = _networks(1, t=40)
    assert gram.score(held_x, held_y) == pytest.approx(direct.score(held_x, held_y), rel=1e-9)


def test_the_direct_path_is_kept_when_stimuli_outnumber_units():
    rng = np.random.default_rng(2)
    X = [rng.standard_normal((400, 8))]
    Y = [rng.standard_normal((400, 6)), rng.standard_normal((400, 5))]
    assert not baselines._gram_scores_cheaper(X, Y, len(DEFAULT_ALPHAS))
