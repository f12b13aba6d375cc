"""Three-level MOT (Sec. 3.4), the hierarchy score (App. G) and the Pearson rule."""

import numpy as np
import pytest

from conftest import noisy_unit_shuffle, random_network
from motalign import MOT, ThreeLevelMOT, columnwise_pearson, hierarchy_score


def trajectory(rng, n_checkpoints, n_layers=3, width=8, n_stimuli=120, drift=0.8):
    """Checkpoints that drift away from each other: each is the last plus fresh noise."""
    nets = [random_network(rng, n_layers, width, n_stimuli)]
    for _ in range(n_checkpoints - 1):
        nets.append([a + drift * rng.standard_normal(a.shape) for a in nets[-1]])
    return nets


def test_three_level_recovers_matching_checkpoints(rng):
    A = trajectory(rng, 5)
    B = [[noisy_unit_shuffle(rng, a, 0.2) for a in net] for net in A]
    three = ThreeLevelMOT().fit(A, B)
    np.testing.assert_allclose(three.checkpoint_coupling_, np.eye(5) / 5, atol=1e-12)
    np.testing.assert_array_equal(three.pairwise_best_, np.arange(5))
    np.testing.assert_allclose(three.pairwise_best_map_, np.eye(5) / 5)
    for c in (0, 3):
        for d in (1, 4):
            assert three.checkpoint_cost_[c, d] == pytest.approx(MOT().fit(A[c], B[d]).objective_)


def test_three_level_handles_unequal_trajectories(rng):
    A = trajectory(rng, 3)
    B = trajectory(rng, 6)
    three = ThreeLevelMOT().fit(A, B)
    R = three.checkpoint_coupling_
    assert R.shape == (3, 6)
    np.testing.assert_allclose(R.sum(1), 1 / 3, atol=1e-12)
    np.testing.assert_allclose(R.sum(0), 1 / 6, atol=1e-12)
    assert three.pairwise_best_.shape == (3,)


def test_hierarchy_score_known_values():
    assert hierarchy_score(np.eye(4) / 4) == pytest.approx(1.0)
    anti = np.fliplr(np.eye(3)) / 3  # corners at distance 1, centre at 0
    assert hierarchy_score(anti) == pytest.approx(1 - 2 / 3)
    uniform = np.full((2, 2), 0.25)
    assert hierarchy_score(uniform) == pytest.approx(0.5)
    # invariant to the plan's total mass and sign
    assert hierarchy_score(-3 * uniform) == pytest.approx(0.5)


def test_columnwise_pearson_scores_constant_columns_zero():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((30, 4))
    prediction = 2 * truth + 1
    prediction[:, 2] = 5.0
    truth[:, 3] = 1.0
    r, undefined = columnwise_pearson(truth, prediction)
    np.testing.assert_allclose(r, [1, 1, 0, 0])
    assert undefined == 2
