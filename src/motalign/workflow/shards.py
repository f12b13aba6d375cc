"""The inner-OT shard file format: the costs, sparse plans, MOT+R histories, MOT+R
rotation-defining plans and gap bounds of a set of layer pairs, written by one ``inner_ot``
job and read by ``outer_ot``.

Members: ``pairs`` (K x 2), ``cost`` (K), ``gap_bound`` (K), ``shapes`` (K x 2), the plans
as concatenated COO triplets ``plan_row``/``plan_col``/``plan_val`` delimited by
``plan_ptr`` (K + 1), the MOT+R histories ``history`` delimited by ``history_ptr``, and
(MOT+R shards only) each pair's rotation-defining plan
(:attr:`motalign.inner.PairResult.rotation_plan`, shape ``shapes[k]``; no entries: the
identity) as concatenated COO triplets ``rplan_row``/``rplan_col``/``rplan_val`` delimited
by ``rplan_ptr`` (K + 1).  The outer job rebuilds the rotations R_lm it needs from these
with one Procrustes step each; shards written before these members existed are still read,
and their rotations are recomputed by the whole alternation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ..io.atomic import save_npz
from ..io.readers import check_array, corrupt, load_npz, reading


class Shards(NamedTuple):
    """The inner level assembled from shard files (see :func:`read_shards`)."""

    cost: np.ndarray
    plans: list
    histories: dict
    gap_bound: np.ndarray
    #: {(l, m): sparse plan, or None for the identity} for the pairs of shards that store
    #: rotation-defining plans (empty for correlation-OT shards and old MOT+R shards)
    rotation_plans: dict


def shard_pairs(n_source: int, n_target: int, shard_size: int, shard: int) -> list:
    """Layer pairs (row-major) of one shard."""
    start = shard * shard_size
    total = n_source * n_target
    if not 0 <= start < total:
        raise ValueError(f"shard {shard} is out of range for {n_source} x {n_target} layer pairs")
    return [divmod(k, n_target) for k in range(start, min(start + shard_size, total))]


def _coo_members(prefix: str, matrices) -> dict:
    """Concatenated COO triplets of sparse matrices (None: no entries) and their delimiters."""
    none = (np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0))
    coos = [sp.coo_matrix(a) for a in matrices if a is not None]
    parts = [(c.row, c.col, c.data) for c in coos] if coos else [none]
    lengths = [0 if a is None else a.nnz for a in matrices]
    return {
        f"{prefix}_ptr": np.cumsum([0] + lengths),
        f"{prefix}_row": np.concatenate([p[0] for p in parts]),
        f"{prefix}_col": np.concatenate([p[1] for p in parts]),
        f"{prefix}_val": np.concatenate([p[2] for p in parts]).astype(np.float64, copy=False),
    }


def _coo_entry(s, prefix: str, k: int, shape) -> sp.csr_matrix:
    a, b = s[f"{prefix}_ptr"][k], s[f"{prefix}_ptr"][k + 1]
    return sp.csr_matrix((s[f"{prefix}_val"][a:b], (s[f"{prefix}_row"][a:b], s[f"{prefix}_col"][a:b])),
                         shape=shape)


def write_shard(out, results) -> None:
    """Write the :class:`~motalign.inner.PairResult` of a shard's layer pairs (atomically)."""
    results = list(results)
    plans = [r.plan.tocoo() for r in results]
    histories = [list(r.history or []) for r in results]
    mot_r = any(r.history is not None for r in results)
    save_npz(
        out, pairs=np.array([r.pair for r in results], dtype=np.int64).reshape(-1, 2),
        cost=np.array([r.cost for r in results], dtype=np.float64),
        gap_bound=np.array([r.gap_bound for r in results], dtype=np.float64),
        shapes=np.array([p.shape for p in plans], dtype=np.int64).reshape(-1, 2),
        **_coo_members("plan", plans),
        history=np.array([v for h in histories for v in h], dtype=np.float64),
        history_ptr=np.cumsum([0] + [len(h) for h in histories]),
        **(_coo_members("rplan", [r.rotation_plan for r in results]) if mot_r else {}),
    )


_SHARD = "inner-OT shard"
_MEMBERS = ("pairs", "cost", "shapes", "plan_ptr", "plan_row", "plan_col", "plan_val", "history",
            "history_ptr")
_OPTIONAL = ("gap_bound", "rplan_ptr", "rplan_row", "rplan_col", "rplan_val")


def _check_ptr(path, s, prefix: str, k: int, n_values: int) -> None:
    ptr = check_array(path, s[f"{prefix}_ptr"], f"{prefix}_ptr", _SHARD, shape=(k + 1,), integer=True)
    if ptr[0] != 0 or ptr[-1] != n_values or np.any(np.diff(ptr) < 0):
        raise corrupt(path, f"{_SHARD}: {prefix}_ptr does not delimit its {n_values} entries")


def _load_shard(path, n_source: int, n_target: int) -> dict:
    """The members of one shard file, checked for shapes, ranges and finiteness."""
    s = load_npz(path, _SHARD, _MEMBERS, _OPTIONAL)
    pairs = check_array(path, s["pairs"], "pairs", _SHARD, shape=(None, 2), integer=True)
    k = len(pairs)
    check_array(path, s["cost"], "cost", _SHARD, shape=(k,))
    check_array(path, s["shapes"], "shapes", _SHARD, shape=(k, 2), integer=True)
    if "gap_bound" in s:
        check_array(path, s["gap_bound"], "gap_bound", _SHARD, shape=(k,), finite=False)
    prefixes = ["plan", "rplan"] if "rplan_ptr" in s else ["plan"]
    for prefix in prefixes:
        n = len(check_array(path, s[f"{prefix}_val"], f"{prefix}_val", _SHARD, ndim=1))
        for member in ("row", "col"):
            check_array(path, s[f"{prefix}_{member}"], f"{prefix}_{member}", _SHARD, shape=(n,), integer=True)
        _check_ptr(path, s, prefix, k, n)
    _check_ptr(path, s, "history", k,
               len(check_array(path, s["history"], "history", _SHARD, ndim=1, finite=False)))
    outside = [(int(l), int(m)) for l, m in pairs if not (0 <= l < n_source and 0 <= m < n_target)]
    if outside:
        raise corrupt(path, f"{_SHARD}: layer pairs {outside[:5]} are out of range for {n_source} x "
                            f"{n_target} layers; the shard was computed for other networks")
    return s


def read_shards(paths, n_source: int, n_target: int, *, widths=None, names=None) -> Shards:
    """Assemble the inner level (:class:`Shards`: cost, plans, histories, gap bounds and
    rotation-defining plans) from shard files; every pair exactly once.  Each file is
    checked (readable, members of consistent shapes, finite costs and plans, layer pairs in
    range and, given ``widths = (source widths, target widths)``, plans of the layers'
    shapes); a damaged one raises :class:`~motalign.io.readers.CorruptFileError` naming it
    and the layer pair (by name, given ``names = (source names, target names)``)."""
    cost = np.full((n_source, n_target), np.nan)
    gap = np.zeros((n_source, n_target))
    plans = [[None] * n_target for _ in range(n_source)]
    histories, rotation_plans = {}, {}
    for path in paths:
        s = _load_shard(path, n_source, n_target)
        has_rplans = "rplan_ptr" in s
        for k, (l, m) in enumerate(s["pairs"]):
            l, m = int(l), int(m)
            pair = f"layer pair ({l}, {m})" + (f" ({names[0][l]!r}, {names[1][m]!r})" if names else "")
            if not np.isnan(cost[l, m]):
                raise ValueError(f"{path}: {pair} appears in two shards")
            shape = tuple(int(v) for v in s["shapes"][k])
            if widths is not None and shape != (widths[0][l], widths[1][m]):
                raise corrupt(path, f"{_SHARD}: the plan of {pair} has shape {shape}, but the layers "
                                    f"have {widths[0][l]} and {widths[1][m]} units; the shard was "
                                    "computed for other activations")
            with reading(f"{path}: the plan of {pair} in this {_SHARD} is damaged"):
                plans[l][m] = _coo_entry(s, "plan", k, shape)
                if has_rplans:
                    rplan = _coo_entry(s, "rplan", k, shape)
                    rotation_plans[l, m] = rplan if rplan.nnz else None
            cost[l, m] = s["cost"][k]
            if "gap_bound" in s:
                gap[l, m] = s["gap_bound"][k]
            h0, h1 = s["history_ptr"][k], s["history_ptr"][k + 1]
            histories[l, m] = list(s["history"][h0:h1])
    missing = np.argwhere(np.isnan(cost))
    if missing.size:
        raise ValueError(f"layer pairs {missing[:5].tolist()}... are in no shard (of "
                         f"{[str(p) for p in paths]})")
    return Shards(cost, plans, histories, gap, rotation_plans)
