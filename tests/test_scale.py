"""Results do not depend on the scale of the activations (issue #14): z-scores, correlation
costs, plans and scores of MOT, MOT+R, the baselines and three-level MOT are unchanged when
layers are multiplied by any finite factor from 1e-300 to 1e300, per network and per layer
(exactly for powers of two, to round-off of the product for other factors), and data whose
units lost their precision in the subnormal range raise an error naming the layer.

Reference data: two small networks whose target layers are noisy unit shuffles of the
source layers plus a few independent units (distinct tuning, so every optimum is unique and
round-off cannot flip a plan).  Every target layer is at least as wide as every source
layer, so that MOT+R's rotations are unique too (with n_l > n_m the Procrustes rotation is
free on a null space, and which rotation LAPACK returns there depends on round-off).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import noisy_unit_shuffle, random_network, split
from motalign import MOT, ThreeLevelMOT, hierarchy_score
from motalign.baselines import GlobalLinearPredictivity, GlobalOT, PairwiseLinearPredictivity, PairwiseRSA
from motalign.inner import EngineOptions, inner_alignment
from motalign.metrics import columnwise_pearson
from motalign.preprocessing import LayerStats, PrecisionError, precision_floor
from motalign.ridge import SharedRidgeLOO, loo_score_table
from motalign.solvers import correlation_cost, exact_ot

RTOL = 1e-9
few = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_rng = np.random.default_rng(2024)
X_ALL = random_network(_rng, 3, [4, 3, 5], 40)
Y_ALL = [np.hstack([noisy_unit_shuffle(_rng, a, 0.6), _rng.standard_normal((40, extra))])
         for a, extra in zip(X_ALL[::-1], (1, 2, 1))]  # widths 6, 5, 5; reversed: a non-trivial P
(X_FIT, X_NEW), (Y_FIT, Y_NEW) = split(X_ALL, 30), split(Y_ALL, 30)

decimal = st.integers(-150, 150).map(lambda e: 10.0**e)
binary = st.integers(-990, 990).map(lambda k: 2.0**k)


def layer_factors(strategy, n=3):
    return st.lists(strategy, min_size=n, max_size=n)


def times(layers, factors):
    return [a * f for a, f in zip(layers, factors)]


def close(a, b, exact):
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL)


def dense(plan):
    return np.asarray(plan.toarray() if hasattr(plan, "toarray") else plan)


def same_support(p, q):
    p, q = dense(p), dense(q)
    np.testing.assert_array_equal(p > 0, q > 0)
    np.testing.assert_allclose(p, q, rtol=0, atol=1e-15)


def fit_scaled(make, fx, fy):
    """``make()`` fitted on the networks scaled by ``fx``, ``fy`` (per layer, fit and new
    stimuli alike), with its held-out score."""
    est = make().fit(times(X_FIT, fx), times(Y_FIT, fy))
    if hasattr(est, "score"):
        return est, est.score(times(X_NEW, fx), times(Y_NEW, fy))
    return est, None


REFERENCE = {}


def reference(name, make):
    if name not in REFERENCE:
        REFERENCE[name] = fit_scaled(make, [1.0] * 3, [1.0] * 3)
    return REFERENCE[name]


def check_mot(mot, score, ref, ref_score, exact):
    close(mot.cost_, ref.cost_, exact)
    close(mot.coupling_, ref.coupling_, exact)
    close(score, ref_score, exact)
    for l in range(3):
        for m in range(3):
            same_support(mot.neuron_couplings_[l][m], ref.neuron_couplings_[l][m])
    if mot.rotation:
        for key, rotation in ref.rotations_.items():
            close(mot.rotations_[key], rotation, exact)


# ------------------------------------------------------------------ z-scores and costs

@few
@given(fx=layer_factors(decimal), fy=layer_factors(decimal), float32=st.booleans())
def test_zscores_and_costs_do_not_depend_on_scale(fx, fy, float32):
    cast = (lambda a: a.astype(np.float32)) if float32 else (lambda a: a)
    x = [cast(a) for a in X_FIT]
    y = [cast(a) for a in Y_FIT]
    for layers, factors in ((x, fx), (y, fy)):
        for a, f in zip(layers, factors):
            if float32 and not 1e-30 < f < 1e30:
                continue  # outside float32's range: covered by float64
            _, z = LayerStats.fit_transform(a)
            _, zs = LayerStats.fit_transform(a * a.dtype.type(f))
            tol = 1e-6 if float32 else RTOL  # float32 rounds the product itself to 6e-8
            np.testing.assert_allclose(zs, z, rtol=tol, atol=tol)
    zx = [LayerStats.fit_transform(a * f)[1] for a, f in zip(X_FIT, fx)]
    zy = [LayerStats.fit_transform(a * f)[1] for a, f in zip(Y_FIT, fy)]
    for l in range(3):
        for m in range(3):
            plain = correlation_cost(LayerStats.fit_transform(X_FIT[l])[1], LayerStats.fit_transform(Y_FIT[m])[1])
            np.testing.assert_allclose(correlation_cost(zx[l], zy[m]), plain, rtol=RTOL, atol=RTOL)


@few
@given(k=st.lists(st.integers(-1000, 1020), min_size=4, max_size=4))
def test_powers_of_two_change_nothing_at_all(k):
    """Multiplying by 2**k is exact (while no value drops into the subnormals: the
    smallest |value| here is above 2**-12), and so is every rescaling motalign does:
    z-scores, fit statistics and new-data transforms are bit for bit those of the unscaled
    layer."""
    layer = X_ALL[2]
    factors = np.ldexp(1.0, np.array(k + k[:1]))  # one factor per unit (5 units)
    stats, z = LayerStats.fit_transform(layer)
    scaled_stats, scaled_z = LayerStats.fit_transform(layer * factors)
    np.testing.assert_array_equal(scaled_z, z)
    np.testing.assert_array_equal(scaled_stats.transform(layer * factors), z)
    np.testing.assert_array_equal(LayerStats.fit(layer * factors).transform(layer * factors), z)
    np.testing.assert_array_equal(stats.constant, scaled_stats.constant)


def test_ordinary_data_get_the_plain_formula_bit_for_bit():
    """The rescaling is invisible at ordinary scales: z = (x - mean) * (1 / std)."""
    for layer in X_ALL + [a.astype(np.float32) for a in Y_ALL]:
        x = layer.astype(np.float64)
        plain = (x - x.mean(axis=0)) * (1.0 / x.std(axis=0))
        np.testing.assert_array_equal(LayerStats.fit_transform(layer)[1], plain)
        np.testing.assert_array_equal(LayerStats.fit(layer).transform(layer), plain)


def test_float32_near_its_limits():
    """float32 layers near the top (2**125 ~ 4e37) and bottom (2**-112 ~ 2e-34) of float32's
    normal range: exact at the top, to the rounding of the few values pushed into float32's
    subnormals at the bottom."""
    x = [a.astype(np.float32) for a in X_FIT]
    y = [a.astype(np.float32) for a in Y_FIT]
    ref = MOT(rotation=True).fit(x, y)
    for k, exact in ((125, True), (-112, False)):
        f = np.float32(2.0**k)
        mot = MOT(rotation=True).fit([a * f for a in x], [a * f for a in y])
        assert all(a.dtype == np.float32 and np.isfinite(a * f).all() for a in x)
        close(mot.cost_, ref.cost_, exact)
        close(mot.coupling_, ref.coupling_, exact)
    with pytest.raises(PrecisionError, match=r"source network X, layer 0 \('layer_0'\).*float32"):
        MOT().fit([a * np.float32(1e-44) for a in x], y)


# ------------------------------------------------------------------ MOT and MOT+R

@few
@given(fx=layer_factors(decimal), fy=layer_factors(decimal), rotation=st.booleans())
def test_mot_does_not_depend_on_scale(fx, fy, rotation):
    ref, ref_score = reference(f"mot{rotation}", lambda: MOT(rotation=rotation, random_state=0))
    mot, score = fit_scaled(lambda: MOT(rotation=rotation, random_state=0), fx, fy)
    check_mot(mot, score, ref, ref_score, exact=False)


@few
@given(fx=layer_factors(binary), fy=layer_factors(binary), rotation=st.booleans())
def test_mot_is_bit_identical_under_powers_of_two(fx, fy, rotation):
    ref, ref_score = reference(f"mot{rotation}", lambda: MOT(rotation=rotation, random_state=0))
    mot, score = fit_scaled(lambda: MOT(rotation=rotation, random_state=0), fx, fy)
    check_mot(mot, score, ref, ref_score, exact=True)
    for new, old in zip(mot.predict(times(Y_NEW, fy)), ref.predict(Y_NEW)):
        np.testing.assert_array_equal(new, old)


EXTREMES = [1e150, 1e-150, 1e300, 1e-300, 1.5e308 / 4.5, 2.0**-1040]


@pytest.mark.parametrize("fx", EXTREMES)
@pytest.mark.parametrize("rotation", [False, True])
def test_mot_at_the_extremes(fx, rotation):
    """Whole networks at 1e+-150, 1e+-300, near the largest float64 and at 2**-1040 (every
    value subnormal, 34 bits left): the scores and plans of the unscaled data; the target
    network at the opposite extreme."""
    ref, ref_score = reference(f"mot{rotation}", lambda: MOT(rotation=rotation, random_state=0))
    fy = 1e-300 if fx > 1 else 1e300
    mot, score = fit_scaled(lambda: MOT(rotation=rotation, random_state=0), [fx] * 3, [fy] * 3)
    tolerance = 1e-8 if fx == 2.0**-1040 else RTOL
    np.testing.assert_allclose(mot.cost_, ref.cost_, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(score, ref_score, rtol=tolerance)
    for l in range(3):
        for m in range(3):
            np.testing.assert_array_equal(mot.neuron_couplings_[l][m].toarray() > 0,
                                          ref.neuron_couplings_[l][m].toarray() > 0)
    for name, value in mot.scores(times(X_NEW, [fx] * 3), times(Y_NEW, [fy] * 3)).items():
        assert np.isclose(value, ref.scores(X_NEW, Y_NEW)[name], rtol=tolerance)


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
def test_torch_backend_does_not_depend_on_scale(solver):
    """The torch backend z-scores on the host like the CPU backend: solver="exact" and
    "sinkhorn" (float32) on torch's CPU device, plain and MOT+R (the batched
    rotation_torch), at 1e300 / 1e-300 / 1e150."""
    pytest.importorskip("torch")
    options = EngineOptions(solver=solver, device="torch-cpu", n_jobs=1)
    tolerance = RTOL if solver == "exact" else 1e-6
    for rotation in (False, True):
        ref = inner_alignment(X_FIT, Y_FIT, rotation=rotation, options=options)
        scaled = inner_alignment(times(X_FIT, [1e300] * 3), times(Y_FIT, [1e-300, 1e150, 1.0]),
                                 rotation=rotation, options=options)
        np.testing.assert_allclose(scaled.cost, ref.cost, rtol=tolerance, atol=tolerance)
        for l in range(3):
            for m in range(3):
                if solver == "exact":
                    same_support(scaled.plans[l][m], ref.plans[l][m])
                else:
                    np.testing.assert_allclose(scaled.plans[l][m].toarray(), ref.plans[l][m].toarray(), atol=1e-6)


def test_three_level_does_not_depend_on_scale():
    # the second checkpoints are noisier copies, so that the checkpoint coupling is unique
    # (exact copies would tie every checkpoint cost and leave the coupling to round-off)
    noise = np.random.default_rng(5)
    x = [X_FIT, [a[:, ::-1] + 0.8 * noise.standard_normal(a.shape) for a in X_FIT]]
    y = [Y_FIT, [a[:, ::-1] + 0.8 * noise.standard_normal(a.shape) for a in Y_FIT]]
    ref = ThreeLevelMOT().fit(x, y)
    cost = ref.checkpoint_cost_
    assert abs((cost[0, 0] + cost[1, 1]) - (cost[0, 1] + cost[1, 0])) > 1e-3  # no tie
    scaled = ThreeLevelMOT().fit([times(n, [1e300, 1e-300, 1e150]) for n in x],
                                 [times(n, [1e-150, 1.0, 1e300]) for n in y])
    np.testing.assert_allclose(scaled.checkpoint_cost_, ref.checkpoint_cost_, rtol=RTOL)
    np.testing.assert_array_equal(scaled.checkpoint_coupling_, ref.checkpoint_coupling_)


# ------------------------------------------------------------------ baselines

BASELINES = {
    "global_ot": GlobalOT,
    "global_lp": GlobalLinearPredictivity,
    "pairwise_lp": PairwiseLinearPredictivity,
    "rsa": PairwiseRSA,
}


def check_baseline(name, est, score, ref, ref_score, exact):
    if name == "global_ot":
        same_support(est.plan_, ref.plan_)
        close(est.cost_, ref.cost_, exact)
    elif name == "rsa":
        close(est.similarity_, ref.similarity_, exact)
        np.testing.assert_array_equal(est.best_match_, ref.best_match_)
    else:
        np.testing.assert_array_equal(est.alpha_, ref.alpha_)
        close(est.cv_score_, ref.cv_score_, exact)
    if name == "pairwise_lp":
        np.testing.assert_array_equal(est.best_match_, ref.best_match_)
    if score is not None:
        close(score, ref_score, exact)


@few
@given(fx=layer_factors(decimal), fy=layer_factors(decimal), name=st.sampled_from(sorted(BASELINES)))
def test_baselines_do_not_depend_on_scale(fx, fy, name):
    ref, ref_score = reference(name, BASELINES[name])
    est, score = fit_scaled(BASELINES[name], fx, fy)
    check_baseline(name, est, score, ref, ref_score, exact=False)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("fx, fy", [(1e300, 1e-300), (1e-300, 1e300), (1e150, 1e-150), (2.0**700, 2.0**-1000)])
def test_baselines_at_the_extremes(name, fx, fy):
    ref, ref_score = reference(name, BASELINES[name])
    est, score = fit_scaled(BASELINES[name], [fx] * 3, [fy] * 3)
    check_baseline(name, est, score, ref, ref_score, exact=np.log2(fx).is_integer())


# ------------------------------------------------------------------ metrics and ridge

@few
@given(fa=st.lists(st.integers(-1070, 1020), min_size=4, max_size=4),
       fb=st.lists(st.integers(-1070, 1020), min_size=4, max_size=4))
def test_pearson_is_exactly_scale_free(fa, fb):
    """Columns of truth and prediction scaled by independent powers of two, down to the
    subnormals (2**-1070 x N(0, 1) keeps few bits: compared with its own rounded values)."""
    truth, prediction = X_ALL[0], X_ALL[0] + Y_ALL[2][:, :4]
    a, b = truth * np.ldexp(1.0, fa), prediction * np.ldexp(1.0, fb)
    r, undefined = columnwise_pearson(a, b)
    exact_a, exact_b = np.ldexp(a, np.negative(fa)), np.ldexp(b, np.negative(fb))
    np.testing.assert_array_equal(r, columnwise_pearson(exact_a, exact_b)[0])
    assert undefined == 0 and np.all(np.abs(r) <= 1)


def test_pearson_and_hierarchy_at_the_extremes():
    truth, prediction = X_ALL[0], X_ALL[0] + Y_ALL[2][:, :4]
    r, _ = columnwise_pearson(truth, prediction)
    for fa, fb in ((1e300, 1e-300), (1.7e308 / 5, 1e-300), (1e-300, 1e-300)):
        np.testing.assert_allclose(columnwise_pearson(truth * fa, prediction * fb)[0], r, rtol=RTOL)
    plan = np.array([[0.3, 0.2, 0.0], [0.0, 0.1, 0.4]])
    h = hierarchy_score(plan)
    for f in (2.0**1000, 2.0**-1000, 2.0**1023):
        assert hierarchy_score(plan * f) == h
    assert hierarchy_score(plan * 1e-320) == pytest.approx(h, abs=1e-3)  # subnormal plan: few bits left


def test_ridge_raises_on_unscaled_data():
    """The ridge's penalties are in z-score units; raw data whose squares overflow raise."""
    y = Y_FIT[0] * 1e200
    with pytest.raises(ValueError, match="SharedRidgeLOO: the squares of Y overflow.*z-score Y"):
        SharedRidgeLOO(y, [1.0])
    with pytest.raises(ValueError, match="loo_score_table: the squares of Y overflow"):
        loo_score_table(y, [1.0], [X_FIT[0] @ X_FIT[0].T], [5])
    with pytest.raises(ValueError, match="leave-one-out errors overflow.*z-score X"):
        SharedRidgeLOO(Y_FIT[0], [1.0]).fit(X_FIT[0] * 1e300)


# ------------------------------------------------------------------ what cannot be computed

@pytest.mark.parametrize("make", [MOT, lambda: MOT(rotation=True), GlobalOT, GlobalLinearPredictivity,
                                  PairwiseLinearPredictivity])
def test_subnormal_units_raise_naming_the_layer(make):
    """5e-324 x N(0, 1) leaves 0 or 1 significant bit: no correlation can be computed."""
    y = list(Y_FIT)
    y[1] = y[1] * 5e-324
    with pytest.raises(PrecisionError, match=r"target network Y, layer 1 \('layer_1'\): 5 unit\(s\).*"
                                             r"subnormal float64.*at most 25 of float64's 53"):
        make().fit(X_FIT, y)


def test_subnormal_errors_elsewhere():
    tiny = [a * 2.0**-1060 for a in X_FIT]  # 14 bits left
    with pytest.raises(PrecisionError, match=r"source network X, layer 0 \('layer_0'\): 30 stimulus pattern"):
        PairwiseRSA().fit(tiny, Y_FIT)
    with pytest.raises(PrecisionError, match=r"network X, layer 0: 4 unit"):
        inner_alignment(tiny, Y_FIT)
    with pytest.raises(PrecisionError, match=r"source checkpoint 1 \('checkpoint_1'\), layer 0"):
        ThreeLevelMOT().fit([X_FIT, tiny], [Y_FIT])
    assert precision_floor(np.float64) == 2.0**-1049 and precision_floor(np.float32) == 2.0**-138
    # a unit just above the floor is fitted, a dead unit (all zeros) is constant, not an error
    ok = [a.copy() for a in X_FIT]
    ok[0][:, 0] *= 2.0**-1040
    ok[0][:, 1] = 0.0
    assert MOT().fit(ok, Y_FIT).n_constant_units_["X"][0] == 1


def test_new_data_far_off_the_fit_scale_raises():
    mot = MOT().fit(times(X_FIT, [1e-300] * 3), times(Y_FIT, [1e-300] * 3))
    with pytest.raises(ValueError, match=r"target network Y_new, layer 0 \('layer_0'\): z-scores overflow"):
        mot.score(times(X_NEW, [1e-300] * 3), times(Y_NEW, [1e10] * 3))
    est = GlobalOT().fit(times(X_FIT, [1e-300] * 3), Y_FIT)
    with pytest.raises(ValueError, match=r"source network X \(new data\), layer 2 \('layer_2'\): z-scores overflow"):
        est.score(times(X_NEW, [1e-300, 1e-300, 1e10]), Y_NEW)


def test_exact_ot_names_non_finite_costs():
    """A NaN cost (what unscaled z-scores used to produce) is refused with a message, not
    left to the solvers' "Problem unbounded" or "invalid numeric entries"."""
    for shape in ((3, 3), (3, 5), (1, 4)):
        cost = np.zeros(shape)
        cost[0, -1] = np.nan
        with pytest.raises(ValueError, match=rf"exact_ot: the {shape[0]} x {shape[1]} cost has 1 non-finite"):
            exact_ot(cost)
