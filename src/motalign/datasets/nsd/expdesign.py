"""The NSD experimental design, ``nsd_expdesign.mat``: which image every trial of every
subject showed (file layout and index conventions in :mod:`.layout`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .layout import EXPDESIGN_PATH, _require_file


def _integer_array(value, name: str, path) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path}: field {name!r} is not numeric (dtype {arr.dtype})")
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise ValueError(f"{path}: field {name!r} holds non-integer values")
    return arr.astype(np.int64)


def read_expdesign(path) -> dict:
    """Read ``nsd_expdesign.mat``.

    Parameters
    ----------
    path : str or path-like
        The ``.mat`` file, or an NSD root folder (then ``nsddata/experiments/nsd/
        nsd_expdesign.mat`` inside it is read).

    Returns
    -------
    dict
        ``"masterordering"``: int64 (n_trials,), **0-based** column of ``subjectim`` shown
        at every trial (the file's 1-based values minus 1);
        ``"subjectim"``: int64 (8, n_images), **1-based NSD ids** (kept as in the file);
        ``"sharedix"``: int64 (n_shared,), **1-based NSD ids** of the shared images (kept
        as in the file);
        ``"path"``: the file read (str).
        Trial ``t`` of subject row ``r`` showed NSD id
        ``subjectim[r, masterordering[t]]``.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, lacks a field or holds inconsistent values.
    """
    path = Path(path)
    if path.is_dir():
        path = _require_file(path / EXPDESIGN_PATH, path, "experiment design")
    elif not path.is_file():
        raise ValueError(
            f"missing NSD experiment design: {path} does not exist (expected NSD path "
            f"{EXPDESIGN_PATH} under the root folder)"
        )
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: MATLAB v7.3 file; resave it as a v5 .mat ({exc})") from exc
    except Exception as exc:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: missing field(s) {missing}; found {found}")
    order = _integer_array(mat["masterordering"], "masterordering", path)
    subjectim = _integer_array(mat["subjectim"], "subjectim", path)
    sharedix = _integer_array(mat["sharedix"], "sharedix", path)
    if order.ndim > 2 or (order.ndim == 2 and min(order.shape) != 1):
        raise ValueError(f"{path}: 'masterordering' must be a vector, got shape {order.shape}")
    if sharedix.ndim > 2 or (sharedix.ndim == 2 and min(sharedix.shape) != 1):
        raise ValueError(f"{path}: 'sharedix' must be a vector, got shape {sharedix.shape}")
    if subjectim.ndim != 2:
        raise ValueError(f"{path}: 'subjectim' must be 2-D (subjects x images), got shape {subjectim.shape}")
    order, sharedix = order.ravel(), sharedix.ravel()
    n_images = subjectim.shape[1]
    if order.size and (order.min() < 1 or order.max() > n_images):
        raise ValueError(
            f"{path}: 'masterordering' values must be 1-based image positions in 1..{n_images} "
            f"(the columns of 'subjectim'), found {order.min()}..{order.max()}"
        )
    if subjectim.size and subjectim.min() < 1:
        raise ValueError(f"{path}: 'subjectim' holds NSD ids < 1 (ids are 1-based)")
    if sharedix.size and sharedix.min() < 1:
        raise ValueError(f"{path}: 'sharedix' holds NSD ids < 1 (ids are 1-based)")
    return {
        "masterordering": order - 1,
        "subjectim": subjectim,
        "sharedix": sharedix,
        "path": str(path),
    }
