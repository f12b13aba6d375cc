"""CPU backend of the inner level (``solver="exact"``, ``device="cpu"``): exact results,
identical to a per-pair loop.

Every layer is z-scored once with its fit statistics; a pair's cost block is one GEMM
``1 - Xz_l^T Yz_m / T``, solved by :func:`motalign.solvers.exact_ot` (or MOT+R,
:func:`.rotation.rotation_alignment`).  ``n_jobs`` layer pairs run in parallel threads
(the GEMMs and both solvers release the GIL, and BLAS is held to one thread per worker); at
most ``n_jobs`` cost blocks exist at any time, so memory grows with one layer pair's cost
matrix (times ``n_jobs``), not with L x M of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

from ..solvers import correlation_cost, exact_ot
from .rotation import rotation_alignment
from .types import Alternation, PairResult


def _blas_single_thread(n_jobs: int):
    """Hold BLAS to one thread per worker while ``n_jobs > 1`` workers run GEMMs."""
    if n_jobs <= 1:
        return nullcontext()
    from threadpoolctl import threadpool_limits  # deferred: only parallel runs need it

    return threadpool_limits(limits=1, user_api="blas")


def align_pair(pair, xz, yz, *, rotation=False, gram_x=None,
               alternation: Alternation | None = None) -> PairResult:
    """Inner alignment of one layer pair of z-scored layers: exact correlation OT
    (Sec. 2.2.1, Eq. 2) or MOT+R (Sec. 2.3)."""
    if rotation:
        result = rotation_alignment(xz, yz, gram_x=gram_x, alternation=alternation or Alternation())
        return PairResult(pair, result.cost, result.plan, history=result.history,
                          rotation=result.rotation, rotation_plan=result.rotation_plan)
    plan, value = exact_ot(correlation_cost(xz, yz))
    return PairResult(pair, value, plan)


def run_cpu(x_std, y_std, pairs, *, rotation: bool, alternation: Alternation,
            n_jobs: int) -> Iterator[PairResult]:
    """Yield the :class:`PairResult` of every pair, in the order of ``pairs`` (sorted by
    source layer).  Serial (``n_jobs == 1``): a source layer is z-scored when its first pair
    comes and dropped after its last; target layers are z-scored once and kept.  Parallel:
    the z-scoring itself runs in the pool too (every target layer at the start, each source
    layer one row ahead), and at most ``n_jobs + 1`` pair tasks are queued, so at most
    ``n_jobs`` cost blocks exist at once."""
    last_use = {l: i for i, (l, _) in enumerate(pairs)}

    def source(l):
        xz = x_std.compute(l)
        return xz, (xz.T @ xz if rotation else None)

    if n_jobs == 1:
        current = None
        for i, (l, m) in enumerate(pairs):
            if current is None or current[0] != l:
                current = (l, *source(l))
            outcome = align_pair((l, m), current[1], y_std(m), rotation=rotation,
                                 gram_x=current[2], alternation=alternation)
            if last_use[l] == i:
                current = None
            yield outcome
        return

    def pair_task(key, x_future, y_future):
        (xz, gram_x), yz = x_future.result(), y_future.result()
        return align_pair(key, xz, yz, rotation=rotation, gram_x=gram_x, alternation=alternation)

    rows = sorted(last_use, key=last_use.get)
    next_row = dict(zip(rows, rows[1:]))
    with _blas_single_thread(n_jobs), ThreadPoolExecutor(max_workers=n_jobs) as pool:
        # A task only waits on futures submitted before it, so FIFO workers cannot deadlock.
        x_ready = {rows[0]: pool.submit(source, rows[0])}
        y_ready = {m: pool.submit(y_std, m) for m in sorted({m for _, m in pairs})}
        pending = deque()
        for i, (l, m) in enumerate(pairs):
            if l not in x_ready:
                x_ready[l] = pool.submit(source, l)
            following = next_row.get(l)
            if following is not None and following not in x_ready:
                x_ready[following] = pool.submit(source, following)
            pending.append(pool.submit(pair_task, (l, m), x_ready[l], y_ready[m]))
            if last_use[l] == i:
                del x_ready[l]
            while len(pending) > n_jobs:  # bounds the cost blocks alive at once
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
