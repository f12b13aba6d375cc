"""Stimulus sets from files in the real formats (generated here), served over a loopback
emulation of the Hugging Face hub: STS-B parquet, ILSVRC2012 validation tar + devkit, and
the gated ImageNet parquet shards."""

import hashlib
import io
import json
import logging
import tarfile

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

from conftest import LoopbackServer  # noqa: E402
from motalign.datasets.download import provenance_path  # noqa: E402
from motalign.datasets.imagenet import IMAGENET_VAL_SHARDS, prepare_imagenet, select_per_class  # noqa: E402
from motalign.datasets.stsb import STSB_REPO, STSB_REVISION, derive_stsb_sentences, prepare_stsb  # noqa: E402
from motalign.io.stimuli import EncodedImages, stimulus_payload  # noqa: E402


@pytest.fixture
def hub(monkeypatch):
    """A loopback hub that huggingface_hub talks to (HF_ENDPOINT)."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with LoopbackServer(max_requests=100) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _hub_requests(hub, method=None):
    """The requests for files of the hub (not the client's other calls)."""
    return [r for r in hub.requests if r.path.startswith("/datasets/") and method in (None, r.method)]


def _load(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# =========================================================================== STS-B
STSB_ROWS = [  # (sentence1, sentence2, score): duplicates within and across rows
    ("A man is playing a flute.", "A man is playing a flute. ", 5.0),
    ("A dog runs.", "A cat sleeps.", 0.4),
    ("  A cat sleeps.", "A bird sings.", 0.2),
    ("A man is playing a flute.", "Someone plays music.", 3.1),
    ("", "A dog runs.", 0.0),
    ("Two people talk.", "A Dog runs.", 0.1),
]
STSB_EXPECTED = ["A man is playing a flute.", "A dog runs.", "A cat sleeps.", "A bird sings.",
                 "Someone plays music.", "Two people talk.", "A Dog runs."]


def _stsb_parquet() -> bytes:
    table = pa.table({
        "sentence1": [r[0] for r in STSB_ROWS],
        "sentence2": [r[1] for r in STSB_ROWS],
        "score": pa.array([r[2] for r in STSB_ROWS], pa.float64()),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def test_derive_stsb_sentences_order_and_counts():
    sentences, counts = derive_stsb_sentences([r[0] for r in STSB_ROWS], [r[1] for r in STSB_ROWS])
    assert sentences == STSB_EXPECTED
    assert counts == {"n_pairs": 6, "n_sentences_before_dedup": 11, "n_empty_dropped": 1,
                      "n_sentences_after_dedup": 7}


def test_prepare_stsb_over_emulated_hub(hub, tmp_path, caplog):
    data = _stsb_parquet()
    hub.add_hub_file(STSB_REPO, STSB_REVISION, "data/test-00000-of-00001.parquet", data)
    out = tmp_path / "stimuli" / "stsb.npz"
    with caplog.at_level(logging.WARNING, logger="motalign.datasets.stsb"):
        info = prepare_stsb(out, cache_dir=tmp_path / "cache")
    stimuli = _load(out)
    assert list(stimuli["sentences"]) == STSB_EXPECTED
    assert list(stimuli["ids"]) == [f"stsb{i:05d}" for i in range(7)]
    assert set(stimuli) == {"ids", "sentences"}

    written = json.loads(provenance_path(out).read_text())
    assert provenance_path(out).name == "stsb.npz.json"
    assert written == json.loads(json.dumps(info))
    assert info["repo_id"] == STSB_REPO and info["revision"] == STSB_REVISION
    assert info["split"] == "test"
    assert info["file_sha256"] == hashlib.sha256(data).hexdigest()
    assert info["n_pairs"] == 6
    assert info["n_sentences_before_dedup"] == 11 and info["n_sentences_after_dedup"] == 7
    assert info["count_matches_paper"] is False and info["expected_count"] == 2552
    assert any("2552" in r.getMessage() and "7" in r.getMessage() for r in caplog.records)
    assert info["commit"] == STSB_REVISION and info["file_verified_by"] == ["etag-sha256"]
    assert [(r.method, r.path) for r in _hub_requests(hub)] == [
        (method, f"/datasets/{STSB_REPO}/resolve/{STSB_REVISION}/data/test-00000-of-00001.parquet")
        for method in ("HEAD", "GET")]

    # a second run uses the cached, verified file (the revision is a commit: no request at
    # all); a matching count is recorded as such
    info = prepare_stsb(out, cache_dir=tmp_path / "cache", expected_count=7,
                        sha256=hashlib.sha256(data).hexdigest())
    assert info["count_matches_paper"] is True
    assert info["file_verified_by"] == ["etag-sha256", "pinned-sha256"]
    assert len(_hub_requests(hub)) == 2


def test_prepare_stsb_wrong_digest_and_columns(hub, tmp_path):
    hub.add_hub_file(STSB_REPO, "rev1", "data/test-00000-of-00001.parquet", _stsb_parquet())
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        prepare_stsb(tmp_path / "a.npz", cache_dir=tmp_path / "c", revision="rev1",
                     sha256="0" * 64)
    assert not (tmp_path / "a.npz").exists()

    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["a", "b"]}), buffer)
    hub.add_hub_file(STSB_REPO, "rev2", "data/test-00000-of-00001.parquet", buffer.getvalue())
    with pytest.raises(ValueError, match="sentence1"):
        prepare_stsb(tmp_path / "b.npz", cache_dir=tmp_path / "c", revision="rev2")


def test_workflow_stsb_stimuli_record_the_pinned_source_and_content_digest(hub, tmp_path):
    """prepare_stimuli (the workflow's job) keeps STSB's provenance and adds the digests."""
    from motalign.datasets.builtin import stimuli_digests
    from motalign.datasets.stimuli import prepare_stimuli

    data = _stsb_parquet()
    hub.add_hub_file(STSB_REPO, STSB_REVISION, "data/test-00000-of-00001.parquet", data)
    out = tmp_path / "stsb.npz"
    info = prepare_stimuli({"source": "stsb", "kind": "text", "expected_count": 7}, out,
                           cache_dir=tmp_path / "cache", name="stsb")
    written = json.loads(provenance_path(out).read_text())
    assert written == json.loads(json.dumps(info))
    assert written["revision"] == STSB_REVISION and written["file_sha256"] == hashlib.sha256(data).hexdigest()
    assert written["name"] == "stsb" and written["config"]["source"] == "stsb"
    assert written["content_sha256"] == stimuli_digests(out)["content_sha256"]
    assert set(written["arrays"]) == {"ids", "sentences"}


def test_config_pins_name_their_key(hub, tmp_path):
    """datasets.<name>.sha256 pins STSB's file (a digest) and ImageNet's shards (a mapping)."""
    from motalign.datasets.stimuli import prepare_stimuli

    data = _stsb_parquet()
    hub.add_hub_file(STSB_REPO, STSB_REVISION, "data/test-00000-of-00001.parquet", data)
    entry = {"source": "stsb", "kind": "text", "expected_count": 7}
    with pytest.raises(ValueError, match=r"datasets\.prompts\.sha256: expected 0{64}"):
        prepare_stimuli({**entry, "sha256": "0" * 64}, tmp_path / "a.npz",
                        cache_dir=tmp_path / "cache", name="prompts")
    assert not (tmp_path / "a.npz").exists()
    info = prepare_stimuli({**entry, "sha256": hashlib.sha256(data).hexdigest()}, tmp_path / "b.npz",
                           cache_dir=tmp_path / "cache", name="prompts")
    assert info["file_verified_by"] == ["etag-sha256", "pinned-sha256"]
    with pytest.raises(ValueError, match=r"datasets\.inet\.sha256: for ImageNet, a mapping"):
        prepare_stimuli({"source": "imagenet", "kind": "images", "sha256": "0" * 64},
                        tmp_path / "c.npz", cache_dir=tmp_path / "cache", name="inet")
    with pytest.raises(ValueError, match=r"datasets\.inet\.sha256\[data/x\.parquet\]"):
        hub.add_hub_file("ILSVRC/imagenet-1k", "main", "data/x.parquet", b"PAR1 not really")
        prepare_imagenet(tmp_path / "d.npz", cache_dir=tmp_path / "cache", shards=("data/x.parquet",),
                         sha256={"data/x.parquet": "1" * 64}, pin_name="datasets.inet.sha256")


# =========================================================================== ImageNet
# Five classes.  ILSVRC2012_IDs (the devkit's, 1-based) are in a different order from the
# sorted WNIDs (the usual 0-based class index), as in the real devkit.
WNIDS_BY_ID = {1: "n02119789", 2: "n02100735", 3: "n01440764", 4: "n04557648", 5: "n03255030"}
SORTED = sorted(WNIDS_BY_ID.values())
INDEX_OF_ID = {i: SORTED.index(w) for i, w in WNIDS_BY_ID.items()}
N_PER_CLASS = 6
N_IMAGES = 5 * N_PER_CLASS
SIZES = [(40, 24), (24, 40), (32, 32), (50, 20)]  # (width, height) by number % 4


def _ground_truth_ids():
    rng = np.random.default_rng(7)
    ids = np.repeat(np.arange(1, 6), N_PER_CLASS)
    return [int(i) for i in rng.permutation(ids)]  # ids[k] is the class of image k + 1


GT_IDS = _ground_truth_ids()


def _colour(number):
    return (8 * number % 256, 40 * INDEX_OF_ID[GT_IDS[number - 1]] + 20, 128)


def _jpeg(number) -> bytes:
    """A solid-colour JPEG whose colour encodes its number; sizes and modes vary."""
    width, height = SIZES[number % 4]
    image = Image.new("RGB", (width, height), _colour(number))
    if number % 5 == 0:
        image = image.convert("CMYK")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _val_archive(path, order_seed=0, skip=()):
    numbers = [n for n in range(1, N_IMAGES + 1) if n not in skip]
    order = np.random.default_rng(order_seed).permutation(numbers)
    with tarfile.open(path, "w") as tar:
        for n in order:
            _add(tar, f"ILSVRC2012_val_{int(n):08d}.JPEG", _jpeg(int(n)))
    return path


def _meta_mat() -> bytes:
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = [(i, w, f"class {w}", "gloss", 0, np.zeros((0, 0)), 0, 1300)
            for i, w in WNIDS_BY_ID.items()]
    rows.append((6, "n00001740", "entity", "gloss", 5, np.arange(1, 6), 4, 0))  # not a leaf
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for k, row in enumerate(rows):
        for field, value in zip(fields, row):
            synsets[k, 0][field] = value
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def _devkit(path, with_ground_truth=True, with_meta=True, ids=GT_IDS):
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/readme.txt", b"devkit")
        if with_ground_truth:
            _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
                 "".join(f"{i}\n" for i in ids).encode())
        if with_meta:
            _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat())
    return path


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    return {
        "archive": _val_archive(root / "ILSVRC2012_img_val.tar", order_seed=0),
        "archive_reordered": _val_archive(root / "reordered.tar", order_seed=1),
        "devkit": _devkit(root / "ILSVRC2012_devkit_t12.tar.gz"),
        "root": root,
    }


def _check_images(stimuli):
    """Every stored image is its own source file, byte for byte, and decodes to its own
    (original) size and colour."""
    assert {"image_bytes", "image_offsets"} <= set(stimuli) and "images" not in stimuli
    assert stimuli["image_bytes"].dtype == np.uint8 and stimuli["image_bytes"].ndim == 1
    assert stimuli["image_offsets"].dtype == np.int64
    assert stimuli["image_offsets"].shape == (len(stimuli["ids"]) + 1,)
    images = stimulus_payload(stimuli)
    assert isinstance(images, EncodedImages) and len(images) == len(stimuli["ids"])
    for k, name in enumerate(stimuli["ids"]):
        number = int(name.rsplit("_", 1)[1])
        assert images.encoded(k) == _jpeg(number)
        image = images[k]
        width, height = SIZES[number % 4]
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        centre = image[4:-4, 4:-4].reshape(-1, 3).mean(axis=0)
        assert np.all(np.abs(centre - np.array(_colour(number))) < 12), (name, centre)


def test_prepare_imagenet_from_archive_and_devkit(imagenet_files, tmp_path):
    out = tmp_path / "imagenet.npz"
    info = prepare_imagenet(out, per_class=4, seed=0,
                            archive=imagenet_files["archive"], devkit=imagenet_files["devkit"])
    stimuli = _load(out)
    assert set(stimuli) == {"ids", "image_bytes", "image_offsets", "labels"}
    assert stimuli["labels"].dtype == np.int64
    labels, counts = np.unique(stimuli["labels"], return_counts=True)
    assert list(labels) == [0, 1, 2, 3, 4] and set(counts) == {4}
    numbers = [int(s.rsplit("_", 1)[1]) for s in stimuli["ids"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == 20
    assert all(s == f"ILSVRC2012_val_{n:08d}" for s, n in zip(stimuli["ids"], numbers))
    for number, label in zip(numbers, stimuli["labels"]):  # devkit ID -> sorted-WNID index
        assert label == INDEX_OF_ID[GT_IDS[number - 1]]
    _check_images(stimuli)
    assert info["n_classes"] == 5 and info["n_stimuli"] == 20 and info["per_class"] == 4
    assert info["label_space"] == "sorted_wnid_index" and info["source"] == "archive"
    assert json.loads(provenance_path(out).read_text())["n_stimuli"] == 20

    # reproducible, independent of the archive's member order, and seed-dependent
    again = tmp_path / "again.npz"
    prepare_imagenet(again, per_class=4, seed=0,
                     archive=imagenet_files["archive_reordered"], devkit=imagenet_files["devkit"])
    second = _load(again)
    for key in stimuli:
        np.testing.assert_array_equal(stimuli[key], second[key])
    other = tmp_path / "other.npz"
    prepare_imagenet(other, per_class=4, seed=1,
                     archive=imagenet_files["archive"], devkit=imagenet_files["devkit"])
    assert list(_load(other)["ids"]) != list(stimuli["ids"])


def test_imagenet_stores_the_archive_members_byte_for_byte(imagenet_files, tmp_path):
    from motalign.datasets.builtin import stimuli_digests
    from motalign.datasets.stimuli import prepare_stimuli

    out = tmp_path / "imagenet.npz"
    info = prepare_stimuli({"kind": "images", "source": "imagenet", "per_class": 4,
                            "archive": str(imagenet_files["archive"]), "devkit": str(imagenet_files["devkit"])},
                           out, name="imagenet")
    stimuli = _load(out)
    data, offsets = stimuli["image_bytes"], stimuli["image_offsets"]
    with tarfile.open(imagenet_files["archive"]) as tar:
        for k, name in enumerate(stimuli["ids"]):
            member = tar.extractfile(f"{name}.JPEG").read()
            stored = data[offsets[k]:offsets[k + 1]].tobytes()
            assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(member).hexdigest()
    assert offsets[0] == 0 and offsets[-1] == data.size == info["image_bytes"]
    assert "original files" in info["preprocessing"] and "image_shape" not in info
    sizes = [SIZES[int(name[-8:]) % 4] for name in stimuli["ids"]]
    assert info["image_widths"] == [min(w for w, _ in sizes), max(w for w, _ in sizes)]
    assert info["image_heights"] == [min(h for _, h in sizes), max(h for _, h in sizes)]
    assert set(info["arrays"]) == {"ids", "image_bytes", "image_offsets", "labels"}
    assert info["content_sha256"] == stimuli_digests(out)["content_sha256"]
    # image 5 is a CMYK JPEG: decoded to RGB at its original size
    cmyk = [k for k, name in enumerate(stimuli["ids"]) if int(name[-8:]) % 5 == 0]
    assert cmyk and stimulus_payload(stimuli)[cmyk[0]].shape[-1] == 3


def test_imagenet_image_size_is_gone(imagenet_files, tmp_path):
    from motalign.datasets.stimuli import prepare_stimuli

    with pytest.raises(TypeError, match="no longer takes image_size"):
        prepare_imagenet(tmp_path / "o.npz", image_size=224, archive=imagenet_files["archive"],
                         devkit=imagenet_files["devkit"])
    with pytest.raises(ValueError, match=r"datasets\.inet\.image_size"):
        prepare_stimuli({"kind": "images", "source": "imagenet", "image_size": 224,
                         "archive": str(imagenet_files["archive"]), "devkit": str(imagenet_files["devkit"])},
                        tmp_path / "o.npz", name="inet")
    assert not (tmp_path / "o.npz").exists()


def test_imagenet_undecodable_member_is_named(tmp_path):
    archive = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(archive, "w") as tar:
        for n in range(1, N_IMAGES + 1):
            _add(tar, f"ILSVRC2012_val_{n:08d}.JPEG", _jpeg(n)[:40] if n == 7 else _jpeg(n))
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000007\.JPEG: cannot decode"):
        prepare_imagenet(tmp_path / "o.npz", per_class=N_PER_CLASS, archive=archive,
                         devkit=_devkit(tmp_path / "devkit.tar.gz"))
    assert not (tmp_path / "o.npz").exists()


def test_prepare_imagenet_with_labels_file(imagenet_files, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("".join(f"{INDEX_OF_ID[i]}\n" for i in GT_IDS))
    out = tmp_path / "a.npz"
    info = prepare_imagenet(out, per_class=N_PER_CLASS,
                            archive=imagenet_files["archive"], labels_file=labels_file)
    stimuli = _load(out)
    assert len(stimuli["ids"]) == N_IMAGES  # every image, as each class has exactly 6
    assert info["label_space"] == "as_given"
    reference = tmp_path / "b.npz"
    prepare_imagenet(reference, per_class=N_PER_CLASS,
                     archive=imagenet_files["archive"], devkit=imagenet_files["devkit"])
    np.testing.assert_array_equal(stimuli["labels"], _load(reference)["labels"])


def test_devkit_without_meta_uses_id_minus_one(imagenet_files, tmp_path, caplog):
    devkit = _devkit(tmp_path / "devkit.tar.gz", with_meta=False)
    with caplog.at_level(logging.WARNING, logger="motalign.datasets.imagenet"):
        info = prepare_imagenet(tmp_path / "a.npz", per_class=2,
                                archive=imagenet_files["archive"], devkit=devkit)
    assert info["label_space"] == "ilsvrc2012_id_minus_1"
    stimuli = _load(tmp_path / "a.npz")
    for name, label in zip(stimuli["ids"], stimuli["labels"]):
        assert label == GT_IDS[int(name.rsplit("_", 1)[1]) - 1] - 1
    assert any("meta.mat" in r.getMessage() for r in caplog.records)


def test_imagenet_archive_errors(imagenet_files, tmp_path):
    archive, devkit = imagenet_files["archive"], imagenet_files["devkit"]
    missing = tmp_path / "nowhere" / "ILSVRC2012_img_val.tar"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_imagenet(tmp_path / "o.npz", archive=missing, devkit=devkit)
    with pytest.raises(FileNotFoundError, match="no_devkit.tar.gz"):
        prepare_imagenet(tmp_path / "o.npz", archive=archive, devkit=tmp_path / "no_devkit.tar.gz")
    bad_devkit = _devkit(tmp_path / "bad.tar.gz", with_ground_truth=False)
    with pytest.raises(ValueError, match="ILSVRC2012_validation_ground_truth.txt"):
        prepare_imagenet(tmp_path / "o.npz", archive=archive, devkit=bad_devkit)
    short = tmp_path / "short.txt"
    short.write_text("0\n1\n2\n")
    with pytest.raises(ValueError, match="3 labels.*30 validation images"):
        prepare_imagenet(tmp_path / "o.npz", archive=archive, labels_file=short)
    with pytest.raises(ValueError, match="exactly one"):
        prepare_imagenet(tmp_path / "o.npz", archive=archive)
    too_few = r"class 0 \(n01440764\) has only 6 images, fewer than per_class=7"
    with pytest.raises(ValueError, match=too_few):
        prepare_imagenet(tmp_path / "o.npz", per_class=7, archive=archive, devkit=devkit)
    assert not (tmp_path / "o.npz").exists()


def test_select_per_class_is_order_independent():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    numbers = rng.permutation(np.arange(1, 41))
    chosen = select_per_class(labels, numbers, per_class=3, seed=5)
    perm = rng.permutation(40)
    chosen_perm = select_per_class(labels[perm], numbers[perm], per_class=3, seed=5)
    assert sorted(numbers[chosen]) == sorted(numbers[perm][chosen_perm])
    assert list(numbers[chosen]) == sorted(numbers[chosen])
    assert np.all(np.bincount(labels[chosen]) == 3)


# --------------------------------------------------------------------------- hub variant
HUB_SHARDS = ("data/validation-00000-of-00002.parquet", "data/validation-00001-of-00002.parquet")


def _hub_shards():
    """The validation split as the hub stores it: image {bytes, path} + label (sorted-WNID)."""
    order = np.random.default_rng(3).permutation(np.arange(1, N_IMAGES + 1))
    shards = []
    for part in np.array_split(order, 2):
        rows = [int(n) for n in part]
        table = pa.table({
            "image": pa.array([{"bytes": _jpeg(n),
                                "path": f"ILSVRC2012_val_{n:08d}_{WNIDS_BY_ID[GT_IDS[n - 1]]}.JPEG"}
                               for n in rows],
                              pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "label": pa.array([INDEX_OF_ID[GT_IDS[n - 1]] for n in rows], pa.int64()),
        })
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=7)
        shards.append(buffer.getvalue())
    return shards


def test_imagenet_default_shards_are_the_hub_validation_files():
    assert len(IMAGENET_VAL_SHARDS) == 14
    assert IMAGENET_VAL_SHARDS[0] == "data/validation-00000-of-00014.parquet"
    assert IMAGENET_VAL_SHARDS[-1] == "data/validation-00013-of-00014.parquet"


def test_prepare_imagenet_from_gated_hub(hub, imagenet_files, tmp_path, monkeypatch):
    for shard, data in zip(HUB_SHARDS, _hub_shards()):
        hub.add_hub_file("ILSVRC/imagenet-1k", "main", shard, data, token="hf_test", gated=True)
    kwargs = dict(per_class=4, seed=0, cache_dir=tmp_path / "cache",
                  shards=HUB_SHARDS)

    with pytest.raises(PermissionError) as info:
        prepare_imagenet(tmp_path / "hub.npz", **kwargs)
    message = str(info.value)
    assert "HF_TOKEN" in message
    assert "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in message
    assert not (tmp_path / "hub.npz").exists()
    assert len(_hub_requests(hub)) == 1  # not retried

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "hub.npz"
    info = prepare_imagenet(out, **kwargs)
    stimuli = _load(out)
    assert len(stimulus_payload(stimuli)) == 20
    assert info["source"] == "huggingface" and info["ids_from"] == "image_path"
    assert set(info["shard_sha256"]) == set(HUB_SHARDS)
    _check_images(stimuli)
    assert info["commit"] == hashlib.sha1(b"main").hexdigest()  # the loopback's commit of main
    for request in _hub_requests(hub)[1:]:
        assert request.headers["Authorization"] == "Bearer hf_test"
        assert request.path.startswith("/datasets/ILSVRC/imagenet-1k/resolve/main/data/")

    n_gets = len(_hub_requests(hub, "GET"))
    prepare_imagenet(tmp_path / "again.npz", **kwargs)  # cached, verified shards
    assert len(_hub_requests(hub, "GET")) == n_gets  # the branch is resolved (HEAD), nothing fetched
    np.testing.assert_array_equal(_load(tmp_path / "again.npz")["image_bytes"], stimuli["image_bytes"])

    # the same images as from the archive with the devkit's ground truth
    reference = tmp_path / "archive.npz"
    prepare_imagenet(reference, per_class=4, seed=0,
                     archive=imagenet_files["archive"], devkit=imagenet_files["devkit"])
    expected = _load(reference)
    for key in ("ids", "labels", "image_bytes", "image_offsets"):
        np.testing.assert_array_equal(stimuli[key], expected[key])


def test_hub_class_too_small_names_the_class(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    for shard, data in zip(HUB_SHARDS, _hub_shards()):
        hub.add_hub_file("ILSVRC/imagenet-1k", "main", shard, data, token="hf_test")
    with pytest.raises(ValueError, match="class 0 has only 6 images"):
        prepare_imagenet(tmp_path / "x.npz", per_class=10,
                         cache_dir=tmp_path / "cache", shards=HUB_SHARDS)


def test_hub_undecodable_row_is_named(hub, tmp_path):
    numbers = list(range(1, N_IMAGES + 1))
    table = pa.table({
        "image": pa.array([{"bytes": b"not an image" if n == 3 else _jpeg(n),
                            "path": f"ILSVRC2012_val_{n:08d}.JPEG"} for n in numbers],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array([INDEX_OF_ID[GT_IDS[n - 1]] for n in numbers], pa.int64()),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    shard = ("data/validation-00000-of-00001.parquet",)
    hub.add_hub_file("ILSVRC/imagenet-1k", "main", shard[0], buffer.getvalue())
    with pytest.raises(ValueError, match=r"validation-00000-of-00001\.parquet\), row 2: cannot decode"):
        prepare_imagenet(tmp_path / "x.npz", per_class=N_PER_CLASS, cache_dir=tmp_path / "cache",
                         shards=shard)


def test_hub_rows_without_paths_get_row_order_ids(hub, tmp_path, caplog):
    numbers = list(range(1, N_IMAGES + 1))
    table = pa.table({
        "image": pa.array([{"bytes": _jpeg(n)} for n in numbers],
                          pa.struct([("bytes", pa.binary())])),
        "label": pa.array([INDEX_OF_ID[GT_IDS[n - 1]] for n in numbers], pa.int64()),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    shard = ("data/validation-00000-of-00001.parquet",)
    hub.add_hub_file("ILSVRC/imagenet-1k", "main", shard[0], buffer.getvalue())
    with caplog.at_level(logging.WARNING, logger="motalign.datasets.imagenet"):
        info = prepare_imagenet(tmp_path / "x.npz", per_class=2,
                                cache_dir=tmp_path / "cache", shards=shard)
    assert info["ids_from"] == "row_order"
    _check_images(_load(tmp_path / "x.npz"))
    assert any("row order" in r.getMessage() for r in caplog.records)
