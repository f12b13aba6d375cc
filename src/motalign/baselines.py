"""Baselines MOT is compared with (paper, Appendices F, H and I).

* :class:`GlobalOT` and :class:`GlobalLinearPredictivity` (Appendix F, Table F.1): all layers
  of each network are flattened into one layer and a single map is fitted between all source
  and all target units.
* :class:`PairwiseLinearPredictivity` (Appendix H, Table H.1, Figure H.1): a ridge map per
  (source layer, target layer) pair; each source layer keeps its best target layer.
* :class:`PairwiseRSA` (Appendix I, Figure I.1): RDM similarity per layer pair; each source
  layer keeps its most similar target layer.

Conventions shared with MOT (paper Sec. 2.2): ``X`` (source) and ``Y`` (target) are sequences, or
mappings name -> array, of ``T x n`` layers probed with the same ``T`` fit stimuli.  Units are
z-scored with the fit statistics (:class:`~motalign.preprocessing.LayerStats`, constant-unit
rule included); reconstructions are of z-scored source units; a held-out score is the Pearson
r of each source unit with its reconstruction (:func:`~motalign.metrics.columnwise_pearson`,
undefined correlations scored 0 and counted).  Layer couplings of the pairwise baselines
(``best_match_map_``) are L x M plans with mass ``1/L`` on each row's selected target layer,
so that they can be compared with the MOT plan (e.g. by
:func:`~motalign.metrics.hierarchy_score`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._validation import Layers, check_layers, check_like_fit, check_paired
from .couplings import one_hot_rows
from .metrics import columnwise_pearson
from .preprocessing import LayerStats, check_precision, power_of_two_scale, scaled_columns
from .ridge import SharedRidgeLOO, loo_score_table
from .solvers import correlation_ot

__all__ = ["GlobalOT", "GlobalLinearPredictivity", "PairwiseLinearPredictivity", "PairwiseRSA"]

#: Ridge penalty grid used by default: ``np.logspace(-3, 6, 19)`` (as a tuple of floats).
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 19))

_LABELS = {"X": "source network X", "Y": "target network Y"}


def _check_fit_data(X, Y, *, min_stimuli: int = 2) -> tuple[Layers, Layers]:
    x = check_layers(X, _LABELS["X"], min_stimuli=min_stimuli)
    y = check_layers(Y, _LABELS["Y"], min_stimuli=min_stimuli)
    check_paired(x, y)
    return x, y


class _ReconstructionBaseline(BaseEstimator):
    """Fit statistics, validation of new data, ``predict`` and the held-out scores.

    Subclasses implement ``_reconstruct(yz)``: z-scored target layers (list of M arrays) ->
    reconstructed z-scored source layers (list of L arrays).  ``_pool_units`` chooses the
    global score: mean over all source units (True) or mean of the layer scores (False).
    """

    _pool_units = False

    def _fit_networks(self, X, Y) -> tuple[list, list]:
        """Validate the fit data, store its statistics; return the z-scored layers."""
        x, y = _check_fit_data(X, Y)
        self.x_stats_ = [LayerStats.fit(a, x.describe(i)) for i, a in enumerate(x.arrays)]
        self.y_stats_ = [LayerStats.fit(a, y.describe(i)) for i, a in enumerate(y.arrays)]
        self.layer_names_ = {"X": x.names, "Y": y.names}
        self.n_constant_units_ = {
            "X": np.array([s.n_constant for s in self.x_stats_]),
            "Y": np.array([s.n_constant for s in self.y_stats_]),
        }
        xz = [s.transform(a) for s, a in zip(self.x_stats_, x.arrays)]
        yz = [s.transform(a) for s, a in zip(self.y_stats_, y.arrays)]
        return xz, yz

    def _widths(self, which: str) -> tuple:
        stats = self.x_stats_ if which == "X" else self.y_stats_
        return tuple(s.width for s in stats)

    def _transform_new(self, layers, which: str) -> tuple[Layers, list]:
        """Validate new data of network ``which`` ("X" or "Y") and z-score it."""
        check_is_fitted(self)
        new = check_layers(layers, f"{_LABELS[which]} (new data)", min_stimuli=1)
        check_like_fit(new, self._widths(which), _LABELS[which])
        stats = self.x_stats_ if which == "X" else self.y_stats_
        return new, [s.transform(a, new.describe(i)) for i, (s, a) in enumerate(zip(stats, new.arrays))]

    def predict(self, Y_new) -> list:
        """Reconstruct the z-scored source layers from target responses ``Y_new``.

        Returns a list of L arrays (T_new x n_l), one per source layer.
        """
        _, yz = self._transform_new(Y_new, "Y")
        return self._reconstruct(yz)

    def unit_scores(self, X_new, Y_new) -> tuple[list, np.ndarray]:
        """Held-out Pearson r of every source unit with its reconstruction.

        Returns ``(r, n_undefined)``: a list of L arrays (n_l,) and, per source layer, the
        number of units whose correlation was undefined (constant truth or reconstruction)
        and scored 0.
        """
        x, xz = self._transform_new(X_new, "X")
        y, yz = self._transform_new(Y_new, "Y")
        check_paired(x, y)
        results = [columnwise_pearson(t, p) for t, p in zip(xz, self._reconstruct(yz))]
        return [r for r, _ in results], np.array([n for _, n in results])

    def layer_scores(self, X_new, Y_new) -> np.ndarray:
        """Mean held-out r over the units of each source layer, shape (L,)."""
        r, _ = self.unit_scores(X_new, Y_new)
        return np.array([v.mean() for v in r])

    def score(self, X_new, Y_new) -> float:
        """Global held-out score (see the class docstring for how units are pooled)."""
        r, _ = self.unit_scores(X_new, Y_new)
        if self._pool_units:
            return float(np.concatenate(r).mean())
        return float(np.mean([v.mean() for v in r]))


def _stack_units(layers: list, *, units_first: bool = False) -> np.ndarray:
    """All layers (T x n_l) of a network as one T x n array (n x T with ``units_first``),
    releasing each layer of the list (set to None) once it is copied, so that memory grows
    by one layer rather than by a second copy of the network."""
    t, n = layers[0].shape[0], sum(a.shape[1] for a in layers)
    out = np.empty((n, t) if units_first else (t, n))
    start = 0
    for i, layer in enumerate(layers):
        stop = start + layer.shape[1]
        if units_first:
            out[start:stop] = layer.T
        else:
            out[:, start:stop] = layer
        layers[i] = layer = None
        start = stop
    return out


class _GlobalBaseline(_ReconstructionBaseline):
    """Flattened networks: one map ``_map_flat`` from all target to all source units."""

    _pool_units = True

    def _reconstruct(self, yz: list) -> list:
        flat = self._map_flat(np.hstack(yz))
        return np.split(flat, np.cumsum(self._widths("X"))[:-1], axis=1)


class GlobalOT(_GlobalBaseline):
    """Global optimal transport between flattened networks (paper, Appendix F, Table F.1).

    All z-scored layers of each network are concatenated, so that every unit belongs to a
    single layer, and an exact uniform-marginal OT plan ``Q`` (n_x x n_y) is solved on the
    correlation-distance cost between all source and all target units (Sec. 2.2.1, Eq. 2, with
    one layer per network).  Reconstruction: ``Xhat = Yz @ (n_x Q)^T`` (``n_x Q`` is
    row-stochastic).

    The dense n_x x n_y cost is not held (at NSD scale, about 15,000 voxels per subject, it
    would take 1.8 GB, and the dense solver as much again): above
    :data:`motalign.solvers.exact.ON_DEMAND_MIN_ENTRIES` entries
    (:func:`~motalign.solvers.correlation_ot`) the exact plan is found by column generation
    on the cost computed block by block from the z-scored data
    (:class:`~motalign.solvers.CorrelationCost`).  Memory: the z-scored fit data
    (``(n_x + n_y) T`` floats, twice), about ``136 max(n_x, n_y)`` candidate entries, and one
    block of ``ON_DEMAND_BLOCK_ENTRIES`` costs (32 MB) at a time; the plan itself has at
    most ``n_x + n_y - 1`` entries.  The plan is exact as before (a vertex, certified by
    pricing every entry).

    Attributes
    ----------
    plan_ : scipy.sparse.csr_matrix, shape (n_x, n_y)
        Exact transport plan between all source and all target units.
    cost_ : float
        OT objective ``<C, Q>`` (mean correlation distance under the plan).
    n_constant_units_ : dict
        ``{"X": (L,), "Y": (M,)}`` numbers of units constant on the fit stimuli.
    layer_names_ : dict
        ``{"X": names, "Y": names}``.
    x_stats_, y_stats_ : list of LayerStats
        Fit statistics used to z-score new data.

    Notes
    -----
    ``score`` is the mean held-out r over *all* source units (the flattened network is one
    layer, as in the paper); ``layer_scores`` splits the same unit scores by source layer.
    """

    def fit(self, X, Y) -> GlobalOT:
        """Fit the plan on paired fit responses ``X`` (source) and ``Y`` (target)."""
        xz, yz = self._fit_networks(X, Y)
        # stacked as units x stimuli and passed transposed: the solver's layout, no copy
        xt, yt = _stack_units(xz, units_first=True), _stack_units(yz, units_first=True)
        self.plan_, self.cost_ = correlation_ot(xt.T, yt.T)
        return self

    def _map_flat(self, yz_all: np.ndarray) -> np.ndarray:
        return np.asarray(self.plan_ @ yz_all.T).T * self.plan_.shape[0]


class GlobalLinearPredictivity(_GlobalBaseline):
    """Global linear predictivity between flattened networks (paper, Appendix F, Table F.1).

    Ridge regression (no intercept: the fit data are z-scored) from all z-scored target units
    to all z-scored source units.  One penalty, shared by all source units, is chosen from
    ``alphas`` by efficient leave-one-out cross-validation on the fit stimuli only, with the
    numbers of :class:`sklearn.linear_model.RidgeCV` (``fit_intercept=False``; lowest mean
    squared LOO error; :class:`motalign.ridge.SharedRidgeLOO`).

    The map is kept in dual form, ``Xhat = Yz_new @ yz_fit_.T @ dual_coef_``: memory
    ``O(T (n_x + n_y))`` instead of the n_x x n_y primal weights (1.8 GB at NSD scale,
    about 15,000 voxels per subject).

    Parameters
    ----------
    alphas : sequence of float, default ``np.logspace(-3, 6, 19)``
        Ridge penalty grid.

    Attributes
    ----------
    dual_coef_ : ndarray, shape (T, n_x)
        Dual ridge coefficients: ``Xhat = Yz_new @ yz_fit_.T @ dual_coef_``.
    yz_fit_ : ndarray, shape (T, n_y)
        The z-scored target units on the fit stimuli (all layers, concatenated), needed for
        prediction.
    coef_ : ndarray, shape (n_x, n_y)
        Read-only property: the primal ridge weights ``dual_coef_.T @ yz_fit_``
        (``Xhat = Yz @ coef_.T``), computed on each access; allocates n_x x n_y floats.
    alpha_ : float
        Selected penalty.
    cv_score_ : float
        Negative mean squared leave-one-out error at ``alpha_`` (z-scored source units).
    n_constant_units_, layer_names_, x_stats_, y_stats_
        As in :class:`GlobalOT`.

    Notes
    -----
    ``score`` is the mean held-out r over all source units, as for :class:`GlobalOT`.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS):
        self.alphas = alphas

    def fit(self, X, Y) -> GlobalLinearPredictivity:
        """Fit the ridge map on paired fit responses ``X`` (source) and ``Y`` (target)."""
        xz, yz = self._fit_networks(X, Y)
        self.yz_fit_ = _stack_units(yz)
        fit = SharedRidgeLOO(self.yz_fit_, self.alphas).fit(_stack_units(xz), return_dual=True)
        self.dual_coef_ = fit.dual
        self.alpha_ = float(fit.alpha)
        self.cv_score_ = float(fit.score)
        return self

    @property
    def coef_(self) -> np.ndarray:
        """Primal ridge weights ``dual_coef_.T @ yz_fit_``, shape (n_x, n_y): computed on each
        access (allocates n_x x n_y floats; the estimator keeps the dual form only)."""
        return self.dual_coef_.T @ self.yz_fit_

    def _map_flat(self, yz_all: np.ndarray) -> np.ndarray:
        return (yz_all @ self.yz_fit_.T) @ self.dual_coef_


class PairwiseLinearPredictivity(_ReconstructionBaseline):
    """Pairwise best-layer linear predictivity (paper, Appendix H, Table H.1, Figure H.1).

    For every source layer l and target layer m, ridge regression (no intercept, z-scored
    data) from ``Y_m`` to ``X_l`` with its penalty chosen from ``alphas`` by efficient
    leave-one-out cross-validation (as :class:`sklearn.linear_model.RidgeCV`).  Each source
    layer is then reconstructed from its best target layer only.

    Selection criterion (fit stimuli only, never held-out data): ``cv_score_[l, m]`` is the
    negative mean squared leave-one-out error, over fit stimuli and the z-scored units of
    ``X_l``, of the ridge map from ``Y_m`` at its selected penalty.  Higher is better; within
    a row all entries predict the same z-scored targets, so they are comparable.

    Parameters
    ----------
    alphas : sequence of float, default ``np.logspace(-3, 6, 19)``
        Ridge penalty grid (one penalty per layer pair, shared by the units of ``X_l``).

    Attributes
    ----------
    cv_score_ : ndarray, shape (L, M)
        Cross-validated fit-split score of every layer pair (see above).
    alpha_ : ndarray, shape (L, M)
        Selected penalty of every layer pair.
    best_match_ : ndarray of int, shape (L,)
        ``argmax_m cv_score_[l, m]`` (first one on ties).
    best_match_map_ : ndarray, shape (L, M)
        Layer coupling: ``1/L`` at ``(l, best_match_[l])``, 0 elsewhere.
    coef_ : list of L ndarrays, shape (n_l, n_{best_match_[l]})
        Ridge weights of the selected pairs only: ``Xhat_l = Yz_{m*} @ coef_[l].T``.
    n_constant_units_, layer_names_, x_stats_, y_stats_
        As in :class:`GlobalOT`.

    Notes
    -----
    ``score`` is the mean of the layer scores (each layer's mean held-out r over its units).
    L * M ridge problems are solved with the numbers of
    :class:`~sklearn.linear_model.RidgeCV` (``fit_intercept=False``), but each target layer
    ``Y_m`` is decomposed once for all L source layers and all penalties
    (:class:`motalign.ridge.SharedRidgeLOO`): M decompositions instead of L * M.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS):
        self.alphas = alphas

    def fit(self, X, Y) -> PairwiseLinearPredictivity:
        """Fit all L x M ridge maps on the fit responses and keep each row's best."""
        xz, yz = self._fit_networks(X, Y)
        n_x, n_y = len(xz), len(yz)
        self.cv_score_ = np.full((n_x, n_y), -np.inf)
        self.alpha_ = np.zeros((n_x, n_y))
        self.best_match_ = np.zeros(n_x, dtype=int)
        self.coef_ = [None] * n_x
        if _gram_scores_cheaper(xz, yz, len(np.atleast_1d(self.alphas))):
            return self._fit_by_gram_scores(xz, yz)
        for m, target in enumerate(yz):
            ridge = SharedRidgeLOO(target, self.alphas)  # one decomposition of Y_m for every X_l and penalty
            for l, source in enumerate(xz):
                fit = ridge.fit(source)
                self.alpha_[l, m] = fit.alpha
                self.cv_score_[l, m] = fit.score
                # keep only the running best (first on ties) of each row
                if m == 0 or self.cv_score_[l, m] > self.cv_score_[l, self.best_match_[l]]:
                    self.best_match_[l] = m
                    self.coef_[l] = np.atleast_2d(fit.coef)
        self.best_match_map_ = one_hot_rows(self.best_match_, n_y)
        return self

    def _fit_by_gram_scores(self, xz, yz):
        """The same selection through stimulus x stimulus matrices
        (:func:`motalign.ridge.loo_score_table`): each source layer's Gram matrix once,
        one matrix per target layer and penalty, a dot product per pair and penalty; then
        only the selected pairs' weights."""
        alphas = np.asarray(np.atleast_1d(self.alphas), dtype=float)
        grams = [a @ a.T for a in xz]
        widths = [a.shape[1] for a in xz]
        columns = np.arange(len(xz))
        for m, target in enumerate(yz):
            table = loo_score_table(target, alphas, grams, widths)
            best = table.argmax(axis=0)  # the first penalty of the best score, as RidgeCV
            self.alpha_[:, m] = alphas[best]
            self.cv_score_[:, m] = table[best, columns]
        del grams
        self.best_match_ = self.cv_score_.argmax(axis=1)  # first on ties
        for m in np.unique(self.best_match_):
            rows = np.flatnonzero(self.best_match_ == m)
            # one decomposition of Y_m for its rows; each row's own penalty is the best of
            # the whole grid, hence of this subset too
            ridge = SharedRidgeLOO(yz[m], sorted({float(self.alpha_[l, m]) for l in rows}))
            for l in rows:
                self.coef_[l] = np.atleast_2d(ridge.fit(xz[l]).coef)
        self.best_match_map_ = one_hot_rows(self.best_match_, len(yz))
        return self

    def _reconstruct(self, yz: list) -> list:
        return [yz[m] @ w.T for m, w in zip(self.best_match_, self.coef_)]


def _gram_scores_cheaper(xz, yz, n_alphas) -> bool:
    """Whether scoring through T x T matrices (``loo_score_table``) takes fewer flops than
    a decomposition per target layer and a T x T x n product per pair and penalty."""
    t = xz[0].shape[0]
    n_x, n_y = len(xz), len(yz)
    width_x = sum(a.shape[1] for a in xz)
    gram = n_y * (10.0 + 4.0 * n_alphas) * t**3 + n_alphas * n_x * n_y * t * t + 2.0 * t * t * width_x
    direct = n_y * n_alphas * 2.0 * t * t * width_x
    return gram < direct


class PairwiseRSA(BaseEstimator):
    """Pairwise best-layer representational similarity analysis (paper, Appendix I, Fig. I.1).

    Each layer is summarised by its representational dissimilarity matrix (RDM) on the fit
    stimuli: the correlation distance ``1 - r`` between the response patterns (rows) of every
    pair of stimuli, computed on the activations as given.  A stimulus whose pattern is
    constant across the units of a layer has correlation 0 with every other stimulus
    (distance 1), so RDMs are always finite; such stimuli are counted in
    ``n_constant_stimuli_``.  Two RDMs are compared by the Spearman (or Pearson) correlation
    of their upper triangles (diagonal excluded); an RDM whose upper triangle is constant
    has similarity 0 with everything.  Each source layer is matched to its most similar
    target layer.

    Parameters
    ----------
    method : {"spearman", "pearson"}, default "spearman"
        Correlation used to compare RDMs.
    max_stimuli : int or None, default None
        If set and the fit data have more stimuli than this, RDMs are built on a random
        subset of ``max_stimuli`` stimuli (the same subset for every layer of both networks),
        drawn without replacement with ``random_state``.  Memory grows as ``T**2`` (one RDM
        of the source and the M target RDM vectors are held at a time), so use this for very
        large T (e.g. 20,000 ImageNet images).
    random_state : int, numpy.random.Generator or None, default None
        Seed of the stimulus subsample (only used when subsampling happens).

    Attributes
    ----------
    similarity_ : ndarray, shape (L, M)
        RDM similarity of every layer pair.
    best_match_ : ndarray of int, shape (L,)
        ``argmax_m similarity_[l, m]`` (first one on ties).
    best_match_map_ : ndarray, shape (L, M)
        Layer coupling: ``1/L`` at ``(l, best_match_[l])``, 0 elsewhere.
    stimuli_ : ndarray of int
        Indices (sorted) of the fit stimuli the RDMs were built on.
    n_constant_stimuli_ : dict
        ``{"X": (L,), "Y": (M,)}`` numbers of used stimuli whose pattern is constant.
    layer_names_ : dict
        ``{"X": names, "Y": names}``.
    """

    def __init__(self, method="spearman", max_stimuli=None, random_state=None):
        self.method = method
        self.max_stimuli = max_stimuli
        self.random_state = random_state

    def fit(self, X, Y) -> PairwiseRSA:
        """Compute all RDM similarities on paired fit responses and pick each row's best."""
        if self.method not in ("spearman", "pearson"):
            raise ValueError(f"method must be 'spearman' or 'pearson', got {self.method!r}")
        if self.max_stimuli is not None and (
            isinstance(self.max_stimuli, bool)
            or not isinstance(self.max_stimuli, (int, np.integer))
            or self.max_stimuli < 3
        ):
            raise ValueError(
                f"max_stimuli must be None or an integer >= 3, got {self.max_stimuli!r}"
            )
        x, y = _check_fit_data(X, Y, min_stimuli=3)
        n_stimuli = x.n_stimuli
        if self.max_stimuli is not None and n_stimuli > self.max_stimuli:
            rng = np.random.default_rng(self.random_state)
            self.stimuli_ = np.sort(rng.choice(n_stimuli, self.max_stimuli, replace=False))
        else:
            self.stimuli_ = np.arange(n_stimuli)
        upper = np.triu_indices(len(self.stimuli_), k=1)

        target = [self._rdm_vector(a[self.stimuli_], upper, y.describe(m)) for m, a in enumerate(y.arrays)]
        self.similarity_ = np.zeros((x.n_layers, y.n_layers))
        n_const_x = []
        for l, a in enumerate(x.arrays):
            v, n_const = self._rdm_vector(a[self.stimuli_], upper, x.describe(l))
            n_const_x.append(n_const)
            self.similarity_[l] = [v @ w for w, _ in target]
        np.clip(self.similarity_, -1.0, 1.0, out=self.similarity_)
        self.n_constant_stimuli_ = {
            "X": np.array(n_const_x),
            "Y": np.array([n for _, n in target]),
        }
        self.layer_names_ = {"X": x.names, "Y": y.names}
        self.best_match_ = np.argmax(self.similarity_, axis=1)
        self.best_match_map_ = one_hot_rows(self.best_match_, y.n_layers)
        return self

    def _rdm_vector(self, layer: np.ndarray, upper, where: str) -> tuple[np.ndarray, int]:
        """Upper triangle of the layer's RDM, ranked if Spearman, centred, unit norm.

        Any finite scale: each stimulus pattern is first scaled by the power of two that
        brings its largest absolute value into ``[0.5, 1)`` (exact; correlations do not
        change), so no square overflows or underflows; a pattern whose values are all deep
        subnormals raises (:func:`~motalign.preprocessing.check_precision`)."""
        a = np.asarray(layer)
        high, low = a.max(axis=1), a.min(axis=1)
        constant = high == low
        max_abs = np.maximum(np.abs(high), np.abs(low)).astype(np.float64)
        check_precision(max_abs, a.dtype, where, what="stimulus pattern")
        centred = scaled_columns(a, power_of_two_scale(max_abs), axis=1)
        centred -= centred.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centred, axis=1)
        norms[constant] = 1.0
        centred /= norms[:, None]
        centred[constant] = 0.0
        v = 1.0 - (centred @ centred.T)[upper]
        if self.method == "spearman":
            v = rankdata(v)
        v -= v.mean()
        norm = np.linalg.norm(v)
        if norm == 0 or v.max() == v.min():
            return np.zeros_like(v), int(constant.sum())
        return v / norm, int(constant.sum())
