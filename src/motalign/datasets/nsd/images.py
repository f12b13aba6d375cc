"""The NSD images: read by NSD id from whichever copy is present
(:func:`read_shared_images`), the shared ones fetched from the bucket with ranged requests
(:func:`fetch_shared_stimuli`), and written as the workflow's stimuli file
(:func:`prepare_nsd_images`; paper Sec. 3.2: the images every subject saw).

Copies of the images
--------------------
``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``
    The bucket's file (~37 GB; or the simulator's): dataset ``imgBrick`` (n x H x W x 3
    uint8); NSD id ``k`` is row ``k - 1``.  Read locally, or remotely through
    :class:`~motalign.datasets.nsd.ranged.RangedS3File`: then only the requested rows (plus
    HDF5 metadata) are transferred.
``nsddata_stimuli/stimuli/nsd/nsd_shared_stimuli.hdf5``
    A derived local file under a mirror's root (not a bucket key), written by
    :func:`fetch_shared_stimuli`: datasets ``images`` (n x H x W x 3 uint8, one chunk per
    image) and ``nsd_ids`` (n int64, **1-based NSD ids, increasing**): row ``i`` of
    ``images`` is NSD id ``nsd_ids[i]``.  The image dataset is deliberately *not* named
    ``imgBrick``: in the real file, NSD id ``k`` is row ``k - 1`` of ``imgBrick``, and a small
    file whose rows are not indexed by id must not be readable as if it were (a reader of
    ``imgBrick`` fails on it with "no dataset 'imgBrick'" instead of returning wrong
    images; :func:`read_shared_images` tells the two files apart by their datasets and
    reads this one by id).  Attributes record the source (``s3://bucket/key``), its ETag
    and size, and a format tag.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...io.atomic import atomic_path, save_npz
from .expdesign import read_expdesign
from .layout import SHARED_STIMULI_PATH, STIMULI_PATH, _require_file
from .ranged import RangedS3File
from .s3 import MiB, _bucket, _client, _url

#: Format tag of the shared-images file (its ``format`` attribute).
SHARED_STIMULI_FORMAT = "motalign-nsd-shared-stimuli/1"


def nsd_stimulus_id(nsd_id: int) -> str:
    """The id of NSD image ``nsd_id`` (1-based) in a stimuli file: ``nsd#####``."""
    return f"nsd{int(nsd_id):05d}"


def check_nsd_ids(nsd_ids) -> np.ndarray:
    """``nsd_ids`` as a 1-D int64 array of (1-based) NSD ids, or a ValueError."""
    ids = np.asarray(nsd_ids)
    if ids.ndim != 1:
        raise ValueError(f"nsd_ids must be 1-D, got shape {ids.shape}")
    if ids.size and (not np.issubdtype(ids.dtype, np.number) or np.any(ids != np.round(ids))):
        raise ValueError("nsd_ids must be integers (1-based NSD ids)")
    return ids.astype(np.int64)


def shared_stimuli_path(root) -> Path:
    """Default path of the local shared-images file under an NSD root."""
    return Path(root) / SHARED_STIMULI_PATH


def read_shared_images(source, nsd_ids, *, client=None, bucket=None, key: str = STIMULI_PATH,
                       block_size: int = 4 * MiB, cache_blocks: int = 16) -> np.ndarray:
    """Images of ``nsd_ids`` from whichever copy of the NSD images ``source`` names.

    Only the requested rows are read: the ids are sorted and deduplicated for h5py's fancy
    indexing (which needs increasing indices), read, and put back in the requested order
    (duplicates allowed).

    Parameters
    ----------
    source : path-like, binary file-like or None
        * An NSD root folder: its shared-images file
          (``nsddata_stimuli/stimuli/nsd/nsd_shared_stimuli.hdf5``, a mirror's) when
          present, else its ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``.
        * An HDF5 file, as a path or as an open binary file object with
          ``read``/``seek``/``tell`` (left open; e.g. a file doing range requests): an
          ``nsd_stimuli.hdf5`` (dataset ``imgBrick``) or a shared-images file (datasets
          ``images`` and ``nsd_ids``), told apart by their datasets.
        * None: the bucket's ``nsd_stimuli.hdf5`` (``key`` in ``bucket``, default
          :func:`~motalign.datasets.nsd.s3.default_bucket`), read with ranged requests
          through ``client`` (default :func:`~motalign.datasets.nsd.s3.s3_client`), in
          cached blocks of ``block_size`` bytes (at most ``cache_blocks`` of them).
    nsd_ids : sequence of int
        1-based NSD ids (row ``k - 1`` of ``imgBrick``), in any order; read from a
        shared-images file, each must be in the file.

    Returns
    -------
    uint8 array (len(nsd_ids), H, W, 3)
    """
    ids = check_nsd_ids(nsd_ids)
    if source is None:
        with RangedS3File(_client(client), _bucket(bucket), key, block_size=block_size,
                          cache_blocks=cache_blocks) as remote:
            return _read_hdf5(remote, remote.name, ids)
    if client is not None or bucket is not None:
        raise ValueError("client and bucket select the bucket's file: give them with source=None")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            shared = shared_stimuli_path(path)
            path = shared if shared.is_file() else _require_file(path / STIMULI_PATH, path, "stimuli file")
        elif not path.is_file():
            raise ValueError(
                f"missing NSD stimuli file: {path} does not exist (expected NSD path "
                f"{STIMULI_PATH} under the root folder)"
            )
        return _read_hdf5(path, str(path), ids)
    if hasattr(source, "read") and hasattr(source, "seek"):
        return _read_hdf5(source, getattr(source, "name", repr(source)), ids)
    raise ValueError(f"source must be an NSD root folder, an HDF5 file (a path or an open binary file "
                     f"object) or None, got {type(source).__name__}")


def _open_hdf5(opened, name: str):
    import h5py  # deferred: optional dependency, nsd extra

    try:
        return h5py.File(opened, "r")
    except Exception as exc:
        raise ValueError(f"{name}: not a readable HDF5 file ({exc})") from exc


def _read_hdf5(opened, name: str, ids: np.ndarray) -> np.ndarray:
    """Rows of an ``nsd_stimuli.hdf5`` or of a shared-images file, told apart by datasets."""
    with _open_hdf5(opened, name) as f:
        if "imgBrick" not in f and "images" in f and "nsd_ids" in f:
            return _shared_rows(f, name, ids)
        return _imgbrick_rows(f, name, ids)


def _imgbrick_rows(f, name: str, ids: np.ndarray) -> np.ndarray:
    """Images of NSD ids ``ids`` from the ``imgBrick`` of the open HDF5 file ``f``."""
    if "imgBrick" not in f:
        raise ValueError(f"{name}: no dataset 'imgBrick' (found {sorted(f.keys())})")
    dset = f["imgBrick"]
    if dset.ndim != 4 or dset.shape[-1] != 3:
        raise ValueError(f"{name}: 'imgBrick' must be n x H x W x 3, got shape {dset.shape}")
    if dset.dtype != np.uint8:
        raise ValueError(f"{name}: 'imgBrick' must be uint8, got {dset.dtype}")
    n_rows = dset.shape[0]
    if ids.size and (ids.min() < 1 or ids.max() > n_rows):
        bad = ids[(ids < 1) | (ids > n_rows)]
        raise ValueError(f"{name}: NSD ids {bad[:5].tolist()} outside 1..{n_rows} (ids are 1-based)")
    if not ids.size:
        return np.empty((0,) + tuple(dset.shape[1:]), dtype=np.uint8)
    rows, inverse = np.unique(ids - 1, return_inverse=True)
    block = dset[rows] if rows.size > 1 else dset[int(rows[0])][None]
    inverse = inverse.ravel()
    if inverse.size == rows.size and np.array_equal(inverse, np.arange(rows.size)):
        return block  # already increasing and unique: no reordering copy
    return block[inverse]


def _shared_rows(f, name: str, ids: np.ndarray) -> np.ndarray:
    """Images of NSD ids ``ids`` from the open shared-images file ``f`` (module docstring)."""
    have = np.asarray(f["nsd_ids"][...], dtype=np.int64)
    dset = f["images"]
    if dset.shape[0] != have.size:
        raise ValueError(f"{name}: 'images' has {dset.shape[0]} rows but 'nsd_ids' {have.size}")
    if not ids.size:
        return np.empty((0,) + tuple(dset.shape[1:]), dtype=dset.dtype)
    order = np.argsort(have, kind="stable")
    pos = np.searchsorted(have[order], ids)
    pos_c = np.minimum(pos, have.size - 1)
    found = (pos < have.size) & (have[order][pos_c] == ids)
    if not found.all():
        missing = np.unique(ids[~found])
        raise ValueError(
            f"{name}: NSD ids {missing[:10].tolist()}{' ...' if missing.size > 10 else ''} "
            f"are not in the file ({have.size} shared images)")
    rows = order[pos_c]
    urows, inverse = np.unique(rows, return_inverse=True)
    block = dset[urows] if urows.size > 1 else dset[int(urows[0])][None]
    return block[inverse.ravel()]


def fetch_shared_stimuli(root, out=None, *, nsd_ids=None, client=None, bucket=None,
                         key: str = STIMULI_PATH, batch_size: int = 50,
                         block_size: int = 4 * MiB, cache_blocks: int = 16,
                         overwrite: bool = False) -> dict:
    """Write only the shared images into a small local HDF5 file.

    The ids default to ``sharedix`` of the local experiment design (``root`` must hold
    ``nsddata/experiments/nsd/nsd_expdesign.mat``, e.g. after
    :func:`motalign.datasets.nsd.mirror.download_nsd`).  The
    images are read from the remote ``nsd_stimuli.hdf5`` with ranged requests (batches of
    ``batch_size`` rows of ``imgBrick``), written to a temporary file and moved into place
    atomically.  An existing file holding exactly these ids from the same source (same
    ETag) is kept unless ``overwrite``.

    Returns
    -------
    dict
        ``path``, ``n_images``, ``nsd_ids``, ``skipped`` (bool), ``bytes_fetched``,
        ``requests``, ``source`` (``s3://bucket/key``), ``source_size``.
    """
    import h5py  # deferred: optional dependency, nsd extra

    root = Path(root)
    out = shared_stimuli_path(root) if out is None else Path(out)
    if nsd_ids is None:
        design = read_expdesign(root)
        ids = np.unique(np.asarray(design["sharedix"], dtype=np.int64))
    else:
        ids = np.unique(np.asarray(nsd_ids, dtype=np.int64))
    if ids.size == 0:
        raise ValueError("no NSD id to fetch")
    if ids.min() < 1:
        raise ValueError("NSD ids are 1-based: found ids < 1")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    client = _client(client)
    bucket = _bucket(bucket)
    source = _url(bucket, key)
    with RangedS3File(client, bucket, key, block_size=block_size, cache_blocks=cache_blocks) as rf:
        if out.is_file() and not overwrite:
            try:
                with h5py.File(out, "r") as f:
                    same = (f.attrs.get("format") == SHARED_STIMULI_FORMAT
                            and f.attrs.get("source") == source
                            and f.attrs.get("source_etag") == rf.etag
                            and "nsd_ids" in f and np.array_equal(f["nsd_ids"][...], ids)
                            and "images" in f and f["images"].shape[0] == ids.size)
            except OSError:
                same = False
            if same:
                return {"path": str(out), "n_images": int(ids.size), "nsd_ids": ids, "skipped": True,
                        "bytes_fetched": rf.bytes_fetched, "requests": rf.requests,
                        "source": source, "source_size": rf.size}
        with atomic_path(out, suffix=".tmp.hdf5") as tmp, h5py.File(tmp, "w") as f:
            dset = None
            for b0 in range(0, ids.size, int(batch_size)):
                batch = ids[b0:b0 + int(batch_size)]
                with _open_hdf5(rf, rf.name) as h5:
                    images = _imgbrick_rows(h5, rf.name, batch)
                if dset is None:
                    dset = f.create_dataset("images", shape=(ids.size,) + images.shape[1:],
                                            dtype=np.uint8, chunks=(1,) + images.shape[1:])
                dset[b0:b0 + batch.size] = images
            f.create_dataset("nsd_ids", data=ids)
            f.attrs["format"] = SHARED_STIMULI_FORMAT
            f.attrs["source"] = source
            f.attrs["source_etag"] = rf.etag
            f.attrs["source_size"] = rf.size
            f.attrs["description"] = (
                "row i of 'images' is NSD id nsd_ids[i] (1-based); NOT an imgBrick: "
                "rows are not indexed by NSD id")
        return {"path": str(out), "n_images": int(ids.size), "nsd_ids": ids, "skipped": False,
                "bytes_fetched": rf.bytes_fetched, "requests": rf.requests,
                "source": source, "source_size": rf.size}


def prepare_nsd_images(nsd_root, out) -> dict:
    """The shared NSD images (``sharedix`` of the experimental design) as a stimuli file,
    sorted by NSD id, read by :func:`read_shared_images` from the root's shared-images file
    (a mirror) or its full ``nsd_stimuli.hdf5`` (a complete local copy, or the simulated
    layout); ids are ``nsd#####``."""
    shared = np.sort(read_expdesign(nsd_root)["sharedix"])
    images = read_shared_images(nsd_root, shared)
    save_npz(out, ids=np.array([nsd_stimulus_id(i) for i in shared]), images=images)
    return {"n_images": int(len(shared))}
