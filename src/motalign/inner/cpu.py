"""CPU backend of the inner level (``solver="exact"``, ``device="cpu"``): exact results,
equal to a per-pair loop.

Every layer is z-scored once with its fit statistics and kept unit-major (n x T) with its
float32 rounding (:class:`.layers.UnitMajor`).  A pair's cost block ``1 - Xz_l^T Yz_m / T``
is priced by float32 GEMMs and the OT problem is solved exactly for the float64 cost by
:func:`motalign.solvers.repaired_correlation_ot` (certified repair; narrow problems and
small square ones on few stimuli get the float64 cost and :func:`motalign.solvers.exact_ot`).  MOT+R runs
:func:`.rotation.rotation_alignment` on the float64 z-scores.  ``n_jobs`` layer pairs run
in parallel threads (the GEMMs and the solvers release the GIL, and BLAS is held to one
thread per worker); at most ``n_jobs`` cost blocks exist at any time, so memory grows with
one layer pair's cost matrix (times ``n_jobs``), not with L x M of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

from ..solvers import correlation_cost, exact_ot, repaired_correlation_ot
from ..solvers.repair import takes_float64_cost
from .layers import UnitMajor
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
    """Inner alignment of one layer pair of z-scored layers (T x n arrays or
    :class:`.layers.UnitMajor`): exact correlation OT (Sec. 2.2.1, Eq. 2) or MOT+R
    (Sec. 2.3)."""
    if rotation:
        xz = xz.stimuli_major if isinstance(xz, UnitMajor) else xz
        yz = yz.stimuli_major if isinstance(yz, UnitMajor) else yz
        result = rotation_alignment(xz, yz, gram_x=gram_x, alternation=alternation or Alternation())
        return PairResult(pair, result.cost, result.plan, history=result.history,
                          rotation=result.rotation, rotation_plan=result.rotation_plan)
    x = xz if isinstance(xz, UnitMajor) else UnitMajor.from_stimuli_major(xz)
    y = yz if isinstance(yz, UnitMajor) else UnitMajor.from_stimuli_major(yz)
    (n, t), m = x.z.shape, y.z.shape[0]
    if takes_float64_cost(n, m, t) or x.z32 is None or y.z32 is None:  # no float32 pricing
        plan, value = exact_ot(correlation_cost(x.stimuli_major, y.stimuli_major))
    else:
        plan, value = repaired_correlation_ot(x.z, y.z, x32=x.z32.T, y32=y.z32.T, x_norms=x.norms, y_norms=y.norms)
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
        if rotation:  # T x n as before: MOT+R's rotations are rebuilt bit-identically from them
            xz = x_std.compute(l)
            return xz, xz.T @ xz
        return x_std.compute_unit_major(l), None

    def target(m):
        return y_std(m) if rotation else y_std.unit_major(m)

    if n_jobs == 1:
        current = None
        for i, (l, m) in enumerate(pairs):
            if current is None or current[0] != l:
                current = (l, *source(l))
            outcome = align_pair((l, m), current[1], target(m), rotation=rotation,
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
        y_ready = {m: pool.submit(target, m) for m in sorted({m for _, m in pairs})}
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
