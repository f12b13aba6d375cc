"""The measurements of ``motalign estimate`` (:mod:`motalign.workflow.estimate`):
synthetic activation, split and shard files of a job's real shapes, and one function per
measured rule.  Each measurement runs in a fresh interpreter
(``python -m motalign.workflow.estimate_measure SPEC.json``), which prints its peak
resident memory, CPU time and the job's projected CPU time as one ``MEASURED`` JSON line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._validation import check_layers
from ..io.atomic import save_npz
from ..io.stimuli import read_split
from ..io.store import load_network, write_activations
from ..preprocessing import LayerStats
from ..ridge import SharedRidgeLOO, loo_score_table
from .alignment_jobs import inner_shard, outer_alignment
from .shards import shard_pairs, write_shard

# --------------------------------------------------------------------------- synthetic data


def synthetic_network(path, n_total: int, widths, seed: int, rank: int = 32) -> None:
    """An activation file of these shapes: a shared low-rank signal plus noise (so that
    plans are not trivial), float32 as extraction writes them."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_total, rank)).astype(np.float32)
    layers = {}
    for i, width in enumerate(widths):
        mix = rng.standard_normal((rank, width)).astype(np.float32)
        layer = latent @ mix
        layer += 2.0 * rng.standard_normal((n_total, width), dtype=np.float32)
        layers[f"layer{i}"] = layer
    write_activations(path, layers, stimulus_ids=[f"s{k}" for k in range(n_total)], metadata={"synthetic": True})


def synthetic_split(path, n_total: int, n_fit_rows: int) -> None:
    order = np.random.default_rng(0).permutation(n_total)
    save_npz(path, fit=np.sort(order[:n_fit_rows]), held_out=np.sort(order[n_fit_rows:]))


# --------------------------------------------------------------------------- measurements
# Each runs in a fresh interpreter (``python -m motalign.workflow.estimate SPEC.json``) and
# returns the work units it did out of the job's; the parent reads the child's peak RSS
# and CPU time from the JSON line it prints.


def _measure_inner_ot(spec):
    pairs = shard_pairs(spec["n_x"], spec["n_y"], spec["shard_size"], spec["shard"])
    # the whole shard by default: its target layers' z-scores are kept, so part of it
    # would under-measure the memory
    k = len(pairs) if spec["max_pairs"] is None else min(len(pairs), spec["max_pairs"])
    inner_shard(
        spec["x"],
        spec["y"],
        spec["split"],
        spec["out"],
        shard=spec["shard"],
        shard_size=spec["shard_size"],
        rotation=spec["rotation"],
        mot={**spec["mot"], "n_jobs": spec["threads"]},
        max_pairs=k,
    )
    return k, len(pairs)


def synthetic_shards(spec):
    """Shards with the real plans' size: north-west corner plans (n + m - 1 entries)."""
    from ..solvers.exact import north_west_corner  # deferred: POT

    class Result:  # the fields write_shard reads
        def __init__(self, pair, n, m, rotation):
            rows, cols = north_west_corner(n, m)
            plan = sp.coo_matrix((np.full(rows.size, 1.0 / rows.size), (rows, cols)), shape=(n, m))
            self.pair, self.plan, self.gap_bound = pair, plan, 0.0
            self.cost = 0.5 + 0.1 * np.sin(pair[0] - pair[1])
            self.history = [self.cost + 0.1, self.cost] if rotation else None
            self.rotation_plan = plan if rotation else None
            self.rotation = None

    xw, yw = spec["x_widths"], spec["y_widths"]
    paths = []
    for shard in range(-(-len(xw) * len(yw) // spec["shard_size"])):
        pairs = shard_pairs(len(xw), len(yw), spec["shard_size"], shard)
        path = os.path.join(spec["dir"], f"shard{shard}.npz")
        write_shard(path, [Result(p, xw[p[0]], yw[p[1]], spec["rotation"]) for p in pairs])
        paths.append(path)
    return paths


def _measure_outer_ot(spec):
    shards = spec["shards"]
    outer_alignment(
        spec["x"],
        spec["y"],
        spec["split"],
        shards,
        spec["out"] + ".npz",
        spec["out"] + ".json",
        rotation=spec["rotation"],
        seed=0,
        mot=spec["mot"],
    )
    return 1, 1


def _load(spec, side):
    fit, held = read_split(spec["split"])
    return load_network(spec[side], fit)[0], load_network(spec[side], held)[0]


def _measure_baseline(spec):
    from .. import baselines  # deferred: POT and scikit-learn

    (x_fit, x_held), (y_fit, y_held) = _load(spec, "x"), _load(spec, "y")
    if spec["kind"] == "global":
        baselines.GlobalOT().fit(x_fit, y_fit).score(x_held, y_held)
        baselines.GlobalLinearPredictivity().fit(x_fit, y_fit).score(x_held, y_held)
        return 1, 1
    if spec["kind"] == "rsa":
        baselines.PairwiseRSA(max_stimuli=4000, random_state=0).fit(x_fit, y_fit)
        return 1, 1
    # pairwise linear predictivity, timed by phase: z-scores and the source layers' Gram
    # matrices (once), the LOO scores of k target layers (x M), the selected pairs' weights
    # (one decomposition per target layer some source layer selects: at most min(L, M))
    xz = [LayerStats.fit(a).transform(a) for a in x_fit]
    yz = [LayerStats.fit(a).transform(a) for a in y_fit]
    if not baselines._gram_scores_cheaper(xz, yz, len(baselines.DEFAULT_ALPHAS)):
        k = min(len(y_fit), spec["max_units"])
        baselines.PairwiseLinearPredictivity().fit(x_fit, y_fit[:k])
        return k, len(y_fit)
    start = time.process_time()
    grams = [a @ a.T for a in xz]
    once = time.process_time() - start
    k = min(len(yz), spec["max_units"])
    start = time.process_time()
    for m in range(k):
        loo_score_table(yz[m], baselines.DEFAULT_ALPHAS, grams, [a.shape[1] for a in xz])
    per_target = (time.process_time() - start) / k
    start = time.process_time()
    SharedRidgeLOO(yz[0], baselines.DEFAULT_ALPHAS[:1]).fit(xz[0])
    per_selected = time.process_time() - start
    return {
        "projected_cpu_s": once + len(yz) * per_target + min(len(xz), len(yz)) * per_selected,
        "units": (k, len(yz)),
    }


def _measure_subsample(spec):
    from ..inner import align_pairs, engine_settings  # deferred: POT and scikit-learn

    (x_fit, _), (y_fit, _) = _load(spec, "x"), _load(spec, "y")
    rng = np.random.default_rng(0)
    y_fit = [
        a[:, np.sort(rng.choice(a.shape[1], max(1, round(spec["fraction"] * a.shape[1])), replace=False))]
        for a in y_fit
    ]
    pairs = [(l, m) for l in range(len(x_fit)) for m in range(len(y_fit))]
    k = min(len(pairs), spec["max_pairs"])
    options, stopping = engine_settings({**spec["mot"], "n_jobs": spec["threads"]})
    # the whole fit keeps every layer's z-scores: make them all, then time k pairs
    from ..inner.layers import Standardized  # deferred: POT and scikit-learn

    x_std, y_std = Standardized(x_fit), Standardized(y_fit)
    kept = [std(i) for std, n in ((x_std, len(x_fit)), (y_std, len(y_fit))) for i in range(n)]
    list(
        align_pairs(
            x_fit,
            y_fit,
            x_std.stats,
            y_std.stats,
            pairs=pairs[:k],
            rotation=spec["rotation"],
            alternation=stopping,
            options=options,
        )
    )
    del kept
    return k, len(pairs)


def _measure_three_level_block(spec):
    from ..three_level import checkpoint_costs  # deferred: POT and scikit-learn

    xs = [check_layers(load_network(spec["x"])[0], "x") for _ in range(spec["block"])]
    ys = [check_layers(load_network(path)[0], "y") for path in spec["y_revisions"]]
    k = min(len(ys), spec["max_units"])
    checkpoint_costs(xs[:1], ys[:k], **{**spec["mot"], "n_jobs": spec["threads"]})
    return k, spec["block"] * len(ys)


MEASURE = {
    "inner_ot": _measure_inner_ot,
    "outer_ot": _measure_outer_ot,
    "baseline": _measure_baseline,
    "subsample": _measure_subsample,
    "three_level_block": _measure_three_level_block,
}


def _peak_rss_mb(fallback: float) -> float:
    """This process's peak resident memory: ``VmHWM`` of ``/proc/self/status`` (Linux).
    ``ru_maxrss`` is not used where VmHWM exists: Linux carries the parent's high-water
    mark into a child started by vfork + exec, so a large parent (pytest, or the estimate
    after writing synthetic files) would inflate every measurement."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return fallback


def _child(spec_path) -> None:
    import resource  # deferred: POSIX only, the child alone needs it

    spec = json.loads(Path(spec_path).read_text())
    # the imports every job pays once are not work to extrapolate
    from .. import baselines, inner, mot, three_level  # noqa: F401  deferred: POT and scikit-learn

    wall, cpu = time.perf_counter(), time.process_time()
    outcome = MEASURE[spec["rule"]](spec)
    cpu = time.process_time() - cpu
    if isinstance(outcome, dict):  # timed by phase: the measurement projects the job itself
        (done, total), projected = outcome["units"], outcome["projected_cpu_s"]
    else:  # a share of uniform work units
        (done, total), projected = outcome, cpu * outcome[1] / max(1, outcome[0])
    peak_mb = _peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    figures = {
        "units_done": done,
        "units_total": total,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": cpu,
        "projected_cpu_s": projected,
        "peak_mb": peak_mb,
    }
    print("MEASURED " + json.dumps(figures))


def run_measurement(spec: dict, workdir) -> dict:
    """Run one measurement in a fresh interpreter; its figures, or ``{"error": ...}``.  A
    measurement of the same spec already made in ``workdir`` is reused (delete its
    ``measured_*.json`` to measure again)."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(workdir) / f"spec_{spec['rule']}_{key}.json"
    done_path = Path(workdir) / f"measured_{spec['rule']}_{key}.json"
    if done_path.exists():
        return {**json.loads(done_path.read_text()), "reused": True}
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "motalign.workflow.estimate_measure", str(path)], capture_output=True, text=True
    )
    for line in done.stdout.splitlines():
        if line.startswith("MEASURED "):
            result = json.loads(line[9:])
            done_path.write_text(json.dumps(result))
            return result
    return {"error": (done.stderr or done.stdout)[-2000:]}


if __name__ == "__main__":
    _child(sys.argv[1])
