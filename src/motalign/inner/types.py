"""The contract between the inner level's dispatcher and its backends.

Both backends (:mod:`.cpu` and :mod:`.torch_backend`) take the z-scored layers
(:class:`~.layers.Standardized`), the layer pairs, the MOT+R :class:`Alternation` settings and
the :class:`EngineOptions`, and yield one :class:`PairResult` per layer pair;
:func:`~.dispatch.inner_alignment` alone assembles them into an :class:`InnerAlignment`.
Every default of the engine is defined here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: inner OT solvers
SOLVERS = ("exact", "sinkhorn")
#: where the inner level runs ("cuda:N" is accepted too)
DEVICES = ("cpu", "cuda", "auto")

DEFAULT_SOLVER = "exact"
DEFAULT_DEVICE = "cpu"
#: final entropic regularisation of solver="sinkhorn", in cost units
DEFAULT_EPSILON = 1e-3
#: MOT+R: at most this many alternations per layer pair (Sec. 2.3)
DEFAULT_MAX_ITER = 30
#: MOT+R: stop when the relative decrease of the reconstruction cost falls below this
DEFAULT_TOL = 1e-7
#: device memory one batch of equal-shaped layer pairs may take (torch backend)
DEFAULT_BATCH_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Alternation:
    """MOT+R's stopping rule (Sec. 2.3): at most ``max_iter`` alternations; stop when the
    reconstruction cost decreases by less than ``tol`` (relative), or when a Q step leaves
    the plan unchanged (the next round would repeat the last one)."""

    max_iter: int = DEFAULT_MAX_ITER
    tol: float = DEFAULT_TOL


@dataclass(frozen=True)
class EngineOptions:
    """How the inner level runs (validated by :func:`~.options.engine_options`)."""

    solver: str = DEFAULT_SOLVER
    device: str = DEFAULT_DEVICE
    n_jobs: int = 1
    epsilon: float = DEFAULT_EPSILON
    batch_bytes: int = DEFAULT_BATCH_BYTES


@dataclass
class PairResult:
    """The inner alignment of one layer pair ``(l, m)``, as a backend yields it.

    ``plan``: the neuron plan Q_lm (sparse, total mass 1); ``cost``: C[l, m];
    ``gap_bound``: certified bound on ``cost`` minus the exact optimum (0 for exact
    solves, NaN for MOT+R with Sinkhorn Q steps); ``history``/``rotation``: MOT+R's
    non-increasing cost history and rotation R_lm (None without rotation);
    ``rotation_plan``: MOT+R's rotation-defining plan, the plan of the last accepted
    Procrustes step (sparse, total mass 1; None when the rotation is the identity, and
    without rotation): R_lm is rebuilt from it by one Procrustes step
    (:func:`~.rotation.rotation_from_plan`)."""

    pair: tuple
    cost: float
    plan: object
    gap_bound: float = 0.0
    history: list | None = None
    rotation: np.ndarray | None = None
    rotation_plan: object | None = None


@dataclass
class InnerAlignment:
    """Inner level of MOT for a set of layer pairs: costs ``C`` (L x M, NaN for pairs not
    computed), neuron plans ``Q_lm`` (sparse, total mass 1), MOT+R rotations, their
    defining plans (``rotation_plans``, {(l, m): sparse plan or None for the identity}, see
    :attr:`PairResult.rotation_plan`) and objective histories, and for ``solver="sinkhorn"``
    a certified bound on each pair's gap to the exact optimum (``gap_bound``, L x M; 0 for
    exact solves)."""

    cost: np.ndarray
    plans: list | None
    rotations: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    gap_bound: np.ndarray | None = None
    rotation_plans: dict = field(default_factory=dict)
