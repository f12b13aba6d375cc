"""Activation store and atomic writes."""

import numpy as np
import pytest

from motalign.io.atomic import atomic_path
from motalign.io.store import ActivationStore, CorruptFileError, load_network, write_activations


def test_round_trip_metadata_and_lazy_layers(tmp_path, rng):
    layers = {"block_01": rng.standard_normal((5, 3)).astype(np.float32),
              "block_02": rng.standard_normal((5, 4))}
    path = tmp_path / "a.npz"
    write_activations(path, layers, stimulus_ids=[f"s{i}" for i in range(5)],
                      metadata={"model": "tiny", "revision": "step4"})
    with ActivationStore(path) as store:
        assert store.layer_names == ("block_01", "block_02")
        assert store.widths == (3, 4)
        assert store.metadata["model"] == "tiny" and store.metadata["revision"] == "step4"
        assert store.metadata["dtypes"] == ["float32", "float64"]
        np.testing.assert_array_equal(store.layer("block_02"), layers["block_02"])
        np.testing.assert_array_equal(store.layer(0, rows=[4, 1]), layers["block_01"][[4, 1]])
        assert list(store.stimulus_ids) == ["s0", "s1", "s2", "s3", "s4"]
        store.verify()
        with pytest.raises(KeyError, match="no layer 'nope'"):
            store.layer("nope")


def test_reading_one_layer_reads_only_that_member(tmp_path, rng, monkeypatch):
    path = tmp_path / "a.npz"
    write_activations(path, {f"l{i}": rng.standard_normal((4, 2)) for i in range(3)},
                      stimulus_ids=list("abcd"))
    store = ActivationStore(path)
    opened = []
    real_open = store._npz.zip.open
    monkeypatch.setattr(store._npz.zip, "open", lambda name, *a, **k: opened.append(name) or real_open(name, *a, **k))
    store.layer(2)
    assert opened == ["layer_002.npy"]


def test_bad_layers_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(ValueError, match=r"layer 'x' has shape \(3, 2\), expected \(4, n_units\)"):
        write_activations(path, {"x": np.zeros((3, 2))}, stimulus_ids=list("abcd"))
    with pytest.raises(ValueError, match="1 non-finite"):
        write_activations(path, {"x": np.array([[np.nan], [0.0]])}, stimulus_ids=list("ab"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_unreadable_store_names_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a readable activation store"):
        ActivationStore(bad)


def test_a_missing_store_is_named(tmp_path):
    with pytest.raises(CorruptFileError, match="nope.npz: not a readable activation store: no such file"):
        ActivationStore(tmp_path / "nope.npz")


def test_checksums_are_verified_on_request_and_finiteness_always(tmp_path, rng):
    path = tmp_path / "a.npz"
    write_activations(path, {"l0": rng.standard_normal((4, 2)), "l1": rng.standard_normal((4, 3))},
                      stimulus_ids=list("abcd"), metadata={"name": "net"})
    with np.load(path) as data:
        members = {k: data[k] for k in data.files}
    members["layer_001"] = members["layer_001"] * 2  # finite, but not what was written
    np.savez(path, **members)
    with ActivationStore(path) as store:
        np.testing.assert_array_equal(store.layer("l1"), members["layer_001"])  # no checksum asked for
        with pytest.raises(CorruptFileError, match=r"a.npz: layer 'l1' \(network net\): checksum mismatch"):
            store.verify()
    np.testing.assert_array_equal(load_network(path, verify=False)[0][1], members["layer_001"])
    with pytest.raises(CorruptFileError, match="checksum mismatch"):
        load_network(path)  # verifies by default
    members["layer_000"][1, 1] = np.inf
    np.savez(path, **members)
    with ActivationStore(path) as store, pytest.raises(CorruptFileError, match="'l0' .* 1 non-finite"):
        store.layer(0, rows=[0])
    assert issubclass(CorruptFileError, ValueError)
