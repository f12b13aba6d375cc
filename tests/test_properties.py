"""Property tests on random shapes and depths (hypothesis)."""

import numpy as np
import ot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motalign import MOT, hierarchy_score
from motalign.solvers import exact_ot, transport_marginals

widths = st.lists(st.integers(1, 9), min_size=1, max_size=4)
common = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(seed, source_widths, target_widths, n_stimuli, n_constant):
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((n_stimuli, w)) for w in source_widths]
    Y = [rng.standard_normal((n_stimuli, w)) for w in target_widths]
    for layer in (X + Y)[:n_constant]:
        layer[:, 0] = 3.0  # a unit constant on every stimulus
    return X, Y


@common
@given(
    seed=st.integers(0, 2**32 - 1), source=widths, target=widths,
    n_stimuli=st.integers(4, 30), n_constant=st.integers(0, 3), rotation=st.booleans(),
)
def test_fit_invariants(seed, source, target, n_stimuli, n_constant, rotation):
    X, Y = make(seed, source, target, n_stimuli, n_constant)
    mot = MOT(rotation=rotation, random_state=seed).fit(X, Y)
    L, M = len(source), len(target)
    rows, cols = transport_marginals(mot.coupling_)
    np.testing.assert_allclose(rows, 1 / L, atol=1e-9)
    np.testing.assert_allclose(cols, 1 / M, atol=1e-9)
    assert np.all(mot.coupling_ >= 0)
    assert np.all(np.isfinite(mot.cost_))
    for l in range(L):
        for m in range(M):
            q = mot.neuron_couplings_[l][m]
            assert q.shape == (source[l], target[m])
            assert q.nnz <= source[l] + target[m] - 1
            r, c = transport_marginals(q)
            np.testing.assert_allclose(r, 1 / source[l], atol=1e-9)
            np.testing.assert_allclose(c, 1 / target[m], atol=1e-9)
    # the outer plan is optimal: no feasible plan has a lower cost
    a, b = np.full(L, 1 / L), np.full(M, 1 / M)
    assert mot.objective_ <= ot.emd2(a, b, mot.cost_) + 1e-12
    constant = sum(np.ptp(layer[:, 0]) == 0 for layer in (X + Y)[:n_constant])
    assert mot.n_constant_units_["X"].sum() + mot.n_constant_units_["Y"].sum() >= constant
    scores = mot.scores(X, Y)
    for value in scores.values():
        assert np.isfinite(value) and -1 <= value <= 1
    if L >= 2 and M >= 2:
        assert 0 <= hierarchy_score(mot.coupling_) <= 1


@common
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), m=st.integers(1, 12))
def test_exact_ot_matches_pot(seed, n, m):
    cost = np.random.default_rng(seed).random((n, m))
    plan, value = exact_ot(cost)
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    assert abs(value - ot.emd2(a, b, cost)) <= 1e-12
    assert abs(value - plan.multiply(cost).sum()) <= 1e-12
    assert plan.nnz <= n + m - 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1), source=widths, target=widths, n_stimuli=st.integers(4, 20),
    n_constant=st.integers(0, 3), kx=st.integers(-990, 990), ky=st.integers(-990, 990),
)
def test_fit_is_bit_identical_under_power_of_two_scales(seed, source, target, n_stimuli, n_constant, kx, ky):
    """Any shapes, constant units included: networks multiplied by 2**kx and 2**ky (exact)
    give the very same costs, plans and scores (tests/test_scale.py has the rest)."""
    X, Y = make(seed, source, target, n_stimuli, n_constant)
    fx, fy = 2.0**kx, 2.0**ky
    ref = MOT(random_state=seed).fit(X, Y)
    mot = MOT(random_state=seed).fit([a * fx for a in X], [a * fy for a in Y])
    np.testing.assert_array_equal(mot.cost_, ref.cost_)
    np.testing.assert_array_equal(mot.coupling_, ref.coupling_)
    np.testing.assert_array_equal(mot.n_constant_units_["X"], ref.n_constant_units_["X"])
    assert mot.scores([a * fx for a in X], [a * fy for a in Y]) == ref.scores(X, Y)
