"""The MOT estimator: two-level optimal transport between the layers of two networks.

Paper Sec. 2.2 (MOT) and 2.3 (MOT+R).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._estimator import BaseEstimator, check_is_fitted, check_random_state
from ._validation import Layers, check_layers, check_like_fit, check_paired
from .couplings import COUPLINGS, check_coupling_name, layer_couplings
from .inner import InnerAlignment, alternation, engine_options, inner_alignment
from .inner.layers import Standardized
from .inner.rotation import rotation_from_plan
from .inner.types import (
    DEFAULT_DEVICE,
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    DEFAULT_SOLVER,
    DEFAULT_TOL,
)
from .metrics import columnwise_pearson
from .preprocessing import LayerStats
from .solvers import exact_ot

#: MOT+R keeps every layer pair's rotation during a fit when they fit in this many bytes;
#: otherwise it keeps none and rebuilds those that the couplings use afterwards from their
#: rotation-defining plans (one Procrustes step each).
ROTATION_CACHE_BYTES = 2 * 1024**3


def fit_stats(layers: Layers) -> list[LayerStats]:
    """Fit statistics of every layer; a layer whose units lost their precision (all values
    deep in the subnormal range) raises a ``ValueError`` naming it."""
    return [LayerStats.fit(a, layers.describe(i)) for i, a in enumerate(layers.arrays)]


def two_level_objective(cost: np.ndarray) -> tuple[np.ndarray, float]:
    """Outer OT (Sec. 2.2.2): the exact L x M plan P with marginals 1/L, 1/M and <C, P>."""
    plan, value = exact_ot(cost)
    return plan.toarray(), value


class MOT(BaseEstimator):
    """Multi-Level Optimal Transport between the layers of a source network X and a target
    network Y (paper Sec. 2.2; MOT+R with ``rotation=True``, Sec. 2.3).

    Parameters
    ----------
    rotation : bool
        Fit MOT+R: a rotation ``R_lm`` per layer pair, alternated with the neuron plan.
    solver : {"exact", "sinkhorn"}
        Inner OT solver.  "exact" (default): assignment solver for equal widths, network
        simplex otherwise.  "sinkhorn": batched log-domain Sinkhorn with epsilon-scaling,
        rounded onto the transport polytope (torch; on the GPU when ``device`` gives one);
        each pair's certified gap to the exact optimum is in ``inner_gap_bound_``.  The
        outer OT is always exact.
    device : {"cpu", "cuda", "auto"} or "cuda:N"
        Where the inner level runs.  "cuda": cost GEMMs (and Sinkhorn, MOT+R's batched
        Procrustes SVDs) on the GPU; with solver="exact" the problems are still solved
        exactly on the CPU.  "auto": CUDA when a GPU is visible, else CPU.
    n_jobs : int or None
        Layer pairs solved in parallel threads (None: 1, -1: every core).
    epsilon : float
        Final entropic regularisation of solver="sinkhorn", in cost units.
    random_state : int, numpy Generator/RandomState or None
        Seeds the row permutation of the Perm-P ("random") coupling.
    max_iter, tol : int, float
        MOT+R stopping rule: at most ``max_iter`` alternations; stop when the relative
        decrease of the reconstruction cost falls below ``tol``.

    Attributes
    ----------
    cost_ : (L, M) inner costs C (correlation-OT cost, or the MOT+R reconstruction cost).
    coupling_ : (L, M) outer plan P; rows sum to 1/L, columns to 1/M.
    objective_ : float, the two-level objective <C, P>.
    layer_couplings_ : dict name -> (L, M), the four couplings of Sec. 2.4.
    permutation_ : (L,) row permutation used by Perm-P.
    neuron_couplings_ : L x M nested list of sparse plans Q_lm (n_l x n_m, total mass 1).
    n_constant_units_ : {"X": (L,), "Y": (M,)} units constant on the fit stimuli.
    n_iter_ : (L, M) MOT+R alternations per pair (rotation=True only).
    objective_history_ : dict (l, m) -> list of MOT+R costs, non-increasing.
    inner_gap_bound_ : (L, M) certified bound on ``C[l, m] - exact optimum`` of each pair's
        inner OT for solver="sinkhorn" (0 for "exact"; NaN for MOT+R, whose Q-step
        bounds do not bound the reconstruction cost).

    Data are given as a sequence of (T x n_l) arrays, or a mapping layer name -> array.
    Reconstructions are in the z-scored units of X (fit statistics); scores are held-out
    Pearson correlations averaged over units, then layers (Sec. 2.2.3).
    """

    def __init__(self, rotation=False, solver=DEFAULT_SOLVER, random_state=None,
                 max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL, device=DEFAULT_DEVICE, n_jobs=None,
                 epsilon=DEFAULT_EPSILON):
        self.rotation = rotation
        self.solver = solver
        self.device = device
        self.n_jobs = n_jobs
        self.epsilon = epsilon
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol

    # ------------------------------------------------------------------ fitting
    def _check_params(self):
        try:
            self._options = engine_options(self.solver, self.device, self.n_jobs, self.epsilon)
            self._alternation = alternation(self.max_iter, self.tol)
        except ValueError as error:
            raise ValueError(f"MOT: {error}") from None

    def _prepare(self, X, Y):
        self._check_params()
        x = check_layers(X, "source network X")
        y = check_layers(Y, "target network Y")
        check_paired(x, y)
        self.x_stats_, self.y_stats_ = fit_stats(x), fit_stats(y)
        self.source_layer_names_, self.target_layer_names_ = x.names, y.names
        self.source_widths_, self.target_widths_ = x.widths, y.widths
        self.n_stimuli_fit_ = x.n_stimuli
        self.n_constant_units_ = {
            "X": np.array([s.n_constant for s in self.x_stats_]),
            "Y": np.array([s.n_constant for s in self.y_stats_]),
        }
        return x, y

    def fit(self, X, Y):
        """Fit neuron plans Q_lm, inner costs C and the layer coupling P on (X, Y)."""
        x, y = self._prepare(X, Y)
        rotation_bytes = 8 * sum(n * n for n in x.widths) * y.n_layers
        keep_rotations = bool(self.rotation) and rotation_bytes <= ROTATION_CACHE_BYTES
        inner = inner_alignment(
            x.arrays, y.arrays, self.x_stats_, self.y_stats_, rotation=bool(self.rotation),
            alternation=self._alternation, keep_rotations=keep_rotations, options=self._options,
        )
        return self._fit_outer(x, y, inner)

    def fit_from_inner(self, X, Y, cost, plans, histories=None, rotation_plans=None):
        """Finish a fit whose inner level was computed elsewhere (e.g. by the workflow's
        sharded inner-OT jobs, see :func:`motalign.inner.inner_alignment`): ``cost`` (L x M), ``plans`` (L x M
        nested sequence of n_l x n_m plans, total mass 1) and, for MOT+R, ``histories``
        ({(l, m): costs}) and ``rotation_plans`` ({(l, m): the pair's rotation-defining
        plan, None for the identity}, see :attr:`motalign.inner.PairResult.rotation_plan`).
        X and Y are the fit data; the MOT+R rotation of each pair that the couplings use is
        rebuilt from them and its rotation-defining plan by one Procrustes step, or, for
        pairs missing from ``rotation_plans`` (or without it), recomputed by the whole
        alternation (it is deterministic)."""
        x, y = self._prepare(X, Y)
        cost = np.asarray(cost, dtype=np.float64)
        if cost.shape != (x.n_layers, y.n_layers) or not np.all(np.isfinite(cost)):
            raise ValueError(
                f"fit_from_inner: cost must be a finite {x.n_layers} x {y.n_layers} array, "
                f"got shape {cost.shape}"
            )
        checked = [[None] * y.n_layers for _ in range(x.n_layers)]
        for l in range(x.n_layers):
            for m in range(y.n_layers):
                plan = sp.csr_matrix(plans[l][m])
                if plan.shape != (x.widths[l], y.widths[m]):
                    raise ValueError(
                        f"fit_from_inner: plan ({l}, {m}) has shape {plan.shape}, expected "
                        f"{(x.widths[l], y.widths[m])} from {x.describe(l)} and {y.describe(m)}"
                    )
                checked[l][m] = plan
        if self.rotation and histories is None:
            raise ValueError("fit_from_inner: rotation=True needs the MOT+R histories")
        defining = {}
        for (l, m), plan in (rotation_plans or {}).items() if self.rotation else ():
            if plan is not None:
                plan = sp.csr_matrix(plan)
                if plan.shape != (x.widths[l], y.widths[m]):
                    raise ValueError(
                        f"fit_from_inner: rotation plan ({l}, {m}) has shape {plan.shape}, expected "
                        f"{(x.widths[l], y.widths[m])}"
                    )
            defining[int(l), int(m)] = plan
        inner = InnerAlignment(cost=cost, plans=checked, rotations={}, histories=histories or {},
                               rotation_plans=defining)
        return self._fit_outer(x, y, inner)

    def _fit_outer(self, x, y, inner):
        self.cost_ = inner.cost
        self.inner_gap_bound_ = (
            inner.gap_bound if inner.gap_bound is not None else np.zeros_like(inner.cost)
        )
        self.neuron_couplings_ = inner.plans
        self.coupling_, self.objective_ = two_level_objective(self.cost_)
        rng = check_random_state(self.random_state)
        self.permutation_ = rng.permutation(x.n_layers)
        self.layer_couplings_ = layer_couplings(self.coupling_, self.cost_, self.permutation_)
        if self.rotation:
            self.objective_history_ = inner.histories
            self.n_iter_ = np.array(
                [[len(inner.histories[l, m]) - 1 for m in range(y.n_layers)]
                 for l in range(x.n_layers)]
            )
            used = sorted({
                (int(l), int(m))
                for c in self.layer_couplings_.values()
                for l, m in zip(*np.nonzero(c))
            })
            if all(k in inner.rotations for k in used):
                self.rotations_ = {k: inner.rotations[k] for k in used}
            else:
                self.rotations_ = self._rebuild_rotations(
                    x, y, {k: inner.rotation_plans[k] for k in used if k in inner.rotation_plans})
                missing = [k for k in used if k not in self.rotations_]
                if missing:  # no rotation-defining plan (e.g. old workflow shards)
                    self.rotations_.update(self._recompute_rotations(x, y, missing))
                self.rotations_ = {k: self.rotations_[k] for k in used}
        return self

    def _rebuild_rotations(self, x, y, rotation_plans):
        """R_lm of each pair in ``rotation_plans`` from its rotation-defining plan: one
        Procrustes step on the fit data's z-scores (:func:`~.inner.rotation.rotation_from_plan`)."""
        x_std, y_std = Standardized(x.arrays, self.x_stats_, x.label), Standardized(y.arrays, self.y_stats_, y.label)
        rotations, current = {}, None
        for l, m in sorted(rotation_plans):
            if rotation_plans[l, m] is None:
                rotations[l, m] = np.eye(x.widths[l])
                continue
            if current is None or current[0] != l:
                current = (l, x_std.compute(l))
            rotations[l, m] = rotation_from_plan(rotation_plans[l, m], current[1].T @ y_std(m))
        return rotations

    def _recompute_rotations(self, x, y, pairs):
        inner = inner_alignment(
            x.arrays, y.arrays, self.x_stats_, self.y_stats_, pairs=pairs, rotation=True,
            alternation=self._alternation, keep_plans=False, options=self._options,
        )
        return inner.rotations

    # ------------------------------------------------------------------ accessors
    def _check_fitted(self):
        check_is_fitted(self, "coupling_")

    def _layer_index(self, key, names, side):
        if isinstance(key, str):
            if key not in names:
                raise KeyError(f"no {side} layer named {key!r}; layers are {list(names)}")
            return names.index(key)
        index = int(key)
        if not 0 <= index < len(names):
            raise IndexError(f"{side} layer index {key} out of range 0..{len(names) - 1}")
        return index

    def neuron_coupling(self, l, m) -> np.ndarray:
        """Q_lm as a dense n_l x n_m array (layer index or name)."""
        self._check_fitted()
        l = self._layer_index(l, self.source_layer_names_, "source")
        m = self._layer_index(m, self.target_layer_names_, "target")
        return self.neuron_couplings_[l][m].toarray()

    def rotation_matrix(self, l, m) -> np.ndarray:
        """R_lm (n_l x n_l) of MOT+R, for the layer pairs used by any of the four couplings."""
        self._check_fitted()
        if not self.rotation:
            raise ValueError("rotation_matrix: this MOT was fitted with rotation=False")
        l = self._layer_index(l, self.source_layer_names_, "source")
        m = self._layer_index(m, self.target_layer_names_, "target")
        if (l, m) not in self.rotations_:
            raise KeyError(
                f"rotation for layer pair ({l}, {m}) was not kept: no coupling uses it"
            )
        return self.rotations_[l, m]

    # ------------------------------------------------------------------ prediction
    def predict(self, Y_new, coupling="mot") -> list:
        """Reconstruct every source layer from target activations (Sec. 2.2.3; MOT+R, Sec. 2.3):
        ``Xhat_l = L * sum_m P[l, m] * Yz_m (n_l Q_lm)^T [R_lm^T]``, in z-scored X units."""
        self._check_fitted()
        weights = self.layer_couplings_[check_coupling_name(coupling)]
        y = check_layers(Y_new, "target network Y_new")
        check_like_fit(y, self.target_widths_, "target network Y")
        yz = [stats.transform(a, y.describe(m)) for m, (stats, a) in enumerate(zip(self.y_stats_, y.arrays))]
        n_source = len(self.source_widths_)
        predictions = []
        for l, width in enumerate(self.source_widths_):
            xhat_t = np.zeros((width, y.n_stimuli))  # built transposed: (n_l x T)
            for m in np.flatnonzero(weights[l]):
                plan = self.neuron_couplings_[l][m]
                part = (plan * float(width)) @ yz[m].T  # (n_l Q_lm) Yz_m^T
                if self.rotation:
                    part = self.rotations_[l, m] @ part  # (Yz W^T R^T)^T = R W Yz^T
                xhat_t += weights[l, m] * part
            predictions.append(np.ascontiguousarray(n_source * xhat_t.T))
        return predictions

    def layer_scores(self, X_new, Y_new, coupling="mot", return_counts=False):
        """Held-out score of every source layer: mean over units of Pearson r between
        X_new and its reconstruction (Sec. 2.2.3).  With ``return_counts`` also the number
        of units per layer whose correlation was undefined (scored 0)."""
        self._check_fitted()
        x = check_layers(X_new, "source network X_new")
        check_like_fit(x, self.source_widths_, "source network X")
        predictions = self.predict(Y_new, coupling=coupling)
        if predictions[0].shape[0] != x.n_stimuli:
            raise ValueError(
                f"X_new and Y_new must share their stimuli: T = {x.n_stimuli} vs "
                f"{predictions[0].shape[0]}"
            )
        scores, counts = np.empty(x.n_layers), np.empty(x.n_layers, dtype=int)
        for l, (truth, prediction) in enumerate(zip(x.arrays, predictions)):
            r, counts[l] = columnwise_pearson(truth, prediction)
            scores[l] = r.mean()
        return (scores, counts) if return_counts else scores

    def score(self, X_new, Y_new, coupling="mot") -> float:
        """Global MOT score: mean over source layers of the layer scores."""
        return float(self.layer_scores(X_new, Y_new, coupling=coupling).mean())

    def scores(self, X_new, Y_new, couplings=COUPLINGS) -> dict:
        """Scores of several couplings of one fit: {name: score}."""
        return {name: self.score(X_new, Y_new, coupling=name) for name in couplings}
