"""Each rule's resource request (``mem_mb``, ``runtime``) from the size model
(:mod:`motalign.workflow.sizes`): :func:`rule_need` says what one job of a rule needs from
the config, the job's wildcards, its threads and (when they exist) its input files;
:func:`resources` turns that into the callables the rules' ``resources:`` use.

Rules without a model of their own (light jobs: splits, tables, figures, collection) ask
for :data:`FIXED` -- never below :data:`~motalign.workflow.sizes.MIN_RUNTIME_MIN` minutes
and :data:`MIN_MEM_MB` MB (a cluster does not grant less usefully).
"""

from __future__ import annotations

import os

from .config import METHODS, inline_inner, n_layers
from .shards import shard_pairs
from .sizes import (
    MB,
    Need,
    baseline_need,
    extraction_need,
    inner_ot_need,
    mot_fit_need,
    n_fit,
    n_stimuli,
    network_widths,
    outer_ot_need,
    three_level_block_need,
)

#: no job asks for less memory than this (MB)
MIN_MEM_MB = 1000

#: (memory MB, minutes) of jobs whose need does not grow with the data's shapes
FIXED = {
    "make_split": (300, 0.2),
    "simulate_nsd": (600, 1),
    "nsd_voxel_counts": (300, 0.2),
    "collect_scores": (300, 0.2),
    "collect_subsampling": (300, 0.2),
    "three_level": (400, 0.2),
    "table": (400, 0.3),
    "table_vs_paper": (400, 0.3),
    "figure": (600, 0.5),
    "provenance": (400, 2),
    "fetch_package": (400, 2),
    "convert_package": (2000, 2),  # measured: 1.25 GB, 89 s (SmolLM2-135M dequantised to float32)
    "train_tiny_model": (1500, 3),
    # network-bound: the NSD betas (tens of GB) at a few tens of MB/s, in chunks
    "download_nsd": (2500, 240),
}

#: rules whose need the size model computes from shapes
MODELLED = (
    "inner_ot",
    "outer_ot",
    "baseline",
    "subsample",
    "three_level_block",
    "extract_activations",
    "extract_revision",
    "prepare_stimuli",
    "brain_responses",
)


def _dataset_of(config: dict, rule: str, wc: dict) -> str:
    if "experiment" in wc:
        return config["experiments"][wc["experiment"]]["dataset"]
    if rule == "subsample":
        return config["subsampling"]["dataset"]
    if rule == "three_level_block":
        return config["three_level"]["dataset"]
    return wc["dataset"]


def _widths(config, name, paths, key):
    return network_widths(config, name, (paths or {}).get(key))


def rule_need(config: dict, rule: str, wildcards: dict, threads: int = 1, paths: dict | None = None) -> Need:
    """What one job of ``rule`` with these ``wildcards`` needs (before the margins).
    ``paths``: the job's named input files (``x``, ``y``), read for their real widths
    when they exist."""
    wc = dict(wildcards.items()) if hasattr(wildcards, "items") else dict(wildcards)
    if rule in FIXED:
        mem, minutes = FIXED[rule]
        return Need(mem, minutes)
    dataset = _dataset_of(config, rule, wc)
    total = n_stimuli(config, dataset)
    fit = n_fit(config, total)
    if rule == "inner_ot":
        xw = _widths(config, wc["source"], paths, "x")
        yw = _widths(config, wc["target"], paths, "y")
        pairs = shard_pairs(len(xw), len(yw), config["shard_size"], int(wc["shard"]))
        return inner_ot_need(
            xw, yw, pairs, n_total=total, n_fit_rows=fit, rotation=METHODS[wc["method"]], threads=threads
        )
    if rule == "outer_ot":
        xw = _widths(config, wc["source"], paths, "x")
        yw = _widths(config, wc["target"], paths, "y")
        entries = len(yw) * sum(xw) + len(xw) * sum(yw)
        rotation = METHODS[wc["method"]]
        outer = outer_ot_need(xw, yw, n_total=total, n_fit_rows=fit, rotation=rotation, plan_entries=entries)
        if not inline_inner(config, wc["source"], wc["target"]):
            return outer
        # the job runs the inner level too (a whole MOT fit), then the outer steps
        inner = mot_fit_need(xw, yw, n_total=total, n_fit_rows=fit, rotation=rotation, threads=threads)
        return Need(max(inner.mem_mb, outer.mem_mb), inner.runtime_min + outer.runtime_min)
    if rule == "baseline":
        pairs = [
            (network_widths(config, s), network_widths(config, t))
            for s, t in config["experiments"][wc["experiment"]]["pairs"]
        ]
        return baseline_need(wc["kind"], pairs, n_total=total, n_fit_rows=fit)
    if rule == "subsample":
        spec = config["subsampling"]
        xw = _widths(config, spec["source"], paths, "x")
        yw = [max(1, round(float(wc["fraction"]) * w)) for w in _widths(config, spec["target"], paths, "y")]
        return mot_fit_need(xw, yw, n_total=total, n_fit_rows=fit, rotation=METHODS[wc["method"]], threads=threads)
    if rule == "three_level_block":
        spec = config["three_level"]
        revisions = len(spec["revisions"])
        block = min(spec["block_size"], revisions - int(wc["block"]) * spec["block_size"])
        return three_level_block_need(
            network_widths(config, wc["source"]),
            network_widths(config, wc["target"]),
            n_total=total,
            block=block,
            revisions=revisions,
            threads=threads,
        )
    if rule in ("extract_activations", "extract_revision"):
        name = wc["model"]
        model = config["models"][name]
        widths = network_widths(config, name)
        blocks = n_layers(config, name)
        return extraction_need(
            blocks,
            max(widths),
            widths,
            n_total=total,
            modality=model["modality"],
            gpu=config["extraction"]["gpus"] > 0,
            threads=threads,
        )
    if rule == "prepare_stimuli":
        return _stimuli_need(config, dataset, total)
    if rule == "brain_responses":
        voxels = sum(network_widths(config, wc["brain"]))
        nsd = config["nsd"]
        sessions = nsd.get("sessions") or range(nsd["simulation"]["n_sessions"] if nsd["source"] == "simulated" else 40)
        # one session's betas (750 trials x the whole volume as int16, about 1 GB) and its
        # float copy of the region voxels; the responses to the shared images (3 repeats)
        memory = 2.5 * 1024 * MB + 8.0 * 750 * voxels + 8.0 * 3 * total * voxels
        return Need(400 + memory / MB, 3.0 * len(sessions))
    raise KeyError(f"no resource model for rule {rule!r}")


def _stimuli_need(config, dataset, total) -> Need:
    source = config["datasets"][dataset]["source"]
    if source == "imagenet":  # the original JPEG files (about 130 kB each), kept, then written
        return Need(400 + 2 * total * 0.14, 30 + total / 2000)
    if source == "nsd":  # the shared images at 425 x 425 x 3
        return Need(400 + 2 * total * 425 * 425 * 3 / MB, 10)
    return Need(400 + total * 0.2, 5)


def request(config: dict, rule: str, wildcards: dict, threads: int = 1, paths: dict | None = None) -> dict:
    """``{"mem_mb": ..., "runtime": ...}`` that a job of ``rule`` asks for."""
    need = rule_need(config, rule, wildcards, threads, paths)
    return {"mem_mb": max(MIN_MEM_MB, need.request_mem_mb), "runtime": need.request_runtime_min}


def resources(config: dict, rule: str) -> dict:
    """The ``mem_mb`` and ``runtime`` callables of a rule, for its ``resources:``.  A retry
    (``attempt`` 2, 3, ... with ``--retries``) asks for that multiple of the memory."""

    last = {}  # Snakemake asks for mem_mb, then runtime, of the same job: one need for both

    def _request(wildcards, input, threads):
        paths = {k: str(getattr(input, k)) for k in ("x", "y") if hasattr(input, k)}
        # a file's appearance (planning -> run time) or replacement changes the key
        stamps = tuple((k, p, os.stat(p).st_mtime_ns if os.path.exists(p) else None) for k, p in paths.items())
        key = (tuple(sorted(dict(wildcards.items()).items())), threads, stamps)
        if key not in last:
            last.clear()
            last[key] = request(config, rule, wildcards, threads, paths)
        return last[key]

    def mem_mb(wildcards, input, threads, attempt):
        return _request(wildcards, input, threads)["mem_mb"] * attempt

    def runtime(wildcards, input, threads, attempt):
        return _request(wildcards, input, threads)["runtime"] * attempt

    return {"mem_mb": mem_mb, "runtime": runtime}
