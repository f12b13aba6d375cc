"""One subject's responses to the shared NSD images, region by region (paper Sec. 3.2:
regions are the "layers", voxels the "neurons").

:func:`subject_responses` reads the ROI volumes of the requested regions
(:data:`motalign.datasets.nsd.layout.REGIONS` by default) and every session's betas, of
which only the region voxels, z-scores every voxel within every session, and averages the
repetitions of every shared image.

Voxel order
-----------
A region's voxels are ordered as ``mask[...]`` boolean indexing of the X x Y x Z volume
orders them (C order of ``(x, y, z)``); ``info["voxel_indices"]`` of
:func:`subject_responses` gives their coordinates.

Overlapping regions
-------------------
Every region keeps its own definition, so a voxel labelled in two ROI files (e.g. hV4 in
``prf-visualrois`` and ventral in ``streams``) belongs to both regions: it is read once and
its responses appear, identical, in both regions' arrays.  ``info["overlaps"]`` counts
such voxels per pair of regions.

Reading beta files
------------------
NIfTI betas (X x Y x Z x trials) are read in slabs of whole trials.  HDF5 betas (dataset
``betas``, trials x Z x Y x X; the real NSD files are chunked one voxel x 750 trials) are
read chunk by chunk: only the chunks that hold a voxel of the requested regions, each
exactly once, never a whole volume (see :func:`_hdf5_read_plan`).  Both give the same
values.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .expdesign import read_expdesign
from .layout import BETA_SCALE, REGIONS, NSDPaths, Region, _require_file, nsd_paths, subject_row

#: Bytes of stored beta values read at once; bounds reading memory (see ``_BetaFile.read``).
READ_CHUNK_BYTES = 64 * 1024**2


def _resolve_regions(regions) -> dict:
    if isinstance(regions, Mapping):
        items = list(regions.items())
    elif isinstance(regions, Sequence) and not isinstance(regions, (str, bytes)):
        unknown = [r for r in regions if r not in REGIONS]
        if unknown:
            raise ValueError(f"unknown region(s) {unknown}; known regions: {list(REGIONS)}")
        items = [(r, REGIONS[r]) for r in regions]
    else:
        raise ValueError(
            f"regions must be a mapping name -> Region or a sequence of names from "
            f"{list(REGIONS)}, got {type(regions).__name__}"
        )
    if not items:
        raise ValueError("no region requested")
    out = {}
    for name, definition in items:
        if not isinstance(definition, Region):
            try:
                roi, labels = definition
                definition = Region(str(roi), tuple(int(v) for v in np.atleast_1d(labels)))
            except (TypeError, ValueError):
                raise ValueError(
                    f"region {name!r}: definition must be a Region(roi, labels) or a pair "
                    f"(roi file stem, labels), got {definition!r}"
                ) from None
        out[str(name)] = definition
    return out


def _read_roi_volume(path: Path) -> np.ndarray:
    import nibabel as nib  # deferred: optional dependency, nsd extra

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable NIfTI ROI volume ({exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: ROI volume must be 3-D, got shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating):
        data = np.where(np.isfinite(data), data, 0)  # non-finite: in no region
        data = np.rint(data)
    return data.astype(np.int64)


def _load_masks(paths: NSDPaths, regions: Mapping):
    """Masks of ``regions`` (resolved), the common volume shape and the ROI files used."""
    volumes: dict[str, np.ndarray] = {}
    masks = {}
    shape, shape_file = None, None
    for name, definition in regions.items():
        if definition.roi not in volumes:
            file = _require_file(paths.roi(definition.roi), paths.root, f"ROI volume for region {name!r}")
            volumes[definition.roi] = _read_roi_volume(file)
            if shape is None:
                shape, shape_file = volumes[definition.roi].shape, file
            elif volumes[definition.roi].shape != shape:
                raise ValueError(
                    f"{file}: ROI volume shape {volumes[definition.roi].shape} differs from "
                    f"{shape} of {shape_file}; all ROI volumes of a subject must share one space"
                )
        masks[name] = np.isin(volumes[definition.roi], definition.labels)
    files = {roi: paths.roi(roi) for roi in volumes}
    return masks, shape, files


class _BetaFile:
    """One session's beta file, open for reading the voxels of a mask (NIfTI or HDF5)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        try:
            if self.path.name.endswith(".hdf5"):
                self._open_hdf5()
            else:
                self._open_nifti()
        except ValueError:
            self._stack.close()
            raise
        except Exception as exc:
            self._stack.close()
            raise ValueError(f"{self.path}: not a readable beta file ({exc})") from exc

    def _open_nifti(self):
        import nibabel as nib  # deferred: optional dependency, nsd extra

        opener = gzip.open if self.path.name.endswith(".gz") else open
        fh = self._stack.enter_context(opener(self.path, "rb"))
        try:
            img = nib.Nifti1Image.from_stream(fh)
        except Exception:
            fh.seek(0)
            img = nib.Nifti2Image.from_stream(fh)
        shape = img.shape
        if len(shape) != 4:
            raise ValueError(f"{self.path}: beta volume must be 4-D (X x Y x Z x trials), got shape {shape}")
        self.kind = "nifti"
        self._data = img.dataobj
        self.spatial_shape = tuple(int(v) for v in shape[:3])
        self.n_trials = int(shape[3])
        self.dtype = np.dtype(img.get_data_dtype())

    def _open_hdf5(self):
        import h5py  # deferred: optional dependency, nsd extra

        f = self._stack.enter_context(h5py.File(self.path, "r"))
        if "betas" not in f:
            raise ValueError(f"{self.path}: no dataset 'betas' (found {sorted(f.keys())})")
        dset = f["betas"]
        if dset.ndim != 4:
            raise ValueError(f"{self.path}: dataset 'betas' must be 4-D (trials x Z x Y x X), got shape {dset.shape}")
        self.kind = "hdf5"
        self._data = dset
        self.spatial_shape = tuple(int(v) for v in dset.shape[:0:-1])
        self.n_trials = int(dset.shape[0])
        self.dtype = np.dtype(dset.dtype)

    def read(self, mask: np.ndarray) -> np.ndarray:
        """Raw stored values of the voxels of ``mask`` (X x Y x Z), (n_voxels, n_trials)
        float64, rows in the voxel order of the module docstring.  Reads at most
        :data:`READ_CHUNK_BYTES` of stored values at once (one chunk more where a single
        HDF5 chunk is larger)."""
        mask = np.asarray(mask, dtype=bool)
        if self.kind == "nifti":
            return self._read_nifti(mask)
        return self._read_hdf5(mask)

    def _read_nifti(self, mask: np.ndarray) -> np.ndarray:
        # slabs of whole trials: a gzip stream is read in order anyway
        out = np.empty((int(mask.sum()), self.n_trials), dtype=np.float64)
        per_trial = int(np.prod(self.spatial_shape)) * max(self.dtype.itemsize, 1)
        step = max(1, READ_CHUNK_BYTES // max(per_trial, 1))
        for t0 in range(0, self.n_trials, step):
            t1 = min(self.n_trials, t0 + step)
            slab = np.asarray(self._data[..., t0:t1])  # X x Y x Z x t
            out[:, t0:t1] = slab[mask]
            del slab
        return out

    @property
    def chunks(self):
        """The HDF5 chunk shape (trials, Z, Y, X), or None (NIfTI, contiguous HDF5)."""
        if self.kind != "hdf5" or self._data.chunks is None:
            return None
        return tuple(int(v) for v in self._data.chunks)

    def _read_hdf5(self, mask: np.ndarray) -> np.ndarray:
        """Only the chunks that hold voxels of ``mask``, each exactly once (see
        :func:`_hdf5_read_plan`); only the masked voxels are copied out."""
        n_vox = int(mask.sum())
        out = np.empty((n_vox, self.n_trials), dtype=np.float64)
        if n_vox == 0:
            return out
        rows = np.full(mask.shape, -1, dtype=np.int64)
        rows[mask] = np.arange(n_vox)
        rows_zyx = rows.transpose(2, 1, 0)  # dataset order Z x Y x X, a view
        chunks = self.chunks or (1,) + tuple(self._data.shape[1:])
        step, boxes = _hdf5_read_plan(np.argwhere(mask.transpose(2, 1, 0)), chunks, self.n_trials,
                                      max(self.dtype.itemsize, 1))
        plan = []
        for lo, hi in boxes:
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            sub = rows_zyx[box]
            inside = sub >= 0
            plan.append((box, inside, sub[inside]))
        for t0 in range(0, self.n_trials, step):
            t1 = min(self.n_trials, t0 + step)
            for box, inside, dest in plan:
                block = self._data[(slice(t0, t1),) + box]  # t x z x y x x
                out[dest, t0:t1] = block[:, inside].T
        return out

    def close(self):
        self._data = None
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hdf5_read_plan(coords: np.ndarray, chunks, n_trials: int, itemsize: int):
    """How to read the voxels ``coords`` ((k, 3) ``(z, y, x)`` in dataset order) of an HDF5
    beta dataset chunked ``chunks`` ((trials, Z, Y, X)), touching every chunk that holds one
    of them exactly once and no other chunk.

    The voxels are grouped by spatial chunk; within a chunk row (chunks of equal Z and Y
    chunk index) consecutive chunks along X that all hold voxels form a *run*, read as one
    box: the bounding box of the run's voxels, which lies inside the run's chunks.  Runs
    are capped so that one box of one trial chunk stays within :data:`READ_CHUNK_BYTES`.
    Trials are read in slabs of ``step`` trials, a multiple of the chunks' trial extent
    (all trials at once when a chunk spans them all, as in the real NSD files, chunked
    one voxel x 750 trials), so no chunk is split across slabs.

    Returns ``(step, boxes)``: ``boxes`` a list of ``(lo, hi)`` int arrays (3,) (``hi``
    exclusive), in chunk order.
    """
    ct = max(1, min(int(chunks[0]), n_trials))
    spatial = np.maximum(np.asarray(chunks[1:], dtype=np.int64), 1)
    cell_bytes = int(np.prod(spatial)) * itemsize
    max_cells = max(1, READ_CHUNK_BYTES // (ct * cell_bytes))
    cells = coords // spatial
    order = np.lexsort((cells[:, 2], cells[:, 1], cells[:, 0]))
    coords, cells = coords[order], cells[order]
    first = np.ones(len(cells), dtype=bool)
    first[1:] = np.any(cells[1:] != cells[:-1], axis=1)
    ucells = cells[first]  # distinct chunks, in chunk order
    brk = np.ones(len(ucells), dtype=bool)
    brk[1:] = np.any(ucells[1:, :2] != ucells[:-1, :2], axis=1) | (ucells[1:, 2] != ucells[:-1, 2] + 1)
    seg = np.cumsum(brk) - 1
    pos = np.arange(len(ucells)) - np.flatnonzero(brk)[seg]  # position within the segment
    run_of_cell = np.cumsum(brk | (pos % max_cells == 0)) - 1
    run_of_voxel = run_of_cell[np.cumsum(first) - 1]
    starts = np.flatnonzero(np.r_[True, run_of_voxel[1:] != run_of_voxel[:-1]])
    lo = np.minimum.reduceat(coords, starts, axis=0)
    hi = np.maximum.reduceat(coords, starts, axis=0) + 1
    per_trial = int(np.prod(hi - lo, axis=1).max()) * itemsize
    step = min(n_trials, max(1, READ_CHUNK_BYTES // (per_trial * ct)) * ct)
    return step, list(zip(lo, hi))


def region_masks(root, subject, regions=REGIONS) -> dict:
    """``{region name: bool array (X, Y, Z)}`` of ``regions`` (names of ``REGIONS``, or a
    mapping name -> ``Region`` / ``(roi stem, labels)``) for ``subject``, as
    ``subject_responses`` selects the voxels."""
    masks, _, _ = _load_masks(nsd_paths(root, subject), _resolve_regions(regions))
    return masks


def _overlaps(masks: Mapping) -> dict:
    """``{a: {b: voxels in both}}`` for the pairs of ``masks`` that intersect, ``a`` before
    ``b`` in the mapping's order."""
    names = list(masks)
    out: dict = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = int(np.count_nonzero(masks[a] & masks[b]))
            if n:
                out.setdefault(a, {})[b] = n
    return out


def _zscore_session(raw: np.ndarray):
    """Z-score every row (voxel) over the session's trials (population std); a voxel whose
    values are all identical gets 0.  Returns ``(z, constant_mask)``."""
    mean = raw.mean(axis=1, keepdims=True)
    std = raw.std(axis=1, keepdims=True)
    constant = raw.max(axis=1) == raw.min(axis=1)
    std[constant] = 1.0
    z = (raw - mean) / std
    z[constant] = 0.0
    return z, constant


def _resolve_sessions(paths: NSDPaths, sessions) -> list[tuple[int, Path]]:
    if sessions is None:
        found = paths.sessions()
        if not found:
            raise ValueError(
                f"no beta files for {paths.subject}: {paths.betas_dir} holds no "
                f"betas_sessionYY.nii.gz / .hdf5 (expected NSD folder "
                f"{paths.relative(paths.betas_dir)} under the root folder {paths.root})"
            )
        return [(s, paths.find_beta(s)) for s in found]
    if isinstance(sessions, (int, np.integer)):
        sessions = [sessions]
    out = []
    seen = set()
    for s in sessions:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"sessions must be positive integers (1-based, as in the file names), got {s!r}")
        s = int(s)
        if s in seen:
            raise ValueError(f"session {s} requested twice")
        seen.add(s)
        path = paths.find_beta(s)
        if path is None:
            expected = paths.beta(s)
            raise ValueError(
                f"missing NSD beta file for {paths.subject} session {s}: {expected} does not "
                f"exist (expected NSD path {paths.relative(expected)} under the root folder "
                f"{paths.root}; a .hdf5 file of the same name is also accepted)"
            )
        out.append((s, path))
    if not out:
        raise ValueError("no session requested")
    return sorted(out)


def subject_responses(root, subject, *, sessions=None, regions=REGIONS, min_repetitions=3,
                      beta_scale=BETA_SCALE):
    """One subject's trial-averaged, session-z-scored responses to the shared images.

    Sessions are read one at a time, and of each only the voxels of the requested regions
    (NIfTI: in slabs of whole trials; HDF5: only the chunks holding those voxels, see the
    module docstring), so memory holds one session's region voxels plus the running sums,
    never full volumes of all sessions.

    Steps: stored values / ``beta_scale`` (percent signal change); every voxel z-scored
    within every session over all of that session's trials (population std; a voxel
    whose values in a session are all identical is 0 in that session); the trials of
    shared images (``sharedix``) collected; images seen at least ``min_repetitions``
    times in the loaded trials kept, their repetitions averaged (all of them).

    Parameters
    ----------
    root : path-like
        NSD root folder.
    subject : str or int
        Paper letter (``"A"``), NSD name (``"subj01"``) or number.
    sessions : int or sequence of int, optional
        Session numbers (1-based, as in ``betas_sessionYY``).  Default: every session
        whose beta file is present.  Session ``s`` holds trials ``(s - 1) * n .. s * n - 1``
        of ``masterordering``, ``n`` being the trials per session (the 4th dimension of
        the beta files, which must agree across sessions).
    regions : mapping or sequence, default :data:`REGIONS`
        Mapping name -> :class:`Region` (or ``(roi stem, labels)``), or names from
        :data:`REGIONS`.
    min_repetitions : int, default 3
        Minimum number of loaded trials of a shared image for it to be kept.
    beta_scale : float, default 300
        Stored beta units per percent signal change.

    Returns
    -------
    nsd_ids : int64 array (n_images,)
        Kept shared NSD ids (1-based), increasing.
    responses : dict
        ``{region: float32 array (n_images, n_voxels)}`` in the order of ``regions``; row
        ``i`` is image ``nsd_ids[i]``; voxel order as in the module docstring.
    info : dict
        ``subject`` (NSD name), ``sessions`` (list), ``n_sessions``, ``trials_per_session``,
        ``n_trials`` (loaded), ``beta_files`` (list of str), ``volume_shape`` (X, Y, Z),
        ``roi_files`` ({roi stem: str}), ``n_voxels`` ({region: int}), ``voxel_indices``
        ({region: int array (n_voxels, 3) of (x, y, z)}), ``repetitions`` (int array
        aligned with ``nsd_ids``: trials averaged), ``repetitions_found`` ({shared id:
        trials found}, every shared id), ``n_shared`` (size of ``sharedix``), ``n_dropped``
        (shared ids below ``min_repetitions``), ``min_repetitions``,
        ``constant_voxel_sessions`` ({region: number of (voxel, session) pairs constant}),
        ``n_images`` (shared images kept, ``nsd_ids.size``), ``n_voxels_read`` (distinct
        voxels of all regions together: a voxel of two regions counts once),
        ``overlaps`` ({region a: {region b: voxels in both}} for every pair of requested
        regions that share voxels, ``a`` before ``b`` in the order of ``regions``; empty
        when the regions are disjoint), ``beta_chunks`` (per session, the HDF5 chunk shape
        (trials, Z, Y, X) as a list, or None for NIfTI and contiguous HDF5).

    Raises
    ------
    ValueError
        Missing files (named with their NSD path), a beta volume whose spatial shape
        differs from the ROI volumes, beta files of different trial counts, more trials
        than ``masterordering`` has, an empty region, or no image with enough repetitions.
    """
    paths = nsd_paths(root, subject)
    if isinstance(min_repetitions, bool) or not isinstance(min_repetitions, (int, np.integer)) or min_repetitions < 1:
        raise ValueError(f"min_repetitions must be a positive integer, got {min_repetitions!r}")
    beta_scale = float(beta_scale)
    if not np.isfinite(beta_scale) or beta_scale <= 0:
        raise ValueError(f"beta_scale must be a positive number, got {beta_scale}")
    resolved = _resolve_regions(regions)
    expdesign = read_expdesign(_require_file(paths.expdesign, paths.root, "experiment design"))
    masks, roi_shape, roi_files = _load_masks(paths, resolved)
    for name, mask in masks.items():
        if not mask.any():
            d = resolved[name]
            raise ValueError(
                f"region {name!r} of {paths.subject} is empty: no voxel of {roi_files[d.roi]} "
                f"carries label(s) {list(d.labels)}"
            )
    session_files = _resolve_sessions(paths, sessions)

    union = np.zeros(roi_shape, dtype=bool)
    for mask in masks.values():
        union |= mask
    union_coords = np.argwhere(union)  # C order of (x, y, z), same as union[...] indexing
    rows = {name: np.flatnonzero(mask[union]) for name, mask in masks.items()}
    overlaps = _overlaps(masks)

    shared = np.unique(expdesign["sharedix"])
    if shared.size == 0:
        raise ValueError(f"{expdesign['path']}: 'sharedix' is empty (no shared image)")
    order = expdesign["masterordering"]
    row = subject_row(paths.subject)
    if row >= expdesign["subjectim"].shape[0]:
        raise ValueError(f"{expdesign['path']}: subjectim has no row for {paths.subject}")
    subjectim_row = expdesign["subjectim"][row]
    sums = np.zeros((shared.size, int(union.sum())), dtype=np.float64)
    counts = np.zeros(shared.size, dtype=np.int64)
    constant_counts = np.zeros(int(union.sum()), dtype=np.int64)
    trials_per_session, first_file = None, None
    beta_chunks = []

    for session, file in session_files:
        with _BetaFile(file) as beta:
            if beta.spatial_shape != tuple(roi_shape):
                shown = (beta.spatial_shape if beta.kind == "nifti"
                         else f"{beta.spatial_shape} (X, Y, Z; stored reversed)")
                raise ValueError(
                    f"{file}: beta volume shape {shown} does not match the ROI volume shape "
                    f"{tuple(roi_shape)} of {next(iter(roi_files.values()))}; betas and ROIs "
                    f"must be in the same space (func1pt8mm)"
                )
            if trials_per_session is None:
                trials_per_session, first_file = beta.n_trials, file
            elif beta.n_trials != trials_per_session:
                raise ValueError(
                    f"{file}: {beta.n_trials} trials, but {first_file} has "
                    f"{trials_per_session}; every session must have the same number of trials"
                )
            start = (session - 1) * trials_per_session
            stop = start + trials_per_session
            if stop > order.size:
                raise ValueError(
                    f"{file}: session {session} with {trials_per_session} trials per session "
                    f"covers trials {start}..{stop - 1}, but masterordering in "
                    f"{expdesign['path']} has only {order.size} trials"
                )
            raw = beta.read(union)
            beta_chunks.append(None if beta.chunks is None else list(beta.chunks))
        raw /= beta_scale
        z, constant = _zscore_session(raw)
        del raw
        constant_counts += constant
        ids = subjectim_row[order[start:stop]]
        pos = np.searchsorted(shared, ids)
        pos_clipped = np.minimum(pos, shared.size - 1)
        hit = (pos < shared.size) & (shared[pos_clipped] == ids)
        for j in np.flatnonzero(hit):
            sums[pos[j]] += z[:, j]
            counts[pos[j]] += 1
        del z

    keep = counts >= min_repetitions
    if not keep.any():
        raise ValueError(
            f"{paths.subject}: no shared image was seen at least {min_repetitions} times in "
            f"sessions {[s for s, _ in session_files]} (most repetitions found: "
            f"{int(counts.max()) if counts.size else 0}); load more sessions or lower min_repetitions"
        )
    mean = sums[keep] / counts[keep, None]
    nsd_ids = shared[keep].astype(np.int64)
    responses = {name: mean[:, r].astype(np.float32) for name, r in rows.items()}
    info = {
        "subject": paths.subject,
        "sessions": [s for s, _ in session_files],
        "n_sessions": len(session_files),
        "trials_per_session": int(trials_per_session),
        "n_trials": int(trials_per_session) * len(session_files),
        "beta_files": [str(f) for _, f in session_files],
        "volume_shape": tuple(int(v) for v in roi_shape),
        "roi_files": {k: str(v) for k, v in roi_files.items()},
        "n_voxels": {name: int(r.size) for name, r in rows.items()},
        "voxel_indices": {name: union_coords[r] for name, r in rows.items()},
        "repetitions": counts[keep].copy(),
        "repetitions_found": {int(k): int(c) for k, c in zip(shared, counts)},
        "n_shared": int(shared.size),
        "n_dropped": int((~keep).sum()),
        "min_repetitions": int(min_repetitions),
        "constant_voxel_sessions": {name: int(constant_counts[r].sum()) for name, r in rows.items()},
        "n_images": int(nsd_ids.size),
        "n_voxels_read": int(union.sum()),
        "overlaps": overlaps,
        "beta_chunks": beta_chunks,
    }
    return nsd_ids, responses, info
