"""Known answers for the fast paths of MOT+R on the CPU (inner.rotation, Sec. 2.3): the polar
factor from an eigendecomposition (against the SVD), the sparse reconstruction norm (against
the dense product), the stopping rule on unchanged plans (against the previous alternation,
which ran one more, repeated round), planted rotated copies, and determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motalign.inner import rotation as rotation_module
from motalign.inner.layers import Standardized
from motalign.inner.rotation import (
    _polar_by_eigh,
    _reconstruction_norm,
    _rotated_correlation_cost,
    plan_weights,
    polar_factor,
    rotation_alignment,
    rotation_from_plan,
)
from motalign.inner.types import Alternation
from motalign.solvers import exact_ot


def svd_polar(matrix):
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def with_condition(rng, n, condition, scale=1.0):
    """A random n x n matrix with singular values from 1 to 1 / condition (log-spaced)."""
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (u * np.geomspace(1.0, 1.0 / condition, n)) @ v.T * scale


def eigh_path(matrix):
    """Whether polar_factor keeps its fast path's result (checked to equal the SVD's factor)."""
    return _polar_by_eigh(matrix) is not None


@pytest.mark.parametrize("n", [1, 2, 7, 64, 384])
def test_polar_factor_equals_the_svd_polar_factor_on_random_matrices(rng, n):
    matrix = rng.standard_normal((n, n)) + 2 * np.sqrt(n) * np.eye(n)  # well conditioned
    assert eigh_path(matrix)
    rotation = polar_factor(matrix)
    np.testing.assert_allclose(rotation, svd_polar(matrix), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(n), rtol=0, atol=1e-13)


@pytest.mark.parametrize("condition", [1.0, 10.0, 1e2, 1e3, 3e3, 9e3, 1e4 * 1.01, 1e5, 1e6 * 1.01, 1e12])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 2e3])
def test_polar_factor_on_ill_conditioned_matrices(rng, condition, scale):
    """Up to cond 1e3 the eigendecomposition path; beyond cond 1e6 (POLAR_EIGH_MIN_RATIO) the
    SVD; in between whichever the a-posteriori estimate allows.  Either way the SVD's polar
    factor to 1e-10, orthogonal to round-off."""
    matrix = with_condition(rng, 128, condition, scale)
    if condition <= 1e3:
        assert eigh_path(matrix)
    elif condition > 1e6:
        assert not eigh_path(matrix)
    rotation = polar_factor(matrix)
    np.testing.assert_allclose(rotation, svd_polar(matrix), rtol=0, atol=1e-10)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(128), rtol=0, atol=1e-13)


def fast_path_details(matrix):
    """The fast path's Frobenius distance estimate and ||G||_F (G = B^T B - I), recomputed."""
    lam, vectors = np.linalg.eigh(matrix.T @ matrix)
    s = np.sqrt(lam)
    basis = (matrix @ vectors) / s
    deviation = basis.T @ basis - np.eye(len(s))
    spread = (s[None, :] - s[:, None]) / (s[None, :] + s[:, None])
    return np.linalg.norm(deviation * spread) / 2, np.linalg.norm(deviation)


@pytest.mark.parametrize("n", [96, 384])
def test_fast_path_on_random_gaussian_matrices(n):
    """The benchmark's regime (independent layers: M is a random Gaussian matrix, cond 1e2 to
    1e5): where the fast path keeps its result, it is the SVD's factor to 1e-10 entry-wise and
    its Frobenius distance is below POLAR_TOLERANCE (the first-order estimate holds)."""
    kept = 0
    for seed in range(12 if n == 96 else 4):
        matrix = np.random.default_rng(seed).standard_normal((n, n))
        rotation = _polar_by_eigh(matrix)
        if rotation is None:
            continue
        kept += 1
        exact = svd_polar(matrix)
        np.testing.assert_allclose(rotation, exact, rtol=0, atol=1e-10)
        assert np.linalg.norm(rotation - exact) <= rotation_module.POLAR_TOLERANCE
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(n), rtol=0, atol=1e-13)
    assert kept >= (10 if n == 96 else 3)


@pytest.mark.parametrize("condition", [1e3, 9e3, 3e4])
def test_distance_estimate_matches_the_measured_distance(rng, condition):
    """Past round-off, the estimate (half of ||G o D||_F, after the Newton-Schulz step) is the
    Frobenius distance to the SVD's factor to within 10%: a tight check, not a loose bound."""
    matrix = with_condition(rng, 96, condition)
    estimate, g_norm = fast_path_details(matrix)
    lam, vectors = np.linalg.eigh(matrix.T @ matrix)
    s = np.sqrt(lam)
    basis = (matrix @ vectors) / s
    deviation = basis.T @ basis - np.eye(96)
    rotation = (basis - 0.5 * basis @ deviation) @ vectors.T
    distance = np.linalg.norm(rotation - svd_polar(matrix))
    assert g_norm > rotation_module.ORTHOGONALITY_TOLERANCE and estimate > 1e-12
    assert distance == pytest.approx(estimate, rel=0.1)


def test_clustered_singular_values_keep_the_fast_path(rng):
    """Close singular values make eigenvectors inaccurate but do not move the polar factor
    (D_ij ~ 0 there): the estimate lets such matrices keep the fast path."""
    n = 64
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.repeat(np.geomspace(1.0, 1e-2, n // 4), 4) * (1.0 + 1e-13 * np.arange(n))
    matrix = (u * values) @ v.T
    assert eigh_path(matrix)
    np.testing.assert_allclose(polar_factor(matrix), svd_polar(matrix), rtol=0, atol=1e-10)


def test_failed_checks_fall_back_to_the_svd(rng, monkeypatch):
    """A distance estimate above POLAR_TOLERANCE, or ||G||_F above NEWTON_SCHULZ_LIMIT, or a
    non-finite entry: the fast path declines and polar_factor returns the SVD's factor."""
    matrix = with_condition(rng, 64, 1e3)
    assert eigh_path(matrix)
    with monkeypatch.context() as patch:
        patch.setattr(rotation_module, "POLAR_TOLERANCE", 0.0)
        assert not eigh_path(matrix)
        np.testing.assert_allclose(polar_factor(matrix), svd_polar(matrix), rtol=0, atol=1e-12)
    with monkeypatch.context() as patch:
        patch.setattr(rotation_module, "NEWTON_SCHULZ_LIMIT", 0.0)
        assert not eigh_path(matrix)
    broken = matrix.copy()
    broken[3, 5] = np.nan
    assert not eigh_path(broken)
    broken[3, 5] = np.inf
    assert not eigh_path(broken)


def test_memory_order_does_not_change_the_factor(rng):
    """polar_factor(weighted.T) gets a Fortran-ordered view: the same factor as a C-ordered
    copy (to round-off), each bit-identical on repeated calls."""
    matrix = rng.standard_normal((50, 50)) + 5 * np.eye(50)
    fortran, c_order = np.asfortranarray(matrix), np.ascontiguousarray(matrix)
    np.testing.assert_allclose(polar_factor(fortran), polar_factor(c_order), rtol=0, atol=1e-13)
    assert polar_factor(fortran).tobytes() == polar_factor(fortran.copy(order="F")).tobytes()
    assert polar_factor(c_order).tobytes() == polar_factor(c_order.copy()).tobytes()


@pytest.mark.parametrize("rank", [0, 1, 30])
def test_polar_factor_of_a_singular_matrix_is_orthogonal_and_optimal(rng, rank):
    """Singular M (constant units, a source wider than its target): the SVD path, an
    orthogonal maximiser of <R, M>."""
    n = 40
    matrix = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n))
    rotation = polar_factor(matrix)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(n), rtol=0, atol=1e-13)
    assert np.sum(rotation * matrix) == pytest.approx(np.linalg.svd(matrix, compute_uv=False).sum(), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(-3, 3))
def test_polar_factor_maximises_the_procrustes_objective(n, seed, log_shift):
    """For any square M, the factor is orthogonal and reaches the Procrustes maximum
    <R, M> = sum of M's singular values."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, n)) + 10.0**log_shift * np.eye(n)
    rotation = polar_factor(matrix)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(n), rtol=0, atol=1e-12)
    best = np.linalg.svd(matrix, compute_uv=False).sum()
    assert np.sum(rotation * matrix) == pytest.approx(best, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("widths", [(30, 30), (20, 45), (45, 20), (10, 33)])
def test_reconstruction_norm_equals_the_dense_product(rng, widths):
    n, m = widths
    yz = rng.standard_normal((70, m))
    plan, _ = exact_ot(rng.random((n, m)))
    weights = plan_weights(plan, n)
    expected = np.sum((yz @ weights.toarray().T) ** 2)
    assert _reconstruction_norm(weights, yz, np.einsum("ij,ij->j", yz, yz)) == pytest.approx(expected, rel=1e-13)


def previous_alternation(xz, yz, alternation):
    """The alternation before the stopping rule on unchanged plans: dense objective, SVD
    Procrustes steps, and a round that repeats the previous one when a Q step left the plan
    unchanged.  Returns (cost, plan, rotation, history)."""
    t, n = xz.shape
    cross, gram_x = xz.T @ yz, xz.T @ xz
    y_norm = np.linalg.norm(yz, axis=0)

    def objective(rotation, weights):
        return np.sum((xz @ rotation - yz @ weights.T) ** 2) / (t * n)

    def plan_for(rotation):
        return exact_ot(_rotated_correlation_cost(rotation, gram_x, cross, y_norm))[0]

    rotation = np.eye(n)
    plan = plan_for(rotation)
    weights = plan_weights(plan, n).toarray()
    value = objective(rotation, weights)
    history = [value]
    for _ in range(alternation.max_iter):
        new_rotation = svd_polar(cross @ weights.T)
        new_value = objective(new_rotation, weights)
        if new_value > value + 1e-12:
            break
        rotation = new_rotation
        new_plan = plan_for(rotation)
        new_weights = plan_weights(new_plan, n).toarray()
        plan_value = objective(rotation, new_weights)
        if plan_value <= new_value:
            plan, weights, new_value = new_plan, new_weights, plan_value
        improvement = value - new_value
        value = new_value
        history.append(value)
        if improvement <= alternation.tol * max(1.0, abs(value)):
            break
    return value, plan, rotation, history


def layers(rng, n, m, t=300, rotated=True, noise=0.3):
    x = rng.standard_normal((t, n))
    if rotated:  # a rotated, shuffled copy: MOT+R's planted answer
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        y = (x @ q)[:, rng.integers(0, n, m) if m != n else rng.permutation(n)]
    else:
        y = 0.6 * x[:, rng.integers(0, n, m)] + rng.standard_normal((t, m))
    y = y + noise * rng.standard_normal((t, m))
    return Standardized([x])(0), Standardized([y])(0)


@pytest.mark.parametrize("widths", [(24, 24), (16, 40), (40, 16)])
@pytest.mark.parametrize("rotated", [True, False])
@pytest.mark.parametrize("stopping", [Alternation(), Alternation(max_iter=30, tol=0.0)])
def test_the_alternation_equals_the_previous_one_without_its_repeated_round(rng, widths, rotated, stopping):
    """Same plan, rotation and cost as the previous alternation; its history minus the
    trailing repeat that the previous rule recorded after an unchanged plan."""
    xz, yz = layers(rng, *widths, rotated=rotated)
    result = rotation_alignment(xz, yz, alternation=stopping)
    cost, plan, rotation, history = previous_alternation(xz, yz, stopping)
    assert result.cost == pytest.approx(cost, abs=1e-12)
    np.testing.assert_allclose(result.plan.toarray(), plan.toarray(), rtol=0, atol=1e-15)
    reconstruct = plan_weights(plan, widths[0]).toarray()  # R is unique on the range of W^T only when n > m
    np.testing.assert_allclose(result.rotation @ reconstruct, rotation @ reconstruct, rtol=0, atol=1e-9)
    expected = history[:-1] if len(history) > 2 and history[-1] == history[-2] else history
    assert len(result.history) == len(expected)
    np.testing.assert_allclose(result.history, expected, rtol=0, atol=1e-12)
    assert np.all(np.diff(result.history) <= 0)


def test_a_rotated_copy_is_recovered_in_one_round(rng):
    """Y = X Q P + noise (Q orthogonal, P a column permutation): whatever permutation W the
    first Q step picks, the Procrustes step finds R = Q P W^T, the next Q step keeps W and
    the alternation stops (n_iter = 1) with the noise's residual."""
    n, t, noise = 32, 2000, 0.05
    x = rng.standard_normal((t, n))
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    y = (x @ q)[:, rng.permutation(n)] + noise * rng.standard_normal((t, n))
    xz, yz = Standardized([x])(0), Standardized([y])(0)
    result = rotation_alignment(xz, yz)
    assert result.n_iter == 1 and result.history[1] < result.history[0]
    assert result.cost < 2 * noise**2
    assert (result.plan != result.rotation_plan).nnz == 0
    weights = plan_weights(result.plan, n).toarray()
    planted = np.linalg.lstsq(xz, yz, rcond=None)[0]  # ~ Q P, up to the noise
    np.testing.assert_allclose(result.rotation, planted @ weights.T, atol=0.05)
    assert rotation_from_plan(result.rotation_plan, xz.T @ yz).tobytes() == result.rotation.tobytes()


@pytest.mark.parametrize("widths", [(24, 24), (16, 40), (40, 16)])
def test_two_runs_are_bit_identical(rng, widths):
    xz, yz = layers(rng, *widths, rotated=False)
    first = rotation_alignment(xz, yz, alternation=Alternation(tol=0.0))
    second = rotation_alignment(xz.copy(), yz.copy(), alternation=Alternation(tol=0.0))
    assert first.history == second.history
    assert first.rotation.tobytes() == second.rotation.tobytes()
    assert (first.plan != second.plan).nnz == 0 and (first.rotation_plan != second.rotation_plan).nnz == 0


def test_independent_layers_take_the_newton_schulz_path_deterministically(rng):
    """Independent random layers (most of the benchmark's pairs): M is a random matrix whose
    fast path needs the Newton-Schulz step.  Non-increasing history, the same cost and plan as
    the previous (SVD) alternation, bit-identical reruns and rebuilt rotation."""
    n, t = 96, 400
    xz = Standardized([rng.standard_normal((t, n))])(0)
    yz = Standardized([rng.standard_normal((t, n))])(0)
    result = rotation_alignment(xz, yz, alternation=Alternation(max_iter=30, tol=0.0))
    matrix = plan_weights(result.rotation_plan, n) @ (xz.T @ yz).T
    assert fast_path_details(np.asarray(matrix).T)[1] > rotation_module.ORTHOGONALITY_TOLERANCE
    assert eigh_path(np.asarray(matrix).T)
    assert np.all(np.diff(result.history) <= 0)
    cost, plan, _, _ = previous_alternation(xz, yz, Alternation(max_iter=30, tol=0.0))
    assert result.cost == pytest.approx(cost, abs=1e-12)
    assert (result.plan != plan).nnz == 0
    again = rotation_alignment(xz.copy(), yz.copy(), alternation=Alternation(max_iter=30, tol=0.0))
    assert again.history == result.history and again.rotation.tobytes() == result.rotation.tobytes()
    assert rotation_from_plan(result.rotation_plan, xz.T @ yz).tobytes() == result.rotation.tobytes()
