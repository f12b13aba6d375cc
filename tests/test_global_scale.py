"""The global baselines (App. F) at scale: exact OT on a correlation cost computed on demand
(motalign.solvers.CorrelationCost) and the dual-form global ridge."""

from __future__ import annotations

import tracemalloc

import numpy as np
import ot
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import RidgeCV

from motalign.baselines import DEFAULT_ALPHAS, GlobalLinearPredictivity, GlobalOT
from motalign.preprocessing import LayerStats
from motalign.solvers import CorrelationCost, correlation_cost, correlation_ot, restricted_network_simplex
from motalign.solvers import exact as solvers


def zscored(rng, t, n, m, shared=0.5):
    """Two z-scored blocks (T x n, T x m) driven by a shared latent, so that the plan is
    not trivial."""
    latent = rng.standard_normal((t, 8))
    x = shared * latent @ rng.standard_normal((8, n)) + rng.standard_normal((t, n))
    y = shared * latent @ rng.standard_normal((8, m)) + rng.standard_normal((t, m))
    return LayerStats.fit(x).transform(x), LayerStats.fit(y).transform(y)


def check_exact(plan, value, cost):
    n, m = cost.shape
    reference = ot.emd(np.full(n, 1 / n), np.full(m, 1 / m), cost, numItermax=10**8)
    assert abs(value - float((reference * cost).sum())) <= 1e-12
    assert abs(value - float(plan.multiply(cost).sum())) <= 1e-12
    assert plan.nnz <= n + m - 1  # a vertex of the transport polytope
    np.testing.assert_allclose(np.asarray(plan.sum(axis=1)).ravel(), 1 / n, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(plan.sum(axis=0)).ravel(), 1 / m, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n, m", [(300, 300), (97, 250), (420, 150), (256, 512)])
@pytest.mark.parametrize("pool", [None, 0])
def test_on_demand_equals_dense(n, m, pool, monkeypatch):
    """Equal and unequal shapes, n not dividing m, with and without the candidate pool; small
    blocks so that every pass runs over many of them."""
    monkeypatch.setattr(solvers, "ON_DEMAND_BLOCK_ENTRIES", 5_000)
    xz, yz = zscored(np.random.default_rng(n + m), 60, n, m)
    cost = correlation_cost(xz, yz)
    plan, value = restricted_network_simplex(CorrelationCost(xz, yz), pool=pool)
    assert sp.isspmatrix_csr(plan) and plan.shape == (n, m)
    check_exact(plan, value, cost)
    dense_plan, dense_value = restricted_network_simplex(cost)
    assert abs(value - dense_value) <= 1e-12
    assert abs(plan - dense_plan).max() <= 1e-12  # the optimum of a generic cost is unique


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    m=st.integers(2, 40),
    t=st.integers(2, 12),
    pool=st.sampled_from([None, 0, 1, 3]),
    candidates=st.integers(1, 4),
    constant=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_on_demand_is_exact_property(n, m, t, pool, candidates, constant, seed):
    """Few stimuli (many near-ties), constant units (whole rows and columns of cost 1), few
    candidates and a small pool, so that pool and full pricing rounds both happen."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((t, n)), rng.standard_normal((t, m))
    y[:, : min(n, m) // 2] += x[:, : min(n, m) // 2]
    if constant:
        x[:, rng.random(n) < 0.3] = 1.0
        y[:, rng.random(m) < 0.3] = 1.0
    xz, yz = LayerStats.fit(x).transform(x), LayerStats.fit(y).transform(y)
    plan, value = restricted_network_simplex(CorrelationCost(xz, yz), candidates=candidates, pool=pool)
    check_exact(plan, value, correlation_cost(xz, yz))


def test_on_demand_never_holds_the_cost(monkeypatch):
    """Peak traced memory of a 3000 x 2800 solve stays far below its 64 MiB cost matrix
    (about 21 MiB: the candidate pool of 136 entries per row, blocks of 1 MiB)."""
    monkeypatch.setattr(solvers, "ON_DEMAND_BLOCK_ENTRIES", 2**17)
    xz, yz = zscored(np.random.default_rng(0), 40, 3000, 2800)
    tracemalloc.start()
    try:
        oracle = CorrelationCost(xz, yz)
        plan, _ = restricted_network_simplex(oracle)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plan.nnz <= 3000 + 2800 - 1
    assert peak < 8 * 3000 * 2800 / 2.5, f"peak {peak / 2**20:.1f} MiB"


def test_correlation_ot_switches_to_on_demand_above_the_threshold(monkeypatch):
    # the inner-OT sizes (up to 3072 x 3072 = 9.4M entries) exceed the threshold only through
    # correlation_ot; the engine calls exact_ot on its dense blocks
    assert solvers.ON_DEMAND_MIN_ENTRIES > 200 * 330
    xz, yz = zscored(np.random.default_rng(1), 50, 200, 330)
    dense = correlation_ot(xz, yz)
    used = []
    monkeypatch.setattr(solvers, "ON_DEMAND_MIN_ENTRIES", 200 * 330 - 1)
    monkeypatch.setattr(
        solvers.CorrelationCost,
        "total",
        lambda self, plan: used.append(1) or float(plan.multiply(correlation_cost(xz, yz)).sum()),
    )
    plan, value = correlation_ot(xz, yz)
    assert used and abs(value - dense[1]) <= 1e-12 and abs(plan - dense[0]).max() <= 1e-12


def split(flat, widths):
    return np.split(flat, np.cumsum(widths)[:-1], axis=1)


def test_global_ot_recovers_a_unit_permuted_copy_on_demand():
    """Known answer above the on-demand threshold (2250 x 2250 units, 5.1M entries): a
    network aligned with a unit-permuted, rescaled copy of itself split into other layers
    gets the permutation, cost 0 and held-out score 1."""
    rng = np.random.default_rng(2)
    widths = (400, 350, 300, 250, 450, 300, 200)
    X = split(rng.standard_normal((150, sum(widths))), widths)
    perm = rng.permutation(sum(widths))
    Y = split(np.hstack(X)[:, perm] * 2.0 - 1.0, (500, 700, 300, 750))
    assert sum(widths) ** 2 > solvers.ON_DEMAND_MIN_ENTRIES
    est = GlobalOT().fit([a[:120] for a in X], [a[:120] for a in Y])
    assert est.plan_.nnz == sum(widths)
    np.testing.assert_allclose(est.plan_.toarray()[perm, np.arange(sum(widths))], 1 / sum(widths))
    assert est.cost_ == pytest.approx(0.0, abs=1e-12)
    assert est.score([a[120:] for a in X], [a[120:] for a in Y]) == pytest.approx(1.0)


def test_global_ot_on_demand_equals_dense_path(monkeypatch):
    rng = np.random.default_rng(3)
    xz, yz = zscored(rng, 90, 610, 430, shared=1.0)
    X, Y = split(xz, (200, 300, 110)), split(yz, (100, 330))
    dense = GlobalOT().fit(X, Y)  # 610 x 430: below the threshold
    monkeypatch.setattr(solvers, "ON_DEMAND_MIN_ENTRIES", 1000)
    monkeypatch.setattr(solvers, "ON_DEMAND_BLOCK_ENTRIES", 20_000)
    on_demand = GlobalOT().fit(X, Y)
    assert on_demand.cost_ == pytest.approx(dense.cost_, abs=1e-12)
    assert abs(on_demand.plan_ - dense.plan_).max() <= 1e-12


@pytest.mark.parametrize(
    "n_fit, widths_x, widths_y",
    [
        (60, (30, 50), (40, 45, 25)),  # T <= p: Gram
        (200, (30, 50), (40, 45, 25)),
    ],
)  # T > p: SVD
def test_global_linear_predictivity_equals_ridgecv_in_dual_form(n_fit, widths_x, widths_y):
    rng = np.random.default_rng(n_fit)
    t = n_fit + 40
    yflat = rng.standard_normal((t, sum(widths_y)))
    xflat = yflat @ rng.standard_normal((sum(widths_y), sum(widths_x))) / 10 + rng.standard_normal((t, sum(widths_x)))
    X, Y = split(xflat, widths_x), split(yflat, widths_y)
    est = GlobalLinearPredictivity().fit([a[:n_fit] for a in X], [a[:n_fit] for a in Y])
    n_x, n_y = sum(widths_x), sum(widths_y)
    assert est.dual_coef_.shape == (n_fit, n_x) and est.yz_fit_.shape == (n_fit, n_y)
    assert all(np.size(v) <= n_fit * max(n_x, n_y) for v in vars(est).values())  # no primal weights kept

    def z(layers):
        return np.hstack([LayerStats.fit(a[:n_fit]).transform(a) for a in layers])

    reference = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=False).fit(z(Y)[:n_fit], z(X)[:n_fit])
    assert est.alpha_ == reference.alpha_
    assert est.cv_score_ == pytest.approx(reference.best_score_, rel=1e-8)
    predicted = np.hstack(est.predict([a[n_fit:] for a in Y]))
    np.testing.assert_allclose(predicted, reference.predict(z(Y)[n_fit:]), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(est.coef_, reference.coef_, rtol=1e-7, atol=1e-10)
    with pytest.raises(AttributeError):
        est.coef_ = np.zeros((n_x, n_y))  # read-only


def test_the_benchmark_paths_agree(tmp_path, capsys):
    """benchmarks/global_baselines.py at a tiny scale: the previous and current paths of each
    baseline give the same objective, penalty and held-out score; the table and JSON come out."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "global_baselines", Path(__file__).resolve().parents[1] / "benchmarks" / "global_baselines.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    wx, wy = bench.widths(0.02)
    bench.write_data(tmp_path, wx, wy, 60, seed=0)
    rows = {m: bench.child(m, tmp_path, wx, wy, 50) for m in bench.METHODS}
    assert rows["ot_dense"]["objective"] == pytest.approx(rows["ot_on_demand"]["objective"], abs=1e-12)
    assert rows["ridge_primal"]["objective"]["alpha"] == rows["ridge_dual"]["objective"]["alpha"]
    assert rows["ridge_primal"]["heldout_score"] == pytest.approx(rows["ridge_dual"]["heldout_score"], abs=1e-9)
    out = tmp_path / "result.json"
    result = bench.main(
        ["--scale", "0.02", "--stimuli", "50", "--heldout", "10", "--methods", "ot_on_demand", "--out", str(out)]
    )
    assert result["shape"]["n_x"] == sum(wx) and result["rows"][0]["peak_rss_mib"] > 0
    assert "| ot_on_demand |" in capsys.readouterr().out and out.exists()
