"""Three-level MOT over training checkpoints (paper Sec. 3.4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._estimator import BaseEstimator
from ._validation import check_layers, check_paired
from .couplings import one_hot_rows
from .inner import alternation, engine_options, inner_alignment
from .inner.types import (
    DEFAULT_DEVICE,
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    DEFAULT_SOLVER,
    DEFAULT_TOL,
)
from .mot import fit_stats, two_level_objective
from .solvers import exact_ot


def _checkpoint_list(checkpoints, side):
    if isinstance(checkpoints, Mapping):
        return [str(k) for k in checkpoints], list(checkpoints.values())
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, (str, bytes)):
        raise ValueError(
            f"{side} checkpoints: expected a sequence (or mapping name -> layers) of "
            f"checkpoints, got {type(checkpoints).__name__}"
        )
    if len(checkpoints) == 0:
        raise ValueError(f"{side} checkpoints: no checkpoints given")
    return [f"checkpoint_{i}" for i in range(len(checkpoints))], list(checkpoints)


class ThreeLevelMOT(BaseEstimator):
    """Align two training trajectories: checkpoints -> layers -> neurons (Sec. 3.4).

    For every checkpoint pair (c, d) the two-level MOT objective ``<C, P>`` (inner neuron
    OT, then outer layer OT) is the checkpoint cost ``C^chkpt[c, d]``; a third exact OT
    with uniform marginals over checkpoints gives the coupling R.  The pairwise-best map
    matches each source checkpoint to its lowest-cost target checkpoint.

    Parameters
    ----------
    rotation, max_iter, tol, solver, device, n_jobs, epsilon
        As for :class:`motalign.MOT`: MOT+R and its stopping rule, and the inner-OT
        engine's settings, used for every checkpoint pair.

    Attributes
    ----------
    checkpoint_cost_ : (C_A, C_B) two-level objectives.
    checkpoint_coupling_ : (C_A, C_B) plan R, rows sum to 1/C_A, columns to 1/C_B.
    pairwise_best_ : (C_A,) index of each source checkpoint's lowest-cost partner.
    pairwise_best_map_ : (C_A, C_B) that map as a coupling with mass 1/C_A per row.
    source_checkpoint_names_, target_checkpoint_names_ : tuples of names.
    """

    def __init__(self, rotation=False, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
                 solver=DEFAULT_SOLVER, device=DEFAULT_DEVICE, n_jobs=None, epsilon=DEFAULT_EPSILON):
        self.rotation = rotation
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.device = device
        self.n_jobs = n_jobs
        self.epsilon = epsilon

    def fit(self, checkpoints_X, checkpoints_Y):
        """``checkpoints_X``: sequence (or mapping) of C_A networks, each a sequence of
        layers (T x n_l) on the same T stimuli; likewise ``checkpoints_Y``."""
        names_x, nets_x = _checkpoint_list(checkpoints_X, "source")
        names_y, nets_y = _checkpoint_list(checkpoints_Y, "target")
        xs = [check_layers(n, f"source checkpoint {c} ({names_x[c]!r})") for c, n in enumerate(nets_x)]
        ys = [check_layers(n, f"target checkpoint {d} ({names_y[d]!r})") for d, n in enumerate(nets_y)]
        for net in xs[1:] + ys:
            check_paired(xs[0], net)
        cost = checkpoint_costs(
            xs, ys, rotation=bool(self.rotation), max_iter=self.max_iter, tol=self.tol,
            solver=self.solver, device=self.device, n_jobs=self.n_jobs, epsilon=self.epsilon,
        )
        return self.fit_from_costs(cost, names_x, names_y)

    def fit_from_costs(self, checkpoint_cost, source_names=None, target_names=None):
        """Finish a fit from a precomputed (C_A x C_B) checkpoint cost matrix (e.g. from the
        workflow's blocks of :func:`checkpoint_costs`)."""
        cost = np.asarray(checkpoint_cost, dtype=np.float64)
        if cost.ndim != 2 or 0 in cost.shape or not np.all(np.isfinite(cost)):
            raise ValueError(f"checkpoint cost must be a finite 2-D array, got shape {cost.shape}")
        n_a, n_b = cost.shape
        self.source_checkpoint_names_ = tuple(source_names or (f"checkpoint_{i}" for i in range(n_a)))
        self.target_checkpoint_names_ = tuple(target_names or (f"checkpoint_{i}" for i in range(n_b)))
        self.checkpoint_cost_ = cost
        self.checkpoint_coupling_ = exact_ot(cost)[0].toarray()
        self.pairwise_best_ = cost.argmin(axis=1)
        self.pairwise_best_map_ = one_hot_rows(self.pairwise_best_, n_b)
        return self


def checkpoint_costs(xs, ys, *, rotation=False, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
                     solver=DEFAULT_SOLVER, device=DEFAULT_DEVICE, n_jobs=None,
                     epsilon=DEFAULT_EPSILON) -> np.ndarray:
    """Two-level MOT objective <C, P> for every pair of validated checkpoint networks
    (``Layers``): the checkpoint cost matrix of Sec. 3.4.  The inner levels run on the
    inner-OT engine (:mod:`motalign.inner`) with the given solver, device and n_jobs."""
    options = engine_options(solver, device, n_jobs, epsilon)
    stopping = alternation(max_iter, tol)
    x_stats = [fit_stats(net) for net in xs]
    y_stats = [fit_stats(net) for net in ys]
    cost = np.empty((len(xs), len(ys)))
    for c, (x, xst) in enumerate(zip(xs, x_stats)):
        for d, (y, yst) in enumerate(zip(ys, y_stats)):
            inner = inner_alignment(
                x.arrays, y.arrays, xst, yst, rotation=rotation, alternation=stopping,
                keep_plans=False, keep_rotations=False, options=options,
            )
            cost[c, d] = two_level_objective(inner.cost)[1]
    return cost
