"""MOT+R rotations rebuilt from their rotation-defining plans (inner.rotation.rotation_from_plan):
equal to the alternation's rotations on both backends, and reused by the workflow's outer-OT
job instead of re-running the alternation (shard members rplan_*)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_network, split
from motalign import COUPLINGS, MOT
from motalign.inner import EngineOptions, inner_alignment
from motalign.inner.layers import Standardized
from motalign.inner.rotation import plan_weights, rotation_from_plan
from motalign.inner.types import Alternation

TORCH_CPU = dict(solver="exact", device="torch-cpu", n_jobs=2)


def rotated_copy(rng, widths=(8, 12, 10), n_stimuli=400, noise=0.05):
    """Target layer m is a rotated, noisy copy of source layer order[m] (MOT+R's planted answer)."""
    X = random_network(rng, len(widths), list(widths), n_stimuli)
    order = rng.permutation(len(widths))
    Y = []
    for o in order:
        width = X[o].shape[1]
        rotation, _ = np.linalg.qr(rng.standard_normal((width, width)))
        Y.append(X[o] @ rotation + noise * rng.standard_normal((n_stimuli, width)))
    return X, Y, order


def unrelated(rng):
    return random_network(rng, 3, [6, 9, 7], 90), random_network(rng, 2, [8, 6], 90)


def rebuilt(inner, X, Y):
    """Every pair's rotation rebuilt from its rotation-defining plan, and the weights W = n Q_def."""
    xs, ys = Standardized(X), Standardized(Y)
    out = {}
    for (l, m), plan in inner.rotation_plans.items():
        n = X[l].shape[1]
        weights = np.eye(n, Y[m].shape[1]) if plan is None else plan_weights(plan, n).toarray()
        out[l, m] = rotation_from_plan(plan, xs(l).T @ ys(m)), weights
    return out


@pytest.mark.parametrize("data", ["random", "planted"])
@pytest.mark.parametrize("stopping", [Alternation(), Alternation(max_iter=1, tol=0.0), Alternation(max_iter=0)])
def test_cpu_rotation_from_plan_equals_the_alternation(rng, data, stopping):
    X, Y = unrelated(rng) if data == "random" else rotated_copy(rng)[:2]
    inner = inner_alignment(X, Y, rotation=True, alternation=stopping)
    assert set(inner.rotation_plans) == set(inner.rotations) == {(l, m) for l in range(len(X)) for m in range(len(Y))}
    final_plan_differs = False
    xs, ys = Standardized(X), Standardized(Y)
    for (l, m), (rotation, _) in rebuilt(inner, X, Y).items():
        np.testing.assert_allclose(rotation, inner.rotations[l, m], rtol=0, atol=1e-10)
        if stopping.max_iter == 0:
            assert inner.rotation_plans[l, m] is None
        else:
            plan = inner.rotation_plans[l, m]
            assert plan.nnz <= sum(plan.shape) - 1 and plan.sum() == pytest.approx(1.0)
            from_final = rotation_from_plan(inner.plans[l][m], xs(l).T @ ys(m))
            final_plan_differs |= not np.allclose(from_final, inner.rotations[l, m], atol=1e-6)
    if stopping.max_iter == 1:  # the last Q update is kept: the final plan no longer defines R
        assert final_plan_differs


@pytest.mark.parametrize("data", ["random", "planted"])
def test_fit_from_inner_rebuilds_the_fit_rotations(rng, data, monkeypatch):
    if data == "planted":
        X, Y, order = rotated_copy(rng)
        (fit_x, held_x), (fit_y, held_y) = split(X, 320), split(Y, 320)
    else:
        X, Y = unrelated(rng)
        (fit_x, held_x), (fit_y, held_y) = split(X, 70), split(Y, 70)
    direct = MOT(rotation=True, random_state=2).fit(fit_x, fit_y)  # keeps every rotation
    inner = inner_alignment(fit_x, fit_y, rotation=True)
    monkeypatch.setattr(MOT, "_recompute_rotations", _refuse)
    again = MOT(rotation=True, random_state=2).fit_from_inner(
        fit_x, fit_y, inner.cost, inner.plans, inner.histories, inner.rotation_plans
    )
    assert set(again.rotations_) == set(direct.rotations_)
    for key, rotation in direct.rotations_.items():
        np.testing.assert_allclose(again.rotations_[key], rotation, rtol=0, atol=1e-10)
    for name in COUPLINGS:
        assert again.score(held_x, held_y, name) == pytest.approx(direct.score(held_x, held_y, name), abs=1e-10)
    if data == "planted":  # MOT+R recovers the rotated copy
        assert list(again.coupling_.argmax(axis=0)) == list(order)
        assert again.score(held_x, held_y) >= 0.95
    with pytest.raises(ValueError, match=r"rotation plan \(0, 1\) has shape"):
        bad = dict(inner.rotation_plans)
        bad[0, 1] = np.ones((2, 2))
        MOT(rotation=True).fit_from_inner(fit_x, fit_y, inner.cost, inner.plans, inner.histories, bad)


def _refuse(*args, **kwargs):
    raise AssertionError("the MOT+R alternation was re-run")


def test_fit_without_cached_rotations_rebuilds_them(rng, monkeypatch):
    """MOT.fit beyond ROTATION_CACHE_BYTES keeps no rotations during the inner level; the
    used ones are rebuilt from their rotation-defining plans, not re-run."""
    import motalign.mot

    X, Y = unrelated(rng)
    cached = MOT(rotation=True, random_state=1).fit(X, Y)
    monkeypatch.setattr(motalign.mot, "ROTATION_CACHE_BYTES", 0)
    monkeypatch.setattr(MOT, "_recompute_rotations", _refuse)
    uncached = MOT(rotation=True, random_state=1).fit(X, Y)
    assert uncached.rotations_.keys() == cached.rotations_.keys()
    for key, rotation in cached.rotations_.items():
        np.testing.assert_allclose(uncached.rotations_[key], rotation, rtol=0, atol=1e-10)


def test_fit_from_inner_recomputes_only_pairs_without_a_plan(rng, monkeypatch):
    X, Y = unrelated(rng)
    direct = MOT(rotation=True, random_state=0).fit(X, Y)
    inner = inner_alignment(X, Y, rotation=True)
    dropped = sorted(direct.rotations_)[0]
    partial = {k: v for k, v in inner.rotation_plans.items() if k != dropped}
    calls = []
    original = MOT._recompute_rotations
    monkeypatch.setattr(
        MOT, "_recompute_rotations", lambda self, x, y, pairs: calls.append(list(pairs)) or original(self, x, y, pairs)
    )
    again = MOT(rotation=True, random_state=0).fit_from_inner(X, Y, inner.cost, inner.plans, inner.histories, partial)
    assert calls == [[dropped]]
    for key, rotation in direct.rotations_.items():
        np.testing.assert_allclose(again.rotations_[key], rotation, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "options, atol",
    [(EngineOptions(**TORCH_CPU), 1e-9), (EngineOptions(solver="sinkhorn", device="torch-cpu"), 1e-4)],
    ids=["exact", "sinkhorn"],
)
def test_torch_rotation_from_plan_equals_the_alternation(rng, options, atol):
    """On the torch backend (float64 with exact Q steps, float32 with Sinkhorn), up to its float
    tolerance.  Where the source layer is wider than the target, the Procrustes rotation is
    unique only on the range of W = n Q_def (which is all that reconstructions use), and
    torch's and NumPy's SVDs complete it differently: there R W is compared."""
    pytest.importorskip("torch")
    X, Y, _ = rotated_copy(rng, widths=(8, 12), n_stimuli=300)
    X2, Y2 = unrelated(rng)
    for x, y in ((X, Y), (X2, Y2)):
        inner = inner_alignment(x, y, rotation=True, options=options)
        for (l, m), (rotation, weights) in rebuilt(inner, x, y).items():
            expected = inner.rotations[l, m]
            np.testing.assert_allclose(rotation @ rotation.T, np.eye(len(rotation)), atol=1e-10)
            if x[l].shape[1] <= y[m].shape[1]:
                np.testing.assert_allclose(rotation, expected, rtol=0, atol=atol)
            np.testing.assert_allclose(rotation @ weights, expected @ weights, rtol=0, atol=atol * 10)


def test_torch_rotation_plan_starts_from_the_initial_plans(rng):
    """Without an accepted Procrustes step, a pair keeps its initial rotation, and with it
    the initial rotation-defining plan (the Sinkhorn phase's, for the exact polish)."""
    torch = pytest.importorskip("torch")
    from motalign.inner.rotation_torch import rotation_batch
    from motalign.inner.torch_backend import BatchSolver, DeviceLayers

    X, Y = unrelated(rng)
    reference = inner_alignment(X, Y, pairs=[(0, 0)], rotation=True, alternation=Alternation(max_iter=2, tol=0.0))
    xs = DeviceLayers(Standardized(X), torch.device("cpu"), torch.float64)
    ys = DeviceLayers(Standardized(Y), torch.device("cpu"), torch.float64)
    start = torch.as_tensor(reference.rotations[0, 0])[None]
    (result,), _ = rotation_batch(
        xs,
        ys,
        [(0, 0)],
        BatchSolver(EngineOptions(), None),
        Alternation(max_iter=0),
        initial=start,
        initial_plans=[reference.rotation_plans[0, 0]],
    )
    assert (result.rotation_plan != reference.rotation_plans[0, 0]).nnz == 0
    np.testing.assert_array_equal(result.rotation, reference.rotations[0, 0])


# ---------------------------------------------------------------------------- the workflow


def _workflow_inputs(tmp_path, rng):
    from motalign.io.store import write_activations
    from motalign.workflow.data_jobs import make_split

    ids = [f"s{i}" for i in range(120)]
    X, Y, _ = rotated_copy(rng, widths=(6, 9, 7), n_stimuli=120, noise=0.3)
    Y = Y[:2] + [random_network(rng, 1, 5, 120)[0]]
    write_activations(tmp_path / "x.npz", {f"x{i}": a for i, a in enumerate(X)}, stimulus_ids=ids)
    write_activations(tmp_path / "y.npz", {f"y{i}": a for i, a in enumerate(Y)}, stimulus_ids=ids)
    np.savez(tmp_path / "stim.npz", ids=np.array(ids))
    make_split(tmp_path / "stim.npz", tmp_path / "split.npz", seed=0, fit_fraction=0.75)
    return X, Y


def _outer(tmp_path, shards, name):
    from motalign.workflow.alignment_jobs import outer_alignment

    return outer_alignment(
        tmp_path / "x.npz",
        tmp_path / "y.npz",
        tmp_path / "split.npz",
        shards,
        tmp_path / f"{name}.npz",
        tmp_path / f"{name}.json",
        rotation=True,
        seed=0,
    )


def test_workflow_outer_job_reuses_the_shards_rotation_plans(tmp_path, rng, monkeypatch):
    from motalign.io.stimuli import read_split
    from motalign.workflow.alignment_jobs import inner_shard
    from motalign.workflow.shards import read_shards

    X, Y = _workflow_inputs(tmp_path, rng)
    shards = [tmp_path / f"shard{k}.npz" for k in range(3)]
    for k, shard in enumerate(shards):
        inner_shard(
            tmp_path / "x.npz", tmp_path / "y.npz", tmp_path / "split.npz", shard, shard=k, shard_size=4, rotation=True
        )
    read = read_shards(shards, 3, 3)
    assert set(read.rotation_plans) == {(l, m) for l in range(3) for m in range(3)}
    # old-format shards (written before the rplan_* members): the outer job re-runs the alternation
    old = []
    for shard in shards:
        with np.load(shard) as s:
            members = {k: s[k] for k in s.files if not k.startswith("rplan_")}
        assert len(members) == len(s.files) - 4
        old.append(tmp_path / f"old_{shard.name}")
        np.savez(old[-1], **members)
    assert read_shards(old, 3, 3).rotation_plans == {}
    calls = []
    original = MOT._recompute_rotations
    monkeypatch.setattr(
        MOT, "_recompute_rotations", lambda self, x, y, pairs: calls.append(list(pairs)) or original(self, x, y, pairs)
    )
    recomputed = _outer(tmp_path, old, "old")
    assert len(calls) == 1 and calls[0]
    # new shards: rotations rebuilt from the stored plans, the alternation is not re-run
    monkeypatch.setattr(MOT, "_recompute_rotations", _refuse)
    reused = _outer(tmp_path, shards, "new")
    for name in COUPLINGS:
        assert reused["scores"][name] == pytest.approx(recomputed["scores"][name], abs=1e-10)
        np.testing.assert_allclose(
            reused["couplings"][name]["layer_scores"], recomputed["couplings"][name]["layer_scores"], rtol=0, atol=1e-10
        )
    assert reused["objective"] == recomputed["objective"]
    # ... and both equal one MOT+R fit on the fit stimuli
    fit, held = read_split(tmp_path / "split.npz")
    monkeypatch.setattr(MOT, "_recompute_rotations", original)
    direct = MOT(rotation=True, random_state=0).fit([a[fit] for a in X], [a[fit] for a in Y])
    expected = direct.scores([a[held] for a in X], [a[held] for a in Y])
    for name, value in expected.items():
        assert reused["scores"][name] == pytest.approx(value, abs=1e-10)
