"""Input checks shared by every estimator.

Every error names the network, the layer (index and name) and what is wrong with it, so
that a user aligning 60 layers knows which one to look at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layers:
    """A validated network: its layer arrays (T x n_l, float) and layer names."""

    arrays: tuple
    names: tuple
    label: str

    @property
    def n_layers(self) -> int:
        return len(self.arrays)

    @property
    def n_stimuli(self) -> int:
        return self.arrays[0].shape[0]

    @property
    def widths(self) -> tuple:
        return tuple(a.shape[1] for a in self.arrays)

    def describe(self, index: int) -> str:
        return f"{self.label}, layer {index} ({self.names[index]!r})"


def check_layers(layers, label: str, *, min_stimuli: int = 2) -> Layers:
    """Validate one network given as a sequence of 2-D arrays or a mapping name -> array.

    Raises ``ValueError`` naming the network ``label``, the layer and the offending shape or
    count of non-finite values.  Arrays are converted to floating point (float32 stays
    float32, everything else becomes float64) without copying when already so.
    """
    if isinstance(layers, Mapping):
        names = tuple(str(k) for k in layers.keys())
        arrays = list(layers.values())
    elif isinstance(layers, np.ndarray) and layers.ndim == 2:
        raise ValueError(
            f"{label}: expected a sequence of layers (one T x n_l array per layer), "
            f"got a single 2-D array of shape {layers.shape}; wrap it in a list for a "
            "one-layer network"
        )
    elif isinstance(layers, (Sequence, np.ndarray)) and not isinstance(layers, (str, bytes)):
        arrays = list(layers)
        names = tuple(f"layer_{i}" for i in range(len(arrays)))
    else:
        raise ValueError(
            f"{label}: expected a sequence of layers or a mapping of layer name -> array, "
            f"got {type(layers).__name__}"
        )
    if len(arrays) == 0:
        raise ValueError(f"{label}: the network has no layers")

    checked = []
    n_stimuli = None
    for i, array in enumerate(arrays):
        where = f"{label}, layer {i} ({names[i]!r})"
        a = np.asarray(array)
        if a.ndim != 2:
            raise ValueError(
                f"{where}: expected a 2-D array (stimuli x units), got shape {a.shape}"
            )
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{where}: empty layer, shape {a.shape}")
        if a.dtype == bool:
            a = a.astype(np.float64)
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"{where}: expected real numbers, got dtype {a.dtype}")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        n_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if n_bad:
            raise ValueError(f"{where}: {n_bad} non-finite values (NaN or inf)")
        if n_stimuli is None:
            n_stimuli = a.shape[0]
        elif a.shape[0] != n_stimuli:
            raise ValueError(
                f"{label}: layers disagree on the number of stimuli: layer 0 "
                f"({names[0]!r}) has shape {checked[0].shape}, layer {i} ({names[i]!r}) "
                f"has shape {a.shape}"
            )
        checked.append(a)
    if n_stimuli < min_stimuli:
        raise ValueError(
            f"{label}: at least {min_stimuli} stimuli are needed, got layers of shape "
            f"{checked[0].shape}"
        )
    return Layers(arrays=tuple(checked), names=names, label=label)


def check_paired(x: Layers, y: Layers) -> None:
    """Both networks must be probed with the same stimuli (same T)."""
    if x.n_stimuli != y.n_stimuli:
        raise ValueError(
            f"{x.label} and {y.label} must share their stimuli: {x.label} has layer shapes "
            f"{[a.shape for a in x.arrays]}, {y.label} has layer shapes "
            f"{[a.shape for a in y.arrays]} (T = {x.n_stimuli} vs {y.n_stimuli})"
        )


def check_like_fit(new: Layers, widths: tuple, fit_label: str) -> None:
    """New data must have the layers and widths seen at fit time."""
    if new.widths != tuple(widths):
        raise ValueError(
            f"{new.label}: layer widths {list(new.widths)} differ from those of "
            f"{fit_label} at fit time {list(widths)} (shapes "
            f"{[a.shape for a in new.arrays]})"
        )
