"""Activation store: one file per (network, revision, data set), layers read one at a time.

A store file is an uncompressed NumPy ``.npz`` archive holding

* one member per layer, ``layer_000``, ``layer_001``, ... (stimuli x units);
* ``stimulus_ids`` (str);
* ``__metadata__``: a JSON document (model id, revision, layer names, stimulus count,
  dtype, per-layer SHA-256 checksums and anything the writer adds).

``np.load`` reads members lazily, so :meth:`ActivationStore.layer` reads one layer without
touching the others.  Files are written atomically: to a temporary file in the same folder,
then renamed, so an interrupted job never leaves a partial store behind.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import json_default, save_npz

FORMAT_VERSION = 1


def array_checksum(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(array.data)
    return digest.hexdigest()


def _member(index: int) -> str:
    return f"layer_{index:03d}"


def write_activations(
    path,
    layers: Mapping[str, np.ndarray],
    *,
    stimulus_ids: Sequence[str],
    metadata: Mapping | None = None,
) -> None:
    """Write a store file (atomically) from ``{layer name: (T x n) array}``."""
    names = list(layers)
    if not names:
        raise ValueError(f"{path}: no layers to write")
    stimulus_ids = np.asarray([str(s) for s in stimulus_ids])
    arrays = {}
    checksums = []
    for i, name in enumerate(names):
        array = np.asarray(layers[name])
        if array.ndim != 2 or array.shape[0] != len(stimulus_ids):
            raise ValueError(
                f"{path}: layer {name!r} has shape {array.shape}, expected "
                f"({len(stimulus_ids)}, n_units)"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(
                f"{path}: layer {name!r} has {int(np.size(array) - np.isfinite(array).sum())} "
                "non-finite values"
            )
        arrays[_member(i)] = array
        checksums.append(array_checksum(array))
    meta = dict(metadata or {})
    meta.update(
        format_version=FORMAT_VERSION,
        layer_names=names,
        widths=[int(arrays[_member(i)].shape[1]) for i in range(len(names))],
        n_stimuli=len(stimulus_ids),
        dtypes=[str(arrays[_member(i)].dtype) for i in range(len(names))],
        checksums=checksums,
    )
    save_npz(
        path,
        stimulus_ids=stimulus_ids,
        __metadata__=np.asarray(json.dumps(meta, default=json_default)),
        **arrays,
    )


class ActivationStore:
    """Read access to a store file; ``layer(i)`` reads only that layer."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
            self.metadata = json.loads(str(self._npz["__metadata__"]))
            self.stimulus_ids = self._npz["stimulus_ids"].astype(str)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{self.path}: not a readable activation store ({error})") from error
        self.layer_names = tuple(self.metadata["layer_names"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._npz.close()

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    @property
    def widths(self) -> tuple:
        return tuple(self.metadata["widths"])

    def _index(self, key) -> int:
        if isinstance(key, str):
            if key not in self.layer_names:
                raise KeyError(f"{self.path}: no layer {key!r}; layers are {list(self.layer_names)}")
            return self.layer_names.index(key)
        if not 0 <= int(key) < self.n_layers:
            raise IndexError(f"{self.path}: layer index {key} out of range 0..{self.n_layers - 1}")
        return int(key)

    def layer(self, key, rows=None, verify: bool = False) -> np.ndarray:
        """One layer (by index or name), optionally only the stimuli ``rows``."""
        index = self._index(key)
        array = self._npz[_member(index)]
        if verify and array_checksum(array) != self.metadata["checksums"][index]:
            raise ValueError(
                f"{self.path}: checksum mismatch in layer {self.layer_names[index]!r}"
            )
        return array if rows is None else array[rows]

    def layers(self, rows=None) -> dict:
        """All layers as ``{name: array}`` (in order)."""
        return {name: self.layer(i, rows) for i, name in enumerate(self.layer_names)}

    def verify(self) -> None:
        """Check every layer against its recorded checksum."""
        for i in range(self.n_layers):
            self.layer(i, verify=True)


def load_network(path, rows=None, layers=None) -> tuple[list, tuple, np.ndarray]:
    """Layers (all, or the indices ``layers``) of a store file, restricted to ``rows``.
    Returns ``(arrays, layer names, stimulus ids)``."""
    with ActivationStore(path) as store:
        indices = range(store.n_layers) if layers is None else layers
        arrays = [np.asarray(store.layer(i, rows)) for i in indices]
        return arrays, store.layer_names, store.stimulus_ids

def check_same_stimuli(x_path, y_path) -> None:
    with ActivationStore(x_path) as x, ActivationStore(y_path) as y:
        if x.stimulus_ids.shape != y.stimulus_ids.shape or np.any(x.stimulus_ids != y.stimulus_ids):
            raise ValueError(
                f"{x_path} and {y_path} were not recorded on the same stimuli "
                f"({len(x.stimulus_ids)} vs {len(y.stimulus_ids)} ids, or in another order)"
            )

def check_layer_count(path, expected: int, config_key: str) -> None:
    with ActivationStore(path) as store:
        if store.n_layers != expected:
            raise ValueError(
                f"{path} holds {store.n_layers} layers but the configuration declares "
                f"{expected} (config key {config_key})"
            )
