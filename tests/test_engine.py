"""The inner-OT engine (motalign.inner, motalign.solvers.sinkhorn): exactness
against a plain POT loop, parallel == serial, bounded memory, the batched torch path and
the Sinkhorn solver with its certified gap.  CUDA tests run only where CUDA exists."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motalign import MOT
from motalign.inner import cpu as cpu_backend
from motalign.inner import engine_options, inner_alignment
from motalign.inner import layers as cpu_backend_layers
from motalign.inner import options as options_module
from motalign.inner.options import resolve_device
from motalign.solvers import exact as solvers
from motalign.solvers import exact_ot, restricted_network_simplex

torch = pytest.importorskip("torch")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def pot_loop(X, Y):
    """The reference: for every pair, z-score both layers, 1 - r by GEMM, POT's ot.emd."""
    cost = np.empty((len(X), len(Y)))
    for l, x in enumerate(X):
        for m, y in enumerate(Y):
            xz = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), np.inf)
            yz = (y - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), np.inf)
            c = 1.0 - xz.T @ yz / x.shape[0]
            n, k = c.shape
            plan = ot.emd(np.full(n, 1 / n), np.full(k, 1 / k), c, numItermax=10**7)
            cost[l, m] = float((plan * c).sum())
    return cost


def random_networks(rng, widths_x, widths_y, t):
    X = [rng.standard_normal((t, w)) for w in widths_x]
    Y = [rng.standard_normal((t, w)) + 0.5 * X[min(i, len(X) - 1)][:, rng.integers(0, widths_x[min(i, len(X) - 1)], w)]
         for i, w in enumerate(widths_y)]
    return X, Y


def check_plan(plan, n, m):
    dense = plan.toarray()
    assert dense.min() >= 0
    np.testing.assert_allclose(dense.sum(1), 1 / n, atol=1e-12)
    np.testing.assert_allclose(dense.sum(0), 1 / m, atol=1e-12)
    assert plan.nnz <= n + m - 1


@settings(max_examples=25, deadline=None)
@given(
    widths_x=st.lists(st.integers(1, 24), min_size=1, max_size=3),
    widths_y=st.lists(st.integers(1, 24), min_size=1, max_size=3),
    t=st.integers(3, 40),
    n_jobs=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**16),
)
def test_exact_engine_matches_a_pot_loop(widths_x, widths_y, t, n_jobs, seed):
    rng = np.random.default_rng(seed)
    X, Y = random_networks(rng, widths_x, widths_y, t)
    inner = inner_alignment(X, Y, options=engine_options(n_jobs=n_jobs))
    assert np.abs(inner.cost - pot_loop(X, Y)).max() <= 1e-9
    for l, n in enumerate(widths_x):
        for m, k in enumerate(widths_y):
            check_plan(inner.plans[l][m], n, k)
    assert not inner.gap_bound.any()


@pytest.mark.parametrize("n, m", [(7, 14), (14, 7), (1, 2), (30, 60), (9, 9), (5, 13),
                                  (64, 64), (64, 128), (100, 70), (70, 300), (1030, 1030)])
def test_exact_ot_every_branch_matches_pot(rng, n, m):
    for _ in range(5):
        cost = rng.random((n, m))
        plan, value = exact_ot(cost)
        reference = ot.emd(np.full(n, 1 / n), np.full(m, 1 / m), cost)
        assert abs(value - float((reference * cost).sum())) <= 1e-12
        assert abs(value - float((plan.toarray() * cost).sum())) <= 1e-12
        check_plan(plan, n, m)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40), m=st.integers(2, 40), candidates=st.integers(1, 4),
    ties=st.booleans(), seed=st.integers(0, 2**16),
)
def test_column_generation_is_exact(n, m, candidates, ties, seed):
    """The certified sparse solver (used for every problem of width >= 64) on small random
    problems, with few candidates so that pricing rounds happen, and with heavy ties."""
    rng = np.random.default_rng(seed)
    cost = rng.random((n, m))
    if ties:
        cost = np.round(cost * 3) / 3
        cost[rng.random(n) < 0.3] = 1.0  # constant units: a whole row of cost 1
    plan, value = restricted_network_simplex(cost, candidates=candidates)
    reference = ot.emd(np.full(n, 1 / n), np.full(m, 1 / m), cost)
    assert abs(value - float((reference * cost).sum())) <= 1e-12
    check_plan(plan, n, m)


def test_column_generation_through_the_public_pot_api(rng, monkeypatch):
    """Where POT does not expose its warm-started sparse solver, ot.emd's sparse input
    path is used instead; same optimum."""
    cost = rng.random((70, 90))
    expected = restricted_network_simplex(cost)[1]
    monkeypatch.setattr(solvers, "_emd_c_sparse", None)
    plan, value = restricted_network_simplex(cost, candidates=2)
    assert abs(value - expected) <= 1e-12
    check_plan(plan, 70, 90)


@pytest.mark.parametrize("rotation", [False, True])
def test_parallel_pairs_equal_serial(rng, rotation):
    X, Y = random_networks(rng, [12, 20, 12], [12, 24], 60)
    serial = inner_alignment(X, Y, rotation=rotation)
    parallel = inner_alignment(X, Y, rotation=rotation, options=engine_options(n_jobs=3))
    np.testing.assert_array_equal(serial.cost, parallel.cost)
    for l in range(3):
        for m in range(2):
            assert (serial.plans[l][m] != parallel.plans[l][m]).nnz == 0
    if rotation:
        assert serial.histories == parallel.histories


def test_subset_of_pairs_and_bad_pairs(rng):
    X, Y = random_networks(rng, [5, 6, 7], [5, 8], 30)
    inner = inner_alignment(X, Y, pairs=[(2, 1), (0, 0)])
    assert np.isfinite(inner.cost[[0, 2], [0, 1]]).all()
    assert np.isnan(inner.cost).sum() == 4
    assert inner.plans[1][0] is None
    full = inner_alignment(X, Y)
    assert inner.cost[2, 1] == full.cost[2, 1]
    # layers that no pair uses may be absent
    sparse_x = [None, None, X[2]]
    assert inner_alignment(sparse_x, Y, pairs=[(2, 0)]).cost[2, 0] == full.cost[2, 0]
    with pytest.raises(ValueError, match=r"layer pair \(3, 0\) is out of range"):
        inner_alignment(X, Y, pairs=[(3, 0)])
    with pytest.raises(ValueError, match="listed twice"):
        inner_alignment(X, Y, pairs=[(0, 0), (0, 0)])
    with pytest.raises(ValueError, match="layer 1 of Y has 29 stimuli, other layers have 30"):
        inner_alignment(X, [Y[0], Y[1][:29]])
    with pytest.raises(ValueError, match="layer 0 of X must be a non-empty"):
        inner_alignment([None] + X[1:], Y)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_memory_grows_with_one_pair_and_layers_are_standardized_once(rng, monkeypatch, n_jobs):
    """At most n_jobs cost blocks are alive at any time, and each layer is z-scored once,
    however many layer pairs there are."""
    X, Y = random_networks(rng, [10] * 5, [15] * 6, 40)
    alive, peak, lock = [0], [0], threading.Lock()
    real_cost = cpu_backend.correlation_cost

    def released():
        with lock:
            alive[0] -= 1

    def tracked_cost(xz, yz, *args):
        cost = real_cost(xz, yz, *args)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        weakref.finalize(cost, released)
        return cost

    transforms = []
    real_fit_transform = cpu_backend_layers.LayerStats.fit_transform.__func__

    def counted_fit_transform(cls, layer):
        transforms.append(id(layer))
        return real_fit_transform(cls, layer)

    monkeypatch.setattr(cpu_backend, "correlation_cost", tracked_cost)
    monkeypatch.setattr(cpu_backend_layers.LayerStats, "fit_transform", classmethod(counted_fit_transform))
    monkeypatch.setattr(cpu_backend_layers.LayerStats, "transform", lambda *a: pytest.fail("z-scored twice"))
    inner = inner_alignment(X, Y, options=engine_options(n_jobs=n_jobs))
    assert np.isfinite(inner.cost).all()
    assert 1 <= peak[0] <= n_jobs
    assert len(transforms) == len(X) + len(Y) == len(set(transforms))


def test_devices_and_options(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(options_module, "_gpu_visible", lambda: False)
    assert resolve_device("auto") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="cuda"):
            engine_options(device="cuda:1")
    assert engine_options(solver="sinkhorn", device="cpu").device == "torch-cpu"
    assert engine_options(n_jobs=-1).n_jobs >= 1
    for bad, match in [({"solver": "lp"}, "solver"), ({"device": "gpu"}, "device"),
                       ({"n_jobs": 0}, "n_jobs"), ({"n_jobs": 1.5}, "n_jobs"),
                       ({"epsilon": -1.0}, "epsilon"), ({"batch_bytes": 0}, "batch_bytes")]:
        with pytest.raises(ValueError, match=match):
            engine_options(**bad)


# --------------------------------------------------------------------------- torch paths
def test_sinkhorn_plans_are_feasible_and_the_gap_is_certified(rng):
    from motalign.solvers.sinkhorn import sinkhorn_uniform

    X, Y = random_networks(rng, [20, 20], [30, 30], 80)
    exact = inner_alignment(X, Y)
    soft = inner_alignment(X, Y, options=engine_options(solver="sinkhorn", epsilon=1e-3))
    gap = soft.cost - exact.cost
    assert np.all(gap >= -1e-6)                    # a feasible plan cannot beat the optimum
    assert np.all(gap <= soft.gap_bound + 1e-6)    # the bound is a bound
    assert soft.gap_bound.max() < 5e-3             # and small at epsilon = 1e-3
    for l in range(2):
        for m in range(2):
            dense = soft.plans[l][m].toarray()
            np.testing.assert_allclose(dense.sum(1), 1 / 20, atol=1e-6)
            np.testing.assert_allclose(dense.sum(0), 1 / 30, atol=1e-6)
    # smaller epsilon, smaller gap; float64 works too
    cost = torch.tensor(1.0 - np.corrcoef(X[0].T, Y[0].T)[:20, 20:])[None]
    coarse = sinkhorn_uniform(cost, epsilon=1e-1)
    fine = sinkhorn_uniform(cost, epsilon=1e-3)
    assert fine.gap_bound.item() < coarse.gap_bound.item()
    with pytest.raises(ValueError, match="B x n x m"):
        sinkhorn_uniform(cost[0])
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn_uniform(cost * float("nan"))


def test_mot_with_sinkhorn_known_answers(rng):
    """Self-alignment gives P = I/L and a score close to 1; a layer-shuffled copy is
    recovered; MOT+R with Sinkhorn recovers a rotated copy."""
    X = [rng.standard_normal((120, 12)) for _ in range(3)]
    mot = MOT(solver="sinkhorn").fit(X, X)
    np.testing.assert_allclose(mot.coupling_, np.eye(3) / 3, atol=1e-12)
    assert mot.score(X, X) > 0.99
    assert np.all(mot.inner_gap_bound_ >= 0) and mot.inner_gap_bound_.max() < 5e-3
    order = [2, 0, 1]
    shuffled = MOT(solver="sinkhorn").fit(X, [X[k] for k in order])
    np.testing.assert_allclose(shuffled.coupling_[order, range(3)], 1 / 3, atol=1e-12)
    rotations = [np.linalg.qr(rng.standard_normal((12, 12)))[0] for _ in range(3)]
    rotated = [x @ q for x, q in zip(X, rotations)]
    plain = MOT(solver="sinkhorn").fit(X, rotated).score(X, rotated)
    with_r = MOT(rotation=True, solver="sinkhorn").fit(X, rotated)
    assert with_r.score(X, rotated) > 0.95 > plain
    assert all(np.all(np.diff(h) <= 1e-6) for h in with_r.objective_history_.values())
    # the Sinkhorn phase is polished with exact Q steps: vertex plans, and costs of the
    # MOT+R objective comparable with the exact alternation
    exact_r = MOT(rotation=True).fit(X, rotated)
    np.testing.assert_allclose(np.diag(with_r.cost_), np.diag(exact_r.cost_), atol=1e-3)
    assert all(q.nnz <= 2 * 12 - 1 for row in with_r.neuron_couplings_ for q in row)


# --------------------------------------------------------------------------- CUDA
@cuda
@pytest.mark.parametrize("rotation", [False, True])
def test_cuda_exact_equals_cpu(rng, rotation):
    X, Y = random_networks(rng, [64, 64, 96], [64, 128], 500)
    cpu = MOT(rotation=rotation).fit(X, Y)
    gpu = MOT(rotation=rotation, device="cuda", n_jobs=2).fit(X, Y)
    np.testing.assert_allclose(gpu.cost_, cpu.cost_, atol=1e-9)
    np.testing.assert_allclose(gpu.coupling_, cpu.coupling_, atol=1e-12)


@cuda
def test_cuda_sinkhorn_gap(rng):
    X, Y = random_networks(rng, [256, 256], [384, 384], 1000)
    exact = MOT().fit(X, Y)
    soft = MOT(solver="sinkhorn", device="cuda").fit(X, Y)
    gap = soft.cost_ - exact.cost_
    assert np.all(gap >= -1e-5) and np.all(gap <= soft.inner_gap_bound_ + 1e-5)
    assert soft.inner_gap_bound_.max() < 5e-3
    rotated = MOT(rotation=True, solver="sinkhorn", device="cuda").fit(X, Y)
    assert np.isfinite(rotated.cost_).all()


def test_three_level_mot_uses_the_engine(rng):
    from motalign import ThreeLevelMOT

    checkpoints = [[rng.standard_normal((40, w)) for w in (6, 8)] for _ in range(3)]
    serial = ThreeLevelMOT().fit(checkpoints, checkpoints[::-1])
    parallel = ThreeLevelMOT(n_jobs=2).fit(checkpoints, checkpoints[::-1])
    np.testing.assert_array_equal(serial.checkpoint_cost_, parallel.checkpoint_cost_)
    np.testing.assert_allclose(np.diag(serial.checkpoint_cost_[:, ::-1]), 0, atol=1e-12)
    soft = ThreeLevelMOT(solver="sinkhorn").fit(checkpoints, checkpoints[::-1])
    assert np.all(soft.checkpoint_cost_ >= serial.checkpoint_cost_ - 1e-6)
    np.testing.assert_array_equal(soft.pairwise_best_, serial.pairwise_best_)
