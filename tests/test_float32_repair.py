"""Float32-priced correlation OT with a certified float64 repair (motalign.solvers.repair):
the rigorous bound on the float32 cost, exactness against exact_ot on the float64 cost, vertex
plans, and an adversarial case where float32 rounding alone would pick the wrong plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motalign.inner import engine_options, inner_alignment
from motalign.inner import layers as layers_module
from motalign.inner.layers import Standardized, UnitMajor, fused_unit_major, unit_major_copy
from motalign.preprocessing import LayerStats
from motalign.solvers import correlation_cost, exact_ot, float32_correlation_cost, float32_cost_bound
from motalign.solvers import repair as repair_module
from motalign.solvers.repair import (
    FLOAT32_CHUNK,
    exact_correlation_entries,
    repaired_correlation_ot,
    row_norms,
)


def zscored(a):
    return LayerStats.fit_transform(np.asarray(a))[1]


def solve(xz, yz, **kwargs):
    """The repaired solve from T x n z-scores."""
    return repaired_correlation_ot(np.ascontiguousarray(xz.T), np.ascontiguousarray(yz.T), **kwargs)


def check_vertex(plan, n, m):
    dense = plan.toarray()
    assert dense.min() >= 0
    np.testing.assert_allclose(dense.sum(1), 1 / n, rtol=0, atol=1e-15)
    np.testing.assert_allclose(dense.sum(0), 1 / m, rtol=0, atol=1e-15)
    assert plan.nnz <= n + m - 1


def correlated(rng, t, n, m, noise=1.0, latent=16):
    z = rng.standard_normal((t, latent))
    x = z @ rng.standard_normal((latent, n)) + noise * rng.standard_normal((t, n))
    y = z @ rng.standard_normal((latent, m)) + noise * rng.standard_normal((t, m))
    return x, y


def check_equals_float64(x, y, **kwargs):
    xz, yz = zscored(x), zscored(y)
    cost = correlation_cost(xz, yz)
    _, reference = exact_ot(cost)
    plan, value = solve(xz, yz, **kwargs)
    n, m = cost.shape
    check_vertex(plan, n, m)
    assert value == pytest.approx(reference, rel=1e-12, abs=0)
    # the value is the plan's float64 cost
    assert value == pytest.approx(float(plan.multiply(cost).sum()), rel=1e-13, abs=0)
    return plan, value


@pytest.mark.parametrize(
    "n, m, t",
    [(80, 80, 300), (96, 192, 200), (130, 70, 150), (100, 250, 120), (70, 90, 3000), (64, 64, 50)],
)
def test_repaired_solve_equals_the_float64_optimum(rng, n, m, t):
    x, y = correlated(rng, t, n, m)
    check_equals_float64(x, y)


def test_narrow_problems_take_the_float64_path(rng):
    x, y = correlated(rng, 60, 12, 40)
    check_equals_float64(x, y)
    x, y = correlated(rng, 60, 1, 70)
    check_equals_float64(x, y)


def test_constant_and_duplicated_units(rng):
    x, y = correlated(rng, 200, 90, 120)
    x[:, :5] = 3.0  # constant units: cost 1 to everything
    y[:, 7] = -1.0
    y[:, 10:40] = x[:, 10:40]  # duplicated units: exact ties among zero-cost entries
    x[:, 50:60] = x[:, 40:50]  # duplicated rows: ties across rows
    check_equals_float64(x, y)


def test_large_t_where_float32_errors_matter(rng):
    # 20,000 stimuli: a single float32 GEMM would have a bound near 1e-3; the repair is
    # still exact for the float64 cost
    x, y = correlated(rng, 20_000, 64, 96, noise=0.3, latent=4)
    check_equals_float64(x, y)
    x, y = correlated(rng, 20_000, 64, 96, noise=0.3, latent=4)
    check_equals_float64(x, y, chunk=20_000)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(64, 90), m=st.integers(64, 130), t=st.integers(3, 60),
    ties=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_repaired_solve_property(n, m, t, ties, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n))
    y = rng.standard_normal((t, m))
    if ties:  # few distinct units: many exactly equal costs
        x = x[:, rng.integers(0, 3, n)]
        y = np.round(y[:, rng.integers(0, 4, m)], 1)
    check_equals_float64(x, y)


def test_bound_holds_on_adversarial_inputs(rng):
    """max |A - C| <= b, where C is the float64 cost of the exact entries."""
    t = 30_000
    base = rng.standard_normal(t)
    cases = {
        # highly correlated units: the products do not cancel, errors add up coherently
        "correlated": (base[:, None] + 1e-3 * rng.standard_normal((t, 40)),
                       base[:, None] + 1e-3 * rng.standard_normal((t, 50))),
        # values that round badly to float32, all of one sign in the products
        "rounding": (np.abs(base)[:, None] * (1 + 2.0**-25 * rng.integers(0, 2, (t, 40)))
                     + 1 / 3, np.abs(base)[:, None] + 1 / 7 + 1e-9 * rng.standard_normal((t, 50))),
        "constant": (np.where(np.arange(40) < 20, 1.0, base[:, None]), base[:, None] * np.ones((1, 50))),
        "heavy tails": (rng.standard_cauchy((t, 40)), rng.standard_cauchy((t, 50))),
    }
    for name, (x, y) in cases.items():
        xz, yz = zscored(x), zscored(y)
        xt, yt = np.ascontiguousarray(xz.T), np.ascontiguousarray(yz.T)
        for chunk in (512, FLOAT32_CHUNK, t):
            approx = float32_correlation_cost(xz.astype(np.float32), yz.astype(np.float32), chunk=chunk)
            rows, cols = np.divmod(np.arange(approx.size), approx.shape[1])
            exact = exact_correlation_entries(xt, yt, rows, cols).reshape(approx.shape)
            bound = float32_cost_bound(row_norms(xt).max(), row_norms(yt).max(), t, chunk=chunk)
            error = np.abs(approx - exact).max()
            assert error <= bound, name
            assert bound < 2e-3 if chunk == t else bound < 1.3e-4


def test_bound_formula():
    # k u for chunks of k stimuli and unit norms; grows with the norms
    assert float32_cost_bound(100.0, 100.0, 10_000, chunk=512) == pytest.approx(512 * 2.0**-24, rel=0.01)
    assert float32_cost_bound(100.0, 100.0, 10_000, chunk=1) == pytest.approx(3 * 2.0**-24, rel=0.01)
    double = float32_cost_bound(200.0, 100.0, 10_000)
    assert double == pytest.approx(2 * float32_cost_bound(100.0, 100.0, 10_000), rel=1e-6)
    assert float32_cost_bound(0.0, 0.0, 10_000) < 1e-14


def near_tie(seed, t=3000, n=64, eps=1e-8):
    """Units 2k and 2k+1 of X nearly equal: swapping their partners changes the float64 cost
    by about ``eps``, less than the float32 cost's rounding errors."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n))
    x[:, 1::2] = x[:, 0::2] + eps * rng.standard_normal((t, n // 2))
    y = x + 0.5 * rng.standard_normal((t, n))
    return zscored(x), zscored(y)


def test_float32_optimum_differs_but_the_float64_optimum_is_returned():
    """A case where the optimum of the float32 cost is not optimal for the float64 cost
    (found among a few seeds): the repair still returns the float64 optimum."""
    for seed in range(40):
        xz, yz = near_tie(seed)
        cost = correlation_cost(xz, yz)
        plan64, value64 = exact_ot(cost)
        plan32, _ = exact_ot(float32_correlation_cost(xz.astype(np.float32), yz.astype(np.float32)))
        wrong = float(plan32.multiply(cost).sum())
        if wrong > value64 * (1 + 1e-14):  # float32 alone picks a worse plan
            break
    else:
        pytest.fail("no seed gave a float32 optimum that is wrong in float64")
    plan, value = solve(xz, yz)
    assert value == pytest.approx(value64, rel=1e-14, abs=0)
    assert float(plan.multiply(cost).sum()) < wrong
    check_vertex(plan, *cost.shape)


def test_every_entry_is_exactly_evaluated_with_a_huge_bound(rng, monkeypatch):
    """With a bound so large that float32 certifies nothing, the repair evaluates every entry
    and is still exact (the certificate does not depend on the bound being tight); through
    repaired_correlation_ot it gives up early and solves the float64 cost instead."""
    x, y = correlated(rng, 100, 70, 80)
    xz, yz = zscored(x), zscored(y)
    xt, yt = np.ascontiguousarray(xz.T), np.ascontiguousarray(yz.T)
    cost = correlation_cost(xz, yz)
    _, reference = exact_ot(cost)
    approx = float32_correlation_cost(xz.astype(np.float32), yz.astype(np.float32))
    stats = repair_module.RepairStats()
    plan, value = repair_module.repair(approx, 10.0, lambda r, c: exact_correlation_entries(xt, yt, r, c),
                                       stats=stats, max_exact=cost.size)
    assert value == pytest.approx(reference, rel=1e-12, abs=0)
    check_vertex(plan, *cost.shape)
    assert stats.exact_entries == cost.size
    monkeypatch.setattr(repair_module, "float32_bound_terms", lambda *a, **k: (0.0, 10.0))
    before = repair_module.repair_totals.snapshot()["fallbacks"]
    plan, value = solve(xz, yz)
    assert repair_module.repair_totals.snapshot()["fallbacks"] == before + 1
    assert value == pytest.approx(reference, rel=1e-12, abs=0)
    check_vertex(plan, *cost.shape)


def test_constant_units_cost_no_exact_evaluations(rng):
    """The bound is entrywise (zero for a constant unit's row or column), so half the units
    being constant does not flag their equal-cost entries for exact evaluation."""
    x, y = correlated(rng, 500, 200, 300)
    x[:, ::2] = 1.0
    y[:, ::3] = -2.0
    before = repair_module.repair_totals.snapshot()
    check_equals_float64(x, y)
    after = repair_module.repair_totals.snapshot()
    assert after["fallbacks"] == before["fallbacks"]
    assert after["exact_entries"] - before["exact_entries"] < 4 * (200 + 300)


def test_huge_z_scores_fall_back_to_float64(rng):
    x, y = correlated(rng, 50, 70, 70)
    xz, yz = zscored(x), zscored(y)
    xz[0] *= 2.0**60  # not a z-score any more; float32 products would overflow
    plan, value = solve(xz, yz)
    assert value == pytest.approx(exact_ot(correlation_cost(xz, yz))[1], rel=1e-12)


def test_unit_major_layers_and_engine(rng):
    x, y = correlated(rng, 700, 200, 150)
    layer = Standardized([x]).compute_unit_major(0)
    reference = zscored(x)
    assert np.array_equal(layer.z, reference.T) and layer.z.flags.c_contiguous
    assert np.array_equal(layer.z32, reference.T.astype(np.float32)) and layer.z32.flags.c_contiguous
    assert layer.norm == pytest.approx(np.sqrt(700))
    np.testing.assert_allclose(layer.norms, np.sqrt(700), rtol=1e-12)
    assert np.array_equal(unit_major_copy(reference), reference.T)
    assert np.array_equal(UnitMajor.from_stimuli_major(reference).z, reference.T)
    inner = inner_alignment([x, x[:, :90]], [y], options=engine_options(n_jobs=2))
    for l, xl in enumerate([x, x[:, :90]]):
        assert inner.cost[l, 0] == pytest.approx(exact_ot(correlation_cost(zscored(xl), zscored(y)))[1], rel=1e-12)
        check_vertex(inner.plans[l][0], xl.shape[1], 150)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_z_scores_are_bit_identical(rng, dtype):
    """The engine's blocked z-scoring (unit-major float64, float32 copy, fitted statistics)
    equals LayerStats.fit_transform / transform bit for bit, at any scale."""
    t, n = 1100, 1000  # above _FUSED_MIN_ENTRIES, blocks with a ragged end
    assert t * n >= layers_module._FUSED_MIN_ENTRIES and t % layers_module._FUSED_ROWS
    layer = (rng.standard_normal((t, n)) * 3 + 1).astype(dtype)
    layer[:, 3] = 5.0  # constant
    layer[:, 7] *= 1e-200 if dtype == np.float64 else 1e-30
    layer[:, 9] *= 1e300 if dtype == np.float64 else 1e30
    fitted, reference = LayerStats.fit_transform(layer)
    for stats in (None, fitted):
        got, z, z32, squares = fused_unit_major(layer, stats)
        assert np.array_equal(z, reference.T) and z.flags.c_contiguous
        assert np.array_equal(z32, reference.T.astype(np.float32))
        np.testing.assert_allclose(squares, (reference**2).sum(0), rtol=1e-12)
        for field in ("mean", "inv_scale", "constant", "shift"):
            assert np.array_equal(getattr(got, field), getattr(fitted, field)), field
    arrays = [layer, np.asfortranarray(layer)]  # fused, and the plain path (F order)
    std = Standardized(arrays)
    for index, array in enumerate(arrays):
        fitted, reference = LayerStats.fit_transform(array)
        unit = std.compute_unit_major(index)
        assert np.array_equal(unit.z, reference.T) and np.array_equal(unit.z32, reference.T.astype(np.float32))
        for field in ("mean", "inv_scale", "constant", "shift"):
            assert np.array_equal(getattr(std.stats[index], field), getattr(fitted, field)), field


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 700), n=st.integers(2, 12), seed=st.integers(0, 2**32 - 1),
       exponents=st.lists(st.integers(-125, 100), min_size=12, max_size=12),
       offsets=st.lists(st.sampled_from([0.0, 1.0, -3.0, 1e4, -1e7]), min_size=12, max_size=12))
def test_float32_fit_path_is_bit_identical_at_any_scale(t, n, seed, exponents, offsets):
    """fused_unit_major's float32 fit path (statistics on the unscaled values, scaled
    afterwards) equals LayerStats.fit_transform bit for bit: units of any float32 scale
    (2**-125 ... 2**100), means far from zero, constant units, ragged and single blocks.
    (One unit is not fused: NumPy sums a single column pairwise, not in order.)"""
    rng = np.random.default_rng(seed)
    layer = rng.standard_normal((t, n)) + np.array(offsets[:n])
    layer *= np.ldexp(1.0, np.array(exponents[:n]))
    layer = layer.astype(np.float32)
    if n > 2:
        layer[:, 1] = layer[0, 1]  # constant unit
    fitted, reference = LayerStats.fit_transform(layer)
    got, z, z32, squares = fused_unit_major(layer, None)
    for field in ("mean", "inv_scale", "constant", "shift"):
        assert np.array_equal(getattr(got, field), getattr(fitted, field)), field
    assert np.array_equal(z, reference.T)
    assert np.array_equal(z32, reference.T.astype(np.float32))
    np.testing.assert_allclose(squares, (reference**2).sum(0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("t", [700, 40_000])  # gathered blocks; one by one
def test_exact_entries_do_not_depend_on_blas_threads(rng, t):
    """The exact costs are the same bits whatever BLAS's thread count (a threaded ddot sums
    in another order; 40,000 stimuli is above OpenBLAS's threshold) and whatever the order
    of the entries, and equal the float64 cost to round-off."""
    from threadpoolctl import threadpool_limits

    xt, yt = rng.standard_normal((30, t)), rng.standard_normal((40, t))
    rows, cols = np.divmod(np.arange(1200), 40)
    values = exact_correlation_entries(xt, yt, rows, cols)
    with threadpool_limits(limits=1, user_api="blas"):
        single = exact_correlation_entries(xt, yt, rows, cols)
    assert np.array_equal(values, single)
    order = rng.permutation(rows.size)
    assert np.array_equal(exact_correlation_entries(xt, yt, rows[order], cols[order]), values[order])
    np.testing.assert_allclose(values.reshape(30, 40), 1 - xt @ yt.T / t, rtol=0, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 300), cols=st.integers(1, 300), order=st.sampled_from(["C", "F", "slice"]),
       to64=st.booleans())
def test_transposed_copy_equals_the_transpose(rows, cols, order, to64):
    """transposed_copy (tile by tile) is a.T, C-contiguous, for C- and F-ordered arrays and
    for slices of columns, with or without a cast to float64."""
    from motalign.solvers.exact import transposed_copy

    base = np.arange(rows * (cols + 7), dtype=np.float32).reshape(rows, cols + 7) / 7
    a = {"C": np.ascontiguousarray(base[:, :cols]), "F": np.asfortranarray(base[:, :cols]),
         "slice": base[:, 3:3 + cols]}[order]
    out = transposed_copy(a, np.float64 if to64 else None)
    assert out.flags.c_contiguous and out.dtype == (np.float64 if to64 else np.float32)
    assert np.array_equal(out, a.T)
