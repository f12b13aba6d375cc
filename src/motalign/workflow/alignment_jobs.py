"""Job functions of the alignment rules (``alignment.smk``, ``baselines.smk``,
``subsampling.smk``, ``three_level.smk``): one per rule.  Results are a ``.json`` (scores,
maps, counts) beside an ``.npz`` (matrices), written atomically."""

from __future__ import annotations

import csv
import time

import numpy as np

from .._pot import import_pot
from .._validation import check_layers
from ..couplings import COUPLINGS
from ..io.atomic import atomic_path, save_npz, write_json
from ..io.readers import check_array, corrupt, load_npz, read_json
from ..io.stimuli import read_split
from ..io.store import ActivationStore, check_same_stimuli, load_network
from ..metrics import hierarchy_score
from .devices import require_device
from .shards import read_shards, shard_pairs, write_shard


def _require_device(mot) -> None:
    """Refuse a MOT job whose engine settings ask for a CUDA device that is not there."""
    require_device((mot or {}).get("device", "auto"), "mot.device")


def _split(split_path, x_path, y_path=None):
    """The split's ``(fit, held_out)``, checked against the stimuli of the activation files
    (both networks recorded on the same stimuli, the split's indices in range)."""
    if y_path is not None:
        check_same_stimuli(x_path, y_path)
    with ActivationStore(x_path) as store:
        n, network = len(store.stimulus_ids), store.network
    return read_split(split_path, n, f"{x_path} (network {network})")


def inner_shard(x_path, y_path, split_path, out, *, shard: int, shard_size: int, rotation: bool,
                mot: dict | None = None, max_pairs: int | None = None) -> dict:
    """Inner alignment (correlation OT, or MOT+R) of one shard of layer pairs on the fit
    stimuli, by the inner-OT engine (:mod:`motalign.inner`); writes their costs, sparse
    plans, MOT+R histories and (Sinkhorn) gap bounds.  ``mot``: the engine settings
    (:func:`motalign.inner.engine_settings`).  ``max_pairs`` (``motalign estimate`` only):
    load every layer of the shard but solve only its first ``max_pairs`` pairs."""
    import_pot(lean=True)  # this process only solves OT (motalign._pot)
    from ..inner import align_pairs, engine_settings  # deferred: POT

    _require_device(mot)
    options, stopping = engine_settings(mot)
    fit, _ = _split(split_path, x_path, y_path)
    with ActivationStore(x_path) as xs, ActivationStore(y_path) as ys:
        pairs = shard_pairs(xs.n_layers, ys.n_layers, shard_size, shard)
        x_arrays = [None] * xs.n_layers
        y_arrays = [None] * ys.n_layers
        for l in sorted({l for l, _ in pairs}):
            x_arrays[l] = np.asarray(xs.layer(l, fit, verify=True))
        for m in sorted({m for _, m in pairs}):
            y_arrays[m] = np.asarray(ys.layer(m, fit, verify=True))
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    start = time.perf_counter()
    results = sorted(align_pairs(x_arrays, y_arrays, pairs=pairs, rotation=rotation,
                                 alternation=stopping, options=options), key=lambda r: r.pair)
    seconds = time.perf_counter() - start
    write_shard(out, results)
    return {"pairs": len(pairs), "seconds": seconds, "solver": options.solver,
            "device": options.device, "n_jobs": options.n_jobs}


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
    MOT+R rotations of the pairs the couplings use are rebuilt from the shards'
    rotation-defining plans (one Procrustes step each).  ``mot``: the engine settings
    (:data:`motalign.inner.SETTINGS`), used where MOT+R rotations are recomputed (shards
    written without rotation-defining plans).

    With no ``shard_paths`` the job runs the inner level itself, by the same engine and on
    the same fit stimuli as an inner-OT job (:func:`motalign.mot.MOT.fit`): the workflow
    does so for a pair whose layer pairs fit in one shard
    (:func:`motalign.workflow.config.inline_inner`), and the result is the same."""
    import_pot(lean=True)  # this process only solves OT (motalign._pot)
    from ..mot import MOT  # deferred: POT

    _require_device(mot)
    fit, held = _split(split_path, x_path, y_path)
    x_fit, x_names, _ = load_network(x_path, fit)
    y_fit, y_names, _ = load_network(y_path, fit)
    estimator = MOT(rotation=rotation, random_state=seed, **(mot or {}))
    if not shard_paths:
        fitted = estimator.fit(dict(zip(x_names, x_fit)), dict(zip(y_names, y_fit)))
        gap = fitted.inner_gap_bound_
    else:
        cost, plans, histories, gap, rotation_plans = read_shards(
            shard_paths, len(x_fit), len(y_fit),
            widths=([a.shape[1] for a in x_fit], [a.shape[1] for a in y_fit]), names=(x_names, y_names))
        fitted = estimator.fit_from_inner(
            dict(zip(x_names, x_fit)), dict(zip(y_names, y_fit)), cost, plans,
            histories if rotation else None, rotation_plans if rotation else None,
        )
    del x_fit, y_fit
    x_held = load_network(x_path, held)[0]
    y_held = load_network(y_path, held)[0]
    report = _layer_report(fitted, x_held, y_held)
    result = {
        **(meta or {}), "seed": seed, "rotation": rotation,
        "source_layers": list(x_names), "target_layers": list(y_names),
        "objective": fitted.objective_, "scores": {k: v["score"] for k, v in report.items()},
        "couplings": report,
        "hierarchy": {k: _safe_hierarchy(c) for k, c in fitted.layer_couplings_.items()},
        "n_constant_units": {k: v.tolist() for k, v in fitted.n_constant_units_.items()},
        "n_fit": int(len(fit)), "n_held_out": int(len(held)),
        "inner_gap_bound_max": float(np.nanmax(gap)) if np.isfinite(gap).any() else None,
    }
    save_npz(out_npz, cost=fitted.cost_, permutation=fitted.permutation_, inner_gap_bound=gap,
             **{f"coupling_{k}": v for k, v in fitted.layer_couplings_.items()})
    write_json(out_json, result)
    return result

def _safe_hierarchy(plan):
    plan = np.asarray(plan)
    return hierarchy_score(plan) if min(plan.shape) >= 2 else None

def baseline(kind: str, pairs: list, split_path, out_json, *, seed: int, meta: dict | None = None) -> dict:
    """Appendix baselines for every pair of an experiment on one split.

    ``kind``: "global" (global OT and global linear predictivity, App. F),
    "linear_predictivity" (pairwise LP, App. H) or "rsa" (pairwise RSA, App. I).
    ``pairs``: list of dicts with ``source``, ``target``, ``x_path``, ``y_path``.
    """
    from .. import baselines  # deferred: POT and scikit-learn

    rows = []
    for pair in pairs:
        fit, held = _split(split_path, pair["x_path"], pair["y_path"])
        x_fit = load_network(pair["x_path"], fit)[0]
        y_fit = load_network(pair["y_path"], fit)[0]
        row = {"source": pair["source"], "target": pair["target"]}
        if kind == "global":
            x_held, y_held = load_network(pair["x_path"], held)[0], load_network(pair["y_path"], held)[0]
            row["global_ot"] = baselines.GlobalOT().fit(x_fit, y_fit).score(x_held, y_held)
            row["global_linear_predictivity"] = (
                baselines.GlobalLinearPredictivity().fit(x_fit, y_fit).score(x_held, y_held)
            )
        elif kind == "linear_predictivity":
            x_held, y_held = load_network(pair["x_path"], held)[0], load_network(pair["y_path"], held)[0]
            lp = baselines.PairwiseLinearPredictivity().fit(x_fit, y_fit)
            row.update(score=lp.score(x_held, y_held), best_match=lp.best_match_.tolist(),
                       best_match_map=lp.best_match_map_.tolist(),
                       hierarchy=_safe_hierarchy(lp.best_match_map_))
        elif kind == "rsa":
            rsa = baselines.PairwiseRSA(max_stimuli=4000, random_state=seed).fit(x_fit, y_fit)
            row.update(similarity=rsa.similarity_.tolist(), best_match=rsa.best_match_.tolist(),
                       best_match_map=rsa.best_match_map_.tolist(),
                       hierarchy=_safe_hierarchy(rsa.best_match_map_))
        else:
            raise ValueError(f"unknown baseline kind {kind!r}")
        rows.append(row)
    result = {**(meta or {}), "kind": kind, "seed": seed, "pairs": rows}
    write_json(out_json, result)
    return result

def subsample_alignment(x_path, y_path, split_path, out_json, *, fraction: float, seed: int,
                        rotation: bool, meta: dict | None = None, mot: dict | None = None) -> dict:
    """Appendix J.1: keep a seeded random ``fraction`` of every target layer's units,
    refit MOT (or MOT+R) and score MOT and Pairwise Best on the held-out split."""
    import_pot(lean=True)  # this process only solves OT (motalign._pot)
    from ..mot import MOT  # deferred: POT

    _require_device(mot)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    fit, held = _split(split_path, x_path, y_path)
    rng = np.random.default_rng(seed)
    y_all = load_network(y_path)[0]
    keep = [np.sort(rng.choice(a.shape[1], max(1, int(round(fraction * a.shape[1]))), replace=False))
            for a in y_all]
    y_fit = [a[fit][:, k] for a, k in zip(y_all, keep)]
    y_held = [a[held][:, k] for a, k in zip(y_all, keep)]
    del y_all
    x_fit, x_held = load_network(x_path, fit)[0], load_network(x_path, held)[0]
    fitted = MOT(rotation=rotation, random_state=seed, **(mot or {})).fit(x_fit, y_fit)
    result = {**(meta or {}), "fraction": fraction, "seed": seed, "rotation": rotation,
              "units_kept": [int(k.size) for k in keep],
              "scores": {name: fitted.score(x_held, y_held, name) for name in ("mot", "pairwise_best")}}
    write_json(out_json, result)
    return result

def three_level_block(x_paths: list, y_paths: list, out, *, rotation: bool = False,
                      mot: dict | None = None) -> dict:
    """Checkpoint costs (two-level MOT objectives, Sec. 3.4) of a block of source
    checkpoints against every target checkpoint, on all stimuli."""
    import_pot(lean=True)  # this process only solves OT (motalign._pot)
    from ..three_level import checkpoint_costs  # deferred: POT

    _require_device(mot)

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
    import_pot(lean=True)  # this process only solves OT (motalign._pot)
    from ..three_level import ThreeLevelMOT  # deferred: POT

    rows = []
    for path in block_paths:
        cost = load_npz(path, "three-level block", ["cost"])["cost"]
        rows.append(check_array(path, cost, "cost", "three-level block", shape=(None, len(target_revisions))))
    cost = np.vstack(rows)
    if len(cost) != len(source_revisions):
        raise ValueError(f"the three-level blocks {[str(p) for p in block_paths]} hold {len(cost)} rows "
                         f"(source checkpoints), but {len(source_revisions)} revisions are declared; "
                         "delete the blocks to have them recomputed")
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

def _write_rows(json_paths, out_csv, fields, row, keys=("scores",)) -> int:
    """Write one CSV row per (result file, coupling): ``row(result, coupling, score)``;
    every result file must hold ``keys``."""
    n = 0
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for path in json_paths:
            result = read_json(path, "result file", keys)
            if not isinstance(result["scores"], dict):
                raise corrupt(path, "result file: 'scores' is not a mapping of coupling -> score")
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
    }, keys=("scores", "hierarchy", "objective"))

def collect_subsampling(json_paths: list, out_csv) -> int:
    """One CSV row per (method, fraction, seed, coupling) of the subsampling results."""
    fields = ["method", "source", "target", "fraction", "seed", "coupling", "score"]
    return _write_rows(json_paths, out_csv, fields, lambda result, coupling, score: {
        **{k: result.get(k) for k in fields[:5]}, "coupling": coupling, "score": score,
    })
