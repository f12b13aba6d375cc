"""NSD reader against the simulator, in the real NSD layout (no network, no real data)."""

import io
import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from helpers_nsd import shared_trials, trial_nsd_ids
from motalign.datasets.nsd.expdesign import read_expdesign
from motalign.datasets.nsd.images import read_shared_images
from motalign.datasets.nsd.layout import (
    EXPDESIGN_PATH,
    REGIONS,
    STIMULI_PATH,
    SUBJECTS,
    Region,
    nsd_paths,
    subject_id,
    subject_row,
)
from motalign.datasets.nsd.responses import region_masks, subject_responses
from motalign.datasets.nsd.simulate import simulate_nsd

# the NSD readers need nibabel and h5py (imported when used)
nib = pytest.importorskip("nibabel")
h5py = pytest.importorskip("h5py")

VOLUME = (9, 11, 10)  # non-cubic, so that a swapped axis cannot go unnoticed


def digit_images(n, seed=0):
    """``n`` 8x8 sklearn digits upsampled to 32x32, tinted into RGB uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]
    rng = np.random.default_rng(seed)
    out = []
    for img in digits:
        grey = np.kron(img * 15.0, np.ones((4, 4)))
        out.append(np.clip(grey[..., None] * rng.uniform(0.4, 1.0, size=3), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def images():
    return digit_images(60)


@pytest.fixture(scope="module")
def sim(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("nsd")
    return simulate_nsd(root, images, volume_shape=VOLUME, seed=0)


@pytest.fixture
def small(tmp_path, images):
    """One subject, 4 sessions of 31 trials, 4 repetitions per image."""
    root = tmp_path / "small"
    summary = simulate_nsd(root, images[:40], subjects=("A",), n_shared=30, n_specific=1,
                               n_sessions=4, repetitions=4, volume_shape=VOLUME, seed=3)
    return root, summary


def reference_responses(root, subject, summary, sessions, min_repetitions):
    """Straightforward computation: whole volumes, per-session z-scores, averages."""
    paths = nsd_paths(root, subject)
    tps = summary["trials_per_session"]
    zs, trials = [], []
    for s in sessions:
        path = paths.beta(s)
        if path.exists():
            data = nib.load(str(path)).get_fdata() / 300.0
        else:
            with h5py.File(paths.beta(s, ".hdf5"), "r") as f:
                data = f["betas"][()].transpose(3, 2, 1, 0) / 300.0
        mean = data.mean(axis=3, keepdims=True)
        std = data.std(axis=3, keepdims=True)
        const = (data.max(axis=3) == data.min(axis=3))[..., None]
        zs.append(np.where(const, 0.0, (data - mean) / np.where(const, 1.0, std)))
        trials.extend(range((s - 1) * tps, s * tps))
    z = np.concatenate(zs, axis=3)
    shown = summary["trial_nsd_ids"][subject_id(subject)][trials]
    prf = np.rint(nib.load(str(paths.prf_visualrois)).get_fdata())
    streams = np.rint(nib.load(str(paths.streams)).get_fdata())
    labels = {"V1": (prf, [1, 2]), "V2": (prf, [3, 4]), "V3": (prf, [5, 6]), "V4": (prf, [7]),
              "Ventral": (streams, [5]), "Lateral": (streams, [6]), "Dorsal": (streams, [7])}
    ids = [k for k in summary["sharedix"] if np.sum(shown == k) >= min_repetitions]
    out = {}
    for name, (vol, labs) in labels.items():
        vox = z[np.isin(vol, labs)]  # n_voxels x trials
        out[name] = np.stack([vox[:, shown == k].mean(axis=1) for k in ids])
    return np.array(ids), out


# ------------------------------------------------------------------ constants, paths


def test_constants_and_paths(tmp_path):
    assert SUBJECTS == {"A": "subj01", "B": "subj02", "C": "subj05", "D": "subj07"}
    assert list(REGIONS) == ["V1", "V2", "V3", "V4", "Ventral", "Lateral", "Dorsal"]
    assert REGIONS["V1"] == Region("prf-visualrois", (1, 2))
    assert REGIONS["Dorsal"] == Region("streams", (7,))
    p = nsd_paths(tmp_path, "C")
    assert p.subject == "subj05" and subject_row("C") == 4
    assert p.beta(3).relative_to(tmp_path).as_posix() == (
        "nsddata_betas/ppdata/subj05/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session03.nii.gz")
    assert p.streams.relative_to(tmp_path).as_posix() == "nsddata/ppdata/subj05/func1pt8mm/roi/streams.nii.gz"
    assert p.expdesign.relative_to(tmp_path).as_posix() == "nsddata/experiments/nsd/nsd_expdesign.mat"
    assert p.stimuli.relative_to(tmp_path).as_posix() == "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    assert subject_id(7) == subject_id("subj07") == subject_id("D") == "subj07"
    with pytest.raises(ValueError, match="unknown NSD subject"):
        subject_id("E")


def test_simulator_writes_atomically_and_in_the_real_formats(sim):
    root = Path(sim["root"])
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []
    assert all(Path(f).is_file() for f in sim["files"])
    beta = nib.load(str(nsd_paths(root, "A").beta(1)))
    assert beta.get_data_dtype() == np.int16
    assert beta.shape == VOLUME + (sim["trials_per_session"],)
    with h5py.File(root / STIMULI_PATH, "r") as f:
        assert f["imgBrick"].shape == (60, 32, 32, 3) and f["imgBrick"].dtype == np.uint8


# ------------------------------------------------------------------ experiment design


def test_expdesign_round_trip_and_index_conventions(sim):
    root = Path(sim["root"])
    raw = scipy.io.loadmat(str(root / EXPDESIGN_PATH))
    exp = read_expdesign(root / EXPDESIGN_PATH)
    assert read_expdesign(root)["path"] == exp["path"]  # a root folder works too
    n_cols = exp["subjectim"].shape[1]
    assert exp["subjectim"].shape == (8, n_cols)
    # masterordering: the file is 1-based, the reader 0-based
    np.testing.assert_array_equal(exp["masterordering"], raw["masterordering"].ravel() - 1)
    assert exp["masterordering"].min() == 0 and exp["masterordering"].max() == n_cols - 1
    np.testing.assert_array_equal(exp["masterordering"], sim["masterordering"])
    # ids stay 1-based ids
    np.testing.assert_array_equal(exp["subjectim"], sim["subjectim"])
    np.testing.assert_array_equal(exp["sharedix"], sim["sharedix"])
    assert exp["subjectim"].min() >= 1 and exp["subjectim"].max() <= 60
    # every subject's images = the shared ones + its own, disjoint across subjects
    own = [set(row) - set(exp["sharedix"]) for row in exp["subjectim"]]
    for row in exp["subjectim"]:
        assert set(exp["sharedix"]) <= set(row) and len(set(row)) == n_cols
    assert all(not (a & b) for a, b in itertools.combinations(own, 2))
    # trial -> NSD id reproduces what the simulator showed
    for subject in sim["subjects"]:
        np.testing.assert_array_equal(trial_nsd_ids(exp, subject), sim["trial_nsd_ids"][subject])
        row = subject_row(subject)
        t = 7
        assert trial_nsd_ids(exp, subject)[t] == raw["subjectim"][row, int(raw["masterordering"].ravel()[t]) - 1]


def test_shared_trials(sim):
    exp = read_expdesign(sim["root"])
    n_total = sim["trials_per_session"] * sim["n_sessions"]
    for subject in sim["subjects"]:
        found = shared_trials(exp, subject, n_total)
        assert list(found) == sorted(sim["sharedix"].tolist())
        shown = sim["trial_nsd_ids"][subject]
        for k, trials in found.items():
            assert len(trials) == sim["repetitions"]
            assert all(shown[t] == k for t in trials)
        first = shared_trials(exp, subject, sim["trials_per_session"])
        assert all(t < sim["trials_per_session"] for ts in first.values() for t in ts)
        assert sum(map(len, first.values())) == np.isin(shown[: sim["trials_per_session"]], sim["sharedix"]).sum()
    with pytest.raises(ValueError, match="n_trials"):
        shared_trials(exp, "A", n_total + 1)


# ------------------------------------------------------------------ regions


def test_region_voxel_counts_and_definitions(sim):
    root = sim["root"]
    for subject in sim["subjects"]:
        masks = region_masks(root, subject)
        assert list(masks) == list(REGIONS)
        assert {k: int(m.sum()) for k, m in masks.items()} == sim["n_voxels"][subject]
        assert all(m.shape == VOLUME and m.dtype == bool for m in masks.values())
        total = np.sum([m.astype(int) for m in masks.values()], axis=0)
        assert total.max() == 1  # the simulator's regions are disjoint
        paths = nsd_paths(root, subject)
        prf = np.asanyarray(nib.load(str(paths.prf_visualrois)).dataobj)
        streams = np.asanyarray(nib.load(str(paths.streams)).dataobj)
        np.testing.assert_array_equal(masks["V1"], np.isin(prf, [1, 2]))
        np.testing.assert_array_equal(masks["Dorsal"], streams == 7)
        assert prf.min() == -1 and set(np.unique(streams)) >= {1, 3, 4, 5, 6, 7}
    counts = [tuple(sim["n_voxels"][s].values()) for s in sim["subjects"]]
    assert len(set(counts)) == len(counts)  # voxel counts differ across subjects
    only = region_masks(root, "A", regions=["V4", "Lateral"])
    assert list(only) == ["V4", "Lateral"]
    custom = region_masks(root, "A", regions={"early": ("streams", [1])})
    assert custom["early"].sum() == sum(sim["n_voxels"]["subj01"][r] for r in ("V1", "V2", "V3"))
    with pytest.raises(ValueError, match="unknown region"):
        region_masks(root, "A", regions=["V5"])


# ------------------------------------------------------------------ responses


def test_subject_responses_equals_straightforward_computation(small):
    root, summary = small
    # make one V1 voxel constant in session 2: it must be 0 there, not NaN
    path = nsd_paths(root, "A").beta(2)
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    v1 = np.argwhere(region_masks(root, "A")["V1"])[0]
    data[tuple(v1)] = 123
    nib.save(nib.Nifti1Image(data, img.affine), str(path))

    ids, resp, info = subject_responses(root, "A")
    ref_ids, ref = reference_responses(root, "A", summary, [1, 2, 3, 4], 3)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(ids, np.sort(summary["sharedix"]))
    assert list(resp) == list(REGIONS)
    for name in REGIONS:
        assert resp[name].dtype == np.float32
        assert resp[name].shape == (ids.size, summary["n_voxels"]["subj01"][name])
        np.testing.assert_allclose(resp[name], ref[name], rtol=1e-5, atol=1e-5)
    assert info["constant_voxel_sessions"]["V1"] == 1
    assert info["sessions"] == [1, 2, 3, 4] and info["n_sessions"] == 4
    assert info["n_voxels"] == summary["n_voxels"]["subj01"]
    np.testing.assert_array_equal(info["repetitions"], np.full(ids.size, 4))
    assert info["n_dropped"] == 0 and info["n_shared"] == 30
    assert info["volume_shape"] == VOLUME
    assert info["voxel_indices"]["V1"].shape == (info["n_voxels"]["V1"], 3)


def test_trials_per_session_is_inferred_and_sessions_are_placed(small):
    root, summary = small
    ids, resp, info = subject_responses(root, "A", sessions=[2, 4], min_repetitions=1)
    assert info["trials_per_session"] == 31 != 750
    assert info["n_trials"] == 62
    ref_ids, ref = reference_responses(root, "A", summary, [2, 4], 1)
    np.testing.assert_array_equal(ids, ref_ids)
    for name in REGIONS:
        np.testing.assert_allclose(resp[name], ref[name], rtol=1e-5, atol=1e-5)
    shown = summary["trial_nsd_ids"]["subj01"][np.r_[31:62, 93:124]]
    np.testing.assert_array_equal(info["repetitions"], [np.sum(shown == k) for k in ids])
    # with min_repetitions=3 only the images seen 3+ times in those sessions remain
    ids3, _, info3 = subject_responses(root, "A", sessions=[2, 4], min_repetitions=3)
    np.testing.assert_array_equal(ids3, [k for k in ref_ids if np.sum(shown == k) >= 3])
    assert info3["n_dropped"] == 30 - ids3.size


def test_per_session_drift_is_removed(small):
    root, _ = small
    paths = nsd_paths(root, "A")
    voxel = tuple(np.argwhere(region_masks(root, "A")["V2"])[0])
    means = [np.asanyarray(nib.load(str(paths.beta(s))).dataobj)[voxel].mean() / 300 for s in (1, 2, 3, 4)]
    assert np.ptp(means) > 0.5  # sessions differ in offset: per-session z-scoring matters


def test_hdf5_betas_read_like_nifti(tmp_path, images):
    kwargs = dict(subjects=("B",), volume_shape=VOLUME, seed=5)
    simulate_nsd(tmp_path / "nii", images, **kwargs)
    simulate_nsd(tmp_path / "h5", images, betas_format="hdf5", **kwargs)
    h5_path = nsd_paths(tmp_path / "h5", "B").beta(1, ".hdf5")
    nii = nib.load(str(nsd_paths(tmp_path / "nii", "B").beta(1)))
    with h5py.File(h5_path, "r") as f:
        assert f["betas"].dtype == np.int16
        assert f["betas"].shape == (nii.shape[3],) + VOLUME[::-1]  # trials x Z x Y x X
    a = subject_responses(tmp_path / "nii", "B")
    b = subject_responses(tmp_path / "h5", "B")
    np.testing.assert_array_equal(a[0], b[0])
    for name in REGIONS:
        np.testing.assert_array_equal(a[1][name], b[1][name])
    assert a[2]["trials_per_session"] == b[2]["trials_per_session"]
    # a NIfTI converted here (independently of the simulator) to the HDF5 layout
    paths = nsd_paths(tmp_path / "nii", "B")
    data = np.asanyarray(nib.load(str(paths.beta(2))).dataobj)
    with h5py.File(paths.beta(2, ".hdf5"), "w") as f:
        f.create_dataset("betas", data=data.T)  # .T reverses all axes: trials x Z x Y x X
    os.remove(paths.beta(2))
    assert paths.find_beta(2).name == "betas_session02.hdf5"
    c = subject_responses(tmp_path / "nii", "B")
    assert c[2]["beta_files"][1].endswith(".hdf5")
    for name in REGIONS:
        np.testing.assert_array_equal(a[1][name], c[1][name])


# ------------------------------------------------------------------ stimuli


class CountingFile(io.RawIOBase):
    """A read-only binary file that counts the bytes read (like a range-request file)."""

    def __init__(self, path):
        self._f = open(path, "rb")
        self.bytes_read = 0
        self.name = str(path)

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        n = self._f.readinto(b)
        self.bytes_read += n or 0
        return n

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def close(self):
        self._f.close()
        super().close()


def test_read_stimuli_rows_in_requested_order(sim, images):
    root = Path(sim["root"])
    ids = [37, 4, 60, 4, 1]
    out = read_shared_images(root / STIMULI_PATH, ids)
    assert out.dtype == np.uint8 and out.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(out, images[np.array(ids) - 1])
    np.testing.assert_array_equal(read_shared_images(root, ids), out)  # root folder
    with open(root / STIMULI_PATH, "rb") as fh:
        np.testing.assert_array_equal(read_shared_images(fh, ids), out)
        assert not fh.closed
    counting = CountingFile(root / STIMULI_PATH)
    try:
        np.testing.assert_array_equal(read_shared_images(counting, [9, 2, 5]), images[[8, 1, 4]])
        size = os.path.getsize(root / STIMULI_PATH)
        assert counting.bytes_read < size / 3  # only the requested rows, not the brick
    finally:
        counting.close()
    assert read_shared_images(root, []).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError, match="outside 1..60"):
        read_shared_images(root, [0])
    with pytest.raises(ValueError, match="outside 1..60"):
        read_shared_images(root, [61])


# ------------------------------------------------------------------ meaningful responses


def _region_means(root, subject):
    ids, resp, _ = subject_responses(root, subject)
    return ids, np.stack([resp[r].mean(axis=1) for r in REGIONS], axis=1)


def test_homologous_regions_correlate_best_across_subjects(sim):
    means = {s: _region_means(sim["root"], s) for s in sim["subjects"]}
    L = len(REGIONS)
    for a, b in itertools.combinations(sim["subjects"], 2):
        np.testing.assert_array_equal(means[a][0], means[b][0])
        corr = np.corrcoef(means[a][1].T, means[b][1].T)[:L, L:]
        assert np.all(corr.argmax(axis=1) == np.arange(L)), (a, b, np.round(corr, 2))
        assert np.all(corr.argmax(axis=0) == np.arange(L)), (a, b, np.round(corr, 2))


def test_mot_recovers_region_correspondence_across_subjects(sim):
    from motalign import MOT

    names = list(REGIONS)
    _, ra, _ = subject_responses(sim["root"], "A")
    _, rc, _ = subject_responses(sim["root"], "C")
    mot = MOT(random_state=0).fit([ra[r] for r in names], [rc[r] for r in names])
    assert np.all(mot.coupling_.argmax(axis=1) == np.arange(len(names)))


# ------------------------------------------------------------------ errors


def test_missing_files_name_their_paths(tmp_path, images):
    root = tmp_path / "broken"
    simulate_nsd(root, images, subjects=("A",), volume_shape=VOLUME, seed=1)
    paths = nsd_paths(root, "A")
    os.remove(paths.beta(2))
    with pytest.raises(ValueError) as err:
        subject_responses(root, "A", sessions=[1, 2])
    assert str(paths.beta(2)) in str(err.value)
    assert "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.nii.gz" in str(err.value)
    # sessions inferred from the files present: 1 and 3 (trials placed by session number)
    ids, _, info = subject_responses(root, "A", min_repetitions=1)
    assert info["sessions"] == [1, 3]
    # no beta at all
    shutil.rmtree(paths.betas_dir)
    with pytest.raises(ValueError, match="no beta files") as err:
        subject_responses(root, "A")
    assert str(paths.betas_dir) in str(err.value)
    # ROI missing
    os.remove(paths.streams)
    with pytest.raises(ValueError) as err:
        region_masks(root, "A")
    assert str(paths.streams) in str(err.value)
    assert "nsddata/ppdata/subj01/func1pt8mm/roi/streams.nii.gz" in str(err.value)
    # subject without files, expdesign missing
    with pytest.raises(ValueError, match="prf-visualrois.nii.gz"):
        region_masks(root, "B")
    os.remove(paths.expdesign)
    with pytest.raises(ValueError, match="nsd_expdesign.mat"):
        read_expdesign(paths.expdesign)
    with pytest.raises(ValueError, match="nsd_expdesign.mat"):
        subject_responses(root, "A")
    with pytest.raises(ValueError, match="nsd_stimuli.hdf5"):
        read_shared_images(tmp_path, [1])


def test_beta_volume_shape_mismatch_is_a_clear_error(small):
    root, summary = small
    path = nsd_paths(root, "A").beta(3)
    wrong = np.zeros((VOLUME[0] - 1,) + VOLUME[1:] + (summary["trials_per_session"],), dtype=np.int16)
    nib.save(nib.Nifti1Image(wrong, np.eye(4)), str(path))
    with pytest.raises(ValueError, match="shape") as err:
        subject_responses(root, "A")
    assert str(path) in str(err.value) and "prf-visualrois" in str(err.value)


def test_inconsistent_trials_per_session_and_too_many_trials(small):
    root, summary = small
    path = nsd_paths(root, "A").beta(4)
    data = np.asanyarray(nib.load(str(path)).dataobj)
    nib.save(nib.Nifti1Image(data[..., :-1], np.eye(4)), str(path))
    with pytest.raises(ValueError, match="same number of trials"):
        subject_responses(root, "A")
    ids, _, info = subject_responses(root, "A", sessions=[4], min_repetitions=1)
    assert info["trials_per_session"] == 30  # inferred from the file, not assumed
    shutil.copy(nsd_paths(root, "A").beta(1), nsd_paths(root, "A").beta(5))
    with pytest.raises(ValueError, match="masterordering"):
        subject_responses(root, "A", sessions=[5])
    with pytest.raises(ValueError, match="no shared image was seen at least 9 times"):
        subject_responses(root, "A", sessions=[1], min_repetitions=9)


def test_simulator_rejects_impossible_designs(tmp_path, images):
    with pytest.raises(ValueError, match="split evenly"):
        simulate_nsd(tmp_path, images, n_shared=52, n_specific=1, n_sessions=4)
    with pytest.raises(ValueError, match="cannot hold"):
        simulate_nsd(tmp_path, images, n_shared=50, n_specific=2)
    with pytest.raises(ValueError, match="uint8"):
        simulate_nsd(tmp_path, images.astype(float))
