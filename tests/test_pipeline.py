"""The workflow's job functions (motalign.workflow) and the files they exchange, outside
Snakemake."""

import csv

import numpy as np
import pytest

from motalign.datasets.builtin import prepare_digit_images, prepare_text_stimuli
from motalign.datasets.stimuli import prepare_stimuli
from motalign.io.stimuli import read_split, read_stimuli
from motalign.io.store import check_layer_count, check_same_stimuli, write_activations
from motalign.workflow.alignment_jobs import inner_shard, outer_alignment
from motalign.workflow.data_jobs import make_split, nsd_voxel_counts
from motalign.workflow.shards import read_shards


def test_digit_stimuli_are_class_balanced_and_seeded(tmp_path):
    out = tmp_path / "digits.npz"
    prepare_stimuli({"source": "sklearn_digits", "kind": "images", "n_images": 50, "image_size": 32}, out)
    data = read_stimuli(out)
    assert data["images"].shape == (50, 32, 32, 3) and data["images"].dtype == np.uint8
    assert np.bincount(data["labels"]).tolist() == [5] * 10
    again = tmp_path / "again.npz"
    prepare_digit_images(again, n_images=50, image_size=32, seed=0)
    np.testing.assert_array_equal(read_stimuli(again)["ids"], data["ids"])


def test_source_errors_name_the_config_key(tmp_path):
    with pytest.raises(ValueError, match=r"datasets\.imagenet\.archive: /nowhere/val\.tar does not exist"):
        prepare_stimuli({"source": "imagenet", "kind": "images", "archive": "/nowhere/val.tar"},
                        tmp_path / "x.npz", name="imagenet")
    with pytest.raises(ValueError, match=r"datasets\.odd\.source: unknown source 'ftp'"):
        prepare_stimuli({"source": "ftp", "kind": "text"}, tmp_path / "x.npz", name="odd")
    assert not list(tmp_path.iterdir())


def test_text_stimuli_are_deduplicated(tmp_path):
    source = tmp_path / "s.txt"
    source.write_text("\n".join(["a b", "c d", "", "a b"] + [f"line {i}" for i in range(10)]))
    summary = prepare_text_stimuli(source, tmp_path / "s.npz")
    assert summary["n_sentences"] == 12
    assert list(read_stimuli(tmp_path / "s.npz")["sentences"][:2]) == ["a b", "c d"]


def test_split_is_seeded_and_disjoint(tmp_path):
    out = tmp_path / "s.npz"
    prepare_digit_images(out, n_images=50, image_size=8)
    make_split(out, tmp_path / "a.npz", seed=3, fit_fraction=0.8)
    make_split(out, tmp_path / "b.npz", seed=3, fit_fraction=0.8)
    fit, held = read_split(tmp_path / "a.npz")
    np.testing.assert_array_equal(fit, read_split(tmp_path / "b.npz")[0])
    assert len(fit) == 40 and sorted(np.concatenate([fit, held]).tolist()) == list(range(50))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sharded_inner_ot_equals_one_fit(tmp_path, rng, n_jobs):
    from motalign import MOT

    ids = [f"s{i}" for i in range(60)]
    x = {f"x{i}": rng.standard_normal((60, w)) for i, w in enumerate([5, 7, 6])}
    y = {f"y{i}": rng.standard_normal((60, w)) for i, w in enumerate([4, 7])}
    write_activations(tmp_path / "x.npz", x, stimulus_ids=ids)
    write_activations(tmp_path / "y.npz", y, stimulus_ids=ids)
    stimuli = tmp_path / "stim.npz"
    np.savez(stimuli, ids=np.array(ids))
    make_split(stimuli, tmp_path / "split.npz", seed=0, fit_fraction=0.8)
    shards = [tmp_path / f"shard{k}.npz" for k in range(3)]
    for k, shard in enumerate(shards):
        inner_shard(tmp_path / "x.npz", tmp_path / "y.npz", tmp_path / "split.npz", shard,
                    shard=k, shard_size=2, rotation=False, mot={"n_jobs": n_jobs})
    result = outer_alignment(tmp_path / "x.npz", tmp_path / "y.npz", tmp_path / "split.npz",
                             shards, tmp_path / "o.npz", tmp_path / "o.json", rotation=False, seed=0)
    fit, held = read_split(tmp_path / "split.npz")
    direct = MOT(random_state=0).fit([a[fit] for a in x.values()], [a[fit] for a in y.values()])
    expected = direct.scores([a[held] for a in x.values()], [a[held] for a in y.values()])
    for name, value in expected.items():
        assert result["scores"][name] == pytest.approx(value, abs=1e-12)
    with pytest.raises(ValueError, match=r"layer pair \(2, 0\) appears in two shards"):
        read_shards([shards[2], shards[2]], 3, 2)
    with pytest.raises(ValueError, match="are in no shard"):
        read_shards(shards[:2], 3, 2)


@pytest.mark.parametrize("rotation", [False, True])
def test_outer_job_without_shards_runs_the_inner_level_itself(tmp_path, rng, rotation):
    """An outer-OT job given no shards (config inline_single_shard, a pair with one shard)
    writes what the inner-OT shard and the outer job write together."""
    ids = [f"s{i}" for i in range(80)]
    base = rng.standard_normal((80, 6))
    x = {f"x{i}": base @ rng.standard_normal((6, w)) + 0.3 * rng.standard_normal((80, w))
         for i, w in enumerate([5, 8, 6])}
    y = {f"y{i}": base @ rng.standard_normal((6, w)) + 0.3 * rng.standard_normal((80, w))
         for i, w in enumerate([7, 5])}
    write_activations(tmp_path / "x.npz", x, stimulus_ids=ids)
    write_activations(tmp_path / "y.npz", y, stimulus_ids=ids)
    np.savez(tmp_path / "stim.npz", ids=np.array(ids))
    make_split(tmp_path / "stim.npz", tmp_path / "split.npz", seed=1, fit_fraction=0.75)
    args = (tmp_path / "x.npz", tmp_path / "y.npz", tmp_path / "split.npz")
    inner_shard(*args, tmp_path / "shard0.npz", shard=0, shard_size=6, rotation=rotation)
    sharded = outer_alignment(*args, [tmp_path / "shard0.npz"], tmp_path / "a.npz", tmp_path / "a.json",
                              rotation=rotation, seed=2)
    inline = outer_alignment(*args, [], tmp_path / "b.npz", tmp_path / "b.json", rotation=rotation, seed=2)
    assert inline["objective"] == pytest.approx(sharded["objective"], abs=1e-12)
    for name, value in sharded["scores"].items():
        assert inline["scores"][name] == pytest.approx(value, abs=1e-10)
    assert inline["hierarchy"] == pytest.approx(sharded["hierarchy"], abs=1e-12)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_allclose(b[key], a[key], atol=1e-12, err_msg=key)


def test_sinkhorn_shards_record_their_certified_gap(tmp_path, rng):
    ids = [f"s{i}" for i in range(80)]
    base = rng.standard_normal((80, 12))
    write_activations(tmp_path / "x.npz", {"a": base, "b": rng.standard_normal((80, 16))}, stimulus_ids=ids)
    write_activations(tmp_path / "y.npz", {"a": base[:, ::-1] + 0.1 * rng.standard_normal((80, 12)),
                                           "b": rng.standard_normal((80, 16))}, stimulus_ids=ids)
    np.savez(tmp_path / "stim.npz", ids=np.array(ids))
    make_split(tmp_path / "stim.npz", tmp_path / "split.npz", seed=0, fit_fraction=0.8)
    results = {}
    for solver in ("exact", "sinkhorn"):
        shard = tmp_path / f"{solver}.npz"
        info = inner_shard(tmp_path / "x.npz", tmp_path / "y.npz", tmp_path / "split.npz", shard,
                           shard=0, shard_size=4, rotation=False,
                           mot={"solver": solver, "device": "cpu"})
        assert info["solver"] == solver and info["pairs"] == 4
        results[solver] = outer_alignment(
            tmp_path / "x.npz", tmp_path / "y.npz", tmp_path / "split.npz", [shard],
            tmp_path / f"{solver}_o.npz", tmp_path / f"{solver}_o.json", rotation=False, seed=0,
            mot={"solver": solver, "device": "cpu"})
    assert results["exact"]["inner_gap_bound_max"] == 0
    assert 0 < results["sinkhorn"]["inner_gap_bound_max"] < 5e-3
    assert results["sinkhorn"]["scores"]["mot"] == pytest.approx(results["exact"]["scores"]["mot"], abs=0.05)
    with np.load(tmp_path / "exact.npz") as e, np.load(tmp_path / "sinkhorn.npz") as s:
        assert np.all(s["cost"] - e["cost"] >= -1e-6)
        assert np.all(s["cost"] - e["cost"] <= s["gap_bound"] + 1e-6)


def test_networks_on_other_stimuli_are_refused(tmp_path, rng):
    write_activations(tmp_path / "x.npz", {"a": rng.standard_normal((4, 2))}, stimulus_ids=list("abcd"))
    write_activations(tmp_path / "y.npz", {"a": rng.standard_normal((4, 2))}, stimulus_ids=list("abdc"))
    with pytest.raises(ValueError, match="not recorded on the same stimuli"):
        check_same_stimuli(tmp_path / "x.npz", tmp_path / "y.npz")
    with pytest.raises(ValueError, match=r"holds 1 layers but the configuration declares 3 \(config key models: m\)"):
        check_layer_count(tmp_path / "x.npz", 3, "models: m")


def test_nsd_voxel_counts_report_kept_images_and_shared_voxels(tmp_path):
    rng = np.random.default_rng(0)
    layers = {"V4": rng.standard_normal((5, 3)), "ventral": rng.standard_normal((5, 4))}
    info = {"n_images": 5, "overlaps": {"V4": {"ventral": 2}}}
    write_activations(tmp_path / "subjA.npz", layers, stimulus_ids=[f"s{i}" for i in range(5)],
                      metadata={"subject": "subj01", "info": info})
    assert nsd_voxel_counts({"subjA": tmp_path / "subjA.npz"}, tmp_path / "counts.csv") == 2
    rows = list(csv.DictReader(open(tmp_path / "counts.csv")))
    assert [(r["region"], r["voxels"], r["shared_images_kept"], r["shared_voxels"]) for r in rows] == [
        ("V4", "3", "5", "ventral:2"), ("ventral", "4", "5", "V4:2")]
