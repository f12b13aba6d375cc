"""A simulator of the Natural Scenes Dataset: a small, self-consistent NSD written in the
real file layout (:mod:`.layout`) and formats, so that the readers can be tested offline and
the whole NSD pipeline (paper Sec. 3.2, App. C, E, F, H, I) can run end to end without the
data.  The simulated responses are meaningful: region ``k`` of the hierarchy is driven by
stage ``k`` of a feature hierarchy shared by all subjects (see :func:`simulate_nsd`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from ...io.atomic import atomic_path
from .layout import (
    BETA_NAME,
    BETA_SCALE,
    BETAS_DIR,
    EXPDESIGN_PATH,
    REGIONS,
    ROI_DIR,
    STIMULI_PATH,
    subject_id,
    subject_row,
)


def _save_nifti(data: np.ndarray, path: Path, voxel_size=1.8) -> None:
    import nibabel as nib  # deferred: optional dependency, nsd extra

    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(data.dtype)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=f".tmp{suffix}") as tmp:
        nib.save(img, tmp)


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


#: voxels per region and subject drawn by the simulator (inclusive range)
VOXELS_PER_REGION = (15, 45)


def simulate_nsd(root, images: np.ndarray, *, subjects=("subj01", "subj02", "subj05", "subj07"),
                 n_shared: int | None = None, n_specific: int | None = None, n_sessions: int = 3,
                 repetitions: int = 3, volume_shape=(10, 10, 10), voxels_per_region=VOXELS_PER_REGION,
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
    variance over the images, and trials add independent noise (std ``noise``).  Each
    session applies a per-voxel offset and gain drift, so per-session z-scoring matters.
    Values are percent signal change x 300, rounded to int16.  Regions are disjoint, with
    ``voxels_per_region`` (inclusive range) voxels drawn per subject and region; voxels
    outside the regions carry other labels (streams 1-4, prf 0) or lie outside the brain
    (label -1, betas 0).

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
        NIfTI (X x Y x Z x trials) or HDF5 (dataset ``betas``, trials x Z x Y x X, chunked
        one voxel x all trials, ``chunks=(trials, 1, 1, 1)``, as the real NSD files).
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
    import h5py  # deferred: optional dependency, nsd extra

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
    with atomic_path(exp_path, suffix=".tmp.mat") as tmp:
        scipy.io.savemat(tmp, {
            "masterordering": (order0 + 1)[None, :].astype(np.float64),
            "subjectim": subjectim.astype(np.float64),
            "sharedix": sharedix[None, :].astype(np.float64),
        }, do_compression=True)
    files.append(str(exp_path))

    stim_path = root / STIMULI_PATH
    with atomic_path(stim_path, suffix=".tmp.hdf5") as tmp:
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
        for rname, idx in zip(region_names, region_idx):
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
                with atomic_path(path, suffix=".tmp.hdf5") as tmp:
                    with h5py.File(tmp, "w") as f:
                        # the real files' chunking: one voxel x all of the session's trials
                        f.create_dataset("betas", data=np.ascontiguousarray(data.transpose(3, 2, 1, 0)),
                                         chunks=(tps, 1, 1, 1))
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
