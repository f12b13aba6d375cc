"""The global baselines of Appendix F (Table F.1) at NSD scale: time and peak memory of the
previous code paths against the current ones.

Two synthetic "subjects" with 7 regions each (about 15,000 voxels per side at ``--scale 1``),
``--stimuli`` fit and ``--heldout`` held-out stimuli, driven by a shared latent plus noise (so
that the OT plan is not trivial).  Methods, each fitted in a fresh subprocess that loads the
data from .npy files and reports its own peak resident memory (``ru_maxrss``):

* ``ot_dense``       the previous GlobalOT path: the dense n_x x n_y correlation cost
                     (``correlation_cost``) solved by ``restricted_network_simplex``;
* ``ot_on_demand``   :class:`motalign.baselines.GlobalOT` (cost computed block by block,
                     :class:`motalign.solvers.CorrelationCost`);
* ``ridge_primal``   the previous GlobalLinearPredictivity path: ``sklearn RidgeCV``
                     (``fit_intercept=False``) with its n_x x n_y ``coef_``;
* ``ridge_dual``     :class:`motalign.baselines.GlobalLinearPredictivity` (dual form).

Reported: fit time, peak RSS, RSS with the data loaded (before the fit), the held-out score
(mean r over all source voxels) and the fitted objective / penalty, which must agree between
the two paths of each baseline.  Prints a markdown table and writes JSON (default
benchmarks/results/global_baselines.json).

Usage: python benchmarks/global_baselines.py [--scale 1.0] [--stimuli 800] [--heldout 200]
       [--methods ot_dense,ot_on_demand,ridge_primal,ridge_dual] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# voxels per region (V1, V2, V3, hV4, ventral, lateral, dorsal) of the two subjects
WIDTHS_X = (2000, 1900, 1700, 1300, 3200, 2600, 2300)
WIDTHS_Y = (1950, 1850, 1750, 1250, 3100, 2700, 2250)
METHODS = ("ot_dense", "ot_on_demand", "ridge_primal", "ridge_dual")
LATENTS = 64


def widths(scale: float) -> tuple[tuple, tuple]:
    return tuple(max(2, round(w * scale)) for w in WIDTHS_X), tuple(max(2, round(w * scale)) for w in WIDTHS_Y)


def write_data(folder: Path, wx, wy, n_stimuli: int, seed: int) -> None:
    """Both networks as (stimuli x voxels) .npy files: each voxel a random loading of a shared
    64-dimensional latent plus independent noise of the same variance."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_stimuli, LATENTS))
    for name, ws in (("X", wx), ("Y", wy)):
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", shape=(n_stimuli, sum(ws)))
        start = 0
        for w in ws:  # region by region, to keep the parent small
            loadings = rng.standard_normal((LATENTS, w)) / np.sqrt(LATENTS)
            out[:, start : start + w] = latent @ loadings + rng.standard_normal((n_stimuli, w))
            start += w
        out.flush()
        del out


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(method: str, folder: Path, wx, wy, n_fit: int) -> dict:
    """One measurement, in this (fresh) process: load, fit, score; peak RSS of the process."""
    from motalign.baselines import DEFAULT_ALPHAS, GlobalLinearPredictivity, GlobalOT
    from motalign.metrics import columnwise_pearson
    from motalign.preprocessing import LayerStats
    from motalign.solvers import correlation_cost, restricted_network_simplex

    x_all, y_all = np.load(folder / "X.npy"), np.load(folder / "Y.npy")
    X = np.split(x_all, np.cumsum(wx)[:-1], axis=1)
    Y = np.split(y_all, np.cumsum(wy)[:-1], axis=1)
    fit_x, fit_y = [a[:n_fit] for a in X], [a[:n_fit] for a in Y]
    held_x, held_y = [a[n_fit:] for a in X], [a[n_fit:] for a in Y]
    data_mib = _rss_mib()
    start = time.perf_counter()
    if method == "ot_on_demand":
        est = GlobalOT().fit(fit_x, fit_y)
        fit_s = time.perf_counter() - start
        objective, nnz = est.cost_, est.plan_.nnz
        score = est.score(held_x, held_y)
    elif method == "ot_dense":
        est = GlobalOT()
        xz, yz = est._fit_networks(fit_x, fit_y)  # the fit statistics, as GlobalOT.fit
        est.plan_, est.cost_ = restricted_network_simplex(correlation_cost(np.hstack(xz), np.hstack(yz)))
        fit_s = time.perf_counter() - start
        del xz, yz
        objective, nnz = est.cost_, est.plan_.nnz
        score = est.score(held_x, held_y)
    elif method == "ridge_dual":
        est = GlobalLinearPredictivity().fit(fit_x, fit_y)
        fit_s = time.perf_counter() - start
        objective, nnz = {"alpha": est.alpha_, "cv_score": est.cv_score_}, None
        score = est.score(held_x, held_y)
    elif method == "ridge_primal":
        from sklearn.linear_model import RidgeCV

        x_stats, y_stats = [LayerStats.fit(a) for a in fit_x], [LayerStats.fit(a) for a in fit_y]

        def z(stats, layers):
            return np.hstack([s.transform(a) for s, a in zip(stats, layers)])

        ridge = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=False).fit(z(y_stats, fit_y), z(x_stats, fit_x))
        fit_s = time.perf_counter() - start
        objective, nnz = {"alpha": float(ridge.alpha_), "cv_score": float(ridge.best_score_)}, None
        r, _ = columnwise_pearson(z(x_stats, held_x), ridge.predict(z(y_stats, held_y)))
        score = float(r.mean())
    else:
        raise ValueError(f"unknown method {method!r}")
    return {
        "method": method,
        "fit_s": round(fit_s, 2),
        "peak_rss_mib": round(_rss_mib()),
        "data_rss_mib": round(data_mib),
        "heldout_score": score,
        "objective": objective,
        "plan_nnz": nnz,
    }


def run_child(method: str, folder: Path, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--data",
        str(folder),
        "--scale",
        str(args.scale),
        "--stimuli",
        str(args.stimuli),
        "--heldout",
        str(args.heldout),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="voxel counts times this (1: ~15,000 per side)")
    parser.add_argument("--stimuli", type=int, default=800, help="fit stimuli T")
    parser.add_argument("--heldout", type=int, default=200, help="held-out stimuli")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/global_baselines.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    wx, wy = widths(args.scale)
    if args.child:
        print(json.dumps(child(args.child, Path(args.data), wx, wy, args.stimuli)))
        return {}
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="global_baselines_") as tmp:
        write_data(Path(tmp), wx, wy, args.stimuli + args.heldout, args.seed)
        for method in methods:
            rows.append(run_child(method, Path(tmp), args))
            print(f"  {method}: {rows[-1]['fit_s']} s, peak {rows[-1]['peak_rss_mib']} MiB", file=sys.stderr)
    shape = f"{sum(wx)} x {sum(wy)}"
    print(
        f"n_x x n_y = {shape} voxels ({len(wx)} + {len(wy)} regions), T = {args.stimuli} fit + "
        f"{args.heldout} held-out stimuli"
    )
    print(
        "| method | path | fit (s) | peak RSS (MiB) | RSS with data (MiB) | peak above data (MiB) | held-out r | "
        "objective |"
    )
    print("|---|---|---|---|---|---|---|---|")
    paths = {
        "ot_dense": "previous: dense cost",
        "ot_on_demand": "GlobalOT: cost on demand",
        "ridge_primal": "previous: RidgeCV primal",
        "ridge_dual": "GlobalLinearPredictivity: dual",
    }
    for r in rows:
        objective = r["objective"]
        shown = f"{objective:.12f}" if isinstance(objective, float) else f"alpha {objective['alpha']:g}"
        print(
            f"| {r['method']} | {paths[r['method']]} | {r['fit_s']} | {r['peak_rss_mib']} | {r['data_rss_mib']} | "
            f"{r['peak_rss_mib'] - r['data_rss_mib']} | {r['heldout_score']:.4f} | {shown} |"
        )
    by_method = {r["method"]: r for r in rows}
    agreement = {}
    if {"ot_dense", "ot_on_demand"} <= by_method.keys():
        dense, on_demand = by_method["ot_dense"]["objective"], by_method["ot_on_demand"]["objective"]
        agreement["ot_objective_diff"] = abs(dense - on_demand)
    if {"ridge_primal", "ridge_dual"} <= by_method.keys():
        primal, dual = by_method["ridge_primal"]["objective"], by_method["ridge_dual"]["objective"]
        agreement["ridge_same_alpha"] = primal["alpha"] == dual["alpha"]
        agreement["ridge_cv_score_rel_diff"] = abs(primal["cv_score"] - dual["cv_score"]) / abs(primal["cv_score"])
        agreement["ridge_heldout_diff"] = abs(
            by_method["ridge_primal"]["heldout_score"] - by_method["ridge_dual"]["heldout_score"]
        )
    print("agreement:", json.dumps(agreement))
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "shape": {
            "widths_x": wx,
            "widths_y": wy,
            "n_x": sum(wx),
            "n_y": sum(wy),
            "fit_stimuli": args.stimuli,
            "heldout_stimuli": args.heldout,
            "scale": args.scale,
            "latents": LATENTS,
        },
        "rows": rows,
        "agreement": agreement,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
