"""NSD reader against the simulator, in the real NSD layout (no network, no real data)."""

import io
import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from helpers_nsd import chunks_read, shared_trials, trial_nsd_ids
from motalign.datasets.nsd import responses
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
from motalign.datasets.nsd.responses import _BetaFile, _hdf5_read_plan, region_masks, subject_responses
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
        assert f["betas"].chunks == (nii.shape[3], 1, 1, 1)  # the real files' chunking
    a = subject_responses(tmp_path / "nii", "B")
    b = subject_responses(tmp_path / "h5", "B")
    np.testing.assert_array_equal(a[0], b[0])
    for name in REGIONS:
        np.testing.assert_array_equal(a[1][name], b[1][name])
    assert a[2]["trials_per_session"] == b[2]["trials_per_session"]
    assert a[2]["beta_chunks"] == [None] * 3
    assert b[2]["beta_chunks"] == [[nii.shape[3], 1, 1, 1]] * 3
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
    """A read-only binary file that counts the bytes read (like a range-request file) and
    logs every read as ``(byte offset, byte count)`` in ``reads``."""

    def __init__(self, path):
        self._f = open(path, "rb")
        self.bytes_read = 0
        self.reads = []
        self.name = str(path)

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        pos = self._f.tell()
        n = self._f.readinto(b)
        self.bytes_read += n or 0
        self.reads.append((pos, n or 0))
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


# ------------------------------------------------------------------ HDF5 betas, chunk by chunk

T_SMALL = 31  # trials per session of `hdf5_sim`
# HDF5 layouts (chunks of the trials x Z x Y x X dataset, compression): the real NSD files'
# one voxel x all trials, trial-major whole volumes, blocks, and no chunking at all
LAYOUTS = {
    "real": ((T_SMALL, 1, 1, 1), None),
    "real-gzip": ((T_SMALL, 1, 1, 1), "gzip"),
    "trial-major": ((1,) + VOLUME[::-1], None),
    "trial-slabs-gzip": ((4,) + VOLUME[::-1], "gzip"),
    "blocks": ((5, 4, 3, 4), None),
    "contiguous": (None, None),
}


@pytest.fixture(scope="module")
def hdf5_sim(tmp_path_factory, images):
    """One subject in NIfTI (4 sessions of 31 trials), its responses, and a V4 voxel
    relabelled ventral in ``streams`` so that two regions overlap."""
    root = tmp_path_factory.mktemp("nsd_h5") / "nii"
    summary = simulate_nsd(root, images[:40], subjects=("A",), n_shared=30, n_specific=1,
                           n_sessions=4, repetitions=4, volume_shape=VOLUME, seed=3)
    assert summary["trials_per_session"] == T_SMALL
    return root, subject_responses(root, "A")


def hdf5_copy(root, dest, chunks, compression):
    """``root`` copied to ``dest`` with every session's betas as HDF5 only, laid out so."""
    shutil.copytree(root, dest)
    paths = nsd_paths(dest, "A")
    for s in paths.sessions():
        data = np.asanyarray(nib.load(str(paths.beta(s))).dataobj)
        with h5py.File(paths.beta(s, ".hdf5"), "w") as f:
            f.create_dataset("betas", data=np.ascontiguousarray(data.T), chunks=chunks,
                             compression=compression)  # .T: trials x Z x Y x X
        os.remove(paths.beta(s))
    return paths


def full_volume_read(path, mask):
    """The reader before chunk-aligned reading: whole volumes, then the mask."""
    with h5py.File(path, "r") as f:
        return f["betas"][()].transpose(3, 2, 1, 0)[mask].astype(np.float64)


def union_mask(root):
    return np.logical_or.reduce(list(region_masks(root, "A").values()))


@pytest.mark.parametrize("read_bytes", [None, 700], ids=["default-bound", "tiny-bound"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hdf5_reader_equals_full_volume_read(hdf5_sim, tmp_path, monkeypatch, layout, read_bytes):
    root, (ids, resp, info) = hdf5_sim
    if read_bytes is not None:  # many trial slabs and runs split to fit the bound
        monkeypatch.setattr(responses, "READ_CHUNK_BYTES", read_bytes)
    paths = hdf5_copy(root, tmp_path / layout, *LAYOUTS[layout])
    union = union_mask(root)
    for s in (1, 3):
        with _BetaFile(paths.beta(s, ".hdf5")) as beta:
            got = beta.read(union)
            assert beta.chunks == LAYOUTS[layout][0]
        np.testing.assert_array_equal(got, full_volume_read(paths.beta(s, ".hdf5"), union))
    h_ids, h_resp, h_info = subject_responses(paths.root, "A")
    np.testing.assert_array_equal(h_ids, ids)
    for name in REGIONS:  # bit-identical to the NIfTI reading
        np.testing.assert_array_equal(h_resp[name], resp[name])
    chunks = LAYOUTS[layout][0]
    assert h_info["beta_chunks"] == [None if chunks is None else list(chunks)] * 4
    assert info["beta_chunks"] == [None] * 4


def counted_read(path, mask, monkeypatch):
    """``_BetaFile(path).read(mask)`` through a file object that logs every read; returns
    the values and the reads made by ``read`` (not by opening the file)."""
    real_file = h5py.File
    handles = []

    def counting(name, mode="r", **kwargs):
        handles.append(CountingFile(name))
        return real_file(handles[-1], mode, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(h5py, "File", counting)
        with _BetaFile(path) as beta:
            opened = len(handles[0].reads)
            values = beta.read(mask)
    handles[0].close()
    return values, handles[0].reads[opened:]


def chunks_of(mask, chunks, n_trials):
    """Offsets (trial, z, y, x) of the chunks that hold a voxel of ``mask`` (X x Y x Z)."""
    spatial = np.asarray(chunks[1:])
    cells = {tuple(c) for c in (np.argwhere(mask.transpose(2, 1, 0)) // spatial * spatial).tolist()}
    return {(t,) + c for t in range(0, n_trials, chunks[0]) for c in cells}


@pytest.mark.parametrize("read_bytes", [None, 700], ids=["default-bound", "tiny-bound"])
@pytest.mark.parametrize("layout", [k for k, (chunks, _) in LAYOUTS.items() if chunks is not None])
def test_hdf5_reader_reads_each_masked_chunk_once_and_no_other(hdf5_sim, tmp_path, monkeypatch, layout,
                                                                read_bytes):
    root, _ = hdf5_sim
    if read_bytes is not None:
        monkeypatch.setattr(responses, "READ_CHUNK_BYTES", read_bytes)
    chunks, compression = LAYOUTS[layout]
    path = hdf5_copy(root, tmp_path / layout, chunks, compression).beta(2, ".hdf5")
    masks = region_masks(root, "A")
    for mask in (np.logical_or.reduce(list(masks.values())), masks["V4"]):
        values, reads = counted_read(path, mask, monkeypatch)
        np.testing.assert_array_equal(values, full_volume_read(path, mask))
        touched = chunks_read(path, reads)
        assert set(touched) == chunks_of(mask, chunks, T_SMALL)  # those chunks, no other
        assert max(touched.values()) == 1  # each read once
        if layout == "real":  # the bytes read from chunks are exactly the masked voxels' values
            in_chunks = sum(n for pos, n in reads if chunks_read(path, [(pos, n)]))
            assert in_chunks == int(mask.sum()) * T_SMALL * 2
    if layout == "real":  # the counter sees a slab of whole volumes touch every chunk
        handle = CountingFile(path)
        with h5py.File(handle, "r") as f:
            opened = len(handle.reads)
            f["betas"][0:2]
            n_chunks = f["betas"].id.get_num_chunks()
        handle.close()
        assert len(chunks_read(path, handle.reads[opened:])) == n_chunks == int(np.prod(VOLUME))


@pytest.mark.parametrize("seed", range(6))
def test_hdf5_read_plan_covers_the_mask_with_disjoint_chunk_runs(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(3, 12, size=3))  # Z, Y, X
    n_trials = int(rng.integers(5, 40))
    chunks = (int(rng.integers(1, n_trials + 1)),) + tuple(int(rng.integers(1, v + 1)) for v in shape)
    bound = int(rng.choice([50, 400, 64 * 1024**2]))
    monkeypatch.setattr(responses, "READ_CHUNK_BYTES", bound)
    coords = np.argwhere(rng.random(shape) < rng.uniform(0.02, 0.4))
    if coords.size == 0:
        coords = np.array([[0, 0, 0]])
    step, boxes = _hdf5_read_plan(coords, chunks, n_trials, 2)
    ct, spatial = min(chunks[0], n_trials), np.asarray(chunks[1:])
    assert step == n_trials or step % ct == 0  # trial slabs never split a chunk
    needed = {tuple(c) for c in (coords // spatial).tolist()}
    seen, covered = set(), np.zeros(shape, dtype=bool)
    for lo, hi in boxes:
        cells = set(itertools.product(*(range(a, b) for a, b in zip(lo // spatial, (hi - 1) // spatial + 1))))
        assert cells <= needed and not cells & seen  # only chunks with voxels, each in one box
        seen |= cells
        covered[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
        if ct * int(np.prod(spatial)) * 2 <= bound:  # one box of one slab within the bound
            assert step * int(np.prod(hi - lo)) * 2 <= bound
    assert seen == needed and covered[tuple(coords.T)].all()


def test_overlapping_regions_are_in_both_and_counted(hdf5_sim, tmp_path):
    root, (ids, resp, info) = hdf5_sim
    assert info["overlaps"] == {}  # the simulator's regions are disjoint
    assert info["n_images"] == ids.size == 30
    assert info["n_voxels_read"] == sum(info["n_voxels"].values())
    root = Path(shutil.copytree(root, tmp_path / "overlap"))
    paths = nsd_paths(root, "A")
    masks = region_masks(root, "A")
    img = nib.load(str(paths.streams))
    streams = np.asanyarray(img.dataobj).copy()
    v4, v1 = np.argwhere(masks["V4"])[:3], np.argwhere(masks["V1"])[:2]
    streams[tuple(v4.T)] = 5  # hV4 and ventral, as real voxels can be
    streams[tuple(v1.T)] = 6  # V1 and lateral
    nib.save(nib.Nifti1Image(streams, img.affine), str(paths.streams))

    o_ids, o_resp, o_info = subject_responses(root, "A")
    assert o_info["overlaps"] == {"V1": {"Lateral": 2}, "V4": {"Ventral": 3}}
    assert o_info["n_voxels"]["Ventral"] == info["n_voxels"]["Ventral"] + 3
    assert o_info["n_voxels"]["V4"] == info["n_voxels"]["V4"]  # still in V4 too
    assert o_info["n_voxels_read"] == sum(o_info["n_voxels"].values()) - 5
    for a, b, vox in (("V4", "Ventral", v4), ("V1", "Lateral", v1)):
        for x in vox:  # the same responses in both regions
            col_a = np.flatnonzero((o_info["voxel_indices"][a] == x).all(axis=1))
            col_b = np.flatnonzero((o_info["voxel_indices"][b] == x).all(axis=1))
            assert col_a.size == col_b.size == 1
            np.testing.assert_array_equal(o_resp[a][:, col_a[0]], o_resp[b][:, col_b[0]])
    np.testing.assert_array_equal(o_ids, ids)
    for name in ("V1", "V2", "V3", "V4", "Dorsal"):  # unchanged regions: unchanged responses
        np.testing.assert_array_equal(o_resp[name], resp[name])


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
