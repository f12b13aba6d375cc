"""The library functions behind the workflow's rules, one per rule (``workflow/scripts/``
only unpacks Snakemake's inputs and calls these).

File formats:

* stimuli ``.npz``: ``ids`` (str) and ``sentences`` (str) or ``images`` (N x H x W x 3
  uint8), optionally ``labels``;
* splits ``.npz``: ``fit`` and ``held_out`` row indices into the stimuli;
* activations: :mod:`motalign.store` files;
* inner-OT shards ``.npz``: costs and sparse plans of some layer pairs;
* results ``.json`` (scores, maps, counts) beside ``.npz`` (matrices).

Every output is written atomically.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .config import shard_pairs
from .couplings import COUPLINGS
from .metrics import hierarchy_score
from .store import ActivationStore, atomic_path, save_npz, write_activations, write_json


# --------------------------------------------------------------------------- jobs
@contextmanager
def log_to(path):
    """Send a job's stdout, stderr and ``logging`` output to its log file; on failure the
    traceback goes there too (and the exception propagates, so the job fails)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        start = time.perf_counter()
        try:
            yield log
            print(f"done in {time.perf_counter() - start:.1f} s")
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            sys.stdout, sys.stderr = old


# --------------------------------------------------------------------------- stimuli
def read_stimuli(path) -> dict:
    """Load a stimuli file as a dict of arrays (``ids`` plus ``sentences`` or ``images``)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def prepare_text_stimuli(source, out, *, deduplicate: bool = True) -> dict:
    """Sentences from a UTF-8 text file, one per line (blank lines dropped; duplicates
    dropped keeping the first, when ``deduplicate``)."""
    lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line]
    if deduplicate:
        sentences = list(dict.fromkeys(sentences))
    if len(sentences) < 10:
        raise ValueError(f"{source}: only {len(sentences)} sentences; at least 10 are needed")
    ids = np.array([f"s{i:05d}" for i in range(len(sentences))])
    save_npz(out, ids=ids, sentences=np.array(sentences))
    return {"n_sentences": len(sentences), "n_lines": len(lines), "source": str(source)}


def digit_images(*, n_images: int, image_size: int, seed: int = 0) -> dict:
    """Handwritten digits shipped with scikit-learn (8 x 8 greyscale), a seeded class-balanced
    selection, upsampled to ``image_size`` and replicated to RGB uint8: ``ids``, ``images``,
    ``labels``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    per_class = n_images // 10
    chosen = []
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        if per_class > members.size:
            raise ValueError(f"n_images={n_images} asks for {per_class} digits of class {label}; "
                             f"only {members.size} exist")
        chosen.extend(rng.choice(members, per_class, replace=False))
    chosen = np.sort(np.array(chosen))
    images = digits.images[chosen] / 16.0  # 0..1
    factor = -(-image_size // 8)
    images = np.kron(images, np.ones((factor, factor)))[:, :image_size, :image_size]
    images = np.repeat((images * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    return {"ids": np.array([f"digit{i:04d}" for i in chosen]), "images": images,
            "labels": digits.target[chosen].astype(np.int64)}


def prepare_digit_images(out, *, n_images: int, image_size: int, seed: int = 0) -> dict:
    """Write :func:`digit_images` as a stimuli file."""
    digits = digit_images(n_images=n_images, image_size=image_size, seed=seed)
    save_npz(out, **digits)
    return {"n_images": int(len(digits["ids"]))}


def prepare_nsd_images(nsd_root, out) -> dict:
    """The shared NSD images (``sharedix`` of the experimental design), read from
    ``nsd_stimuli.hdf5`` row by row, sorted by NSD id; ids are ``nsd#####``."""
    from . import nsd

    from . import nsd_remote

    shared = np.sort(nsd.read_expdesign(nsd_root)["sharedix"])
    if nsd_remote.shared_stimuli_path(nsd_root).is_file():  # a mirror: only the shared images
        images = nsd_remote.read_local_shared(nsd_root, shared)
    else:  # the full nsd_stimuli.hdf5 (a complete local copy, or the simulated layout)
        images = nsd.read_stimuli(nsd_root, shared)
    save_npz(out, ids=np.array([nsd_stimulus_id(i) for i in shared]), images=images)
    return {"n_images": int(len(shared))}


def nsd_stimulus_id(nsd_id: int) -> str:
    return f"nsd{int(nsd_id):05d}"


def prepare_stimuli(dataset: dict, out, *, nsd_root=None, cache_dir=None, name="?") -> dict:
    """Build a data set's stimuli file from its config entry (``datasets.<name>``).
    Downloads (STSB, the ImageNet hub shards) are kept in ``cache_dir``."""
    source = dataset["source"]
    if source == "file":
        return prepare_text_stimuli(dataset["path"], out)
    if source == "sklearn_digits":
        return prepare_digit_images(out, n_images=dataset["n_images"],
                                    image_size=dataset["image_size"], seed=dataset.get("seed", 0))
    if source == "nsd":
        return prepare_nsd_images(nsd_root, out)
    from . import sources

    if source == "stsb":
        return sources.prepare_stsb(
            out, cache_dir=cache_dir, revision=dataset.get("revision", sources.STSB_REVISION),
            expected_count=dataset.get("expected_count", 2552),
        )
    if source == "imagenet":
        archive = dataset.get("archive")
        if archive and not Path(archive).is_file():
            raise ValueError(f"datasets.{name}.archive: {archive} does not exist (a local "
                             "ILSVRC2012_img_val.tar; remove the key to use the hub data set)")
        return sources.prepare_imagenet(
            out, per_class=dataset.get("per_class", 20), seed=dataset.get("seed", 0),
            image_size=dataset.get("image_size", 224), archive=archive,
            devkit=dataset.get("devkit"), labels_file=dataset.get("labels_file"),
            hub_repo=dataset.get("hub_dataset", sources.IMAGENET_HUB_REPO),
            revision=dataset.get("revision", "main"), cache_dir=cache_dir,
        )
    raise ValueError(f"datasets.{name}.source: unknown source {source!r}")


def simulate_nsd(out_root, *, subjects, n_images, n_shared, n_specific, n_sessions, volume_shape,
                 seed) -> dict:
    """A miniature NSD in the real file layout, its images drawn from scikit-learn's digits."""
    from . import nsd

    images = digit_images(n_images=n_images, image_size=32, seed=seed)["images"]
    return nsd.simulate_nsd(out_root, images, subjects=tuple(subjects), n_shared=n_shared,
                            n_specific=n_specific,
                            n_sessions=n_sessions, volume_shape=tuple(volume_shape), seed=seed)


def brain_responses(nsd_root, subject, stimuli_path, out, *, regions, sessions=None) -> dict:
    """One subject's region responses to a data set's NSD images (z-scored per session,
    repetitions averaged), written as an activation store with regions as layers."""
    from . import nsd

    nsd_ids, responses, info = nsd.subject_responses(
        nsd_root, subject, sessions=sessions, regions={r: nsd.REGIONS[r] for r in regions}
    )
    wanted = read_stimuli(stimuli_path)["ids"]
    position = {nsd_stimulus_id(i): k for k, i in enumerate(nsd_ids)}
    missing = [s for s in wanted if s not in position]
    if missing:
        raise ValueError(f"{subject}: no responses to {len(missing)} stimuli of {stimuli_path} "
                         f"(e.g. {missing[:3]})")
    rows = np.array([position[s] for s in wanted])
    layers = {region: responses[region][rows] for region in regions}
    write_activations(out, layers, stimulus_ids=wanted,
                      metadata={"subject": subject, "source": "nsd", "root": str(nsd_root),
                                "info": info})
    return {region: int(a.shape[1]) for region, a in layers.items()}


# --------------------------------------------------------------------------- models
def train_tiny_model(model: dict, stimuli_path, out_dir) -> dict:
    """Train a tiny instance of a paper architecture (``models.<name>`` with source tiny)."""
    from . import tiny_models

    stimuli = read_stimuli(stimuli_path)
    train = model["train"]
    if model["modality"] == "text":
        return tiny_models.train_text_model(
            model["family"], model["architecture"], stimulus_payload(stimuli), out_dir,
            steps=train.get("steps", 60), seed=train.get("seed", 0),
            checkpoint_steps=train.get("checkpoint_steps"),
        )
    return tiny_models.train_vision_model(
        model["family"], model["architecture"], stimuli["images"], stimuli.get("labels"), out_dir,
        image_size=int(stimuli["images"].shape[1]), steps=train.get("steps", 60),
        seed=train.get("seed", 0),
    )


def extract_activations(model: dict, model_path, stimuli_path, out, *, revision=None,
                        include_embeddings=False, batch_size=32, device="auto", meta=None) -> dict:
    """Layer activations of a model on a data set, as an activation store."""
    from . import extract

    stimuli = read_stimuli(stimuli_path)
    device = None if device == "auto" else device
    kwargs = dict(batch_size=batch_size, device=device, revision=revision, progress=True)
    if model["modality"] == "text":
        hidden = extract.text_activations(model_path, stimulus_payload(stimuli), **kwargs)
    else:
        hidden = extract.image_activations(model_path, stimuli["images"], **kwargs)
    names = extract.hidden_state_names(len(hidden))
    if not include_embeddings:
        hidden, names = hidden[1:], names[1:]
    write_activations(out, dict(zip(names, hidden)), stimulus_ids=stimuli["ids"],
                      metadata={**(meta or {}), "model": str(model_path), "revision": revision,
                                "include_embeddings": include_embeddings})
    return {"layers": len(names), "width": int(hidden[0].shape[1])}


def stimulus_payload(stimuli: dict):
    """The sentences (list of str) or images (uint8 array) of a stimuli dict."""
    if "sentences" in stimuli:
        return [str(s) for s in stimuli["sentences"]]
    return stimuli["images"]


# --------------------------------------------------------------------------- splits
def make_split(stimuli_path, out, *, seed: int, fit_fraction: float) -> dict:
    """A seeded random split of the stimuli: ``fit_fraction`` fit, the rest held out."""
    n = len(read_stimuli(stimuli_path)["ids"])
    order = np.random.default_rng(seed).permutation(n)
    n_fit = int(round(fit_fraction * n))
    if not 2 <= n_fit <= n - 2:
        raise ValueError(f"{stimuli_path}: {n} stimuli cannot be split {fit_fraction:.0%} / rest "
                         "with at least 2 on each side")
    save_npz(out, fit=np.sort(order[:n_fit]), held_out=np.sort(order[n_fit:]), seed=np.array(seed))
    return {"n_fit": n_fit, "n_held_out": n - n_fit}


def read_split(path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["fit"], data["held_out"]


# --------------------------------------------------------------------------- networks
def load_network(path, rows=None, layers=None) -> tuple[list, tuple, np.ndarray]:
    """Layers (all, or the indices ``layers``) of a store file, restricted to ``rows``.
    Returns ``(arrays, layer names, stimulus ids)``."""
    with ActivationStore(path) as store:
        indices = range(store.n_layers) if layers is None else layers
        arrays = [np.asarray(store.layer(i, rows)) for i in indices]
        return arrays, store.layer_names, store.stimulus_ids


def check_same_stimuli(x_path, y_path) -> None:
    with ActivationStore(x_path) as x, ActivationStore(y_path) as y:
        if x.stimulus_ids.shape != y.stimulus_ids.shape or np.any(x.stimulus_ids != y.stimulus_ids):
            raise ValueError(
                f"{x_path} and {y_path} were not recorded on the same stimuli "
                f"({len(x.stimulus_ids)} vs {len(y.stimulus_ids)} ids, or in another order)"
            )


def check_layer_count(path, expected: int, config_key: str) -> None:
    with ActivationStore(path) as store:
        if store.n_layers != expected:
            raise ValueError(
                f"{path} holds {store.n_layers} layers but the configuration declares "
                f"{expected} (config key {config_key})"
            )


# --------------------------------------------------------------------------- inner OT shards
def inner_shard(x_path, y_path, split_path, out, *, shard: int, shard_size: int, rotation: bool,
                max_iter: int = 30, tol: float = 1e-7, solver: str = "exact", device: str = "cpu",
                n_jobs: int | None = None, epsilon: float = 1e-3) -> dict:
    """Inner alignment (correlation OT, or MOT+R) of one shard of layer pairs on the fit
    stimuli, by the inner-OT engine (:mod:`motalign.engine`); writes their costs, sparse
    plans, MOT+R histories and (Sinkhorn) gap bounds."""
    from .engine import engine_options, inner_alignment

    options = engine_options(solver, device, n_jobs, epsilon)
    check_same_stimuli(x_path, y_path)
    fit, _ = read_split(split_path)
    with ActivationStore(x_path) as xs, ActivationStore(y_path) as ys:
        pairs = shard_pairs(xs.n_layers, ys.n_layers, shard_size, shard)
        x_arrays = [None] * xs.n_layers
        y_arrays = [None] * ys.n_layers
        for l in sorted({l for l, _ in pairs}):
            x_arrays[l] = np.asarray(xs.layer(l, fit))
        for m in sorted({m for _, m in pairs}):
            y_arrays[m] = np.asarray(ys.layer(m, fit))
        shapes = np.array([(xs.widths[l], ys.widths[m]) for l, m in pairs])
    start = time.perf_counter()
    inner = inner_alignment(x_arrays, y_arrays, pairs=pairs, rotation=rotation,
                            max_iter=max_iter, tol=tol, keep_rotations=False, options=options)
    seconds = time.perf_counter() - start
    rows, cols, vals, ptr, hist, hist_ptr = [], [], [], [0], [], [0]
    for l, m in pairs:
        coo = inner.plans[l][m].tocoo()
        rows.append(coo.row)
        cols.append(coo.col)
        vals.append(coo.data)
        ptr.append(ptr[-1] + coo.nnz)
        hist.extend(inner.histories.get((l, m), []))
        hist_ptr.append(len(hist))
    save_npz(
        out, pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
        cost=np.array([inner.cost[l, m] for l, m in pairs]),
        gap_bound=np.array([inner.gap_bound[l, m] for l, m in pairs]),
        shapes=shapes.reshape(-1, 2), plan_ptr=np.array(ptr),
        plan_row=np.concatenate(rows), plan_col=np.concatenate(cols),
        plan_val=np.concatenate(vals),
        history=np.array(hist, dtype=np.float64), history_ptr=np.array(hist_ptr),
    )
    return {"pairs": len(pairs), "seconds": seconds, "solver": options.solver,
            "device": options.device, "n_jobs": options.n_jobs}


def read_shards(paths, n_source: int, n_target: int):
    """Assemble ``(cost, plans, histories)`` from shard files; every pair exactly once."""
    cost = np.full((n_source, n_target), np.nan)
    gap = np.zeros((n_source, n_target))
    plans = [[None] * n_target for _ in range(n_source)]
    histories = {}
    for path in paths:
        with np.load(path) as s:
            for k, (l, m) in enumerate(s["pairs"]):
                l, m = int(l), int(m)
                if not np.isnan(cost[l, m]):
                    raise ValueError(f"{path}: layer pair ({l}, {m}) appears in two shards")
                a, b = s["plan_ptr"][k], s["plan_ptr"][k + 1]
                plans[l][m] = sp.csr_matrix(
                    (s["plan_val"][a:b], (s["plan_row"][a:b], s["plan_col"][a:b])),
                    shape=tuple(s["shapes"][k]),
                )
                cost[l, m] = s["cost"][k]
                if "gap_bound" in s:
                    gap[l, m] = s["gap_bound"][k]
                h0, h1 = s["history_ptr"][k], s["history_ptr"][k + 1]
                histories[l, m] = list(s["history"][h0:h1])
    missing = np.argwhere(np.isnan(cost))
    if missing.size:
        raise ValueError(f"layer pairs {missing[:5].tolist()}... are in no shard")
    return cost, plans, histories, gap


# --------------------------------------------------------------------------- outer OT
def _layer_report(mot, x_held, y_held):
    report = {}
    for name in COUPLINGS:
        scores, undefined = mot.layer_scores(x_held, y_held, coupling=name, return_counts=True)
        report[name] = {"score": float(scores.mean()), "layer_scores": scores.tolist(),
                        "n_undefined": undefined.tolist()}
    return report


def outer_alignment(x_path, y_path, split_path, shard_paths, out_npz, out_json, *, rotation: bool,
                    seed: int, meta: dict | None = None, mot: dict | None = None) -> dict:
    """Outer OT on the shards' costs, the four couplings and their held-out scores.
    ``mot``: MOT parameters (max_iter, tol, solver, device, epsilon, n_jobs) used where
    MOT+R rotations are recomputed."""
    from .estimators import MOT

    fit, held = read_split(split_path)
    x_fit, x_names, _ = load_network(x_path, fit)
    y_fit, y_names, _ = load_network(y_path, fit)
    cost, plans, histories, gap = read_shards(shard_paths, len(x_fit), len(y_fit))
    mot = MOT(rotation=rotation, random_state=seed, **(mot or {})).fit_from_inner(
        dict(zip(x_names, x_fit)), dict(zip(y_names, y_fit)), cost, plans,
        histories if rotation else None,
    )
    del x_fit, y_fit
    x_held = load_network(x_path, held)[0]
    y_held = load_network(y_path, held)[0]
    report = _layer_report(mot, x_held, y_held)
    result = {
        **(meta or {}), "seed": seed, "rotation": rotation,
        "source_layers": list(x_names), "target_layers": list(y_names),
        "objective": mot.objective_, "scores": {k: v["score"] for k, v in report.items()},
        "couplings": report,
        "hierarchy": {k: _safe_hierarchy(c) for k, c in mot.layer_couplings_.items()},
        "n_constant_units": {k: v.tolist() for k, v in mot.n_constant_units_.items()},
        "n_fit": int(len(fit)), "n_held_out": int(len(held)),
        "inner_gap_bound_max": float(np.nanmax(gap)) if np.isfinite(gap).any() else None,
    }
    save_npz(out_npz, cost=mot.cost_, permutation=mot.permutation_, inner_gap_bound=gap,
             **{f"coupling_{k}": v for k, v in mot.layer_couplings_.items()})
    write_json(out_json, result)
    return result


def _safe_hierarchy(plan):
    plan = np.asarray(plan)
    return hierarchy_score(plan) if min(plan.shape) >= 2 else None


# --------------------------------------------------------------------------- baselines
def baselines(kind: str, pairs: list, split_path, out_json, *, seed: int, meta: dict | None = None) -> dict:
    """Appendix baselines for every pair of an experiment on one split.

    ``kind``: "global" (global OT and global linear predictivity, App. F),
    "linear_predictivity" (pairwise LP, App. H) or "rsa" (pairwise RSA, App. I).
    ``pairs``: list of dicts with ``source``, ``target``, ``x_path``, ``y_path``.
    """
    from . import baselines as bl

    fit, held = read_split(split_path)
    rows = []
    for pair in pairs:
        check_same_stimuli(pair["x_path"], pair["y_path"])
        x_fit = load_network(pair["x_path"], fit)[0]
        y_fit = load_network(pair["y_path"], fit)[0]
        row = {"source": pair["source"], "target": pair["target"]}
        if kind == "global":
            x_held, y_held = load_network(pair["x_path"], held)[0], load_network(pair["y_path"], held)[0]
            row["global_ot"] = bl.GlobalOT().fit(x_fit, y_fit).score(x_held, y_held)
            row["global_linear_predictivity"] = (
                bl.GlobalLinearPredictivity().fit(x_fit, y_fit).score(x_held, y_held)
            )
        elif kind == "linear_predictivity":
            x_held, y_held = load_network(pair["x_path"], held)[0], load_network(pair["y_path"], held)[0]
            lp = bl.PairwiseLinearPredictivity().fit(x_fit, y_fit)
            row.update(score=lp.score(x_held, y_held), best_match=lp.best_match_.tolist(),
                       best_match_map=lp.best_match_map_.tolist(),
                       hierarchy=_safe_hierarchy(lp.best_match_map_))
        elif kind == "rsa":
            rsa = bl.PairwiseRSA(max_stimuli=4000, random_state=seed).fit(x_fit, y_fit)
            row.update(similarity=rsa.similarity_.tolist(), best_match=rsa.best_match_.tolist(),
                       best_match_map=rsa.best_match_map_.tolist(),
                       hierarchy=_safe_hierarchy(rsa.best_match_map_))
        else:
            raise ValueError(f"unknown baseline kind {kind!r}")
        rows.append(row)
    result = {**(meta or {}), "kind": kind, "seed": seed, "pairs": rows}
    write_json(out_json, result)
    return result


# --------------------------------------------------------------------------- subsampling
def subsample_alignment(x_path, y_path, split_path, out_json, *, fraction: float, seed: int,
                        rotation: bool, meta: dict | None = None, mot: dict | None = None) -> dict:
    """Appendix J.1: keep a seeded random ``fraction`` of every target layer's units,
    refit MOT (or MOT+R) and score MOT and Pairwise Best on the held-out split."""
    from .estimators import MOT

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    check_same_stimuli(x_path, y_path)
    fit, held = read_split(split_path)
    rng = np.random.default_rng(seed)
    y_all = load_network(y_path)[0]
    keep = [np.sort(rng.choice(a.shape[1], max(1, int(round(fraction * a.shape[1]))), replace=False))
            for a in y_all]
    y_fit = [a[fit][:, k] for a, k in zip(y_all, keep)]
    y_held = [a[held][:, k] for a, k in zip(y_all, keep)]
    del y_all
    x_fit, x_held = load_network(x_path, fit)[0], load_network(x_path, held)[0]
    mot = MOT(rotation=rotation, random_state=seed, **(mot or {})).fit(x_fit, y_fit)
    result = {**(meta or {}), "fraction": fraction, "seed": seed, "rotation": rotation,
              "units_kept": [int(k.size) for k in keep],
              "scores": {name: mot.score(x_held, y_held, name) for name in ("mot", "pairwise_best")}}
    write_json(out_json, result)
    return result


# --------------------------------------------------------------------------- three-level MOT
def three_level_block(x_paths: list, y_paths: list, out, *, rotation: bool = False,
                      mot: dict | None = None) -> dict:
    """Checkpoint costs (two-level MOT objectives, Sec. 3.4) of a block of source
    checkpoints against every target checkpoint, on all stimuli."""
    from ._validation import check_layers
    from .three_level import checkpoint_costs

    def network(path, label):
        arrays, names, _ = load_network(path)
        return check_layers(dict(zip(names, arrays)), f"{label} {path}")

    for path in x_paths[1:] + y_paths:
        check_same_stimuli(x_paths[0], path)
    xs = [network(p, "source checkpoint") for p in x_paths]
    ys = [network(p, "target checkpoint") for p in y_paths]
    cost = checkpoint_costs(xs, ys, rotation=rotation, **(mot or {}))
    save_npz(out, cost=cost)
    return {"shape": list(cost.shape)}


def three_level_finish(block_paths: list, out_npz, out_json, *, source_revisions, target_revisions,
                       meta: dict | None = None) -> dict:
    """Stack the blocks' cost rows; checkpoint coupling R and the pairwise-best map."""
    from .three_level import ThreeLevelMOT

    rows = []
    for path in block_paths:
        with np.load(path) as block:
            rows.append(block["cost"])
    cost = np.vstack(rows)
    three = ThreeLevelMOT().fit_from_costs(cost, source_revisions, target_revisions)
    save_npz(out_npz, cost=cost, coupling=three.checkpoint_coupling_,
             pairwise_best_map=three.pairwise_best_map_)
    result = {**(meta or {}), "source_revisions": list(source_revisions),
              "target_revisions": list(target_revisions),
              "pairwise_best": three.pairwise_best_.tolist(),
              "hierarchy": {"mot": _safe_hierarchy(three.checkpoint_coupling_),
                            "pairwise_best": _safe_hierarchy(three.pairwise_best_map_)}}
    write_json(out_json, result)
    return result


# --------------------------------------------------------------------------- aggregation
def _write_rows(json_paths, out_csv, fields, row) -> int:
    """Write one CSV row per (result file, coupling): ``row(result, coupling, score)``."""
    n = 0
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for path in json_paths:
            result = json.loads(Path(path).read_text())
            for coupling, score in result["scores"].items():
                writer.writerow(row(result, coupling, score))
                n += 1
    return n


def collect_scores(json_paths: list, out_csv) -> int:
    """One long-form CSV row per (pair, method, seed, coupling) from outer-OT results."""
    fields = ["experiment", "method", "source", "target", "seed", "coupling", "score",
              "hierarchy", "objective"]
    return _write_rows(json_paths, out_csv, fields, lambda result, coupling, score: {
        **{k: result.get(k) for k in fields[:5]}, "coupling": coupling, "score": score,
        "hierarchy": result["hierarchy"].get(coupling), "objective": result["objective"],
    })


def collect_subsampling(json_paths: list, out_csv) -> int:
    """One CSV row per (method, fraction, seed, coupling) of the subsampling results."""
    fields = ["method", "source", "target", "fraction", "seed", "coupling", "score"]
    return _write_rows(json_paths, out_csv, fields, lambda result, coupling, score: {
        **{k: result.get(k) for k in fields[:5]}, "coupling": coupling, "score": score,
    })


def download_nsd(out_root, *, subjects, sessions=None) -> dict:
    """Mirror what the paper needs from the public NSD bucket (anonymous access): the
    experimental design, the ROI volumes and every session's betas of ``subjects``, and
    only the shared images of ``nsd_stimuli.hdf5``, read with ranged requests."""
    from . import nsd_remote

    client = nsd_remote.s3_client()
    summary = nsd_remote.download_nsd(out_root, subjects=subjects, sessions=sessions, client=client)
    shared = nsd_remote.fetch_shared_stimuli(out_root, client=client, block_size=256 * 1024)
    return {"files": summary["files"], "bytes": summary["bytes"],
            "shared_images": shared["n_images"], "stimuli_bytes_fetched": shared["bytes_fetched"]}


def nsd_voxel_counts(brain_paths: dict, out_csv) -> int:
    """Voxels per region and subject (``{brain name: response file}``), as a CSV."""
    rows = []
    for brain, path in brain_paths.items():
        with ActivationStore(path) as store:
            subject = store.metadata.get("subject", brain)
            for region, width in zip(store.layer_names, store.widths):
                rows.append({"brain": brain, "subject": subject, "region": region, "voxels": width,
                             "images": len(store.stimulus_ids)})
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["brain", "subject", "region", "voxels", "images"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
