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
