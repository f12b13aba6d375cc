"""Z-scoring with fit statistics (paper Sec. 2.2.1 and 2.2.3) and the constant-unit rule.

The constant-unit rule
----------------------
A unit whose values on the fit stimuli are all identical (``max == min``) carries no tuning
information.  Its z-score is defined as 0 on every stimulus, fit or new.  Consequences:

* its correlation with any other unit is 0, so its inner-OT cost to every unit is 1;
* as a target unit it contributes nothing to a reconstruction;
* the number of such units per layer is reported by the estimators
  (``n_constant_units_``).

When scoring, a unit whose true held-out values, or whose reconstruction, are constant has
an undefined Pearson correlation; it is scored 0 and counted (see
:func:`motalign.metrics.columnwise_pearson`).  Scores are therefore always finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerStats:
    """Per-unit fit statistics of one layer: mean, inverse std (0 for constant units)."""

    mean: np.ndarray
    inv_scale: np.ndarray
    constant: np.ndarray

    @classmethod
    def fit(cls, layer: np.ndarray) -> LayerStats:
        layer = np.asarray(layer, dtype=np.float64)
        mean = layer.mean(axis=0)
        std = layer.std(axis=0)
        constant = layer.max(axis=0) == layer.min(axis=0)
        inv_scale = np.zeros_like(std)
        np.divide(1.0, std, out=inv_scale, where=~constant)
        return cls(mean=mean, inv_scale=inv_scale, constant=constant)

    @classmethod
    def fit_transform(cls, layer: np.ndarray) -> tuple[LayerStats, np.ndarray]:
        """``fit(layer)`` and ``transform(layer)`` in fewer passes over the data (one
        float64 copy, centred and scaled in place); bit-identical to calling both."""
        layer = np.asarray(layer)
        z = np.array(layer, dtype=np.float64)
        mean = z.mean(axis=0)
        constant = layer.max(axis=0) == layer.min(axis=0)
        z -= mean
        std = np.sqrt(np.add.reduce(z * z, axis=0) / z.shape[0])
        inv_scale = np.zeros_like(std)
        np.divide(1.0, std, out=inv_scale, where=~constant)
        z *= inv_scale
        return cls(mean=mean, inv_scale=inv_scale, constant=constant), z

    @property
    def n_constant(self) -> int:
        return int(self.constant.sum())

    def transform(self, layer: np.ndarray) -> np.ndarray:
        """Z-score ``layer`` (T x n) with these statistics, in float64."""
        z = np.asarray(layer, dtype=np.float64) - self.mean
        z *= self.inv_scale
        return z
