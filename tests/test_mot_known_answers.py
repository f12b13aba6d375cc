"""Known-answer tests of MOT and MOT+R (issue #2)."""

import numpy as np
import ot
import pytest

from conftest import noisy_unit_shuffle, random_network, split
from motalign import COUPLINGS, MOT, hierarchy_score
from motalign.solvers import transport_marginals


def assert_marginals(plan, tol=1e-9):
    rows, cols = transport_marginals(plan)
    n, m = plan.shape
    np.testing.assert_allclose(rows, 1.0 / n, atol=tol, rtol=0)
    np.testing.assert_allclose(cols, 1.0 / m, atol=tol, rtol=0)


def test_self_alignment_gives_identity_over_L_and_perfect_score(rng):
    X = random_network(rng, 6, 20, 300)
    fit, held = split(X, 240)
    mot = MOT(random_state=0).fit(fit, fit)
    np.testing.assert_allclose(mot.coupling_, np.eye(6) / 6, atol=1e-12)
    np.testing.assert_allclose(np.diag(mot.cost_), 0.0, atol=1e-12)
    assert mot.score(held, held) >= 0.999
    for l in range(6):
        np.testing.assert_allclose(mot.neuron_coupling(l, l), np.eye(20) / 20, atol=1e-12)


def test_layer_shuffled_copy_is_recovered(rng):
    X = random_network(rng, 7, 16, 400)
    order = rng.permutation(7)
    Y = [noisy_unit_shuffle(rng, X[o], 0.5) for o in order]
    fit_x, held_x = split(X, 320)
    fit_y, held_y = split(Y, 320)
    mot = MOT(random_state=0).fit(fit_x, fit_y)
    expected = np.zeros((7, 7))
    expected[order, np.arange(7)] = 1 / 7  # target layer m copies source layer order[m]
    np.testing.assert_allclose(mot.coupling_, expected, atol=1e-12)
    scores = mot.scores(held_x, held_y)
    assert scores["mot"] > 0.8
    assert scores["mot"] == pytest.approx(scores["single_best"])
    assert scores["mot"] == pytest.approx(scores["pairwise_best"])


@pytest.mark.parametrize("seed", range(5))
def test_equal_depth_gives_a_scaled_permutation(seed):
    rng = np.random.default_rng(seed)
    L = int(rng.integers(2, 7))
    X = random_network(rng, L, rng.integers(3, 12, size=L), 50)
    Y = random_network(rng, L, rng.integers(3, 12, size=L), 50)
    P = MOT().fit(X, Y).coupling_
    scaled = P * L
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-12)
    np.testing.assert_allclose(np.round(scaled).sum(0), 1)
    np.testing.assert_allclose(np.round(scaled).sum(1), 1)


def test_depth_doubled_copy_splits_mass_over_both_copies(rng):
    L = 8
    X = random_network(rng, L, 16, 400)
    Y = [noisy_unit_shuffle(rng, X[l], 0.4) for l in range(L) for _ in range(2)]
    mot = MOT().fit(*[split(net, 320)[0] for net in (X, Y)])
    expected = np.zeros((L, 2 * L))
    for l in range(L):
        expected[l, 2 * l: 2 * l + 2] = 1 / (2 * L)
    np.testing.assert_allclose(mot.coupling_, expected, atol=1e-12)
    assert hierarchy_score(mot.coupling_) >= 0.95


def rotated_copy(rng, n_layers=5, width=12, n_stimuli=600, noise=0.05):
    X = random_network(rng, n_layers, width, n_stimuli)
    order = rng.permutation(n_layers)
    Y = []
    for o in order:
        rotation, _ = np.linalg.qr(rng.standard_normal((width, width)))
        Y.append(X[o] @ rotation + noise * rng.standard_normal((n_stimuli, width)))
    return X, Y, order


def test_rotated_copy_is_recovered_by_mot_r_not_by_mot(rng):
    X, Y, order = rotated_copy(rng)
    fit_x, held_x = split(X, 480)
    fit_y, held_y = split(Y, 480)
    plain = MOT().fit(fit_x, fit_y)
    rotated = MOT(rotation=True).fit(fit_x, fit_y)
    assert list(rotated.coupling_.argmax(axis=0)) == list(order)
    score_r = rotated.score(held_x, held_y)
    score = plain.score(held_x, held_y)
    assert score_r >= 0.95
    assert score_r - score > 0.3
    # the +R baselines are evaluated with rotations too
    assert rotated.score(held_x, held_y, "pairwise_best") >= 0.95
    assert rotated.score(held_x, held_y, "single_best") >= 0.95


def test_mot_r_objective_never_increases(rng):
    X = random_network(rng, 3, [10, 14, 8], 200)
    Y = random_network(rng, 4, [9, 12, 10, 16], 200)
    mot = MOT(rotation=True, max_iter=50, tol=0).fit(X, Y)
    assert len(mot.objective_history_) == 12
    iterated = 0
    for (l, m), history in mot.objective_history_.items():
        assert np.all(np.diff(history) <= 0), (l, m, history)
        assert mot.cost_[l, m] == history[-1]
        iterated += len(history) > 2
    assert iterated > 0  # the alternation really ran on these unrelated layers
    assert np.array_equal(mot.n_iter_, np.array(
        [[len(mot.objective_history_[l, m]) - 1 for m in range(4)] for l in range(3)]))


@pytest.mark.parametrize("rotation", [False, True])
def test_every_plan_meets_its_marginals(rng, rotation):
    X = random_network(rng, 3, [5, 11, 7], 80)
    Y = random_network(rng, 4, [6, 11, 3, 9], 80)
    mot = MOT(rotation=rotation).fit(X, Y)
    assert_marginals(mot.coupling_)
    for l in range(3):
        for m in range(4):
            q = mot.neuron_couplings_[l][m]
            assert q.nnz <= q.shape[0] + q.shape[1] - 1
            assert_marginals(q)


def test_inner_costs_match_pot_on_correlation_distance(rng):
    X = random_network(rng, 2, [9, 13], 60)
    Y = random_network(rng, 3, [13, 5, 9], 60)
    mot = MOT().fit(X, Y)
    for l, x in enumerate(X):
        for m, y in enumerate(Y):
            c = 1 - np.corrcoef(x.T, y.T)[: x.shape[1], x.shape[1]:]
            a, b = np.full(c.shape[0], 1 / c.shape[0]), np.full(c.shape[1], 1 / c.shape[1])
            assert mot.cost_[l, m] == pytest.approx(ot.emd2(a, b, c), abs=1e-10)
            q = mot.neuron_coupling(l, m)
            assert np.sum(q * c) == pytest.approx(mot.cost_[l, m], abs=1e-10)
    assert mot.objective_ == pytest.approx(np.sum(mot.coupling_ * mot.cost_), abs=1e-12)


def test_perm_p_is_reproducible_from_its_seed(rng):
    X = random_network(rng, 6, 8, 120)
    Y = random_network(rng, 6, 8, 120)
    fit_x, held_x = split(X, 100)
    fit_y, held_y = split(Y, 100)
    first = MOT(random_state=7).fit(fit_x, fit_y)
    second = MOT(random_state=7).fit(fit_x, fit_y)
    assert np.array_equal(first.permutation_, second.permutation_)
    assert first.score(held_x, held_y, "random") == second.score(held_x, held_y, "random")
    np.testing.assert_array_equal(
        first.layer_couplings_["random"], first.coupling_[first.permutation_]
    )
    others = {tuple(MOT(random_state=s).fit(fit_x, fit_y).permutation_) for s in range(8)}
    assert len(others) > 1


def test_four_couplings_have_row_mass_one_over_L(rng):
    X = random_network(rng, 4, 6, 50)
    Y = random_network(rng, 7, 5, 50)
    mot = MOT(random_state=1).fit(X, Y)
    assert set(mot.layer_couplings_) == set(COUPLINGS)
    for name, coupling in mot.layer_couplings_.items():
        np.testing.assert_allclose(coupling.sum(axis=1), 1 / 4, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(
        np.flatnonzero(mot.layer_couplings_["pairwise_best"][2]), [mot.cost_[2].argmin()]
    )


def test_prediction_follows_the_reconstruction_formula(rng):
    X = random_network(rng, 2, [4, 6], 40)
    Y = random_network(rng, 3, [5, 6, 3], 40)
    mot = MOT().fit(X, Y)
    yz = [(y - y.mean(0)) / y.std(0) for y in Y]
    for l, width in enumerate([4, 6]):
        expected = 2 * sum(
            mot.coupling_[l, m] * yz[m] @ (width * mot.neuron_coupling(l, m)).T
            for m in range(3)
        )
        np.testing.assert_allclose(mot.predict(Y)[l], expected, atol=1e-10)


def test_layer_names_from_mappings(rng):
    X = dict(zip(["early", "late"], random_network(rng, 2, 5, 30)))
    Y = dict(zip(["V1", "V2", "V4"], random_network(rng, 3, 5, 30)))
    mot = MOT().fit(X, Y)
    assert mot.source_layer_names_ == ("early", "late")
    assert mot.target_layer_names_ == ("V1", "V2", "V4")
    np.testing.assert_array_equal(mot.neuron_coupling("late", "V2"), mot.neuron_coupling(1, 1))


@pytest.mark.parametrize("rotation", [False, True])
def test_fit_from_inner_equals_fit(rng, rotation):
    """Sharded inner results (as the workflow computes them) give the same fit."""
    from motalign.inner.cpu import align_pair
    from motalign.preprocessing import LayerStats

    X = random_network(rng, 3, [6, 9, 7], 90)
    Y = random_network(rng, 2, [8, 6], 90)
    fit_x, held_x = split(X, 70)
    fit_y, held_y = split(Y, 70)
    direct = MOT(rotation=rotation, random_state=3).fit(fit_x, fit_y)
    cost, plans, histories, rotation_plans = np.empty((3, 2)), [[None] * 2 for _ in range(3)], {}, {}
    for l in range(3):
        for m in range(2):
            result = align_pair(
                (l, m), LayerStats.fit_transform(fit_x[l])[1], LayerStats.fit_transform(fit_y[m])[1],
                rotation=rotation,
            )
            plans[l][m], cost[l, m], histories[l, m] = result.plan, result.cost, result.history
            rotation_plans[l, m] = result.rotation_plan
    rebuilt = MOT(rotation=rotation, random_state=3).fit_from_inner(
        fit_x, fit_y, cost, plans, histories if rotation else None, rotation_plans if rotation else None
    )
    if rotation:  # rebuilt from the rotation-defining plans by one Procrustes step each
        assert rebuilt.rotations_.keys() == direct.rotations_.keys()
        for key, value in direct.rotations_.items():
            np.testing.assert_allclose(rebuilt.rotations_[key], value, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rebuilt.cost_, direct.cost_, atol=1e-12)
    np.testing.assert_allclose(rebuilt.coupling_, direct.coupling_, atol=1e-12)
    for name in COUPLINGS:
        assert rebuilt.score(held_x, held_y, name) == pytest.approx(direct.score(held_x, held_y, name), abs=1e-10)
    with pytest.raises(ValueError, match=r"plan \(0, 1\) has shape"):
        bad = [row[:] for row in plans]
        bad[0][1] = np.ones((2, 2))
        MOT().fit_from_inner(fit_x, fit_y, cost, bad)
