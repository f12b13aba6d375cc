"""The contract of the inner level (motalign.inner): both backends yield one PairResult per
layer pair with the same fields and the same results, and MOT+R's NumPy alternation
(inner.rotation) and its batched torch twin (inner.rotation_torch) agree step for step.
The torch side runs on torch's CPU device here; the CUDA twins are in test_engine.py."""

from __future__ import annotations

import numpy as np
import pytest

from motalign.inner import EngineOptions, PairResult, align_pairs, inner_alignment
from motalign.inner.layers import Standardized
from motalign.inner.rotation import rotation_alignment
from motalign.inner.types import Alternation

torch = pytest.importorskip("torch")

from motalign.inner.rotation_torch import rotation_batch  # noqa: E402
from motalign.inner.torch_backend import BatchSolver, DeviceLayers  # noqa: E402


def networks(rng, widths_x, widths_y, t):
    X = [rng.standard_normal((t, w)) for w in widths_x]
    Y = [rng.standard_normal((t, w)) + 0.5 * X[i % len(X)][:, rng.integers(0, widths_x[i % len(X)], w)]
         for i, w in enumerate(widths_y)]
    return X, Y


TORCH_CPU = dict(solver="exact", device="torch-cpu", n_jobs=2)


@pytest.mark.parametrize("rotation", [False, True])
def test_both_backends_yield_one_pair_result_per_pair(rng, rotation):
    X, Y = networks(rng, [8, 12, 8], [8, 10], 40)
    pairs = [(0, 1), (2, 0), (1, 1), (0, 0)]
    for options in (EngineOptions(), EngineOptions(**TORCH_CPU)):
        results = list(align_pairs(X, Y, pairs=pairs, rotation=rotation, options=options))
        assert all(isinstance(r, PairResult) for r in results)
        assert sorted(r.pair for r in results) == sorted(pairs)
        for r in results:
            l, m = r.pair
            assert r.plan.shape == (X[l].shape[1], Y[m].shape[1])
            assert np.isclose(r.plan.sum(), 1.0)
            assert (r.history is not None) == rotation and (r.rotation is not None) == rotation
            assert rotation or r.rotation_plan is None
            if rotation:
                assert r.history[-1] == r.cost
                np.testing.assert_allclose(r.rotation @ r.rotation.T, np.eye(X[l].shape[1]), atol=1e-10)


@pytest.mark.parametrize("rotation", [False, True])
def test_torch_backend_equals_cpu_backend(rng, rotation):
    """The torch backend with solver="exact" (batches of equal-shaped pairs, one pair per
    batch at the smallest budget) gives the CPU backend's costs, plans and histories."""
    X, Y = networks(rng, [10, 16, 10], [10, 20], 50)
    cpu = inner_alignment(X, Y, rotation=rotation)
    for batch_bytes in (1, 2**30):
        options = EngineOptions(**TORCH_CPU, batch_bytes=batch_bytes)
        batched = inner_alignment(X, Y, rotation=rotation, options=options)
        np.testing.assert_allclose(batched.cost, cpu.cost, rtol=0, atol=1e-10)
        for l in range(3):
            for m in range(2):
                np.testing.assert_allclose(batched.plans[l][m].toarray(), cpu.plans[l][m].toarray(), atol=1e-12)
                if rotation:
                    history = batched.histories[l, m]
                    assert np.all(np.diff(history) <= 1e-12)
                    assert abs(history[-1] - cpu.histories[l, m][-1]) <= 1e-10
                    np.testing.assert_allclose(batched.rotation_plans[l, m].toarray(),
                                               cpu.rotation_plans[l, m].toarray(), atol=1e-12)


@pytest.mark.parametrize("stopping", [Alternation(), Alternation(max_iter=3, tol=0.0), Alternation(max_iter=0)])
def test_numpy_and_torch_alternations_agree(rng, stopping):
    """MOT+R on one pair: the NumPy alternation and the batched torch one take the same
    steps (same history length, costs, plan and rotation; the source is the narrower side,
    so that each Procrustes step has a unique solution)."""
    X, Y = networks(rng, [9], [12], 60)
    x_std, y_std = Standardized(X), Standardized(Y)
    reference = rotation_alignment(x_std(0), y_std(0), alternation=stopping)
    xs = DeviceLayers(x_std, torch.device("cpu"), torch.float64)
    ys = DeviceLayers(y_std, torch.device("cpu"), torch.float64)
    (twin,), _ = rotation_batch(xs, ys, [(0, 0)], BatchSolver(EngineOptions(), None), stopping)
    assert len(twin.history) == len(reference.history) <= stopping.max_iter + 1
    np.testing.assert_allclose(twin.history, reference.history, rtol=0, atol=1e-10)
    np.testing.assert_allclose(twin.plan.toarray(), reference.plan.toarray(), atol=1e-12)
    np.testing.assert_allclose(twin.rotation, reference.rotation, atol=1e-8)
    assert (twin.rotation_plan is None) == (reference.rotation_plan is None) == (stopping.max_iter == 0)
    if reference.rotation_plan is not None:  # the plan of the last accepted Procrustes step
        np.testing.assert_allclose(twin.rotation_plan.toarray(), reference.rotation_plan.toarray(), atol=1e-12)


def test_both_alternations_stop_when_a_q_step_leaves_the_plan_unchanged(rng):
    """The stopping rule shared by both twins: on a rotated, shuffled copy the second Q step
    returns the first plan, so both stop after one round (history of two entries), with
    tol = 0 too; on unrelated layers both stop at the same round."""
    x = rng.standard_normal((200, 10))
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    planted = ([x], [(x @ q)[:, rng.permutation(10)] + 0.05 * rng.standard_normal((200, 10))])
    unrelated = networks(rng, [9], [9], 60)
    for (X, Y), rounds in ((planted, 1), (unrelated, None)):
        x_std, y_std = Standardized(X), Standardized(Y)
        xs = DeviceLayers(x_std, torch.device("cpu"), torch.float64)
        ys = DeviceLayers(y_std, torch.device("cpu"), torch.float64)
        for stopping in (Alternation(), Alternation(tol=0.0)):
            reference = rotation_alignment(x_std(0), y_std(0), alternation=stopping)
            (twin,), _ = rotation_batch(xs, ys, [(0, 0)], BatchSolver(EngineOptions(), None), stopping)
            assert len(twin.history) == len(reference.history) < stopping.max_iter + 1
            assert rounds is None or reference.n_iter == rounds
            np.testing.assert_allclose(twin.history, reference.history, rtol=0, atol=1e-10)
            assert np.all(np.diff(reference.history) <= 0)
