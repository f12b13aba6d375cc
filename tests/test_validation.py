"""Bad input gives a clear error naming the network, the layer and the shapes."""

import numpy as np
import pytest

from motalign import MOT, ThreeLevelMOT, hierarchy_score


@pytest.fixture
def nets(rng):
    X = [rng.standard_normal((20, 4)), rng.standard_normal((20, 6))]
    Y = [rng.standard_normal((20, 5))]
    return X, Y


def test_non_finite_values_name_network_layer_and_count(nets):
    X, Y = nets
    X[1][3, 2] = np.nan
    X[1][4, 0] = np.inf
    with pytest.raises(ValueError, match=r"source network X, layer 1 \('layer_1'\): 2 non-finite"):
        MOT().fit(X, Y)
    named = {"conv": Y[0].copy()}
    named["conv"][0, 0] = -np.inf
    with pytest.raises(ValueError, match=r"target network Y, layer 0 \('conv'\): 1 non-finite"):
        MOT().fit(nets[0][:1], named)


def test_mismatched_stimuli_report_shapes(nets):
    X, Y = nets
    with pytest.raises(ValueError, match=r"\(20, 4\).*\(19, 5\)|T = 20 vs 19"):
        MOT().fit(X, [Y[0][:19]])
    with pytest.raises(ValueError, match=r"\(20, 4\).*\(18, 6\)"):
        MOT().fit([X[0], X[1][:18]], Y)


@pytest.mark.parametrize("bad, pattern", [
    (np.zeros((20, 0)), r"empty layer, shape \(20, 0\)"),
    (np.zeros((20,)), r"expected a 2-D array .* shape \(20,\)"),
    (np.zeros((20, 3, 2)), r"shape \(20, 3, 2\)"),
    (np.array([["a", "b"]] * 20), r"real numbers"),
])
def test_malformed_layers(nets, bad, pattern):
    X, Y = nets
    with pytest.raises(ValueError, match=pattern):
        MOT().fit([X[0], bad], Y)


def test_empty_networks_and_bare_arrays(nets):
    X, Y = nets
    with pytest.raises(ValueError, match="no layers"):
        MOT().fit([], Y)
    with pytest.raises(ValueError, match=r"single 2-D array of shape \(20, 4\)"):
        MOT().fit(X[0], Y)


def test_new_data_must_match_fit_widths(nets):
    X, Y = nets
    mot = MOT().fit(X, Y)
    with pytest.raises(ValueError, match=r"widths \[4, 5\] differ .* \[4, 6\]"):
        mot.score([X[0], X[1][:, :5]], Y)
    with pytest.raises(ValueError, match="share their stimuli"):
        mot.score([a[:10] for a in X], [Y[0][:12]])
    with pytest.raises(ValueError, match="coupling must be one of"):
        mot.score(X, Y, coupling="best")


def test_parameter_and_state_errors(nets):
    X, Y = nets
    with pytest.raises(ValueError, match="solver must be one of"):
        MOT(solver="network_simplex").fit(X, Y)
    with pytest.raises(ValueError, match="device must be one of"):
        MOT(device="tpu").fit(X, Y)
    with pytest.raises(ValueError, match="n_jobs must be"):
        MOT(n_jobs=0).fit(X, Y)
    with pytest.raises(ValueError, match="epsilon must be a positive"):
        MOT(solver="sinkhorn", epsilon=0.0).fit(X, Y)
    with pytest.raises(ValueError, match="not fitted"):
        MOT().score(X, Y)
    with pytest.raises(ValueError, match="rotation=False"):
        MOT().fit(X, Y).rotation_matrix(0, 0)
    with pytest.raises(ValueError, match="at least 2 layers"):
        hierarchy_score(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"source checkpoint 1 \('checkpoint_1'\), layer 0"):
        bad = [np.full((20, 4), np.nan)]
        ThreeLevelMOT().fit([X, bad], [Y])


def test_constant_units_follow_the_documented_rule(rng):
    X = [rng.standard_normal((40, 5))]
    Y = [rng.standard_normal((40, 5)), rng.standard_normal((40, 3))]
    X[0][:, 1] = 2.0
    Y[0][:, :2] = -1.0
    mot = MOT(random_state=0).fit([a[:30] for a in X], [a[:30] for a in Y])
    np.testing.assert_array_equal(mot.n_constant_units_["X"], [1])
    np.testing.assert_array_equal(mot.n_constant_units_["Y"], [2, 0])
    assert np.all(np.isfinite(mot.cost_))
    q = mot.neuron_coupling(0, 0)
    # the constant source unit is equally far (cost 1) from every target unit
    assert np.all(np.isfinite(q))
    scores, undefined = mot.layer_scores(
        [a[30:] for a in X], [a[30:] for a in Y], return_counts=True
    )
    assert np.all(np.isfinite(scores))
    assert undefined[0] >= 1  # the constant source unit has no defined correlation
