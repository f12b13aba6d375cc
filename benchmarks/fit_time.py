"""Time one MOT fit (and one MOT+R fit) of 12 x 12 layers of 384 units on T = 2,000 stimuli.

Prints a markdown table and writes JSON (default benchmarks/results/fit_time.json).
Usage: python benchmarks/fit_time.py [--layers 12] [--width 384] [--stimuli 2000] [--n-jobs 1] [--out PATH]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--stimuli", type=int, default=2000)
    parser.add_argument("--n-jobs", type=int, default=1, help="MOT(n_jobs=...): layer pairs in parallel")
    parser.add_argument("--out", default="benchmarks/results/fit_time.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.stimuli, args.width)
    X = [rng.standard_normal(shape).astype(np.float32) for _ in range(args.layers)]
    Y = [(x[:, rng.permutation(args.width)] + rng.standard_normal(shape)).astype(np.float32) for x in X]
    rows = []
    for rotation in (False, True):
        start = time.perf_counter()
        MOT(rotation=rotation, n_jobs=args.n_jobs).fit(X, Y)
        rows.append({"method": "MOT+R" if rotation else "MOT", "seconds": time.perf_counter() - start})
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
               "processor": platform.processor() or platform.machine()}
    result = {"layers": args.layers, "width": args.width, "stimuli": args.stimuli, "n_jobs": args.n_jobs,
              "machine": machine, "peak_rss_mib": peak_mib, "rows": rows}
    print(f"{args.layers} x {args.layers} layers, {args.width} units, T = {args.stimuli}, "
          f"{machine['cpu_count']} cores, n_jobs = {args.n_jobs}")
    print("| method | fit time (s) |\n|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['seconds']:.1f} |")
    print(f"peak RSS: {peak_mib:.0f} MiB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    main()
