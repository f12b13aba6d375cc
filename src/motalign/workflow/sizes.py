"""The size model of the workflow's jobs: what each job holds in memory and how long it
runs, from the shapes of its inputs (stimuli, layers, widths) and its threads.

One model serves two purposes:

* the rules' ``resources`` (``mem_mb``, ``runtime``) call :func:`request`, so that every
  job asks SLURM (or the local scheduler) for what its shapes need; once a job's input
  files exist their real shapes are read from their metadata (:func:`network_widths`), and
  before that -- when the workflow is only planned -- the config's declarations are used;
* ``motalign estimate`` (:mod:`motalign.workflow.estimate`) runs representative jobs at
  these shapes, measures them, and prints the model's figures beside the measured ones.

Memory (bytes) is the sum of the arrays a job holds at its peak (layers as stored, float64
z-scores, one layer pair's cost and solver arrays per thread) plus the interpreter with its
imports; the request adds :data:`MEMORY_MARGIN` on top.  Run time is a count of floating
point operations and solver work at rates measured on the 2-core development machine
(:data:`RATES`), times :data:`RUNTIME_MARGIN`, and never below :data:`MIN_RUNTIME_MIN`.

Declared shapes:

* data sets: their ``expected_count`` / ``per_class`` / ``n_images`` /
  ``crops_per_photo`` keys (:func:`n_stimuli`);
* models: ``blocks`` and ``width`` (the widest layer; transformer blocks all have it), or
  a tiny model's ``architecture``;
* brains: ``nsd.planning_voxels`` (voxels per region) until the responses exist, else
  :data:`PLANNING_VOXELS`.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..datasets.nsd.simulate import VOXELS_PER_REGION
from ..datasets.photos import PHOTOS
from ..datasets.stsb import STSB_PAPER_COUNT
from .config import ConfigError, n_layers, network_kind

MB = 1024**2

#: stimuli of NSD's shared images seen by all four subjects (paper Sec. 3.2)
NSD_SHARED_IMAGES = 1000
#: ImageNet classes (the validation subset takes ``per_class`` images of each)
IMAGENET_CLASSES = 1000
#: voxels per region assumed when planning an NSD run before the responses exist (a
#: region of the 1.8 mm data is a few hundred to several thousand voxels; the seven of
#: one subject together about 15,000); ``nsd.planning_voxels`` overrides them
PLANNING_VOXELS = {"V1": 2200, "V2": 2200, "V3": 2000, "V4": 1000, "Ventral": 3600, "Lateral": 2600, "Dorsal": 2400}
#: width of a tiny model when its architecture does not say (the families' defaults are
#: smaller, see motalign.models.tiny)
TINY_DEFAULT_WIDTH = 64

#: the interpreter with NumPy, SciPy, POT and scikit-learn imported, and Snakemake's
#: script preamble (measured: about 250 MB)
BASE_MB = {"ot": 400, "light": 250, "torch": 1500}
#: requested memory = model x MEMORY_MARGIN (the model counts the large arrays only)
MEMORY_MARGIN = 1.25
#: requested run time = model x RUNTIME_MARGIN, at least MIN_RUNTIME_MIN minutes
RUNTIME_MARGIN = 3.0
MIN_RUNTIME_MIN = 10

#: rates measured on the 2-core development machine (AMD EPYC, one thread):
#: ``gemm`` float64 flop/s; ``ot`` seconds per million cost entries of one exact OT
#: (column generation, correlation costs); ``svd`` seconds per n^3 / 1e9 of an n x n SVD;
#: ``io`` bytes/s read from an uncompressed npz
RATES = {"gemm": 2.0e10, "ot": 0.35, "svd": 2.5, "io": 4.0e8}
#: the MOT+R alternation's rounds assumed for run time (its cap is ``mot.max_iter``; on
#: synthetic data of the paper's shapes it stops after 2-3)
MOT_R_ROUNDS = 6
#: outer OT: seconds per activation value read and z-scored (measured: 45 CPU s for the
#: 1.3e9 values of DINOv2-S x DINOv2-G on 20,000 images)
OUTER_SECONDS_PER_VALUE = 3.5e-8
#: outer OT: measured / modelled time of its Procrustes steps (the GEMMs of a
#: single-threaded job run below the ``gemm`` rate)
ROTATION_STEP_FACTOR = 3.0
#: seconds per small layer pair beyond its flops (z-scoring, Python, solver set-up;
#: measured on the three-level blocks' 128-unit pairs)
SMALL_PAIR_OVERHEAD_S = 0.07


# --------------------------------------------------------------------------- shapes


def n_stimuli(config: dict, dataset: str) -> int:
    """Number of stimuli of a configured data set, from its declarations."""
    spec = config["datasets"][dataset]
    source = spec["source"]
    key = f"datasets.{dataset}"
    if source == "stsb":
        return int(spec.get("expected_count", STSB_PAPER_COUNT))
    if source == "imagenet":
        if "per_class" not in spec:
            raise ConfigError(f"{key}.per_class: needed to size the jobs")
        return int(spec["per_class"]) * IMAGENET_CLASSES
    if source == "sklearn_digits":
        return int(spec["n_images"])
    if source == "skimage_photos":
        return len(PHOTOS) * int(spec.get("crops_per_photo", 16))
    if source == "nsd":
        if config["nsd"]["source"] == "simulated":
            return int(config["nsd"]["simulation"]["n_shared"])
        return NSD_SHARED_IMAGES
    if "expected_count" in spec:
        return int(spec["expected_count"])
    path = spec["path"]
    if not os.path.exists(path):
        raise ConfigError(f"{key}.expected_count: {path} does not exist; declare the stimulus count")
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def n_fit(config: dict, total: int) -> int:
    """Fit stimuli of a split (as :func:`motalign.workflow.data_jobs.make_split`)."""
    return int(round(config["fit_fraction"] * total))


def declared_widths(config: dict, name: str) -> list:
    """Per-layer widths of a network from the config (an upper bound for CNNs, whose
    ``width`` is their widest layer)."""
    layers = n_layers(config, name)
    if network_kind(config, name) == "brain":
        nsd = config["nsd"]
        if nsd["source"] == "simulated":
            return [VOXELS_PER_REGION[1]] * layers
        planning = {**PLANNING_VOXELS, **nsd.get("planning_voxels", {})}
        return [int(planning[region]) for region in nsd["regions"]]
    model = config["models"][name]
    if model["source"] == "tiny":
        return [int(model["architecture"].get("hidden_size", TINY_DEFAULT_WIDTH))] * layers
    if "width" not in model:
        raise ConfigError(f"models.{name}.width: needed to size the jobs (units of the widest layer)")
    return [int(model["width"])] * layers


def file_widths(path) -> list | None:
    """Per-layer widths recorded in an activation or brain response file, or None when the
    file does not exist (yet).  Reads only the file's metadata member."""
    if not os.path.exists(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive, archive.open("__metadata__.npy") as handle:
            meta = json.loads(str(np.lib.format.read_array(handle, allow_pickle=False)))
        return [int(w) for w in meta["widths"]]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # a broken file is reported by the job that reads it


def network_widths(config: dict, name: str, path=None) -> list:
    """A network's layer widths: from its file when it exists, else as declared."""
    found = file_widths(path) if path is not None else None
    return found if found is not None else declared_widths(config, name)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Need:
    """What one job needs: peak memory (MB, before the margin) and run time (minutes,
    before the margin) by the model, and the request made from them."""

    mem_mb: float
    runtime_min: float

    @property
    def request_mem_mb(self) -> int:
        return int(math.ceil(self.mem_mb * MEMORY_MARGIN / 100.0) * 100)

    @property
    def request_runtime_min(self) -> int:
        return int(max(MIN_RUNTIME_MIN, math.ceil(self.runtime_min * RUNTIME_MARGIN)))


def _gemm_s(flops: float, threads: int = 1) -> float:
    return flops / (RATES["gemm"] * max(1, threads))


def _ot_s(n: int, m: int) -> float:
    return RATES["ot"] * n * m / 1e6


def _svd_s(n: int) -> float:
    return RATES["svd"] * n**3 / 1e9


def pair_bytes(n: int, m: int, t: int, rotation: bool) -> float:
    """One layer pair's working arrays in an inner-OT worker: the cost and the column
    generation's candidate search (about 2.5 x 8 n m bytes); MOT+R adds the Gram and cross
    blocks, the rotation and the SVD's factors (5 n^2 + 3 n m doubles) and a rotated copy
    of the source z-scores (t n)."""
    exact = 20.0 * n * m
    if not rotation:
        return exact
    return exact + 8.0 * (5 * n * n + 3 * n * m + t * n)


def pair_seconds(n: int, m: int, t: int, rotation: bool, rounds: int = MOT_R_ROUNDS) -> float:
    """One layer pair's inner alignment, one thread."""
    seconds = _gemm_s(2.0 * t * n * m) + _ot_s(n, m)
    if rotation:
        seconds += _gemm_s(2.0 * t * n * n) + rounds * (_ot_s(n, m) + _svd_s(n) + _gemm_s(4.0 * n * n * m))
    return seconds


def inner_ot_need(x_widths, y_widths, pairs, *, n_total: int, n_fit_rows: int, rotation: bool, threads: int) -> Need:
    """An ``inner_ot`` shard: the shard's layers as stored (float32, read whole then the
    fit rows taken), float64 z-scores of the target layers it uses (kept) and of
    ``threads + 1`` source layers, and ``threads`` pair working sets."""
    sources = sorted({l for l, _ in pairs})
    targets = sorted({m for _, m in pairs})
    stored = 4.0 * n_fit_rows * (sum(x_widths[l] for l in sources) + sum(y_widths[m] for m in targets))
    read_peak = 4.0 * n_total * max(max(x_widths), max(y_widths))
    z_scores = (
        8.0
        * n_fit_rows
        * (sum(y_widths[m] for m in targets) + min(len(sources), threads + 1) * max(x_widths[l] for l in sources))
    )
    largest = max(pair_bytes(x_widths[l], y_widths[m], n_fit_rows, rotation) for l, m in pairs)
    memory = BASE_MB["ot"] * MB + stored + read_peak + z_scores + min(threads, len(pairs)) * largest
    seconds = sum(pair_seconds(x_widths[l], y_widths[m], n_fit_rows, rotation) for l, m in pairs)
    seconds = seconds / max(1, min(threads, len(pairs))) + (stored + read_peak) / RATES["io"]
    return Need(memory / MB, seconds / 60.0)


def outer_ot_need(x_widths, y_widths, *, n_total: int, n_fit_rows: int, rotation: bool, plan_entries: int) -> Need:
    """An ``outer_ot`` job: both networks' fit layers as stored (float32), each layer's
    z-scores made one at a time, and every pair's sparse plan; for MOT+R also every fit
    layer's float64 z-scores, kept for the rotations it rebuilds.  The held-out layers are
    read after the fit layers are freed.  Time: reading and z-scoring the layers (measured
    per value) and, for MOT+R, one GEMM and one SVD per layer pair a coupling uses."""
    width = sum(x_widths) + sum(y_widths)
    n_held = n_total - n_fit_rows
    widest = max(max(x_widths), max(y_widths))
    fit = 4.0 * n_fit_rows * width + 24.0 * n_fit_rows * widest
    if rotation:
        fit += 8.0 * n_fit_rows * width + 8.0 * 3 * max(x_widths) ** 2
    held = 4.0 * n_held * width + 24.0 * n_held * widest
    memory = BASE_MB["ot"] * MB + max(fit, held) + 20.0 * plan_entries
    seconds = OUTER_SECONDS_PER_VALUE * n_total * width + len(x_widths) * len(y_widths) * 2e-3
    if rotation:  # one Procrustes step (a GEMM and an SVD) per pair a coupling uses
        used = 3 * len(x_widths) + len(y_widths)
        step = _gemm_s(2.0 * n_fit_rows * max(x_widths) * max(y_widths)) + _svd_s(max(x_widths))
        seconds += ROTATION_STEP_FACTOR * used * step
    return Need(memory / MB, seconds / 60.0)


def baseline_need(
    kind: str, pairs, *, n_total: int, n_fit_rows: int, n_alphas: int = 19, rsa_stimuli: int = 4000
) -> Need:
    """A ``baseline`` job over an experiment's pairs (``pairs``: (x widths, y widths) per
    pair, done one after the other): peak of one pair, time of all."""
    f, h = n_fit_rows, n_total - n_fit_rows
    peak, seconds = 0.0, 0.0
    for xw, yw in pairs:
        nx, ny = sum(xw), sum(yw)
        data = 12.0 * f * (nx + ny)
        if kind == "global":
            data += 12.0 * h * (nx + ny)
            # exact OT priced block by block: candidates and one block of reduced costs;
            # ridge in dual form: Gram, basis, dual coefficients
            solver = 64.0 * 16 * (nx + ny) + 16.0 * 256 * ny + 8.0 * (4 * f * f + 3 * f * nx)
            seconds += 12 * _gemm_s(2.0 * f * nx * ny) + 4 * _ot_s(min(nx, 4000), min(ny, 4000))
            seconds += _gemm_s(2.0 * f * f * ny + 2.0 * (n_alphas + 2) * f * f * nx) + _svd_s(f)
        elif kind == "linear_predictivity":
            # motalign.baselines.PairwiseLinearPredictivity: LOO scores through f x f
            # matrices (every source layer's Gram matrix held) or, when cheaper, a
            # decomposition per target layer and an f x f x n product per pair and penalty
            data += 12.0 * h * (nx + ny)
            gram = len(yw) * (10.0 + 4.0 * n_alphas) * f**3 + n_alphas * len(xw) * len(yw) * f * f + 2.0 * f * f * nx
            direct = len(yw) * n_alphas * 2.0 * f * f * nx
            solver = 8.0 * (3 * f * f + 3 * f * max(xw)) + (8.0 * f * f * len(xw) if gram < direct else 0.0)
            seconds += _gemm_s(min(gram, direct))
        elif kind == "rsa":  # on the activations as stored (no z-scores), one RDM per layer
            data = 4.0 * f * (nx + ny)
            s = min(f, rsa_stimuli)
            solver = 8.0 * (s * s / 2) * (len(xw) + len(yw) + 2)
            seconds += sum(_gemm_s(2.0 * s * s * w) for w in list(xw) + list(yw))
            seconds += len(xw) * len(yw) * _gemm_s(2.0 * s * s)
        else:
            raise ValueError(f"unknown baseline kind {kind!r}")
        peak = max(peak, data + solver)
    return Need((BASE_MB["ot"] * MB + peak) / MB, seconds / 60.0)


def mot_fit_need(x_widths, y_widths, *, n_total: int, n_fit_rows: int, rotation: bool, threads: int) -> Need:
    """A whole MOT fit in one job (``subsample``): every layer's fit and held-out rows and
    z-scores, ``threads`` pair working sets, all L x M pairs."""
    width = sum(x_widths) + sum(y_widths)
    data = 12.0 * n_total * width + 8.0 * n_fit_rows * width
    largest = max(pair_bytes(n, m, n_fit_rows, rotation) for n in x_widths for m in y_widths)
    memory = BASE_MB["ot"] * MB + data + threads * largest
    seconds = sum(pair_seconds(n, m, n_fit_rows, rotation) for n in x_widths for m in y_widths)
    return Need(memory / MB, seconds / max(1, threads) / 60.0)


def three_level_block_need(x_widths, y_widths, *, n_total: int, block: int, revisions: int, threads: int) -> Need:
    """A ``three_level_block`` job: ``block`` source checkpoints against all ``revisions``
    target checkpoints, every checkpoint's layers held (as stored, float32), one MOT per
    checkpoint pair on all stimuli."""
    data = 4.0 * n_total * (block * sum(x_widths) + revisions * sum(y_widths))
    z_scores = 8.0 * n_total * (sum(x_widths) + sum(y_widths))
    largest = max(pair_bytes(n, m, n_total, False) for n in x_widths for m in y_widths)
    memory = BASE_MB["ot"] * MB + data + z_scores + threads * largest
    per_checkpoint = sum(
        pair_seconds(n, m, n_total, False) + _gemm_s(6.0 * n_total * (n + m)) + SMALL_PAIR_OVERHEAD_S
        for n in x_widths
        for m in y_widths
    )
    return Need(memory / MB, block * revisions * per_checkpoint / max(1, threads) / 60.0)


#: assumed extraction throughput (flop/s): a GPU at a modest fraction of its bfloat16 peak,
#: a CPU core at the measured GEMM rate; extraction is projected, never measured here
EXTRACTION_FLOPS = {"gpu": 5.0e13, "cpu": RATES["gemm"]}
#: tokens per stimulus assumed for the projection: STSB sentences (~20 tokens), ViT patches
TOKENS = {"text": 32, "images": 257}


def extraction_need(
    blocks: int, width: int, layer_widths, *, n_total: int, modality: str, gpu: bool, threads: int = 1
) -> Need:
    """An extraction job, projected from the parameter count (about 12 blocks width^2 for a
    transformer) and the stimulus count: float32 weights (twice while loading), the
    activations of every layer for every stimulus (kept until the file is written, then
    copied once by the writer), a batch's hidden states."""
    params = 12.0 * blocks * width * width
    activations = 4.0 * n_total * sum(layer_widths)
    memory = BASE_MB["torch"] * MB + 8.0 * params + 2.0 * activations
    flops = 2.0 * params * TOKENS[modality] * n_total
    rate = EXTRACTION_FLOPS["gpu"] if gpu else EXTRACTION_FLOPS["cpu"] * max(1, threads)
    return Need(memory / MB, (flops / rate + activations / RATES["io"]) / 60.0 + 1.0)
