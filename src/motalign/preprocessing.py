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

Any finite scale
----------------
Z-scores, correlations and everything computed from them do not depend on the scale of a
unit.  Every unit (column) is first multiplied by a power of two, ``2**-shift``, that brings
its largest absolute value into ``[0.5, 1)``, and its mean and standard deviation are
computed on those values, so that squares neither overflow (activations of 1e300) nor
underflow (activations of 1e-300).  Multiplying by a power of two is exact, so for data of
ordinary scale the z-scores are bit for bit those of the plain formula, and multiplying a
layer (or any unit) by a power of two leaves them bit for bit unchanged; any other factor
changes them only by the rounding of the product itself.

The one thing no rescaling recovers is precision lost before the data arrive: a unit whose
values are all subnormal (below 2.2e-308 in float64, 1.2e-38 in float32) has fewer
significant bits than its format.  When fewer than half remain (every value of a unit below
:func:`precision_floor`: 2**-1049, about 1.6e-316, in float64, which leaves at most 25 of 53
bits; 2**-138, about 2.9e-42, in float32, at most 11 of 24) its tuning curve is too coarse to
be meaningful and fitting raises a :class:`PrecisionError` (a ``ValueError``) naming the
layer and the unit (see :func:`check_precision`).  Above that floor results agree with those
of the unscaled data to about ``2**-bits`` relative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerStats", "PrecisionError", "check_precision", "power_of_two_scale", "precision_floor", "scaled_columns"]

#: exponents of 2 that a single multiplication may apply (2**1000 and 2**-1000 are normal)
_MAX_STEP = 1000


def precision_floor(dtype) -> float:
    """The largest absolute value below which a unit of ``dtype`` (float32 or float64) has
    kept fewer than half of its format's significant bits (all its values subnormal):
    2**-1049 (1.6e-316) for float64, 2**-138 (2.9e-42) for float32."""
    info = np.finfo(np.float32 if np.dtype(dtype) == np.float32 else np.float64)
    return float(np.ldexp(1.0, info.minexp - info.nmant // 2 - 1))


class PrecisionError(ValueError):
    """Units of a layer have lost most of their significant bits (:func:`check_precision`);
    ``detail`` is the message without the location, for callers that name it better."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.detail = detail


def check_precision(max_abs: np.ndarray, dtype, where: str, what: str = "unit") -> None:
    """Raise :class:`PrecisionError` naming ``where`` when a non-zero entry of ``max_abs``
    (the largest absolute value of each unit) is below :func:`precision_floor` of
    ``dtype``."""
    max_abs = np.asarray(max_abs, dtype=np.float64)
    floor = precision_floor(dtype)
    coarse = np.flatnonzero((max_abs > 0) & (max_abs < floor))
    if coarse.size:
        info = np.finfo(np.float32 if np.dtype(dtype) == np.float32 else np.float64)
        kept = info.nmant - info.nmant // 2 - 1
        first = int(coarse[0])
        raise PrecisionError(where,
            f"{coarse.size} {what}(s) (first: {what} {first}, largest |value| "
            f"{max_abs[first]:.3g}) hold only subnormal {info.dtype} values below "
            f"{floor:.3g}: at most {kept} of {info.dtype}'s {info.nmant + 1} significant bits "
            f"are left, too few for meaningful correlations. The values were rounded before "
            f"they reached motalign (rescaling them now does not bring the bits back): export "
            f"the activations at a larger scale (multiply them by a power of two before they "
            f"are rounded to {info.dtype}), or set such {what}s to 0 if they are dead"
        )


def power_of_two_scale(max_abs: np.ndarray) -> np.ndarray:
    """The exponents ``shift`` (int) with ``max_abs * 2**-shift`` in ``[0.5, 1)`` (0 where
    ``max_abs`` is 0)."""
    return np.frexp(np.asarray(max_abs, dtype=np.float64))[1]


def scaled_columns(layer: np.ndarray, shift: np.ndarray, axis: int = 0) -> np.ndarray:
    """``layer * 2**-shift`` in float64 (a new array), exactly, one factor per column
    (``axis=0``) or per row (``axis=1``).  One multiplication for ordinary shifts; shifts
    beyond +-1000 (the subnormal and top of the float64 range) take a second one."""
    shift = np.asarray(shift)
    step = np.clip(-shift, -_MAX_STEP, _MAX_STEP)
    factor = np.ldexp(1.0, step)
    out = np.multiply(layer, factor if axis == 0 else factor[:, None], dtype=np.float64)
    rest = -shift - step
    if np.any(rest):
        extra = np.ldexp(1.0, rest)
        out *= extra if axis == 0 else extra[:, None]
    return out


def _floating(layer) -> np.ndarray:
    """``layer`` as float32 or float64 (other types become float64), without a copy when
    it is already so."""
    layer = np.asarray(layer)
    return layer if layer.dtype in (np.float32, np.float64) else layer.astype(np.float64)


def _column_range(layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    high, low = layer.max(axis=0), layer.min(axis=0)
    max_abs = np.maximum(np.abs(high), np.abs(low)).astype(np.float64)
    return high == low, max_abs


@dataclass(frozen=True)
class LayerStats:
    """Per-unit fit statistics of one layer.

    ``shift``: the power of two of each unit (see the module docstring); ``mean`` and
    ``inv_scale`` (inverse std, 0 for constant units) are those of the unit's values times
    ``2**-shift``.  ``shift=None`` (statistics pickled before it existed) means no scaling.
    """

    mean: np.ndarray
    inv_scale: np.ndarray
    constant: np.ndarray
    shift: np.ndarray | None = None

    @classmethod
    def _scaled_moments(cls, layer, where: str, keep: bool):
        """Statistics of ``layer`` and its scaled copy, centred in place (then squared in
        place unless ``keep``): one float64 copy of the layer in all."""
        layer = _floating(layer)
        constant, max_abs = _column_range(layer)
        check_precision(max_abs, layer.dtype, where)
        shift = power_of_two_scale(max_abs)
        z = scaled_columns(layer, shift)
        mean = z.mean(axis=0)
        z -= mean
        squares = z * z if keep else np.multiply(z, z, out=z)
        std = np.sqrt(np.add.reduce(squares, axis=0) / z.shape[0])  # as ndarray.std
        inv_scale = np.zeros_like(std)
        np.divide(1.0, std, out=inv_scale, where=~constant)
        return cls(mean=mean, inv_scale=inv_scale, constant=constant, shift=shift), z

    @classmethod
    def fit(cls, layer: np.ndarray, where: str = "layer") -> LayerStats:
        """Statistics of ``layer`` (T x n, the fit stimuli); ``where`` names it in errors
        (:class:`PrecisionError`)."""
        return cls._scaled_moments(layer, where, keep=False)[0]

    @classmethod
    def fit_transform(cls, layer: np.ndarray, where: str = "layer") -> tuple[LayerStats, np.ndarray]:
        """``fit(layer)`` and ``transform(layer)`` in fewer passes over the data (one
        float64 copy, scaled on the way, centred and scaled in place); bit-identical to
        calling both."""
        stats, z = cls._scaled_moments(layer, where, keep=True)
        z *= stats.inv_scale
        return stats, z

    @property
    def n_constant(self) -> int:
        return int(self.constant.sum())

    @property
    def width(self) -> int:
        return len(self.mean)

    def transform(self, layer: np.ndarray, where: str | None = None) -> np.ndarray:
        """Z-score ``layer`` (T x n) with these statistics, in float64.

        With ``where`` (new data, named in the error) the z-scores are checked to be finite:
        new values some 1e290 fit standard deviations from the fit mean overflow.
        """
        if self.shift is None:
            z = np.asarray(layer, dtype=np.float64) - self.mean
        else:
            z = scaled_columns(layer, self.shift)
            z -= self.mean
        z *= self.inv_scale
        if where is not None and not (np.isfinite(z.max()) and np.isfinite(z.min())):
            raise ValueError(
                f"{where}: z-scores overflow float64: the new values lie more than ~1e300 "
                "fit standard deviations from the fit mean (new data on another scale than "
                "the fit data?)"
            )
        return z
