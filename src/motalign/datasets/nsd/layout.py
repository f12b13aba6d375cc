"""The Natural Scenes Dataset's file layout, subjects and regions (paper Sec. 3.2).

An NSD *root* is a folder that mirrors (part of) the public bucket
``s3://natural-scenes-dataset`` under the bucket's own keys; every reader of this package
takes such a root, and the simulator (:mod:`.simulate`) writes one.

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
    trials x Z x Y x X, i.e. the spatial axes reversed; chunked one voxel x 750 trials,
    ``(750, 1, 1, 1)``, per the NSD data manual) is read when the NIfTI is absent.
``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``
    Dataset ``imgBrick`` (73000 x 425 x 425 x 3 uint8); NSD id ``k`` is row ``k - 1``.
``nsddata_stimuli/stimuli/nsd/nsd_shared_stimuli.hdf5``
    Not a bucket key: only the shared images, written by
    :func:`motalign.datasets.nsd.images.fetch_shared_stimuli` (format described there).

Index conventions
-----------------
NSD *ids* stay 1-based everywhere in this package (they are names of images, ``1..73000``,
exactly as in ``subjectim``/``sharedix`` and in the NSD papers).  *Positions* are 0-based:
trial indices (``0..29999``), positions in ``masterordering`` after
:func:`motalign.datasets.nsd.expdesign.read_expdesign` (``0..9999``, a column of
``subjectim``), voxel coordinates and session-relative trial numbers.  Sessions are
numbered as in the file names (``betas_session01`` is session 1).

Regions
-------
:data:`REGIONS` lists the paper's seven regions in hierarchy order (V1, V2, V3, V4,
Ventral, Lateral, Dorsal), each defined by its own ROI file and labels.  In the real data a
voxel can carry a ``prf-visualrois`` label and a ``streams`` label at once (e.g. hV4 and
ventral); each region keeps its own definition, so such a voxel belongs to both regions
and appears in both.  The simulator makes the seven regions disjoint.
"""

from __future__ import annotations

import os
import re
import types
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
#: Derived local file with the shared images only (not a bucket key; see the module docstring).
SHARED_STIMULI_PATH = "nsddata_stimuli/stimuli/nsd/nsd_shared_stimuli.hdf5"
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
