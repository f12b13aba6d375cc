"""Time one MOT fit (and one MOT+R fit) of 12 x 12 layers of 384 units on T = 2,000 stimuli.

Besides the fit times it records what each fit reached, so that a faster inner level can be
checked to reach the same or a lower objective: the mean and the per-pair inner costs
``cost_`` (L x M), the outer objective ``objective_``, MOT+R's mean number of alternations
``n_iter_`` and the global score on 500 held-out stimuli drawn from the same model.
Each fit is timed ``--repeat`` times (default 3) on fresh models and, as ``timeit`` does, the
table reports the best (minimum) time, the least disturbed by other load on the machine;
the JSON keeps every time (``times``) besides the best (``seconds``).  The figures reached
are those of the last fit (the fits are deterministic).  The script uses the public
:class:`motalign.MOT` API only, so it also times older versions of the package.
Prints a markdown table and writes JSON (default benchmarks/results/fit_time.json).
Usage: python benchmarks/fit_time.py [--layers 12] [--width 384] [--stimuli 2000] [--n-jobs 1]
[--repeat 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from motalign import MOT

HELD_OUT = 500


def networks(layers, width, stimuli, seed=0):
    """Source layers (float32) and noisy permuted copies as targets, plus held-out stimuli."""
    rng = np.random.default_rng(seed)
    shape = (stimuli + HELD_OUT, width)
    X = [rng.standard_normal(shape).astype(np.float32) for _ in range(layers)]
    Y = [(x[:, rng.permutation(width)] + rng.standard_normal(shape)).astype(np.float32) for x in X]
    return ([x[:stimuli] for x in X], [y[:stimuli] for y in Y]), ([x[stimuli:] for x in X], [y[stimuli:] for y in Y])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--stimuli", type=int, default=2000)
    parser.add_argument("--n-jobs", type=int, default=1, help="MOT(n_jobs=...): layer pairs in parallel")
    parser.add_argument("--repeat", type=int, default=3, help="fits per method; the best time is reported")
    parser.add_argument("--out", default="benchmarks/results/fit_time.json")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    (X, Y), (X_held, Y_held) = networks(args.layers, args.width, args.stimuli)
    rows = []
    for rotation in (False, True):
        times = []
        for _ in range(args.repeat):
            model = MOT(rotation=rotation, n_jobs=args.n_jobs)
            start = time.perf_counter()
            model.fit(X, Y)
            times.append(time.perf_counter() - start)
        rows.append({
            "method": "MOT+R" if rotation else "MOT",
            "seconds": min(times),
            "times": times,
            "mean_inner_cost": float(np.mean(model.cost_)),
            "objective": float(model.objective_),
            "held_out_score": model.score(X_held, Y_held),
            "mean_n_iter": float(np.mean(model.n_iter_)) if rotation else None,
            "inner_cost": model.cost_.tolist(),
        })
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
               "processor": platform.processor() or platform.machine()}
    result = {"layers": args.layers, "width": args.width, "stimuli": args.stimuli, "n_jobs": args.n_jobs,
              "repeat": args.repeat,
              "held_out": HELD_OUT, "machine": machine, "peak_rss_mib": peak_mib, "rows": rows}
    print(f"{args.layers} x {args.layers} layers, {args.width} units, T = {args.stimuli}, "
          f"{machine['cpu_count']} cores, n_jobs = {args.n_jobs}, best of {args.repeat}")
    print("| method | fit time (s) | mean inner cost | objective | held-out score | mean n_iter |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        n_iter = "" if row["mean_n_iter"] is None else f"{row['mean_n_iter']:.2f}"
        print(f"| {row['method']} | {row['seconds']:.2f} | {row['mean_inner_cost']:.10f} | "
              f"{row['objective']:.10f} | {row['held_out_score']:.6f} | {n_iter} |")
    print(f"peak RSS: {peak_mib:.0f} MiB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    return result


if __name__ == "__main__":
    main()
