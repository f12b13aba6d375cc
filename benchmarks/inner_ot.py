"""Benchmark of MOT's inner-OT stage: motalign's engine against plain per-pair loops.

For every entry of a suite (two synthetic "networks" with the paper's layer widths and
stimulus counts) it times, on the same data:

* ``pot_loop``   for every layer pair: z-score both layers, ``C = 1 - Xz^T Yz / T`` by one
                 GEMM, POT's ``ot.emd`` (the plain way to run MOT's inner level);
* ``lsa_loop``   the same with SciPy's ``linear_sum_assignment`` (equal widths only);
* ``motalign``   :func:`motalign.inner.inner_alignment`, solver="exact" on the CPU
                 (``--n-jobs`` workers, default every core; float32 cost GEMMs with the
                 certified float64 repair of :mod:`motalign.solvers.repair`, whose share
                 of entries evaluated exactly is reported under the table);
* ``motalign_cuda``   the same with the cost GEMMs on the GPU (only where CUDA exists);
* ``sinkhorn`` / ``sinkhorn_cuda``   solver="sinkhorn" (batched log-domain Sinkhorn,
                 rounded) on torch's CPU device / on the GPU; ``--sinkhorn`` adds the CPU
                 one, the CUDA ones run wherever CUDA exists;
* ``mot_r`` suites time MOT+R instead: ``motalign_serial`` (n_jobs=1), ``motalign``,
  and the batched torch paths.

Reported per method: wall time, peak resident memory above the data (sampled every 5 ms
in a forked child per method, so that memory freed by an earlier method is not reused),
and ``max |dC|`` against the reference loop (for Sinkhorn: the largest gap to the exact
costs, and the largest certified gap bound).  Writes JSON and a markdown table (same path,
``.md``) and prints the table.

Usage::

    python benchmarks/inner_ot.py --suite mixed            # the acceptance suite (minutes)
    python benchmarks/inner_ot.py --suite table1 --methods motalign_cuda,sinkhorn_cuda
    python benchmarks/inner_ot.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

from motalign.inner import EngineOptions, engine_options, inner_alignment
from motalign.inner.options import available_cores


@dataclass(frozen=True)
class Entry:
    name: str
    widths_x: tuple
    widths_y: tuple
    stimuli: int


def llm(name, lx, wx, ly, wy, t=2042):
    return Entry(name, (wx,) * lx, (wy,) * ly, t)


# Region sizes in the range of NSD's 1.8 mm ROIs (V1, V2, V3, hV4, ventral, lateral, dorsal).
SUBJECT_A = (1412, 1280, 1105, 571, 3074, 2611, 2330)
SUBJECT_B = (1350, 1219, 1040, 603, 2895, 2760, 2190)

SUITES = {
    # the acceptance suite: the paper's width mix and stimulus counts, fewer layers
    "mixed": [
        llm("Llama-1B~Qwen-3B (2048=2048)", 2, 2048, 2, 2048),
        llm("Llama-1B~Llama-3B (2048:3072)", 2, 2048, 2, 3072),
        llm("Qwen-0.5B~Llama-1B (896:2048)", 3, 896, 2, 2048),
        Entry("DINOv2-S~MAE-B (384:768)", (384,) * 4, (768,) * 4, 16000),
        Entry("MAE-B~DINOv2-L (768:1024)", (768,) * 3, (1024,) * 3, 16000),
        Entry("subject A~B (V1-hV4)", SUBJECT_A[:4], SUBJECT_B[:4], 800),
    ],
    # more of the paper's width mixes at 2,000-16,000 stimuli (minutes)
    "widths": [
        llm("Qwen-0.5B~Llama-3B (896:3072)", 2, 896, 2, 3072),
        Entry("DINOv2-S~DINOv2-G (384:1536)", (384,) * 3, (1536,) * 3, 16000),
        Entry("MAE-H~DINOv2-G (1280:1536)", (1280,) * 2, (1536,) * 2, 8000),
        Entry("Llama-3B~Qwen-3B (3072:2048), T = 4,000", (3072,) * 2, (2048,) * 2, 4000),
    ],
    # the paper's Table 1 (LLM pairs on STSB's 2,042 fit prompts), full size
    "table1": [
        llm("Llama-1B~Llama-3B", 16, 2048, 28, 3072),
        llm("Qwen-0.5B~Qwen-3B", 24, 896, 36, 2048),
        llm("Qwen-0.5B~Llama-1B", 24, 896, 16, 2048),
        llm("Qwen-0.5B~Llama-3B", 24, 896, 28, 3072),
        llm("Llama-1B~Qwen-3B", 16, 2048, 36, 2048),
        llm("Llama-3B~Qwen-3B", 28, 3072, 36, 2048),
    ],
    # the largest shapes of the paper: 28 x 36 LLM layers, 40-layer ViTs on 16,000 images
    "paper": [
        llm("Llama-3B~Qwen-3B", 28, 3072, 36, 2048),
        Entry("DINOv2-S~DINOv2-G", (384,) * 12, (1536,) * 40, 16000),
        Entry("MAE-H~DINOv2-G", (1280,) * 32, (1536,) * 40, 16000),
        Entry("subject A~B", SUBJECT_A, SUBJECT_B, 800),
    ],
    # MOT+R: the alternation with its Procrustes SVDs
    "mot_r": [
        Entry("DINOv2-S~MAE-B (384:768)", (384,) * 3, (768,) * 3, 2000),
        Entry("DINOv2-S~DINOv2-S (384=384)", (384,) * 3, (384,) * 3, 2000),
    ],
    # seconds; used by the tests
    "smoke": [
        Entry("equal", (12, 12), (12,), 50),
        Entry("unequal", (10, 20), (20, 15), 40),
    ],
}


def synthetic_network(latent, widths, rng, depth_noise=0.5):
    """Layers that share a latent code and drift with depth, like a network's layers."""
    layers, state = [], latent
    for width in widths:
        state = np.tanh(state @ rng.standard_normal((state.shape[1], state.shape[1])) / np.sqrt(state.shape[1])
                        + depth_noise * rng.standard_normal(state.shape))
        mix = rng.standard_normal((state.shape[1], width)) / np.sqrt(state.shape[1])
        layers.append((state @ mix + 0.5 * rng.standard_normal((state.shape[0], width))).astype(np.float32))
    return layers


def make_data(entry: Entry, seed: int = 0):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((entry.stimuli, 64))
    return synthetic_network(latent, entry.widths_x, rng), synthetic_network(latent, entry.widths_y, rng)


# --------------------------------------------------------------------------- methods
def _zscore(a):
    a = np.asarray(a, dtype=np.float64)
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, np.inf)


def reference_loop(X, Y, solver):
    cost = np.empty((len(X), len(Y)))
    for l, x in enumerate(X):
        for m, y in enumerate(Y):
            c = 1.0 - _zscore(x).T @ _zscore(y) / x.shape[0]
            n, k = c.shape
            if solver == "lsa":
                rows, cols = linear_sum_assignment(c)
                cost[l, m] = c[rows, cols].sum() / n
            else:
                plan = ot.emd(np.full(n, 1.0 / n), np.full(k, 1.0 / k), c, numItermax=10**9)
                cost[l, m] = float(np.einsum("ij,ij->", plan, c))
            del c
    return cost


def run_engine(X, Y, options, rotation=False):
    inner = inner_alignment(X, Y, rotation=rotation, options=options)
    return inner.cost, inner.gap_bound


def run_engine_counted(X, Y, options):
    """:func:`run_engine` and what the float32 repair did (entries evaluated exactly)."""
    try:
        from motalign.solvers.repair import repair_totals
    except ImportError:  # an older motalign (before/after comparisons)
        return (*run_engine(X, Y, options), None)
    before = repair_totals.snapshot()
    cost, gap = run_engine(X, Y, options)
    after = repair_totals.snapshot()
    return cost, gap, {k: after[k] - before[k] for k in after}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class PeakMemory:
    """Peak resident set size above the level at entry, sampled every 5 ms."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self):
        return (self.peak - self.base) / 2**20


def methods_for(suite, entry, args):
    equal = all(w == entry.widths_x[0] for w in entry.widths_x + entry.widths_y)
    rotation = suite == "mot_r"
    cpu = engine_options(n_jobs=args.n_jobs)
    methods = {}
    if rotation:
        methods["motalign_serial"] = lambda X, Y: run_engine(X, Y, engine_options(), True)
        methods["motalign"] = lambda X, Y: run_engine(X, Y, cpu, True)
    else:
        methods["pot_loop"] = lambda X, Y: (reference_loop(X, Y, "emd"), None)
        if equal:
            methods["lsa_loop"] = lambda X, Y: (reference_loop(X, Y, "lsa"), None)
        methods["motalign"] = lambda X, Y: run_engine_counted(X, Y, cpu)
    if args.sinkhorn:
        methods["sinkhorn"] = lambda X, Y: run_engine(
            X, Y, EngineOptions(solver="sinkhorn", device="torch-cpu", epsilon=args.epsilon), rotation)
    if cuda_available():
        methods["motalign_cuda"] = lambda X, Y: run_engine(
            X, Y, EngineOptions(solver="exact", device="cuda", n_jobs=cpu.n_jobs), rotation)
        methods["sinkhorn_cuda"] = lambda X, Y: run_engine(
            X, Y, EngineOptions(solver="sinkhorn", device="cuda", epsilon=args.epsilon), rotation)
    if args.methods:
        wanted = set(args.methods.split(","))
        methods = {k: v for k, v in methods.items() if k in wanted}
    return methods


def measured(method, X, Y):
    """Run ``method`` in a forked child (so that memory freed by earlier methods does not
    hide its peak): returns (seconds, peak MiB above the child's start, cost, gap, info)
    (``info``: what the method reports besides (cost, gap), else None)."""
    import multiprocessing

    def child(conn):
        try:
            with PeakMemory() as memory:
                start, cpu_start = time.perf_counter(), time.process_time()
                cost, gap, *info = method(X, Y)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            info = dict(info[0] or {} if info else {}, cpu_seconds=cpu)
            conn.send((seconds, memory.mib, cost, gap, info, None))
        except BaseException as error:  # report, do not hang the parent
            conn.send((None, None, None, None, None, repr(error)))
        finally:
            conn.close()

    parent, child_end = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=child, args=(child_end,))
    process.start()
    child_end.close()
    seconds, mib, cost, gap, info, error = parent.recv()
    process.join()
    if error is not None:
        raise RuntimeError(f"benchmark method failed: {error}")
    return seconds, mib, cost, gap, info


def run_entry(suite, entry, args):
    X, Y = make_data(entry, args.seed)
    rows, reference = [], None
    for name, method in methods_for(suite, entry, args).items():
        if args.in_process or name.endswith("cuda"):  # CUDA does not survive fork
            with PeakMemory() as memory:
                start = time.perf_counter()
                cost, gap, *info = method(X, Y)
                seconds = time.perf_counter() - start
            mib, info = memory.mib, (info[0] if info else None)
        else:
            seconds, mib, cost, gap, info = measured(method, X, Y)
        row = {"method": name, "seconds": seconds, "peak_mib": mib}
        info = dict(info or {})
        if "cpu_seconds" in info:
            row["cpu_seconds"] = info.pop("cpu_seconds")
        if info.get("solves"):
            row["repair"] = info
        if reference is None and name in ("pot_loop", "motalign_serial"):
            reference = cost
        elif reference is not None:
            row["max_abs_dC"] = float(np.abs(cost - reference).max())
            if gap is not None and name.startswith("sinkhorn") and suite != "mot_r":
                row["max_gap_bound"] = float(np.nanmax(gap))
        rows.append(row)
        print(f"  {entry.name}: {name} {seconds:.2f} s", flush=True)
    return {"entry": entry.name, "widths_x": sorted(set(entry.widths_x)),
            "widths_y": sorted(set(entry.widths_y)), "layers": [len(entry.widths_x), len(entry.widths_y)],
            "stimuli": entry.stimuli, "rows": rows}


def machine():
    info = {"cores": available_cores(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if cuda_available():
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown(result) -> str:
    methods = []
    for entry in result["entries"]:
        for row in entry["rows"]:
            if row["method"] not in methods:
                methods.append(row["method"])
    base = "motalign_serial" if result["suite"] == "mot_r" else "pot_loop"
    head = ["entry", "widths", "L x M", "T"] + [f"{m} (s)" for m in methods]
    head += [f"speed-up vs {base}", "max abs dC", "peak MiB " + " / ".join(methods)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals = dict.fromkeys(methods, 0.0)
    for entry in result["entries"]:
        by = {r["method"]: r for r in entry["rows"]}
        for m in methods:
            totals[m] += by[m]["seconds"] if m in by else float("nan")
        widths = f"{'/'.join(map(str, entry['widths_x']))} : {'/'.join(map(str, entry['widths_y']))}"
        cells = [entry["entry"], widths, "{} x {}".format(*entry["layers"]), str(entry["stimuli"])]
        cells += [f"{by[m]['seconds']:.2f}" if m in by else "" for m in methods]
        cells.append(f"{by[base]['seconds'] / by['motalign']['seconds']:.2f}x"
                     if base in by and "motalign" in by else "")
        cells.append(f"{by['motalign']['max_abs_dC']:.1e}" if "max_abs_dC" in by.get("motalign", {}) else "")
        cells.append(" / ".join(f"{by[m]['peak_mib']:.0f}" if m in by else "" for m in methods))
        lines.append("| " + " | ".join(cells) + " |")
    if len(result["entries"]) > 1:
        cells = ["**suite total**", "", "", ""] + [
            f"**{totals[m]:.2f}**" if np.isfinite(totals[m]) else "" for m in methods]
        ratio = totals[base] / totals["motalign"] if base in totals and "motalign" in totals else float("nan")
        cells += [f"**{ratio:.2f}x**", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
        result["total_seconds"] = totals
        result["speedup"] = ratio
    extra = [f"{e['entry']}: {r['method']} max |dC| {r['max_abs_dC']:.1e}"
             + (f", certified gap bound {r['max_gap_bound']:.1e}" if "max_gap_bound" in r else "")
             for e in result["entries"] for r in e["rows"]
             if r["method"] != "motalign" and "max_abs_dC" in r]
    cpu = {m: sum(r.get("cpu_seconds", float("nan")) for e in result["entries"] for r in e["rows"]
                  if r["method"] == m) for m in methods}
    if base in cpu and "motalign" in cpu and np.isfinite(cpu[base]) and np.isfinite(cpu["motalign"]):
        extra += ["", "CPU time (all threads), suite total: " + ", ".join(f"{m} {cpu[m]:.2f} s" for m in methods)
                  + f"; {base} / motalign {cpu[base] / cpu['motalign']:.2f}x"]
    repaired = [(e["entry"], r["repair"]) for e in result["entries"] for r in e["rows"] if r.get("repair")]
    if repaired:
        extra.append("")
        extra += [f"{name}: float32 repair evaluated {c['exact_entries']:,} of {c['entries']:,} entries exactly "
                  f"({c['exact_entries'] / c['entries']:.2%}), {c['rounds'] / c['solves']:.2f} exact solves per pair"
                  for name, c in repaired]
        exact = sum(c["exact_entries"] for _, c in repaired)
        total = sum(c["entries"] for _, c in repaired)
        extra.append(f"all entries: {exact:,} of {total:,} evaluated exactly ({exact / total:.2%})")
    info = result["machine"]
    header = (f"Suite `{result['suite']}` on {info.get('cpu', info['processor'])}, {info['cores']} cores"
              + (f", {info['gpu']}" if "gpu" in info else "") + f"; motalign n_jobs = {result['n_jobs']}.")
    return "\n".join([header, "", *lines, *([""] + extra if extra else [])]) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="mixed", choices=sorted(SUITES))
    parser.add_argument("--methods", default="", help="comma-separated subset of the methods")
    parser.add_argument("--n-jobs", type=int, default=-1, help="motalign workers (-1: every core)")
    parser.add_argument("--sinkhorn", action="store_true", help="also time solver='sinkhorn' on the CPU")
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/inner_ot_<suite>.json)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every method in this process (peak memory is then only indicative)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, entries in SUITES.items():
            print(name + ": " + "; ".join(e.name for e in entries))
        return {}
    out = Path(args.out or f"benchmarks/results/inner_ot_{args.suite}.json")
    result = {"suite": args.suite, "machine": machine(), "n_jobs": engine_options(n_jobs=args.n_jobs).n_jobs,
              "epsilon": args.epsilon, "entries": []}
    for entry in SUITES[args.suite]:
        result["entries"].append(run_entry(args.suite, entry, args))
    table = markdown(result)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out, json.dumps(result, indent=2)), (out.with_suffix(".md"), table)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return result


if __name__ == "__main__":
    main()
