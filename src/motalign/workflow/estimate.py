"""``motalign estimate``: what a workflow configuration costs, before any data exists.

1. **Plan.** Snakemake plans the configuration (``snakemake --dry-run``, nothing runs, no
   network): every job with its rule, wildcards, threads and declared ``mem_mb`` and
   ``runtime``.
2. **Model.** Every job's need by the size model (:mod:`motalign.workflow.sizes`), from
   the config's declared shapes.
3. **Measure.** For each heavy rule (inner OT for MOT and MOT+R, outer OT, each baseline
   kind, subsampling, a three-level block) the job with the largest modelled memory is run
   on synthetic activations of its real shapes (layers, widths, stimulus count), each in a
   fresh process whose peak resident memory and CPU time are recorded.  Where the whole
   job would take too long, a measured part of its work (the first pairs of a shard, some
   target layers, some checkpoint pairs) is timed and the job's time extrapolated; the
   table says so.  Every other job of the rule is projected from the model, scaled by the
   measured/modelled ratio of the representative.
4. **Project.** Per rule: jobs, CPU-hours, peak memory per job (measured or modelled),
   declared memory and run time, disk written.  Extraction jobs (which need the real
   models) and data jobs are projected from the model only, and marked so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import METHODS, inline_inner
from .config_schema import validate_config
from .estimate_measure import run_measurement, synthetic_network, synthetic_shards, synthetic_split
from .job_requests import MIN_MEM_MB, rule_need
from .shards import shard_pairs
from .sizes import n_fit, n_stimuli, network_widths

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

#: rules measured on synthetic data (the others are modelled)
MEASURED = ("inner_ot", "outer_ot", "baseline", "subsample", "three_level_block")
#: cores the plan assumes (more than any job's threads)
PLAN_CORES = 512


@dataclass
class PlannedJob:
    rule: str
    wildcards: dict
    threads: int = 1
    resources: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- planning


def load_config(configfile) -> dict:
    """The validated config (schema defaults filled in, cross-references checked)."""
    import yaml  # deferred: only the estimate reads YAML itself

    with open(configfile) as handle:
        config = yaml.safe_load(handle)
    return validate_config(config, SCHEMA)


_RULE = re.compile(r"^\s*(?:local)?rule (\w+):\s*$")


def parse_dry_run(text: str) -> list:
    """The jobs of a ``snakemake --dry-run`` listing (rule, wildcards, threads, resources)."""
    jobs, current = [], None
    for line in text.splitlines():
        match = _RULE.match(line)
        if match:
            current = PlannedJob(match.group(1), {})
            jobs.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("wildcards:"):
            current.wildcards = dict(kv.split("=", 1) for kv in stripped[10:].strip().split(", "))
        elif stripped.startswith("threads:"):
            current.threads = int(stripped[8:])
        elif stripped.startswith("resources:"):
            for kv in stripped[10:].strip().split(", "):
                key, _, value = kv.partition("=")
                if value.isdigit():
                    current.resources[key] = int(value)
    return jobs


def plan(configfile, workdir) -> list:
    """Snakemake's plan of a configuration, as :class:`PlannedJob` (the ``all`` rule left out)."""
    # --cores: plan each job with its configured threads, as on a cluster (not capped at
    # this machine's cores)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--dry-run",
        "--cores",
        str(PLAN_CORES),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        str(Path(configfile).resolve()),
        "--directory",
        str(workdir),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"snakemake could not plan {configfile}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return [job for job in parse_dry_run(done.stdout + done.stderr) if job.rule != "all"]


# --------------------------------------------------------------------------- projection


def _variant(rule: str, wildcards: dict) -> str:
    """The part of a rule measured separately: MOT vs MOT+R, the baseline kind."""
    if rule == "baseline":
        return wildcards["kind"]
    return wildcards.get("method", "")


def _available_mb() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 8192.0


def _networks(config, rule, wc):
    """(dataset, source, target) of a measured job."""
    if rule in ("inner_ot", "outer_ot"):
        return config["experiments"][wc["experiment"]]["dataset"], wc["source"], wc["target"]
    if rule == "baseline":
        spec = config["experiments"][wc["experiment"]]
        sizes = [sum(network_widths(config, s)) + sum(network_widths(config, t)) for s, t in spec["pairs"]]
        source, target = spec["pairs"][int(np.argmax(sizes))]
        return spec["dataset"], source, target
    section = config["subsampling" if rule == "subsample" else "three_level"]
    return section["dataset"], section["source"], section["target"]


def _spec(config, job, files, workdir, budget_units) -> dict:
    rule, wc = job.rule, job.wildcards
    dataset, source, target = _networks(config, rule, wc)
    spec = {
        "rule": rule,
        "x": files[source],
        "y": files[target],
        "split": files["split"],
        "threads": job.threads,
        "mot": {k: config["mot"][k] for k in ("max_iter", "tol", "solver", "device", "epsilon")},
    }
    rotation = METHODS.get(wc.get("method", "mot"), False)
    if rule == "inner_ot":
        spec.update(
            n_x=len(network_widths(config, source)),
            n_y=len(network_widths(config, target)),
            shard=int(wc["shard"]),
            shard_size=config["shard_size"],
            rotation=rotation,
            max_pairs=None,
            out=str(Path(workdir) / "shard.npz"),
        )
    elif rule == "outer_ot" and inline_inner(config, source, target):  # runs its inner level too
        spec.update(rotation=rotation, out=str(Path(workdir) / "outer"), shards=[])
    elif rule == "outer_ot":
        shard_dir = Path(workdir) / f"shards_{wc['method']}"
        shard_dir.mkdir(exist_ok=True)
        spec.update(
            rotation=rotation,
            out=str(Path(workdir) / "outer"),
            shards=synthetic_shards(
                {
                    "x_widths": network_widths(config, source),
                    "y_widths": network_widths(config, target),
                    "shard_size": config["shard_size"],
                    "rotation": rotation,
                    "dir": str(shard_dir),
                }
            ),
        )
    elif rule == "baseline":
        spec.update(kind=wc["kind"], max_units=budget_units)
    elif rule == "subsample":
        spec.update(fraction=float(wc["fraction"]), rotation=rotation, max_pairs=max(1, job.threads) * budget_units)
    elif rule == "three_level_block":
        block = config["three_level"]["block_size"]
        spec.update(
            block=block, max_units=budget_units, y_revisions=[files[target]] * len(config["three_level"]["revisions"])
        )
    return spec


def _disk_bytes(config, job) -> float:
    """Bytes a job writes (its main outputs)."""
    wc = job.wildcards
    if job.rule in ("extract_activations", "extract_revision"):
        dataset = wc["dataset"]
        return 4.0 * n_stimuli(config, dataset) * sum(network_widths(config, wc["model"]))
    if job.rule == "brain_responses":
        return 4.0 * n_stimuli(config, wc["dataset"]) * sum(network_widths(config, wc["brain"]))
    if job.rule == "inner_ot":
        xw, yw = network_widths(config, wc["source"]), network_widths(config, wc["target"])
        pairs = shard_pairs(len(xw), len(yw), config["shard_size"], int(wc["shard"]))
        per_entry = 40.0 if METHODS[wc["method"]] else 20.0
        return sum(per_entry * (xw[l] + yw[m]) for l, m in pairs)
    if job.rule == "prepare_stimuli":
        source = config["datasets"][wc["dataset"]]["source"]
        per = {"imagenet": 140e3, "nsd": 425 * 425 * 3}.get(source, 200.0)
        return per * n_stimuli(config, wc["dataset"])
    return 50e3


def estimate(configfile, *, workdir=None, budget_units: int = 1, log=print) -> list:
    """The per-rule projection of a configuration (see the module docstring); rows as
    written by ``--json``."""
    config = load_config(configfile)
    own = tempfile.TemporaryDirectory(prefix="motalign-estimate-") if workdir is None else None
    workdir = Path(own.name if own else workdir)
    try:
        log(f"planning {configfile} with snakemake --dry-run ...")
        jobs = plan(configfile, workdir / "plan")
        log(f"{len(jobs)} jobs in {len({j.rule for j in jobs})} rules")
        return _project(config, jobs, workdir, budget_units, log)
    finally:
        if own:
            own.cleanup()


def _project(config, jobs, workdir, budget_units, log):
    limit = 0.7 * _available_mb()
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job.rule, []).append(job)
    rows = []
    for rule, rule_jobs in by_rule.items():
        needs = [rule_need(config, rule, j.wildcards, j.threads) for j in rule_jobs]
        ratios = {}
        variants = []
        if rule in MEASURED:
            for variant in dict.fromkeys(_variant(rule, j.wildcards) for j in rule_jobs):
                members = [(j, n) for j, n in zip(rule_jobs, needs) if _variant(rule, j.wildcards) == variant]
                fitting = [(j, n) for j, n in members if n.mem_mb < limit] or [min(members, key=lambda p: p[1].mem_mb)]
                job, need = max(fitting, key=lambda p: (p[1].mem_mb, p[1].runtime_min))
                measured = _measure(config, job, workdir, budget_units, log)
                record = {
                    "variant": variant,
                    "wildcards": job.wildcards,
                    "model_mem_mb": need.mem_mb,
                    "model_runtime_min": need.runtime_min,
                    "largest_of_rule": need.mem_mb >= max(n.mem_mb for _, n in members),
                }
                record.update(measured)
                if "peak_mb" in measured:
                    cpu_job = measured["projected_cpu_s"]
                    record["projected_runtime_min"] = cpu_job / max(1, job.threads) / 60.0
                    record["extrapolated"] = measured["units_done"] < measured["units_total"]
                    ratios[variant] = (
                        measured["peak_mb"] / need.mem_mb,
                        record["projected_runtime_min"] / max(need.runtime_min, 1e-6),
                    )
                variants.append(record)
        rows.append(_row(config, rule, rule_jobs, needs, ratios, variants))
    return rows


def _measure(config, job, workdir, budget_units, log) -> dict:
    dataset, source, target = _networks(config, job.rule, job.wildcards)
    total = n_stimuli(config, dataset)
    files = {"split": str(workdir / f"split_{dataset}.npz")}
    if not os.path.exists(files["split"]):
        synthetic_split(files["split"], total, n_fit(config, total))
    for i, name in enumerate((source, target)):
        files[name] = str(workdir / f"{dataset}_{name}.npz")
        if not os.path.exists(files[name]):
            widths = network_widths(config, name)
            log(f"  writing synthetic {name}: {total} stimuli x {len(widths)} layers (max width {max(widths)})")
            synthetic_network(files[name], total, widths, seed=i)
    log(f"measuring {job.rule} {job.wildcards} (threads {job.threads}) ...")
    result = run_measurement(_spec(config, job, files, workdir, budget_units), workdir)
    if "error" in result:
        log(f"  failed: {result['error'][-500:]}")
    else:
        log(
            f"  peak {result['peak_mb']:.0f} MB, {result['cpu_s']:.1f} CPU s for "
            f"{result['units_done']}/{result['units_total']} of the job"
        )
    return result


def _row(config, rule, jobs, needs, ratios, variants) -> dict:
    mem_ratio = max((r[0] for r in ratios.values()), default=None)
    cpu_h = 0.0
    peak = 0.0
    runtimes = []
    for job, need in zip(jobs, needs):
        m_ratio, t_ratio = ratios.get(_variant(rule, job.wildcards), (mem_ratio or 1.0, 1.0))
        runtime = need.runtime_min * t_ratio
        runtimes.append(runtime)
        cpu_h += runtime * max(1, job.threads) / 60.0
        peak = max(peak, need.mem_mb * m_ratio)
    declared_mem = [j.resources.get("mem_mb") for j in jobs if "mem_mb" in j.resources]
    declared_rt = [j.resources.get("runtime") for j in jobs if "runtime" in j.resources]
    measured_peak = max((v["peak_mb"] for v in variants if "peak_mb" in v), default=None)
    basis = "measured" if ratios else ("projected: parameter counts" if rule.startswith("extract") else "modelled")
    if ratios and any(v.get("extrapolated") for v in variants):
        basis = "measured, time extrapolated"
    within = [
        d / (n.mem_mb * ratios.get(_variant(rule, j.wildcards), (mem_ratio or 1.0, 1.0))[0])
        for j, n, d in zip(jobs, needs, [j.resources.get("mem_mb") for j in jobs])
        if d
    ]
    return {
        "rule": rule,
        "jobs": len(jobs),
        "cpu_hours": cpu_h,
        "peak_mem_mb": peak,
        "measured_peak_mb": measured_peak,
        "declared_mem_mb": max(declared_mem) if declared_mem else None,
        "runtime_min": max(runtimes) if runtimes else 0.0,
        "declared_runtime_min": max(declared_rt) if declared_rt else None,
        "disk_gb": sum(_disk_bytes(config, j) for j in jobs) / 1e9,
        "basis": basis,
        "request_over_need": [min(within), max(within)] if within else None,
        "requests_hold": bool(within)
        and min(within) >= 1.0
        and all(
            r <= 2.0 or d <= MIN_MEM_MB
            for r, d in zip(within, [j.resources.get("mem_mb") for j in jobs if j.resources.get("mem_mb")])
        ),
        "variants": variants,
    }


def _opt(value) -> str:
    return "local" if value is None else f"{value:.0f}"


def format_table(rows) -> str:
    """The per-rule projection as a text table, with totals."""
    head = (
        f"{'rule':22s} {'jobs':>5s} {'CPU-h':>9s} {'peak MB':>9s} {'asked MB':>9s} "
        f"{'min/job':>9s} {'asked min':>9s} {'disk GB':>8s}  basis"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        off = not r["requests_hold"] and r["declared_mem_mb"] is not None
        lines.append(
            f"{r['rule']:22s} {r['jobs']:5d} {r['cpu_hours']:9.1f} {r['peak_mem_mb']:9.0f} "
            f"{_opt(r['declared_mem_mb']):>9s} {r['runtime_min']:9.1f} {_opt(r['declared_runtime_min']):>9s} "
            f"{r['disk_gb']:8.2f}  {r['basis']}{'  (request off)' if off else ''}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'total':22s} {sum(r['jobs'] for r in rows):5d} {sum(r['cpu_hours'] for r in rows):9.1f} "
        f"{max(r['peak_mem_mb'] for r in rows):9.0f} {'':9s} {'':9s} {'':9s} "
        f"{sum(r['disk_gb'] for r in rows):8.2f}"
    )
    return "\n".join(lines)
