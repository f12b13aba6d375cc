"""The Natural Scenes Dataset (NSD): a reader of the real layout, and a simulator of it.

The reader works on a folder that mirrors (part of) the public bucket
``s3://natural-scenes-dataset``; the simulator writes a small, self-consistent NSD into a
folder in exactly that layout, so that the reader can be tested offline and the whole
NSD pipeline (paper Sec. 3.2, App. C, E, F, H, I) can run end to end without the data.

Layout (paths relative to the root folder; ``subjXX`` is ``subj01`` ... ``subj08``)
---------------------------------------------------------------------------------
``nsddata/experiments/nsd/nsd_expdesign.mat``
    MATLAB file (``scipy.io.loadmat``) with ``masterordering`` (1 x 30000: for every trial,
    the 1-based index of the image among the subject's 10,000), ``subjectim`` (8 x 10000:
    the 1-based NSD id, 1..73000, of every subject's images) and ``sharedix`` (1 x 1000: the
    1-based NSD ids of the images every subject saw).  Trial ``t`` (0-based) of subject
    ``s`` (1-based) showed NSD id ``subjectim[s - 1, masterordering[t] - 1]``.
``nsddata/ppdata/subjXX/func1pt8mm/roi/prf-visualrois.nii.gz``
    Labels -1 (outside the brain) / 0 (unlabelled), 1 V1v, 2 V1d, 3 V2v, 4 V2d, 5 V3v,
    6 V3d, 7 hV4.
``nsddata/ppdata/subjXX/func1pt8mm/roi/streams.nii.gz``
    Labels 0 unknown, 1 early, 2 midventral, 3 midlateral, 4 midparietal, 5 ventral,
    6 lateral, 7 parietal.
``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionYY.nii.gz``
    4-D int16 (X x Y x Z x trials; 750 trials per session in the real data), percent
    signal change x 300.  The ``.hdf5`` file of the same name (dataset ``betas``, int16,
    trials x Z x Y x X, i.e. the spatial axes reversed) is read when the NIfTI is absent.
``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``
    Dataset ``imgBrick`` (73000 x 425 x 425 x 3 uint8); NSD id ``k`` is row ``k - 1``.

Index conventions
-----------------
NSD *ids* stay 1-based everywhere in this module (they are names of images, ``1..73000``,
exactly as in ``subjectim``/``sharedix`` and in the NSD papers).  *Positions* are 0-based:
trial indices (``0..29999``), positions in ``masterordering`` after :func:`read_expdesign`
(``0..9999``, a column of ``subjectim``), voxel coordinates and session-relative trial
numbers.  Sessions are numbered as in the file names (``betas_session01`` is session 1).

Regions
-------
:data:`REGIONS` lists the paper's seven regions in hierarchy order (V1, V2, V3, V4,
Ventral, Lateral, Dorsal), each defined by its own ROI file and labels.  In the real data a
voxel can carry a ``prf-visualrois`` label and a ``streams`` label at once (e.g. hV4 and
ventral); each region keeps its own definition, so such a voxel belongs to both regions
and appears in both.  The simulator makes the seven regions disjoint.

Voxel order
-----------
A region's voxels are ordered as ``mask[...]`` boolean indexing of the X x Y x Z volume
orders them (C order of ``(x, y, z)``); ``info["voxel_indices"]`` of
:func:`subject_responses` gives their coordinates.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Subjects A-D of the paper (the four NSD subjects who completed all 40 sessions).
SUBJECTS = {"A": "subj01", "B": "subj02", "C": "subj05", "D": "subj07"}
#: The eight NSD subjects, i.e. the rows of ``subjectim``.
ALL_SUBJECTS = tuple(f"subj{i:02d}" for i in range(1, 9))

#: Betas are stored as percent signal change times this factor (int16).
BETA_SCALE = 300.0

EXPDESIGN_PATH = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIMULI_PATH = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
ROI_DIR = "nsddata/ppdata/{subject}/func1pt8mm/roi"
BETAS_DIR = "nsddata_betas/ppdata/{subject}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
BETA_NAME = "betas_session{session:02d}{ext}"
#: Accepted beta file extensions, in order of preference when several exist.
BETA_EXTENSIONS = (".nii.gz", ".nii", ".hdf5")
_BETA_RE = re.compile(r"^betas_session(\d+)(\.nii\.gz|\.nii|\.hdf5)$")

#: Labels of ``prf-visualrois.nii.gz`` (-1: outside the brain, 0: unlabelled).
PRF_VISUALROIS_LABELS = types.MappingProxyType(
    {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
)
#: Labels of ``streams.nii.gz``.
STREAMS_LABELS = types.MappingProxyType(
    {0: "unknown", 1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal",
     5: "ventral", 6: "lateral", 7: "parietal"}
)


@dataclass(frozen=True)
class Region:
    """A region: the ROI file it comes from (``roi``: file stem in the subject's ``roi``
    folder, e.g. ``"prf-visualrois"``) and the labels of that file that belong to it."""

    roi: str
    labels: tuple


#: The paper's seven regions in hierarchy order ("layers" V1 ... Dorsal), read-only.
#: V1..V4 come from ``prf-visualrois`` (V1 = V1v + V1d, V2 = V2v + V2d, V3 = V3v + V3d,
#: V4 = hV4), Ventral / Lateral / Dorsal from ``streams`` (5 ventral, 6 lateral,
#: 7 parietal).  A real voxel may belong to a prf region and a stream region at once.
REGIONS = types.MappingProxyType({
    "V1": Region("prf-visualrois", (1, 2)),
    "V2": Region("prf-visualrois", (3, 4)),
    "V3": Region("prf-visualrois", (5, 6)),
    "V4": Region("prf-visualrois", (7,)),
    "Ventral": Region("streams", (5,)),
    "Lateral": Region("streams", (6,)),
    "Dorsal": Region("streams", (7,)),
})

#: Bytes of beta volume read at once (a slab of whole trials); bounds reading memory.
READ_CHUNK_BYTES = 64 * 1024**2


# --------------------------------------------------------------------------- subjects, paths


def subject_id(subject) -> str:
    """The NSD name ``"subjXX"`` of ``subject``: a paper letter (``"A"``..``"D"``), an NSD
    name (``"subj01"``..``"subj08"``) or a number 1..8."""
    if isinstance(subject, (int, np.integer)) and not isinstance(subject, bool):
        if 1 <= int(subject) <= 8:
            return f"subj{int(subject):02d}"
    elif isinstance(subject, str):
        if subject in SUBJECTS:
            return SUBJECTS[subject]
        match = re.fullmatch(r"subj0?([1-8])", subject)
        if match:
            return f"subj{int(match.group(1)):02d}"
    raise ValueError(
        f"unknown NSD subject {subject!r}: use a paper letter {sorted(SUBJECTS)}, "
        f"an NSD name subj01..subj08, or a number 1..8"
    )


def subject_row(subject) -> int:
    """0-based row of ``subject`` in ``subjectim`` (subj01 -> 0, subj05 -> 4)."""
    return int(subject_id(subject)[4:]) - 1


@dataclass(frozen=True)
class NSDPaths:
    """Paths of one subject's NSD files under a root folder (see the module docstring).

    ``root`` is the folder that holds ``nsddata/``, ``nsddata_betas/`` and
    ``nsddata_stimuli/``; ``subject`` is the NSD name (``"subj01"``).
    """

    root: Path
    subject: str

    @property
    def expdesign(self) -> Path:
        return self.root / EXPDESIGN_PATH

    @property
    def stimuli(self) -> Path:
        return self.root / STIMULI_PATH

    @property
    def roi_dir(self) -> Path:
        return self.root / ROI_DIR.format(subject=self.subject)

    def roi(self, name: str) -> Path:
        """ROI volume ``name`` (file stem, e.g. ``"streams"``) of this subject."""
        return self.roi_dir / f"{name}.nii.gz"

    @property
    def prf_visualrois(self) -> Path:
        return self.roi("prf-visualrois")

    @property
    def streams(self) -> Path:
        return self.roi("streams")

    @property
    def betas_dir(self) -> Path:
        return self.root / BETAS_DIR.format(subject=self.subject)

    def beta(self, session: int, ext: str = ".nii.gz") -> Path:
        """Beta file of ``session`` (1-based, as in the file name) with extension ``ext``."""
        return self.betas_dir / BETA_NAME.format(session=int(session), ext=ext)

    def find_beta(self, session: int) -> Path | None:
        """The existing beta file of ``session`` (NIfTI preferred over HDF5), or None."""
        for ext in BETA_EXTENSIONS:
            path = self.beta(session, ext)
            if path.is_file():
                return path
        return None

    def sessions(self) -> list[int]:
        """Session numbers with a beta file present, sorted (empty if none)."""
        if not self.betas_dir.is_dir():
            return []
        found = set()
        for entry in os.listdir(self.betas_dir):
            match = _BETA_RE.match(entry)
            if match and (self.betas_dir / entry).is_file():
                found.add(int(match.group(1)))
        return sorted(found)

    def relative(self, path) -> str:
        """``path`` relative to the root (its NSD path), with forward slashes."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def nsd_paths(root, subject) -> NSDPaths:
    """Path helpers for ``subject`` (letter, NSD name or number) under the NSD ``root``."""
    return NSDPaths(Path(root), subject_id(subject))


def _require_file(path: Path, root: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.name
        raise ValueError(
            f"missing NSD {what}: {path} does not exist (expected NSD path {rel} under the "
            f"root folder {root})"
        )
    return path


# --------------------------------------------------------------------------- experiment design


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
        ``subjectim[r, masterordering[t]]``; see :func:`trial_nsd_ids`.

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
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: MATLAB v7.3 file; resave it as a v5 .mat ({exc})") from exc
    except Exception as exc:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; found {sorted(k for k in mat if not k.startswith('__'))}")
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


def _check_expdesign(expdesign) -> None:
    if not isinstance(expdesign, Mapping) or not {"masterordering", "subjectim", "sharedix"} <= set(expdesign):
        raise ValueError("expdesign must be the dict returned by read_expdesign")


def trial_nsd_ids(expdesign: Mapping, subject, n_trials: int | None = None) -> np.ndarray:
    """NSD ids (1-based) shown to ``subject`` at trials ``0 .. n_trials - 1``.

    ``n_trials`` defaults to every trial of ``masterordering``.
    """
    _check_expdesign(expdesign)
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
    """Trials at which ``subject`` saw each shared image, among the first ``n_trials``.

    Returns
    -------
    dict
        ``{nsd_id (1-based int): [0-based trial indices, increasing]}`` for every id of
        ``sharedix``, in increasing id order; an id not seen in those trials maps to ``[]``.
    """
    ids = trial_nsd_ids(expdesign, subject, n_trials)
    shared = np.unique(np.asarray(expdesign["sharedix"]))
    out = {int(k): [] for k in shared}
    for t in np.flatnonzero(np.isin(ids, shared)):
        out[int(ids[t])].append(int(t))
    return out


# --------------------------------------------------------------------------- regions


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
    import nibabel as nib

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


def region_masks(root, subject, regions=REGIONS) -> dict:
    """Boolean X x Y x Z masks of ``regions`` for ``subject``.

    Parameters
    ----------
    root : path-like
        NSD root folder.
    subject : str or int
        Paper letter, NSD name or number (see :func:`subject_id`).
    regions : mapping or sequence, default :data:`REGIONS`
        Mapping name -> :class:`Region` (or ``(roi stem, labels)``), or names from
        :data:`REGIONS`.

    Returns
    -------
    dict
        ``{region name: bool array (X, Y, Z)}`` in the order of ``regions``.  Each region
        keeps its own definition: masks of a prf region and a stream region may overlap.
    """
    masks, _, _ = _load_masks(nsd_paths(root, subject), _resolve_regions(regions))
    return masks


# --------------------------------------------------------------------------- betas


class _BetaFile:
    """One session's beta file, open for reading slabs of trials (NIfTI or HDF5)."""

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
        import nibabel as nib

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
        import h5py

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
        float64, reading slabs of whole trials of at most :data:`READ_CHUNK_BYTES`."""
        n_vox = int(mask.sum())
        out = np.empty((n_vox, self.n_trials), dtype=np.float64)
        per_trial = int(np.prod(self.spatial_shape)) * max(self.dtype.itemsize, 1)
        step = max(1, READ_CHUNK_BYTES // max(per_trial, 1))
        for t0 in range(0, self.n_trials, step):
            t1 = min(self.n_trials, t0 + step)
            if self.kind == "nifti":
                slab = np.asarray(self._data[..., t0:t1])  # X x Y x Z x t
                out[:, t0:t1] = slab[mask]
            else:
                slab = self._data[t0:t1]  # t x Z x Y x X
                out[:, t0:t1] = slab.transpose(3, 2, 1, 0)[mask]
            del slab
        return out

    def close(self):
        self._data = None
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
    (in slabs of whole trials), so memory holds one session's region voxels plus the
    running sums, never full volumes of all sessions.

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
        As in :func:`region_masks`.
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
        ``constant_voxel_sessions`` ({region: number of (voxel, session) pairs constant}).

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

    for session, file in session_files:
        with _BetaFile(file) as beta:
            if beta.spatial_shape != tuple(roi_shape):
                shown = beta.spatial_shape if beta.kind == "nifti" else f"{beta.spatial_shape} (X, Y, Z; stored reversed)"
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
    }
    return nsd_ids, responses, info


# --------------------------------------------------------------------------- stimuli


def check_nsd_ids(nsd_ids) -> np.ndarray:
    """``nsd_ids`` as a 1-D int64 array of (1-based) NSD ids, or a ValueError."""
    ids = np.asarray(nsd_ids)
    if ids.ndim != 1:
        raise ValueError(f"nsd_ids must be 1-D, got shape {ids.shape}")
    if ids.size and (not np.issubdtype(ids.dtype, np.number) or np.any(ids != np.round(ids))):
        raise ValueError("nsd_ids must be integers (1-based NSD ids)")
    return ids.astype(np.int64)


def read_stimuli(source, nsd_ids) -> np.ndarray:
    """Images of ``nsd_ids`` from ``nsd_stimuli.hdf5`` (dataset ``imgBrick``).

    Only the requested rows are read: the ids are sorted and deduplicated for h5py's
    fancy indexing (which needs increasing indices), read, and put back in the requested
    order (duplicates allowed).

    Parameters
    ----------
    source : path-like or binary file-like
        The ``.hdf5`` file, an NSD root folder (then
        ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5`` in it), or an open binary file
        object with ``read``/``seek``/``tell`` (e.g. an fsspec HTTP file doing range
        requests); a file object is left open.
    nsd_ids : sequence of int
        1-based NSD ids (row ``k - 1`` of ``imgBrick``), in any order.

    Returns
    -------
    uint8 array (len(nsd_ids), H, W, 3)
    """
    import h5py

    ids = check_nsd_ids(nsd_ids)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            path = _require_file(path / STIMULI_PATH, path, "stimuli file")
        elif not path.is_file():
            raise ValueError(
                f"missing NSD stimuli file: {path} does not exist (expected NSD path "
                f"{STIMULI_PATH} under the root folder)"
            )
        name, opened = str(path), path
    elif hasattr(source, "read") and hasattr(source, "seek"):
        name, opened = getattr(source, "name", repr(source)), source
    else:
        raise ValueError(f"source must be a path or an open binary file object, got {type(source).__name__}")
    try:
        f = h5py.File(opened, "r")
    except Exception as exc:
        raise ValueError(f"{name}: not a readable HDF5 file ({exc})") from exc
    with f:
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


# --------------------------------------------------------------------------- atomic writes


def _atomic_path(final: Path, suffix: str):
    """Temporary path beside ``final``, renamed onto it on success (see motalign.store)."""
    from ...io.atomic import atomic_path

    return atomic_path(final, suffix=f".tmp{suffix}")


def _save_nifti(data: np.ndarray, path: Path, voxel_size=1.8) -> None:
    import nibabel as nib

    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(data.dtype)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with _atomic_path(path, suffix) as tmp:
        nib.save(img, tmp)


# --------------------------------------------------------------------------- simulator


def _zscore_columns(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    std = a.std(axis=0)
    return np.divide(a, std, out=np.zeros_like(a), where=std > 1e-12)


def _pooled_pixels(images: np.ndarray, grid: int = 4) -> np.ndarray:
    """Pixel-level features: every image's RGB mean over a grid x grid tiling, plus the
    luminance contrast (std) of every tile: (n, 4 * grid**2)."""
    x = images.astype(np.float64) / 255.0
    lum = x.mean(axis=3)
    feats = []
    for ys in np.array_split(np.arange(x.shape[1]), grid):
        for xs in np.array_split(np.arange(x.shape[2]), grid):
            tile = x[:, ys[:, None], xs[None, :], :]
            feats.append(tile.mean(axis=(1, 2)))
            feats.append(lum[:, ys[:, None], xs[None, :]].std(axis=(1, 2))[:, None])
    return np.concatenate(feats, axis=1)


def simulated_features(images: np.ndarray, *, n_stages: int = len(REGIONS), n_features: int = 16,
                       seed: int = 0) -> list:
    """The simulator's hierarchy of image features, shared by every subject.

    Stage 1 is a fixed random linear projection of pooled pixels (tile colour means and
    contrasts); stage ``k + 1`` is a fixed random ReLU projection of stage ``k``.  Every
    stage is z-scored over the images.  The random matrices depend on ``seed`` only (never
    on a subject).  Returns ``n_stages`` arrays (n_images x n_features), row ``i`` being
    image ``i`` (NSD id ``i + 1``).
    """
    rng = np.random.default_rng([int(seed), 1])
    pix = _zscore_columns(_pooled_pixels(images))
    w = rng.standard_normal((pix.shape[1], n_features)) / np.sqrt(pix.shape[1])
    stages = [_zscore_columns(pix @ w)]
    for _ in range(n_stages - 1):
        w = rng.standard_normal((n_features, n_features)) / np.sqrt(n_features)
        stages.append(_zscore_columns(np.maximum(stages[-1] @ w, 0.0)))
    return stages


def simulate_nsd(root, images: np.ndarray, *, subjects=("subj01", "subj02", "subj05", "subj07"),
                 n_shared: int | None = None, n_specific: int | None = None, n_sessions: int = 3,
                 repetitions: int = 3, volume_shape=(10, 10, 10), voxels_per_region=(15, 45),
                 n_features: int = 16, noise: float = 0.8, template_weight: float = 0.8,
                 betas_format: str = "nii.gz",
                 seed: int = 0) -> dict:
    """Write a small, self-consistent NSD into ``root``, in the real layout.

    The images become ``imgBrick`` (NSD id ``k`` = ``images[k - 1]``).  ``n_shared`` ids
    form ``sharedix``; each of the 8 rows of ``subjectim`` holds the shared ids plus
    ``n_specific`` ids of its own (disjoint across subjects), in a per-subject random
    column order.  One ``masterordering`` (as in NSD, common to all subjects) shows every
    column ``repetitions`` times in random order, split evenly over ``n_sessions``
    sessions.  ROI volumes and betas are written for ``subjects`` only.

    Responses are meaningful: :func:`simulated_features` gives 7 feature stages shared by
    all subjects; region ``k`` of :data:`REGIONS` (V1 ... Dorsal) is driven by stage ``k``.
    Every voxel is tuned to one channel of its stage (subject-specific random choice,
    random gain, a channel sign common to all subjects), plus ``template_weight`` times a
    region template (a fixed direction of the stage's features, common to all subjects,
    which makes a region's voxels share a response component, as real voxels of one area
    do), plus a small subject-specific dense mixture; the voxel signal is scaled to unit
    variance over the images, and trials add independent noise (std ``noise``).  Each session applies a per-voxel offset and gain drift, so per-session
    z-scoring matters.  Values are percent signal change x 300, rounded to int16.  Regions
    are disjoint, with ``voxels_per_region`` (inclusive range) voxels drawn per subject and
    region; voxels outside the regions carry other labels (streams 1-4, prf 0) or lie
    outside the brain (label -1, betas 0).

    Parameters
    ----------
    root : path-like
        Folder to write into (created).
    images : uint8 array (n_images, H, W, 3)
    subjects : sequence
        Subjects to write ROIs and betas for (letters, names or numbers).
    n_shared, n_specific : int, optional
        Shared images, and subject-specific images per subject (8 subjects).  Defaults:
        ``n_specific = max(1, n_images // 40)`` and ``n_shared`` the rest of
        ``n_images - 8 * n_specific``; given ``n_shared`` alone, ``n_specific`` is
        ``(n_images - n_shared) // 8``.
    n_sessions, repetitions : int
        ``(n_shared + n_specific) * repetitions`` must be divisible by ``n_sessions``.
    volume_shape : (X, Y, Z)
    voxels_per_region : (low, high)
    n_features : int
        Channels per feature stage.
    noise : float
        Trial noise std (signal std is 1).
    template_weight : float
        Weight of the region template in every voxel's tuning (0: none).
    betas_format : {"nii.gz", "hdf5"}
        NIfTI (X x Y x Z x trials) or HDF5 (dataset ``betas``, trials x Z x Y x X).
    seed : int

    Returns
    -------
    dict
        ``root``; ``sharedix`` (sorted 1-based ids); ``subjectim`` (8 x n, 1-based ids);
        ``masterordering`` (0-based); ``trial_nsd_ids`` ({subject: ids shown per trial});
        ``subjects`` (NSD names written); ``n_sessions``; ``trials_per_session``;
        ``repetitions``; ``volume_shape``; ``n_voxels`` ({subject: {region: int}});
        ``stage_of_region`` ({region: 0-based stage}); ``features`` (list of stage arrays,
        row ``k - 1`` = NSD id ``k``); ``files`` (list of str, every file written).
    """
    import h5py
    import scipy.io

    root = Path(root)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be a uint8 array n x H x W x 3, got {images.dtype} {images.shape}")
    n_images = images.shape[0]
    names = []
    for s in subjects:
        name = subject_id(s)
        if name in names:
            raise ValueError(f"subject {name} listed twice")
        names.append(name)
    for label, value in (("n_sessions", n_sessions), ("repetitions", repetitions), ("n_features", n_features)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if n_shared is None:
        n_specific = max(1, n_images // 40) if n_specific is None else int(n_specific)
        n_shared = n_images - 8 * n_specific
    elif n_specific is None:
        n_specific = (n_images - int(n_shared)) // 8
    n_shared, n_specific = int(n_shared), int(n_specific)
    if n_shared < 1 or n_specific < 0 or n_shared + 8 * n_specific > n_images:
        raise ValueError(
            f"{n_images} images cannot hold {n_shared} shared + 8 x {n_specific} subject-specific "
            f"images (need n_shared >= 1 and n_shared + 8 * n_specific <= n_images)"
        )
    per_subject = n_shared + n_specific
    n_trials = per_subject * repetitions
    if n_trials % n_sessions:
        raise ValueError(
            f"{per_subject} images x {repetitions} repetitions = {n_trials} trials cannot be "
            f"split evenly over {n_sessions} sessions; change n_shared/n_specific or n_sessions"
        )
    tps = n_trials // n_sessions
    shape = tuple(int(v) for v in volume_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"volume_shape must be 3 positive integers, got {volume_shape!r}")
    lo, hi = (int(v) for v in voxels_per_region)
    if not 1 <= lo <= hi:
        raise ValueError(f"voxels_per_region must be (low, high) with 1 <= low <= high, got {voxels_per_region!r}")
    if betas_format not in ("nii.gz", "hdf5"):
        raise ValueError(f"betas_format must be 'nii.gz' or 'hdf5', got {betas_format!r}")

    # ---- design (common to all subjects), NSD ids 1..n_images
    design_rng = np.random.default_rng([int(seed), 0])
    perm = design_rng.permutation(np.arange(1, n_images + 1))
    sharedix = np.sort(perm[:n_shared])
    subjectim = np.empty((8, per_subject), dtype=np.int64)
    for r in range(8):
        own = perm[n_shared + r * n_specific: n_shared + (r + 1) * n_specific]
        subjectim[r] = design_rng.permutation(np.concatenate([sharedix, own]))
    order0 = design_rng.permutation(np.repeat(np.arange(per_subject), repetitions))

    files: list[str] = []
    exp_path = root / EXPDESIGN_PATH
    with _atomic_path(exp_path, ".mat") as tmp:
        scipy.io.savemat(tmp, {
            "masterordering": (order0 + 1)[None, :].astype(np.float64),
            "subjectim": subjectim.astype(np.float64),
            "sharedix": sharedix[None, :].astype(np.float64),
        }, do_compression=True)
    files.append(str(exp_path))

    stim_path = root / STIMULI_PATH
    with _atomic_path(stim_path, ".hdf5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("imgBrick", data=images, chunks=(1,) + images.shape[1:])
    files.append(str(stim_path))

    # ---- features shared by all subjects
    region_names = list(REGIONS)
    features = simulated_features(images, n_stages=len(region_names), n_features=n_features, seed=seed)
    shared_rng = np.random.default_rng([int(seed), 3])
    signs = shared_rng.choice([-1.0, 1.0], size=(len(region_names), n_features))
    templates = shared_rng.standard_normal((len(region_names), n_features))
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)

    # brain = the volume without its outer faces (when that leaves room)
    brain = np.zeros(shape, dtype=bool)
    if min(shape) >= 3 and np.prod([v - 2 for v in shape]) >= len(region_names) * hi + 10:
        brain[1:-1, 1:-1, 1:-1] = True
    else:
        brain[...] = True
    brain_idx = np.flatnonzero(brain.ravel())

    n_voxels, trial_ids = {}, {}
    for name in names:
        row = subject_row(name)
        srng = np.random.default_rng([int(seed), 2, row])
        counts = srng.integers(lo, hi + 1, size=len(region_names))
        if counts.sum() > brain_idx.size:
            raise ValueError(
                f"volume_shape {shape} has {brain_idx.size} brain voxels, too few for "
                f"{int(counts.sum())} region voxels; enlarge volume_shape or lower voxels_per_region"
            )
        chosen = srng.permutation(brain_idx)
        region_idx, start = [], 0
        for c in counts:
            region_idx.append(np.sort(chosen[start:start + c]))
            start += c
        rest = chosen[start:]

        prf = np.where(brain, 0, -1).astype(np.int16).ravel()
        streams = np.where(brain, 0, -1).astype(np.int16).ravel()
        for k, (rname, idx) in enumerate(zip(region_names, region_idx)):
            definition = REGIONS[rname]
            labels = np.asarray(definition.labels)
            target = prf if definition.roi == "prf-visualrois" else streams
            target[idx] = labels[srng.integers(0, labels.size, size=idx.size)]
            if definition.roi == "prf-visualrois":  # realistic stream labels on V1-V4
                streams[idx] = 1 if rname != "V4" else 2
        extra = rest[: rest.size // 2]
        streams[extra] = srng.integers(3, 5, size=extra.size)  # midlateral / midparietal
        for stem, vol in (("prf-visualrois", prf), ("streams", streams)):
            path = root / ROI_DIR.format(subject=name) / f"{stem}.nii.gz"
            _save_nifti(vol.reshape(shape), path)
            files.append(str(path))

        # voxel tuning: responses (n_images x n_vox) per region, unit-variance signal
        signal_cols, vox_idx = [], []
        for k, idx in enumerate(region_idx):
            channel = srng.integers(0, n_features, size=idx.size)
            gain = srng.uniform(0.7, 1.3, size=idx.size)
            w = 0.35 * srng.standard_normal((n_features, idx.size)) / np.sqrt(n_features)
            w[channel, np.arange(idx.size)] += gain * signs[k, channel]
            w += template_weight * templates[k][:, None]
            sig = features[k] @ w
            signal_cols.append(sig / np.maximum(sig.std(axis=0), 1e-12))
            vox_idx.append(idx)
        signal = np.concatenate(signal_cols, axis=1)  # n_images x n_region_voxels
        vox_idx = np.concatenate(vox_idx)
        baseline = srng.normal(1.0, 0.5, size=vox_idx.size)
        amplitude = srng.uniform(1.0, 2.0, size=vox_idx.size)

        ids = subjectim[row, order0]
        trial_ids[name] = ids
        n_voxels[name] = {r: int(c) for r, c in zip(region_names, counts)}
        bdir = root / BETAS_DIR.format(subject=name)
        for s in range(n_sessions):
            t_ids = ids[s * tps:(s + 1) * tps]
            resp = signal[t_ids - 1] + noise * srng.standard_normal((tps, vox_idx.size))
            offset = srng.normal(0.0, 1.5, size=vox_idx.size)
            scale = srng.uniform(0.5, 2.0, size=vox_idx.size)
            psc = offset + scale * (baseline + amplitude * resp)  # trials x voxels
            vol = np.zeros((int(np.prod(shape)), tps), dtype=np.float64)
            vol[rest] = srng.normal(0.0, 1.0, size=(rest.size, tps))
            vol[vox_idx] = psc.T
            data = np.clip(np.rint(vol * BETA_SCALE), -32768, 32767).astype(np.int16)
            data = data.reshape(shape + (tps,))
            if betas_format == "nii.gz":
                path = bdir / BETA_NAME.format(session=s + 1, ext=".nii.gz")
                _save_nifti(data, path)
            else:
                path = bdir / BETA_NAME.format(session=s + 1, ext=".hdf5")
                with _atomic_path(path, ".hdf5") as tmp:
                    with h5py.File(tmp, "w") as f:
                        f.create_dataset("betas", data=np.ascontiguousarray(data.transpose(3, 2, 1, 0)))
            files.append(str(path))

    return {
        "root": str(root),
        "sharedix": sharedix,
        "subjectim": subjectim,
        "masterordering": order0,
        "trial_nsd_ids": trial_ids,
        "subjects": tuple(names),
        "n_sessions": int(n_sessions),
        "trials_per_session": int(tps),
        "repetitions": int(repetitions),
        "volume_shape": shape,
        "n_voxels": n_voxels,
        "stage_of_region": {r: k for k, r in enumerate(region_names)},
        "features": features,
        "files": files,
    }
