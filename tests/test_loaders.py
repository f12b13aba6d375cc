"""Every file a workflow job reads is checked on load, and every problem is one ValueError
naming the file (and the network and layer where they apply).

A small valid workspace is made once with the real writers and jobs; each case copies it,
damages one file and runs the real job function on it."""

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motalign.io.readers import CorruptFileError
from motalign.io.stimuli import read_split
from motalign.io.store import ActivationStore, load_network, write_activations
from motalign.workflow import alignment_jobs as jobs
from motalign.workflow import reporting
from motalign.workflow.data_jobs import make_split

N = 24
IDS = [f"s{i:02d}" for i in range(N)]
CONFIG = {"seeds": [0], "models": {"a": {"label": "A"}, "b": {"label": "B"}}, "brains": {},
          "experiments": {"llm": {"dataset": "s", "methods": ["mot"], "pairs": [["a", "b"]]}}}
META = {"experiment": "llm", "method": "mot", "source": "a", "target": "b"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """x.npz (model 'llama'), y.npz (brain 'subj01'), stimuli, split, one shard with every
    layer pair, the outer result, the score table, two three-level blocks and their result."""
    d = tmp_path_factory.mktemp("pristine")
    rng = np.random.default_rng(0)
    write_activations(d / "x.npz", {"block_00": rng.standard_normal((N, 3)), "block_01": rng.standard_normal((N, 4))},
                      stimulus_ids=IDS, metadata={"name": "llama"})
    write_activations(d / "y.npz", {"V1": rng.standard_normal((N, 4)), "V2": rng.standard_normal((N, 3))},
                      stimulus_ids=IDS, metadata={"subject": "subj01", "source": "nsd"})
    np.savez(d / "stimuli.npz", ids=np.array(IDS))
    make_split(d / "stimuli.npz", d / "split.npz", seed=0, fit_fraction=0.75)
    jobs.inner_shard(d / "x.npz", d / "y.npz", d / "split.npz", d / "shard.npz", shard=0, shard_size=4, rotation=False)
    jobs.outer_alignment(d / "x.npz", d / "y.npz", d / "split.npz", [d / "shard.npz"], d / "outer.npz",
                         d / "outer.json", rotation=False, seed=0, meta=META)
    jobs.collect_scores([d / "outer.json"], d / "scores.csv")
    for k, source in enumerate(("x.npz", "y.npz")):
        jobs.three_level_block([d / source], [d / "x.npz", d / "y.npz"], d / f"block{k}.npz")
    jobs.three_level_finish([d / "block0.npz", d / "block1.npz"], d / "three.npz", d / "three.json",
                            source_revisions=["r0", "r1"], target_revisions=["r0", "r1"], meta=META)
    return d


# --------------------------------------------------------------------------- damage
def _members(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def rewrite(**changes):
    """Rewrite an .npz with members replaced (a function of the old member, or a value;
    None deletes it)."""
    def damage(path):
        members = _members(path)
        for key, change in changes.items():
            if change is None:
                members.pop(key)
            else:
                members[key] = change(members[key]) if callable(change) else change
        np.savez(path, **members)
    return damage


def with_nan(array):
    array = array.astype(float)
    array.flat[0] = np.nan
    return array


def metadata(**changes):
    return lambda meta: np.asarray(json.dumps({**json.loads(str(meta)), **changes}))


def flip_byte(member):
    """Flip the last data byte of one member, in place (the zip's CRC-32 no longer matches)."""
    def damage(path):
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{member}.npy")
        raw = bytearray(Path(path).read_bytes())
        at = info.header_offset  # local header: 30 bytes, then the name and the extra field
        name_length, extra_length = (int.from_bytes(raw[k:k + 2], "little") for k in (at + 26, at + 28))
        start = at + 30 + name_length + extra_length
        raw[start + info.file_size - 1] ^= 0xFF
        Path(path).write_bytes(bytes(raw))
    return damage


def truncate(path):
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[:len(raw) // 2])


def garbage(path):
    Path(path).write_bytes(b"\x00\x13 not a file the workflow wrote \xff" * 40)


def write_text(text):
    return lambda path: Path(path).write_text(text)


def edit_json(**changes):
    def damage(path):
        result = json.loads(Path(path).read_text())
        result.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del result[key]
        Path(path).write_text(json.dumps(result))
    return damage


def fewer_stimuli(path):
    store = ActivationStore(path)
    layers, meta = store.layers(), store.metadata
    store.close()
    write_activations(path, {k: v[:-1] for k, v in layers.items()}, stimulus_ids=IDS[:-1],
                      metadata={"subject": meta["subject"]})


def csv_cell(column, value):
    """Set one column of the first data row of a CSV."""
    def damage(path):
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        rows[0][column] = value
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return damage


PICKLED = np.array([{"evil": 1}] * 6, dtype=object)


# --------------------------------------------------------------------------- jobs
JOBS = {
    "inner_shard": lambda d: jobs.inner_shard(d / "x.npz", d / "y.npz", d / "split.npz", d / "new.npz", shard=0,
                                              shard_size=4, rotation=False),
    "outer_alignment": lambda d: jobs.outer_alignment(d / "x.npz", d / "y.npz", d / "split.npz", [d / "shard.npz"],
                                                      d / "o.npz", d / "o.json", rotation=False, seed=0),
    "subsample_alignment": lambda d: jobs.subsample_alignment(d / "x.npz", d / "y.npz", d / "split.npz", d / "s.json",
                                                              fraction=0.5, seed=0, rotation=False),
    "baseline": lambda d: jobs.baseline("linear_predictivity", [{"source": "a", "target": "b", "x_path": d / "x.npz",
                                                                 "y_path": d / "y.npz"}], d / "split.npz",
                                        d / "b.json", seed=0),
    "three_level_block": lambda d: jobs.three_level_block([d / "x.npz"], [d / "x.npz", d / "y.npz"], d / "blk.npz"),
    "three_level_finish": lambda d: jobs.three_level_finish([d / "block0.npz", d / "block1.npz"], d / "f.npz",
                                                            d / "f.json", source_revisions=["r0", "r1"],
                                                            target_revisions=["r0", "r1"]),
    "collect_scores": lambda d: jobs.collect_scores([d / "outer.json"], d / "c.csv"),
    "build_table": lambda d: reporting.build_table("table1", CONFIG, {"llm": d / "scores.csv"}),
    "mean_coupling": lambda d: reporting.mean_coupling([d / "outer.npz", d / "outer.npz"], "coupling_mot"),
    "pair_panels": lambda d: reporting.pair_panels(CONFIG, "llm", "a", "b", {"mot": [d / "outer.json"]},
                                                   {"mot": [d / "outer.npz"]}, [("MOT", "mot", "mot")]),
    "three_level_panels": lambda d: reporting.three_level_panels(d / "three.npz", d / "three.json", CONFIG),
    "make_split": lambda d: make_split(d / "stimuli.npz", d / "s2.npz", seed=0, fit_fraction=0.5),
}
ACTIVATION_JOBS = ["inner_shard", "outer_alignment", "subsample_alignment", "baseline", "three_level_block"]
LAYER = ["block_01", "network llama"]  # x.npz's layer_001

#: (file, damage, job, what the message must name besides the file)
CASES = {
    # activation and brain-response files
    **{f"nan-{job}": ("x.npz", rewrite(layer_001=with_nan), job, [*LAYER, "1 non-finite values", "delete the file"])
       for job in ACTIVATION_JOBS},
    **{f"checksum-{job}": ("x.npz", rewrite(layer_001=lambda a: a + 1.0), job, [*LAYER, "checksum mismatch"])
       for job in ACTIVATION_JOBS},
    "flipped-byte": ("x.npz", flip_byte("layer_001"), "inner_shard", [*LAYER, "cannot be read", "CRC"]),
    "truncated-store": ("x.npz", truncate, "inner_shard", ["not a readable activation store"]),
    "garbage-store": ("x.npz", garbage, "outer_alignment", ["not a readable activation store"]),
    "pickled-layer": ("x.npz", rewrite(layer_001=PICKLED), "inner_shard", [*LAYER, "pickled Python objects"]),
    "wrong-width": ("x.npz", rewrite(layer_001=np.zeros((N, 5))), "inner_shard", [*LAYER, "(24, 5)", "(24, 4)"]),
    "missing-layer": ("x.npz", rewrite(layer_001=None), "inner_shard", ["network llama", "layer_001", "missing"]),
    "metadata-widths": ("x.npz", rewrite(__metadata__=metadata(widths=[3])), "inner_shard",
                        ["network llama", "1 widths for 2 layers"]),
    "brain-nan": ("y.npz", rewrite(layer_000=with_nan), "subsample_alignment",
                  ["'V1'", "network subj01", "non-finite"]),
    "brain-other-stimuli": ("y.npz", fewer_stimuli, "inner_shard", ["x.npz", "network llama", "network subj01",
                                                                     "24 vs 23"]),
    "store-without-metadata": ("x.npz", rewrite(__metadata__=None), "baseline", ["not a readable activation store"]),
    # split files
    "split-garbage": ("split.npz", garbage, "inner_shard", ["not a readable split file"]),
    "split-truncated": ("split.npz", truncate, "outer_alignment", ["not a readable split file"]),
    "split-pickled": ("split.npz", rewrite(fit=PICKLED), "inner_shard", ["pickled Python objects"]),
    "split-out-of-range": ("split.npz", rewrite(held_out=lambda a: a + N), "subsample_alignment",
                           ["held_out indices reach", "x.npz", "network llama", "other stimuli"]),
    "split-negative": ("split.npz", rewrite(fit=lambda a: a - N), "inner_shard", ["negative"]),
    "split-overlap": ("split.npz", rewrite(held_out=lambda a: np.append(a, 0) if 0 not in a else a,
                                           fit=lambda a: np.append(a, 0) if 0 not in a else a),
                      "baseline", ["both fit and held out"]),
    "split-float": ("split.npz", rewrite(fit=lambda a: a.astype(float)), "inner_shard", ["float64", "integers"]),
    "split-2d": ("split.npz", rewrite(fit=lambda a: a[:, None]), "inner_shard", ["fit has shape"]),
    "split-missing": ("split.npz", rewrite(held_out=None), "outer_alignment", ["without the member(s) ['held_out']"]),
    "stimuli-garbage": ("stimuli.npz", garbage, "make_split", ["not a readable stimuli file"]),
    # inner-OT shards
    "shard-truncated": ("shard.npz", truncate, "outer_alignment", ["not a readable inner-OT shard"]),
    "shard-garbage": ("shard.npz", garbage, "outer_alignment", ["not a readable inner-OT shard"]),
    "shard-nan-cost": ("shard.npz", rewrite(cost=with_nan), "outer_alignment", ["cost has 1 non-finite"]),
    "shard-pickled": ("shard.npz", rewrite(cost=PICKLED), "outer_alignment", ["pickled Python objects"]),
    "shard-missing": ("shard.npz", rewrite(history_ptr=None), "outer_alignment", ["history_ptr"]),
    "shard-pair-range": ("shard.npz", rewrite(pairs=lambda a: a + 5), "outer_alignment", ["out of range"]),
    "shard-plan-shape": ("shard.npz", rewrite(shapes=lambda a: a + 1), "outer_alignment",
                         ["('block_00', 'V1')", "other activations"]),
    "shard-plan-index": ("shard.npz", rewrite(plan_row=lambda a: a + 99), "outer_alignment",
                         ["plan of layer pair (0, 0)", "damaged"]),
    "shard-ptr": ("shard.npz", rewrite(plan_ptr=lambda a: a[::-1]), "outer_alignment", ["plan_ptr"]),
    # three-level blocks and results
    "block-garbage": ("block1.npz", garbage, "three_level_finish", ["not a readable three-level block"]),
    "block-truncated": ("block0.npz", truncate, "three_level_finish", ["not a readable three-level block"]),
    "block-nan": ("block0.npz", rewrite(cost=with_nan), "three_level_finish", ["non-finite"]),
    "block-columns": ("block0.npz", rewrite(cost=np.zeros((1, 3))), "three_level_finish", ["(1, 3)"]),
    "block-missing": ("block1.npz", rewrite(cost=None), "three_level_finish", ["without the member(s) ['cost']"]),
    "three-level-garbage": ("three.npz", garbage, "three_level_panels", ["not a readable three-level result"]),
    "three-level-json": ("three.json", edit_json(source=None), "three_level_panels", ["without the key(s) ['source']"]),
    # outer results and score tables
    "outer-json-garbage": ("outer.json", write_text("{not json"), "collect_scores", ["not a readable result file"]),
    "outer-json-keys": ("outer.json", edit_json(objective=None), "collect_scores", ["['objective']"]),
    "outer-json-list": ("outer.json", write_text("[1, 2]"), "pair_panels", ["JSON list"]),
    "outer-npz-truncated": ("outer.npz", truncate, "mean_coupling", ["not a readable outer-OT result"]),
    "outer-npz-nan": ("outer.npz", rewrite(coupling_mot=with_nan), "mean_coupling", ["coupling_mot", "non-finite"]),
    "scores-number": ("scores.csv", csv_cell("score", "0.5x"), "build_table",
                      ["line 2: score = '0.5x' is not a number"]),
    "scores-column": ("scores.csv", lambda p: Path(p).write_text(Path(p).read_text().replace("score,", "scroe,", 1)),
                      "build_table", ["without the column(s) ['score']"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_file_is_one_error_naming_it(case, pristine, tmp_path):
    name, damage, job, names = CASES[case]
    d = tmp_path / "run"
    shutil.copytree(pristine, d)
    damage(d / name)
    with pytest.raises(ValueError) as caught:
        JOBS[job](d)
    message = str(caught.value)
    assert str(d / name) in message
    for fragment in names:
        assert fragment in message


def test_known_message_of_a_nan_layer(pristine, tmp_path):
    path = tmp_path / "x.npz"
    shutil.copy(pristine / "x.npz", path)
    rewrite(layer_001=lambda a: np.where(np.arange(a.size).reshape(a.shape) % 2, np.nan, a))(path)
    with pytest.raises(CorruptFileError) as caught:
        load_network(path)
    assert str(caught.value) == (f"{path}: layer 'block_01' (network llama) has 48 non-finite values; "
                                 "delete the file to have it recomputed")


def test_valid_files_load_as_written(pristine):
    with np.load(pristine / "x.npz") as raw, ActivationStore(pristine / "x.npz") as store:
        for i, name in enumerate(store.layer_names):
            np.testing.assert_array_equal(store.layer(name, verify=True), raw[f"layer_{i:03d}"])
    with np.load(pristine / "split.npz") as raw:
        fit, held = read_split(pristine / "split.npz", N)
        np.testing.assert_array_equal(fit, raw["fit"])
        np.testing.assert_array_equal(held, raw["held_out"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 40), data=st.data())
def test_split_indices_are_read_exactly_or_refused_with_the_path(tmp_path_factory, n, data):
    path = tmp_path_factory.mktemp("split") / "split.npz"
    order = np.array(data.draw(st.permutations(range(n))))
    n_fit = data.draw(st.integers(2, n - 2))
    fit, held = np.sort(order[:n_fit]), np.sort(order[n_fit:])
    np.savez(path, fit=fit, held_out=held, seed=np.array(0))
    got = read_split(path, n)
    np.testing.assert_array_equal(got[0], fit)
    np.testing.assert_array_equal(got[1], held)
    bad = data.draw(st.sampled_from(["range", "overlap", "duplicate"]))
    if bad == "range":
        held = np.append(held, n + data.draw(st.integers(0, 5)))
    elif bad == "overlap":
        held = np.append(held, fit[0])
    else:
        fit = np.append(fit, fit[-1])
    np.savez(path, fit=fit, held_out=held)
    with pytest.raises(CorruptFileError, match=str(path).replace("\\", "\\\\")):
        read_split(path, n)


@pytest.mark.parametrize("job", ["inner_shard", "outer_alignment", "subsample_alignment", "three_level_block"])
def test_every_mot_job_first_checks_its_device(job, tmp_path, monkeypatch):
    seen = []

    def refuse(device, key):
        seen.append((device, key))
        raise ValueError(f"{key}: no {device}")

    monkeypatch.setattr(jobs, "require_device", refuse)
    d = tmp_path  # no input files exist: the device is checked before any is read
    mot = {"device": "cuda", "solver": "exact"}
    calls = {
        "inner_shard": lambda: jobs.inner_shard(d / "x", d / "y", d / "s", d / "o", shard=0, shard_size=1,
                                                rotation=False, mot=mot),
        "outer_alignment": lambda: jobs.outer_alignment(d / "x", d / "y", d / "s", [], d / "o", d / "j",
                                                        rotation=False, seed=0, mot=mot),
        "subsample_alignment": lambda: jobs.subsample_alignment(d / "x", d / "y", d / "s", d / "o", fraction=0.5,
                                                                seed=0, rotation=False, mot=mot),
        "three_level_block": lambda: jobs.three_level_block([d / "x"], [d / "y"], d / "o", mot=mot),
    }
    with pytest.raises(ValueError, match="mot.device: no cuda"):
        calls[job]()
    assert seen == [("cuda", "mot.device")]
