"""Known-answer tests of the Appendix F / H / I baselines (motalign.baselines)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge

from motalign.baselines import (
    DEFAULT_ALPHAS,
    GlobalLinearPredictivity,
    GlobalOT,
    PairwiseLinearPredictivity,
    PairwiseRSA,
)
from motalign.preprocessing import LayerStats


def split_layers(flat, widths):
    return np.split(flat, np.cumsum(widths)[:-1], axis=1)


def fit_heldout(layers, n_fit):
    return [a[:n_fit] for a in layers], [a[n_fit:] for a in layers]


def planted_pairs(seed, n_stimuli=160, noise=0.3):
    """Three source layers with independent latent factors; four target layers, three of
    them noisy linear mixtures of one source layer's latents (shuffled order), one pure
    noise.  The planted correspondence is source l -> target EXPECTED[l]."""
    rng = np.random.default_rng(seed)
    latents = [rng.standard_normal((n_stimuli, 4)) for _ in range(3)]
    X = [
        z @ rng.standard_normal((4, w)) + 0.1 * rng.standard_normal((n_stimuli, w)) for z, w in zip(latents, (6, 8, 5))
    ]
    # target 0 <- source 2, target 1 <- noise, target 2 <- source 0, target 3 <- source 1
    sources = {0: 2, 2: 0, 3: 1}
    Y = []
    for m, w in enumerate((7, 9, 6, 10)):
        if m in sources:
            signal = latents[sources[m]] @ rng.standard_normal((4, w))
        else:
            signal = 0.0
        Y.append(signal + noise * rng.standard_normal((n_stimuli, w)))
    return X, Y


EXPECTED = np.array([2, 3, 0])


# --------------------------------------------------------------------------- GlobalOT


def test_global_ot_recovers_permuted_units():
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((200, w)) for w in (5, 7, 4)]
    perm = rng.permutation(16)
    Y = split_layers(np.hstack(X)[:, perm] * 3.0 + 1.0, (6, 10))
    (Xf, Xh), (Yf, Yh) = fit_heldout(X, 150), fit_heldout(Y, 150)
    est = GlobalOT().fit(Xf, Yf)
    assert sp.issparse(est.plan_) and est.plan_.shape == (16, 16)
    assert est.plan_.nnz == 16
    # source unit perm[j] is sent to target unit j
    dense = est.plan_.toarray()
    assert np.allclose(dense[perm, np.arange(16)], 1 / 16)
    assert est.cost_ == pytest.approx(0.0, abs=1e-12)
    assert est.score(Xh, Yh) >= 0.999
    pred = est.predict(Yh)
    assert [p.shape for p in pred] == [(50, 5), (50, 7), (50, 4)]
    truth = [s.transform(a) for s, a in zip(est.x_stats_, Xh)]
    for p, t in zip(pred, truth):
        np.testing.assert_allclose(p, t, atol=1e-10)
    np.testing.assert_allclose(est.layer_scores(Xh, Yh), 1.0)


def test_global_ot_unequal_sizes_splits_mass_over_duplicates():
    rng = np.random.default_rng(1)
    X = [rng.standard_normal((120, w)) for w in (3, 5)]
    flat = np.hstack(X)
    Y = [flat, flat[:, ::-1] * 2.0]  # every source unit appears twice in Y: n_y = 2 n_x
    est = GlobalOT().fit(X, Y)
    assert est.plan_.shape == (8, 16)
    np.testing.assert_allclose(np.asarray(est.plan_.sum(axis=1)).ravel(), 1 / 8)
    np.testing.assert_allclose(np.asarray(est.plan_.sum(axis=0)).ravel(), 1 / 16)
    assert est.cost_ == pytest.approx(0.0, abs=1e-12)
    assert est.score(X, Y) == pytest.approx(1.0)


def test_global_ot_constant_unit_is_counted_and_scored_zero():
    rng = np.random.default_rng(2)
    X = [rng.standard_normal((100, 4)), rng.standard_normal((100, 3))]
    X[1][:, 0] = 5.0  # constant source unit
    Y = [np.hstack(X) + 0.01 * rng.standard_normal((100, 7))]
    Y[0][:, 4] = 5.0  # the matching target unit, constant too
    est = GlobalOT().fit(X[:], Y)
    np.testing.assert_array_equal(est.n_constant_units_["X"], [0, 1])
    np.testing.assert_array_equal(est.n_constant_units_["Y"], [1])
    r, n_undefined = est.unit_scores(X, Y)
    assert r[1][0] == 0.0
    np.testing.assert_array_equal(n_undefined, [0, 1])
    assert np.all(r[0] > 0.99) and np.all(r[1][1:] > 0.99)
    assert est.score(X, Y) == pytest.approx(np.concatenate(r).mean())


# ------------------------------------------------------------- GlobalLinearPredictivity


def test_global_linear_predictivity_recovers_noisy_linear_map():
    rng = np.random.default_rng(3)
    Yflat = rng.standard_normal((300, 30))
    Xflat = Yflat @ rng.standard_normal((30, 12)) + 0.5 * rng.standard_normal((300, 12))
    X, Y = split_layers(Xflat, (4, 4, 4)), split_layers(Yflat, (10, 20))
    (Xf, Xh), (Yf, Yh) = fit_heldout(X, 240), fit_heldout(Y, 240)
    est = GlobalLinearPredictivity().fit(Xf, Yf)
    assert est.alpha_ in DEFAULT_ALPHAS
    assert est.coef_.shape == (12, 30)  # a property: the weights are kept in dual form
    assert est.dual_coef_.shape == (240, 12) and est.yz_fit_.shape == (240, 30)
    assert est.score(Xh, Yh) > 0.95
    assert est.layer_scores(Xh, Yh).shape == (3,)

    # known answer: the same ridge fitted directly on the z-scored fit data
    def z(layers, fit):
        return np.hstack([LayerStats.fit(b).transform(a) for a, b in zip(layers, fit)])

    ridge = Ridge(alpha=est.alpha_, fit_intercept=False).fit(z(Yf, Yf), z(Xf, Xf))
    np.testing.assert_allclose(np.hstack(est.predict(Yh)), ridge.predict(z(Yh, Yf)), atol=1e-8)


def test_global_linear_predictivity_penalty_follows_noise():
    rng = np.random.default_rng(4)
    Y = [rng.standard_normal((200, 20))]
    clean = [Y[0] @ rng.standard_normal((20, 6)) + 0.01 * rng.standard_normal((200, 6))]
    noisy = [rng.standard_normal((200, 6))]  # unrelated to Y: strongest penalty wins
    grid = (1e-3, 1e-1, 1e1, 1e3, 1e5)
    assert GlobalLinearPredictivity(alphas=grid).fit(clean, Y).alpha_ <= 1e-1
    assert GlobalLinearPredictivity(alphas=grid).fit(noisy, Y).alpha_ == 1e5


# ----------------------------------------------------------- PairwiseLinearPredictivity


def test_pairwise_linear_predictivity_recovers_planted_correspondence():
    X, Y = planted_pairs(5)
    (Xf, Xh), (Yf, Yh) = fit_heldout(X, 120), fit_heldout(Y, 120)
    est = PairwiseLinearPredictivity().fit(Xf, Yf)
    np.testing.assert_array_equal(est.best_match_, EXPECTED)
    assert est.cv_score_.shape == est.alpha_.shape == (3, 4)
    assert set(est.alpha_.ravel()) <= set(DEFAULT_ALPHAS)
    np.testing.assert_allclose(est.best_match_map_.sum(axis=1), 1 / 3)
    assert np.count_nonzero(est.best_match_map_) == 3
    assert est.best_match_map_[np.arange(3), EXPECTED].tolist() == [1 / 3] * 3
    assert [w.shape for w in est.coef_] == [(6, 6), (8, 10), (5, 7)]
    layer = est.layer_scores(Xh, Yh)
    assert np.all(layer > 0.8)
    assert est.score(Xh, Yh) == pytest.approx(layer.mean())
    assert [p.shape for p in est.predict(Yh)] == [(40, 6), (40, 8), (40, 5)]


def test_pairwise_cv_score_is_brute_force_leave_one_out_on_fit_data():
    X, Y = planted_pairs(6, n_stimuli=50)
    est = PairwiseLinearPredictivity(alphas=(0.1, 10.0, 1000.0)).fit(X, Y)
    xz = [LayerStats.fit(a).transform(a) for a in X]
    yz = [LayerStats.fit(a).transform(a) for a in Y]
    for l, m in [(0, 2), (1, 1)]:
        alpha = est.alpha_[l, m]
        errors = []
        for i in range(50):
            keep = np.arange(50) != i
            ridge = Ridge(alpha=alpha, fit_intercept=False).fit(yz[m][keep], xz[l][keep])
            errors.append((ridge.predict(yz[m][i : i + 1]) - xz[l][i]) ** 2)
        assert est.cv_score_[l, m] == pytest.approx(-np.mean(errors), rel=1e-8)
    # the kept model of each row is the ridge of its selected pair
    ridge = Ridge(alpha=est.alpha_[0, 2], fit_intercept=False).fit(yz[2], xz[0])
    np.testing.assert_allclose(est.coef_[0], ridge.coef_, atol=1e-10)


def test_pairwise_selection_ignores_heldout_data():
    X, Y = planted_pairs(7, n_stimuli=150)
    Xf, Xh = fit_heldout(X, 120)
    Yf, _ = fit_heldout(Y, 120)
    est = PairwiseLinearPredictivity().fit(Xf, Yf)
    before = (est.best_match_.copy(), est.cv_score_.copy())
    # adversarial held-out targets: the roles of the target layers are scrambled
    rng = np.random.default_rng(0)
    Yh_bad = [rng.standard_normal((30, a.shape[1])) for a in Yf]
    Yh_bad[1] = Xh[0] @ rng.standard_normal((6, Yf[1].shape[1]))
    est.score(Xh, Yh_bad)
    est.layer_scores(Xh, Yh_bad)
    np.testing.assert_array_equal(est.best_match_, before[0])
    np.testing.assert_array_equal(est.cv_score_, before[1])
    np.testing.assert_array_equal(est.best_match_, EXPECTED)


# ------------------------------------------------------------------------ PairwiseRSA


def test_rsa_recovers_planted_correspondence_and_self_similarity():
    X, Y = planted_pairs(8, n_stimuli=80, noise=0.5)
    est = PairwiseRSA().fit(X, Y)
    np.testing.assert_array_equal(est.best_match_, EXPECTED)
    np.testing.assert_allclose(est.best_match_map_.sum(axis=1), 1 / 3)
    assert est.best_match_map_[np.arange(3), EXPECTED].tolist() == [1 / 3] * 3
    self_sim = PairwiseRSA().fit(X, X).similarity_
    np.testing.assert_allclose(np.diag(self_sim), 1.0, atol=1e-12)
    assert np.all(self_sim[~np.eye(3, dtype=bool)] < 0.9)


@pytest.mark.parametrize("method, corr", [("spearman", spearmanr), ("pearson", pearsonr)])
def test_rsa_similarity_matches_scipy(method, corr):
    X, Y = planted_pairs(9, n_stimuli=40)
    est = PairwiseRSA(method=method).fit(X, Y)
    for l in range(3):
        for m in range(4):
            expected = corr(pdist(X[l], "correlation"), pdist(Y[m], "correlation"))[0]
            assert est.similarity_[l, m] == pytest.approx(expected, abs=1e-10)


def test_rsa_constant_stimulus_pattern_is_finite_and_counted():
    X, Y = planted_pairs(10, n_stimuli=40)
    X[0][3] = 2.0  # stimulus 3 evokes the same response in every unit of source layer 0
    est = PairwiseRSA().fit(X, Y)
    assert np.all(np.isfinite(est.similarity_))
    np.testing.assert_array_equal(est.n_constant_stimuli_["X"], [1, 0, 0])
    np.testing.assert_array_equal(est.n_constant_stimuli_["Y"], [0, 0, 0, 0])
    # a layer whose every pattern is constant has a constant RDM: similarity 0
    X[1][:] = np.arange(40.0)[:, None]
    assert np.all(PairwiseRSA().fit(X, Y).similarity_[1] == 0.0)


def test_rsa_subsampling_is_seeded_and_uses_the_subset():
    X, Y = planted_pairs(11, n_stimuli=120)
    a = PairwiseRSA(max_stimuli=50, random_state=3).fit(X, Y)
    b = PairwiseRSA(max_stimuli=50, random_state=3).fit(X, Y)
    assert len(a.stimuli_) == 50 and len(np.unique(a.stimuli_)) == 50
    np.testing.assert_array_equal(a.stimuli_, b.stimuli_)
    np.testing.assert_array_equal(a.similarity_, b.similarity_)
    subset = PairwiseRSA().fit([x[a.stimuli_] for x in X], [y[a.stimuli_] for y in Y])
    np.testing.assert_allclose(a.similarity_, subset.similarity_, atol=1e-12)
    assert len(PairwiseRSA(max_stimuli=500).fit(X, Y).stimuli_) == 120


# -------------------------------------------------------------- validation, sklearn API


ALL = [GlobalOT(), GlobalLinearPredictivity(), PairwiseLinearPredictivity(), PairwiseRSA()]
RECONSTRUCTING = ALL[:3]


@pytest.mark.parametrize("est", ALL, ids=lambda e: type(e).__name__)
def test_bad_fit_input_names_the_layer(est):
    X, Y = planted_pairs(12, n_stimuli=30)
    Y[1] = Y[1].copy()
    Y[1][4, 2] = np.nan
    with pytest.raises(ValueError, match=r"target network Y, layer 1 \('layer_1'\).*1 non-finite"):
        clone(est).fit(X, Y)
    X_named = {"V1": X[0], "V2": X[1][:-1], "V4": X[2]}
    with pytest.raises(ValueError, match=r"source network X.*'V2'.*\(29, 8\)"):
        clone(est).fit(X_named, planted_pairs(12, n_stimuli=30)[1])
    with pytest.raises(ValueError, match=r"must share their stimuli.*T = 29 vs 30"):
        clone(est).fit([x[:-1] for x in X], planted_pairs(12, n_stimuli=30)[1])


@pytest.mark.parametrize("est", RECONSTRUCTING, ids=lambda e: type(e).__name__)
def test_bad_score_input_names_the_shapes(est):
    X, Y = planted_pairs(13, n_stimuli=40)
    with pytest.raises(NotFittedError):
        clone(est).predict(Y)
    est = clone(est).fit(X, Y)
    wrong = [Y[0], Y[1][:, :-1], Y[2], Y[3]]
    msg = r"target network Y \(new data\): layer widths \[7, 8, 6, 10\] differ .* \[7, 9, 6, 10\]"
    with pytest.raises(ValueError, match=msg):
        est.predict(wrong)
    with pytest.raises(ValueError, match=r"source network X \(new data\): layer widths"):
        est.score(X[:2], Y)
    with pytest.raises(ValueError, match=r"must share their stimuli"):
        est.score([x[:10] for x in X], [y[:12] for y in Y])
    bad = [x.copy() for x in X]
    bad[2][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"source network X \(new data\), layer 2"):
        est.layer_scores(bad, Y)


def test_hyperparameters_are_sklearn_params():
    est = PairwiseRSA(method="pearson", max_stimuli=100, random_state=0)
    assert clone(est).get_params() == {"method": "pearson", "max_stimuli": 100, "random_state": 0}
    assert GlobalLinearPredictivity(alphas=(1.0, 2.0)).get_params() == {"alphas": (1.0, 2.0)}
    with pytest.raises(ValueError, match="method"):
        PairwiseRSA(method="kendall").fit(*planted_pairs(0, n_stimuli=20))
    with pytest.raises(ValueError, match="max_stimuli"):
        PairwiseRSA(max_stimuli=2).fit(*planted_pairs(0, n_stimuli=20))
