"""Z-scored layers as both backends of the inner level read them."""

from __future__ import annotations

import numpy as np

from ..preprocessing import LayerStats, PrecisionError


class Standardized:
    """Z-scores of a network's layers with fit statistics (paper Sec. 2.2.1; fitted on
    first use when not given): ``std(i)`` computes once and keeps, ``std.compute(i)`` does
    not keep.  ``label`` names the network in errors (a layer fitted here whose units lost
    their precision, see :func:`~motalign.preprocessing.check_precision`)."""

    def __init__(self, arrays, stats=None, label: str = "network"):
        self.arrays, self.label = arrays, label
        self.stats = list(stats) if stats is not None else [None] * len(arrays)
        self._z = {}

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

    def width(self, index: int) -> int:
        return self.arrays[index].shape[1]
