"""Pairwise linear predictivity (App. H), three ways over the same L x M ridge maps and the
default 19 penalties:

* one RidgeCV per layer pair (the first implementation);
* one decomposition per target layer shared by every source layer and penalty
  (motalign.ridge.SharedRidgeLOO);
* ``PairwiseLinearPredictivity().fit`` as it is now: it scores through T x T matrices
  (motalign.ridge.loo_score_table) when that takes fewer flops, else the shared
  decomposition.

All must select the same penalties; the table gives their times and the largest score
difference.  ``--skip-ridgecv`` leaves the first out (it takes hours at the paper's LLM shapes).
Prints a markdown table and writes JSON (default benchmarks/results/linear_predictivity.json).
Usage: python benchmarks/linear_predictivity.py [--stimuli 200 1000] [--layers 8] [--width 384]
       [--skip-ridgecv] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from motalign.baselines import DEFAULT_ALPHAS, PairwiseLinearPredictivity, _gram_scores_cheaper
from motalign.ridge import SharedRidgeLOO


def per_pair_ridgecv(X, Y):
    return [[RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=False).fit(y, x) for y in Y] for x in X]


def shared(X, Y):
    solvers = [SharedRidgeLOO(y, DEFAULT_ALPHAS) for y in Y]
    return [[solver.fit(x) for solver in solvers] for x in X]


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stimuli", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--layers", type=int, default=8, help="L = M layers per network")
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--out", default="benchmarks/results/linear_predictivity.json")
    parser.add_argument("--skip-ridgecv", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for n in args.stimuli:
        X = [rng.standard_normal((n, args.width)) for _ in range(args.layers)]
        Y = [x @ rng.standard_normal((args.width, args.width)) / args.width**0.5 + rng.standard_normal(x.shape)
             for x in X]
        before, t_before = None, None
        if not args.skip_ridgecv:
            start = time.perf_counter()
            before = per_pair_ridgecv(X, Y)
            t_before = time.perf_counter() - start
        start = time.perf_counter()
        after = shared(X, Y)
        t_after = time.perf_counter() - start
        # the estimator z-scores first; give it z-scored layers so that all three see the same data
        Xz = [(x - x.mean(0)) / x.std(0) for x in X]
        Yz = [(y - y.mean(0)) / y.std(0) for y in Y]
        start = time.perf_counter()
        estimator = PairwiseLinearPredictivity().fit(Xz, Yz)
        t_estimator = time.perf_counter() - start
        reference = [[SharedRidgeLOO(y, DEFAULT_ALPHAS).fit(x) for y in Yz] for x in Xz]
        same_alpha = all(a.alpha == estimator.alpha_[l, m] for l, row in enumerate(reference)
                         for m, a in enumerate(row))
        score_diff = max(abs(a.score - estimator.cv_score_[l, m]) for l, row in enumerate(reference)
                         for m, a in enumerate(row))
        if before is not None:
            same_alpha &= all(b.alpha_ == a.alpha for rb, ra in zip(before, after) for b, a in zip(rb, ra))
            score_diff = max(score_diff, max(abs(b.best_score_ - a.score)
                                             for rb, ra in zip(before, after) for b, a in zip(rb, ra)))
        rows.append({"stimuli": n, "layers": args.layers, "width": args.width,
                     "mode": "gram" if n <= args.width else "svd",
                     "ridgecv_per_pair_s": None if t_before is None else round(t_before, 3),
                     "shared_decomposition_s": round(t_after, 3), "estimator_s": round(t_estimator, 3),
                     "estimator_path": "gram scores" if _gram_scores_cheaper(Xz, Yz, len(DEFAULT_ALPHAS))
                     else "shared decomposition",
                     "speedup_vs_shared": round(t_after / t_estimator, 2),
                     "same_penalties": same_alpha, "max_score_diff": score_diff})
    print("| T | L = M | width | RidgeCV per pair (s) | shared decomposition (s) | estimator (s) | path | "
          "speed-up vs shared | same penalties |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stimuli']} | {r['layers']} | {r['width']} | {r['ridgecv_per_pair_s'] or '-'} | "
              f"{r['shared_decomposition_s']} | {r['estimator_s']} | {r['estimator_path']} | "
              f"{r['speedup_vs_shared']}x | {r['same_penalties']} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                               "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
