"""Z-scored layers as both backends of the inner level read them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..preprocessing import _MAX_STEP, LayerStats, PrecisionError, _column_range, check_precision, power_of_two_scale
from ..solvers.exact import transposed_copy
from ..solvers.repair import FLOAT32_MAX_ABS, row_norms

#: layers of at least this many entries are z-scored by :func:`fused_unit_major`
_FUSED_MIN_ENTRIES = 2**20
#: stimuli per block of :func:`fused_unit_major` (64 and 1,024 measured 10-25% slower at 768 units)
_FUSED_ROWS = 256
#: bytes of float64 z-scores that :func:`_finish` scales, rounds and sums at a time
_FINISH_BYTES = 2**19


def unit_major_copy(xz: np.ndarray) -> np.ndarray:
    """``xz.T`` (T x n in, n x T out) as a C-contiguous float64 copy, transposed tile by tile
    (:func:`~motalign.solvers.exact.transposed_copy`)."""
    return transposed_copy(xz, np.float64)


class _Blocks:
    """Blocks of ``_FUSED_ROWS`` stimuli of a layer, scaled as :func:`scaled_columns` does
    (same operations) into one reused buffer whose row 0 holds a running sum: NumPy's
    ``add.reduce(axis=0)`` on a C-ordered array adds the rows in order, so reducing
    ``[sum, block]`` continues the sum of the whole array bit for bit.  With ``shift=None``
    and an ``offset`` (one value per unit), each block is ``layer - offset`` instead, in
    one operation."""

    def __init__(self, layer, shift, offset=None):
        self.layer, self.t, self.offset = layer, layer.shape[0], offset
        self.buffer = np.empty((_FUSED_ROWS + 1, layer.shape[1]))
        if shift is None:
            self.factor = self.extra = None
        else:
            step = np.clip(-shift, -_MAX_STEP, _MAX_STEP)
            self.factor = np.ldexp(1.0, step)
            rest = -shift - step
            self.extra = np.ldexp(1.0, rest) if np.any(rest) else None

    def __iter__(self):
        for start in range(0, self.t, _FUSED_ROWS):
            stop = min(start + _FUSED_ROWS, self.t)
            block = self.buffer[1:stop - start + 1]
            if self.factor is None and self.offset is not None:
                np.subtract(self.layer[start:stop], self.offset, out=block)
            elif self.factor is None:
                block[...] = self.layer[start:stop]
            else:
                np.multiply(self.layer[start:stop], self.factor, out=block)
                if self.extra is not None:
                    block *= self.extra
            yield start, stop, block

    def add(self, total, block):
        """``total + block[0] + block[1] + ...`` in that order (``block`` alone when
        ``total`` is None); ``block`` is the buffer's current block."""
        if total is None:
            return np.add.reduce(block, axis=0)
        self.buffer[0] = total
        return np.add.reduce(self.buffer[:block.shape[0] + 1], axis=0)


def fused_unit_major(layer: np.ndarray, stats: LayerStats | None, float32: bool = True):
    """Z-scores of ``layer`` (T x n) as ``(stats, z, z32, squares)``: the statistics (fitted
    when ``stats`` is None), the unit-major float64 z-scores (n x T), their float32 rounding
    (also n x T, or None) and each unit's sum of squares.  Bit-identical to
    ``LayerStats.fit_transform(layer)`` (or ``stats.transform(layer)``) transposed: the same
    roundings in the same order of summation (sequential over the stimuli), done on blocks
    of ``_FUSED_ROWS`` stimuli that stay in cache, so that the layer is read a few times and
    the float64 z-scores are written once, already transposed, with no stimuli-major float64
    copy (tests/test_float32_repair.py checks the identity).  A float32 layer fitted here
    takes :func:`_fit_float32`, which skips the power-of-two scaling."""
    if stats is None and layer.dtype == np.float32:
        return _fit_float32(layer, float32)
    t, n = layer.shape
    if stats is None:
        constant, max_abs = _column_range(layer)
        check_precision(max_abs, layer.dtype, "layer")
        shift = power_of_two_scale(max_abs)
        blocks, total = _Blocks(layer, shift), None
        for _, _, block in blocks:
            total = blocks.add(total, block)
        mean = total / t
        total = None
        for _, _, block in blocks:
            block -= mean
            total = blocks.add(total, np.multiply(block, block, out=block))
        std = np.sqrt(total / t)
        inv_scale = np.zeros_like(std)
        np.divide(1.0, std, out=inv_scale, where=~constant)
        stats = LayerStats(mean=mean, inv_scale=inv_scale, constant=constant, shift=shift)
    z = np.empty((n, t))
    for start, stop, block in _Blocks(layer, stats.shift):
        block -= stats.mean
        block *= stats.inv_scale
        z[:, start:stop] = block.T
    z32, squares = _finish(z, None, float32)
    return stats, z, z32, squares


def _fit_float32(layer: np.ndarray, float32: bool):
    """:func:`fused_unit_major` of a float32 layer with statistics fitted here, in fewer
    passes: the statistics are computed on the unscaled values and scaled afterwards.

    Why that is bit-identical to :class:`LayerStats` (which first multiplies each unit by
    ``f = 2**-shift``): float32 values are multiples of 2**-149 below 2**128 and
    ``|shift| <= 149``, so every sum, mean, difference, square, square root and quotient
    below stays a normal float64 number (above 2**-800, below 2**300), scaled or not;
    multiplying by a power of two commutes with rounding there (``fl(f a + f b) = f fl(a + b)``,
    ``sqrt(f**2 a) = f sqrt(a)``), so the scaled computation is this one times ``f``, each
    rounding included, and ``(f d) (inv / f) = d inv`` gives the same z-scores."""
    t, n = layer.shape
    constant, max_abs = _column_range(layer)
    check_precision(max_abs, layer.dtype, "layer")
    shift = power_of_two_scale(max_abs)
    mean = np.add.reduce(layer, axis=0, dtype=np.float64) / t  # sequential over the rows
    z = np.empty((n, t))
    blocks, total = _Blocks(layer, None, offset=mean), None
    for start, stop, block in blocks:  # block = layer - mean
        z[:, start:stop] = block.T
        total = blocks.add(total, np.multiply(block, block, out=block))
    std = np.sqrt(total / t)
    inv_scale = np.zeros_like(std)
    np.divide(1.0, std, out=inv_scale, where=~constant)
    z32, squares = _finish(z, inv_scale, float32)
    factor = np.ldexp(1.0, -shift)
    stats = LayerStats(mean=mean * factor, inv_scale=inv_scale / factor, constant=constant, shift=shift)
    return stats, z, z32, squares


def _finish(z: np.ndarray, inv_scale: np.ndarray | None, float32: bool):
    """Scale the rows of ``z`` (n x T) by ``inv_scale`` in place (unless None), and return
    their float32 rounding (n x T, or None) and sums of squares, a few rows at a time (in
    cache)."""
    n, t = z.shape
    z32 = np.empty((n, t), dtype=np.float32) if float32 else None
    squares = np.empty(n)
    rows = max(1, _FINISH_BYTES // (8 * max(t, 1)))
    for start in range(0, n, rows):
        block = z[start:start + rows]
        if inv_scale is not None:
            block *= inv_scale[start:start + rows, None]
        if z32 is not None:
            z32[start:start + rows] = block
        squares[start:start + rows] = np.einsum("ij,ij->i", block, block)
    return z32, squares


@dataclass(frozen=True)
class UnitMajor:
    """One layer's z-scores as the CPU backend reads them: ``z`` unit-major (n x T, float64,
    C-contiguous: an exact cost entry reads two contiguous rows), ``z32`` their float32
    rounding, also unit-major (n x T; None when not wanted or when a z-score is too large
    for float32 products, see :mod:`motalign.solvers.repair`) and ``norms``, the norm of every row
    of ``z`` (``sqrt(T)`` for z-scored units, 0 for constant ones)."""

    z: np.ndarray
    z32: np.ndarray | None
    norms: np.ndarray

    @classmethod
    def from_stimuli_major(cls, xz: np.ndarray, float32: bool = True) -> UnitMajor:
        """From z-scores stored stimuli x units (T x n)."""
        z = unit_major_copy(xz)
        norms = row_norms(z)
        wanted = float32 and min(z.shape) > 0 and norms.max() <= FLOAT32_MAX_ABS
        return cls(z, z.astype(np.float32) if wanted else None, norms)

    @property
    def norm(self) -> float:
        """The largest row norm."""
        return float(self.norms.max()) if self.norms.size else 0.0

    @property
    def stimuli_major(self) -> np.ndarray:
        """The float64 z-scores as T x n (an F-ordered view, no copy)."""
        return self.z.T


class Standardized:
    """Z-scores of a network's layers with fit statistics (paper Sec. 2.2.1; fitted on
    first use when not given): ``std(i)`` computes once and keeps, ``std.compute(i)`` does
    not keep (both T x n); ``std.unit_major(i)`` and ``std.compute_unit_major(i)`` the same
    as :class:`UnitMajor` (what the CPU backend reads).  ``label`` names the network in
    errors (a layer fitted here whose units lost their precision, see
    :func:`~motalign.preprocessing.check_precision`)."""

    def __init__(self, arrays, stats=None, label: str = "network"):
        self.arrays, self.label = arrays, label
        self.stats = list(stats) if stats is not None else [None] * len(arrays)
        self._z = {}
        self._unit = {}

    def __call__(self, index: int) -> np.ndarray:
        if index not in self._z:
            self._z[index] = self.compute(index)
        return self._z[index]

    def compute(self, index: int) -> np.ndarray:
        """The z-scores of one layer, not kept."""
        if self.stats[index] is None:
            try:
                self.stats[index], z = LayerStats.fit_transform(self.arrays[index])
            except PrecisionError as error:
                raise PrecisionError(f"{self.label}, layer {index}", error.detail) from None
            return z
        return self.stats[index].transform(self.arrays[index])

    def unit_major(self, index: int, float32: bool = True) -> UnitMajor:
        """:meth:`compute_unit_major`, computed once and kept."""
        if index not in self._unit:
            self._unit[index] = self.compute_unit_major(index, float32)
        return self._unit[index]

    def compute_unit_major(self, index: int, float32: bool = True) -> UnitMajor:
        """The z-scores of one layer as :class:`UnitMajor` (with their float32 rounding
        when ``float32``), not kept; bit-identical to :meth:`compute` (large layers by
        :func:`fused_unit_major`)."""
        layer = self.arrays[index]
        if (not isinstance(layer, np.ndarray) or layer.size < _FUSED_MIN_ENTRIES or layer.ndim != 2
                or layer.shape[1] < 2  # NumPy sums one column pairwise, not in order
                or layer.dtype not in (np.float32, np.float64) or not layer.flags.c_contiguous):
            return UnitMajor.from_stimuli_major(self.compute(index), float32)
        try:
            stats, z, z32, squares = fused_unit_major(layer, self.stats[index], float32)
        except PrecisionError:
            self.compute(index)  # raises it, naming the network and the layer
            raise
        self.stats[index] = stats
        norms = np.sqrt(squares)
        return UnitMajor(z, z32 if norms.max() <= FLOAT32_MAX_ABS else None, norms)

    def width(self, index: int) -> int:
        return self.arrays[index].shape[1]
