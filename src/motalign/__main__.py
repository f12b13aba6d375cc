"""Command line: ``motalign planted`` runs the planted-truth suite and prints its table;
``motalign estimate`` projects what a workflow configuration costs (offline)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="motalign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    planted = sub.add_parser("planted", help="fit MOT on network pairs with a known coupling")
    planted.add_argument("--seed", type=int, default=0)
    planted.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    estimate = sub.add_parser(
        "estimate", help="project a workflow config's jobs, CPU-hours, memory and disk (offline)")
    estimate.add_argument("--configfile", default="config/config.yaml")
    estimate.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    estimate.add_argument("--workdir", help="keep the synthetic data and plan here (default: a temporary folder)")
    estimate.add_argument("--units", type=int, default=1,
                          help="work units (layer pairs per thread, target layers, checkpoints) timed per measurement")
    args = parser.parse_args(argv)

    if args.command == "estimate":
        from .workflow.estimate import estimate as run_estimate  # deferred: Snakemake, POT
        from .workflow.estimate import format_table  # deferred: Snakemake, POT

        rows = run_estimate(args.configfile, workdir=args.workdir, budget_units=args.units,
                            log=lambda message: print(message, file=sys.stderr, flush=True))
        print(format_table(rows))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(rows, handle, indent=2, default=float)
        return 0

    from .planted import format_table, run_planted_suite  # deferred: POT and scikit-learn

    rows = run_planted_suite(seed=args.seed)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
