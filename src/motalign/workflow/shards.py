"""The inner-OT shard file format: the costs, sparse plans, MOT+R histories and gap
bounds of a set of layer pairs, written by one ``inner_ot`` job and read by ``outer_ot``.

Members: ``pairs`` (K x 2), ``cost`` (K), ``gap_bound`` (K), ``shapes`` (K x 2), the plans
as concatenated COO triplets ``plan_row``/``plan_col``/``plan_val`` delimited by
``plan_ptr`` (K + 1), and the MOT+R histories ``history`` delimited by ``history_ptr``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..io.atomic import save_npz


def shard_pairs(n_source: int, n_target: int, shard_size: int, shard: int) -> list:
    """Layer pairs (row-major) of one shard."""
    start = shard * shard_size
    total = n_source * n_target
    if not 0 <= start < total:
        raise ValueError(f"shard {shard} is out of range for {n_source} x {n_target} layer pairs")
    return [divmod(k, n_target) for k in range(start, min(start + shard_size, total))]


def write_shard(out, results) -> None:
    """Write the :class:`~motalign.inner.PairResult` of a shard's layer pairs (atomically)."""
    results = list(results)
    plans = [r.plan.tocoo() for r in results]
    histories = [list(r.history or []) for r in results]
    save_npz(
        out, pairs=np.array([r.pair for r in results], dtype=np.int64).reshape(-1, 2),
        cost=np.array([r.cost for r in results], dtype=np.float64),
        gap_bound=np.array([r.gap_bound for r in results], dtype=np.float64),
        shapes=np.array([p.shape for p in plans], dtype=np.int64).reshape(-1, 2),
        plan_ptr=np.cumsum([0] + [p.nnz for p in plans]),
        plan_row=np.concatenate([p.row for p in plans]), plan_col=np.concatenate([p.col for p in plans]),
        plan_val=np.concatenate([p.data for p in plans]),
        history=np.array([v for h in histories for v in h], dtype=np.float64),
        history_ptr=np.cumsum([0] + [len(h) for h in histories]),
    )


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
