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


def read_shards(paths, n_source: int, n_target: int) -> Shards:
    """Assemble the inner level (:class:`Shards`: cost, plans, histories, gap bounds and
    rotation-defining plans) from shard files; every pair exactly once."""
    cost = np.full((n_source, n_target), np.nan)
    gap = np.zeros((n_source, n_target))
    plans = [[None] * n_target for _ in range(n_source)]
    histories, rotation_plans = {}, {}
    for path in paths:
        with np.load(path) as s:
            has_rplans = "rplan_ptr" in s.files
            for k, (l, m) in enumerate(s["pairs"]):
                l, m = int(l), int(m)
                if not np.isnan(cost[l, m]):
                    raise ValueError(f"{path}: layer pair ({l}, {m}) appears in two shards")
                shape = tuple(int(v) for v in s["shapes"][k])
                plans[l][m] = _coo_entry(s, "plan", k, shape)
                cost[l, m] = s["cost"][k]
                if "gap_bound" in s:
                    gap[l, m] = s["gap_bound"][k]
                h0, h1 = s["history_ptr"][k], s["history_ptr"][k + 1]
                histories[l, m] = list(s["history"][h0:h1])
                if has_rplans:
                    rplan = _coo_entry(s, "rplan", k, shape)
                    rotation_plans[l, m] = rplan if rplan.nnz else None
    missing = np.argwhere(np.isnan(cost))
    if missing.size:
        raise ValueError(f"layer pairs {missing[:5].tolist()}... are in no shard")
    return Shards(cost, plans, histories, gap, rotation_plans)
