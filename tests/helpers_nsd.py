"""Helpers of the NSD tests: readings of the experimental design and of shared-image files
that only the tests need (the library reads them inside ``subject_responses``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from motalign.datasets.nsd.images import shared_stimuli_path
from motalign.datasets.nsd.layout import subject_id, subject_row


def trial_nsd_ids(expdesign: Mapping, subject, n_trials: int | None = None) -> np.ndarray:
    """NSD ids (1-based) shown to ``subject`` at trials ``0 .. n_trials - 1`` of the dict
    returned by ``read_expdesign``; ``n_trials`` defaults to every trial of
    ``masterordering``."""
    if not isinstance(expdesign, Mapping) or not {"masterordering", "subjectim", "sharedix"} <= set(expdesign):
        raise ValueError("expdesign must be the dict returned by read_expdesign")
    order = np.asarray(expdesign["masterordering"])
    subjectim = np.asarray(expdesign["subjectim"])
    row = subject_row(subject)
    if row >= subjectim.shape[0]:
        raise ValueError(
            f"subject {subject_id(subject)} has no row in subjectim (shape {subjectim.shape})"
        )
    if n_trials is None:
        n_trials = order.size
    n_trials = int(n_trials)
    if not 0 <= n_trials <= order.size:
        raise ValueError(f"n_trials={n_trials} is outside 0..{order.size} (the trials of masterordering)")
    return subjectim[row, order[:n_trials]]


def shared_trials(expdesign: Mapping, subject, n_trials: int) -> dict:
    """``{nsd_id: [0-based trial indices, increasing]}``: the trials, among the first
    ``n_trials``, at which ``subject`` saw each shared image (every id of ``sharedix``, in
    increasing order; an id not seen maps to ``[]``)."""
    ids = trial_nsd_ids(expdesign, subject, n_trials)
    shared = np.unique(np.asarray(expdesign["sharedix"]))
    out = {int(k): [] for k in shared}
    for t in np.flatnonzero(np.isin(ids, shared)):
        out[int(ids[t])].append(int(t))
    return out


def local_shared_ids(path) -> np.ndarray:
    """The 1-based NSD ids held by a shared-images file (or the one under an NSD root)."""
    import h5py

    path = Path(path)
    if path.is_dir():
        path = shared_stimuli_path(path)
    with h5py.File(path, "r") as f:
        if "nsd_ids" not in f or "images" not in f:
            raise ValueError(f"{path}: not a shared-stimuli file (needs datasets 'images' and 'nsd_ids')")
        return np.asarray(f["nsd_ids"][...], dtype=np.int64)


def chunks_read(path, reads, dataset: str = "betas") -> dict:
    """``{chunk offset (trial, z, y, x): number of file reads that touched its bytes}`` for
    the chunks of ``dataset`` in the HDF5 file ``path`` that any of ``reads`` (``(byte
    offset, byte count)`` pairs, as a counting file object logs them) overlaps.  Reads of
    metadata (outside every chunk) are not counted."""
    import h5py

    with h5py.File(path, "r") as f:
        dset = f[dataset]
        if dset.chunks is None:
            raise ValueError(f"{path}: dataset {dataset!r} is not chunked")
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    order = np.argsort([i.byte_offset for i in infos])
    starts = np.array([infos[k].byte_offset for k in order], dtype=np.int64)
    ends = starts + np.array([infos[k].size for k in order], dtype=np.int64)
    out: dict = {}
    for pos, n in reads:
        if n <= 0:
            continue
        first = np.searchsorted(ends, pos, side="right")  # first chunk ending after pos
        last = np.searchsorted(starts, pos + n, side="left")  # chunks starting before the end
        for k in order[first:last]:
            key = tuple(int(v) for v in infos[k].chunk_offset)
            out[key] = out.get(key, 0) + 1
    return out
