"""Provenance (issue #12, item 4): the weights of every activation file, the source and
content digest of every stimuli file, and the run's provenance document."""

import hashlib
import json
import logging

import numpy as np
import pytest

import motalign.models.extract as extract
from motalign.datasets.builtin import stimuli_digests
from motalign.datasets.download import provenance_path
from motalign.datasets.stimuli import prepare_stimuli
from motalign.io.atomic import save_npz
from motalign.io.store import write_activations
from motalign.models.extract import (
    branch_revision_warning,
    hub_snapshot_commit,
    weights_digest,
    weights_provenance,
)
from motalign.workflow.provenance import git_state, run_provenance, write_run_provenance

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
SENTENCES = [f"sentence number {i} about the mill" for i in range(12)]


# --------------------------------------------------------------------------- weights


def _folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "step0").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights-a")
    (folder / "extra.bin").write_bytes(b"weights-b")
    (folder / "config.json").write_text("{}")
    (folder / "step0" / "model.safetensors").write_bytes(b"checkpoint")
    return folder


def test_local_digest_is_deterministic_and_follows_the_weight_files(tmp_path):
    folder = _folder(tmp_path)
    digest, files = weights_digest(folder)
    assert list(files) == ["extra.bin", "model.safetensors"]  # sorted; config and sub-folders not
    assert files["model.safetensors"] == hashlib.sha256(b"weights-a").hexdigest()
    expected = hashlib.sha256(
        f"extra.bin\0{files['extra.bin']}\nmodel.safetensors\0{files['model.safetensors']}\n".encode()
    ).hexdigest()
    assert digest == expected and weights_digest(folder)[0] == digest

    (folder / "config.json").write_text('{"changed": true}')  # not a weight file
    (folder / "step0" / "model.safetensors").write_bytes(b"other checkpoint")  # another revision
    assert weights_digest(folder)[0] == digest
    (folder / "model.safetensors").write_bytes(b"weights-A")
    assert weights_digest(folder)[0] != digest
    (folder / "model.safetensors").write_bytes(b"weights-a")
    (folder / "model.safetensors").rename(folder / "renamed.safetensors")
    assert weights_digest(folder)[0] != digest


def test_local_provenance_digests_the_revision_folder(tmp_path):
    folder = _folder(tmp_path)
    top = weights_provenance(folder)
    assert top["kind"] == "local" and top["sha256"] == weights_digest(folder)[0] and top["revision"] is None
    step0 = weights_provenance(folder, "step0")
    assert step0["path"] == str(folder / "step0") and step0["sha256"] == weights_digest(folder / "step0")[0]
    assert branch_revision_warning("models.x.revision", top) is None


def _hub_cache(root, repo_id="org/name", refs=None, snapshots=(COMMIT,)):
    """A hub cache in huggingface_hub's layout: models--org--name/{refs,snapshots}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for commit in snapshots:
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref, commit in (refs or {}).items():
        (repo / "refs" / ref).write_text(commit)
    return root


def test_hub_commit_from_the_snapshot_layout(tmp_path):
    cache = _hub_cache(tmp_path, refs={"main": COMMIT, "v1.0": OTHER}, snapshots=(COMMIT, OTHER))
    assert hub_snapshot_commit("org/name", "main", cache_dir=cache) == COMMIT
    assert hub_snapshot_commit("org/name", None, cache_dir=cache) == COMMIT  # None is the default branch
    assert hub_snapshot_commit("org/name", "v1.0", cache_dir=cache) == OTHER
    assert hub_snapshot_commit("org/name", OTHER, cache_dir=cache) == OTHER  # a commit is its snapshot
    assert hub_snapshot_commit("org/name", "a" * 40, cache_dir=cache) is None
    assert hub_snapshot_commit("org/name", "dev", cache_dir=cache) is None
    assert hub_snapshot_commit("org/other", "main", cache_dir=cache) is None


def test_hub_provenance_and_the_branch_revision_warning(tmp_path, monkeypatch):
    cache = _hub_cache(tmp_path / "hub", refs={"main": COMMIT})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # no local folder named org/name
    weights = weights_provenance("org/name", "main", cache_dir=cache)
    assert weights == {"kind": "hub", "id": "org/name", "revision": "main", "commit": COMMIT}
    message = branch_revision_warning("models.qwen.revision", weights)
    assert message == (f"models.qwen.revision is 'main'; this run used commit {COMMIT} -- pin it "
                       f"(models.qwen.revision: {COMMIT})")
    unset = branch_revision_warning("models.qwen.revision", {**weights, "revision": None})
    assert "not set" in unset and COMMIT in unset
    unresolved = branch_revision_warning("models.qwen.revision", {**weights, "commit": None})
    assert "not in the hub cache" in unresolved
    pinned = weights_provenance("org/name", COMMIT, cache_dir=cache)
    assert pinned["commit"] == COMMIT and branch_revision_warning("models.qwen.revision", pinned) is None
    timm = weights_provenance("hf-hub:org/name", cache_dir=cache)
    assert timm["id"] == "org/name" and timm["commit"] == COMMIT


def test_extraction_warns_on_a_branch_revision_of_a_faked_hub_model(tmp_path, monkeypatch, caplog):
    """extract_activations on a hub id whose snapshot sits in a faked hub cache (the loading
    is replaced: no network, no weights): the warning names the commit, the store records it."""
    from motalign.workflow import model_jobs

    cache = _hub_cache(tmp_path / "hub", refs={"main": COMMIT})
    monkeypatch.setattr(extract, "_hub_cache_dir", lambda: cache)
    monkeypatch.setattr(extract, "text_activations", lambda *a, **k: [np.ones((12, 3), np.float32)] * 3)
    monkeypatch.chdir(tmp_path)
    stimuli = tmp_path / "s.npz"
    save_npz(stimuli, ids=np.array([f"s{i}" for i in range(12)]), sentences=np.array(SENTENCES))
    out = tmp_path / "act.npz"
    with caplog.at_level(logging.WARNING, logger="motalign.workflow.model_jobs"):
        summary = model_jobs.extract_activations(
            {"modality": "text", "revision": "main"}, "org/name", stimuli, out, revision="main",
            include_embeddings=False, batch_size=4, device="cpu", meta={"name": "qwen", "dataset": "s"})
    assert summary["weights"]["commit"] == COMMIT
    assert any(f"models.qwen.revision is 'main'; this run used commit {COMMIT}" in r.getMessage()
               for r in caplog.records)
    provenance = run_provenance(activations=[out], stimuli=[])
    assert provenance["activations"][str(out)]["weights"]["commit"] == COMMIT


def test_extracted_store_records_the_tiny_models_weights(tmp_path):
    """A tiny model trained here, extracted by the workflow's job function: the store's
    metadata carries the local digest of the folder (and of a revision sub-folder)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from motalign.io.store import ActivationStore
    from motalign.models.tiny import train_text_model
    from motalign.workflow import model_jobs

    folder = tmp_path / "llama"
    train_text_model("llama", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=32),
                     SENTENCES, folder, steps=2, checkpoint_steps=[0])
    stimuli = tmp_path / "s.npz"
    save_npz(stimuli, ids=np.array([f"s{i}" for i in range(12)]), sentences=np.array(SENTENCES))
    settings = dict(include_embeddings=True, batch_size=8, device="cpu", meta={"name": "llama_s"})
    model = {"modality": "text"}
    for revision, weights_folder in ((None, folder), ("step0", folder / "step0")):
        out = tmp_path / f"{revision}.npz"
        model_jobs.extract_activations(model, folder, stimuli, out, revision=revision, **settings)
        with ActivationStore(out) as store:
            weights = store.metadata["weights"]
            software = store.metadata["software"]
        assert weights["kind"] == "local" and weights["revision"] == revision
        assert weights["sha256"] == weights_digest(weights_folder)[0]
        assert weights["files"] and all(name.endswith(".safetensors") for name in weights["files"])
        assert {"torch", "transformers"} <= set(software)
    assert weights_digest(folder)[0] != weights_digest(folder / "step0")[0]


# --------------------------------------------------------------------------- stimuli


def test_stimuli_digests_depend_on_the_content_only(tmp_path):
    ids, sentences = np.array(["a", "b"]), np.array(["one", "two"])
    save_npz(tmp_path / "a.npz", ids=ids, sentences=sentences)
    save_npz(tmp_path / "b.npz", sentences=sentences, ids=ids)
    save_npz(tmp_path / "c.npz", ids=ids, sentences=np.array(["one", "TWO"]))
    a, b, c = (stimuli_digests(tmp_path / f"{n}.npz") for n in "abc")
    assert a == b and a == stimuli_digests({"ids": ids, "sentences": sentences})
    assert set(a["arrays"]) == {"ids", "sentences"}
    assert c["content_sha256"] != a["content_sha256"] and c["arrays"]["ids"] == a["arrays"]["ids"]


def test_every_stimuli_file_gets_a_provenance_document(tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "sentences.npz"
    info = prepare_stimuli({"source": "file", "kind": "text", "path": str(text)}, out, name="sentences")
    written = json.loads(provenance_path(out).read_text())
    assert written == json.loads(json.dumps(info))
    assert written["source"] == "file" and written["path"] == str(text) and written["name"] == "sentences"
    assert written["file_sha256"] == hashlib.sha256(text.read_bytes()).hexdigest()
    assert written["content_sha256"] == stimuli_digests(out)["content_sha256"]

    sklearn = pytest.importorskip("sklearn")
    digits = tmp_path / "digits.npz"
    info = prepare_stimuli({"source": "sklearn_digits", "kind": "images", "n_images": 20, "image_size": 8},
                           digits, name="digits")
    assert info["source"] == "sklearn_digits" and info["sklearn_version"] == sklearn.__version__
    assert set(info["arrays"]) == {"ids", "images", "labels"}
    assert json.loads(provenance_path(digits).read_text())["content_sha256"] == info["content_sha256"]


# --------------------------------------------------------------------------- the run


def _store(path, weights, ids, dataset="d"):
    write_activations(path, {"block_01": np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2)},
                      stimulus_ids=ids, metadata={"name": path.stem, "dataset": dataset, "weights": weights})


def test_run_provenance_document(tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    stimuli = tmp_path / "stimuli.npz"
    recorded = prepare_stimuli({"source": "file", "kind": "text", "path": str(text)}, stimuli, name="d")
    ids = [f"s{i:05d}" for i in range(12)]
    local = {"kind": "local", "id": "m", "revision": None, "sha256": "ab" * 32}
    hub = {"kind": "hub", "id": "org/name", "revision": "main", "commit": COMMIT}
    tiny, qwen = tmp_path / "tiny.npz", tmp_path / "qwen.npz"
    _store(tiny, local, ids)
    _store(qwen, hub, ids)
    out = tmp_path / "results" / "provenance.json"
    summary = write_run_provenance(out, activations=[tiny, qwen], stimuli=[stimuli], repository=tmp_path)
    assert summary == {"stimuli": 1, "activations": 2, "git": None, "unpinned_hub_revisions": [str(qwen)]}

    document = json.loads(out.read_text())
    assert set(document) == {"created", "git", "python", "platform", "packages", "stimuli", "activations"}
    assert document["git"] is None  # tmp_path is no repository
    assert {"motalign", "numpy", "scipy"} <= set(document["packages"])
    entry = document["stimuli"][str(stimuli)]
    assert entry["content_sha256"] == recorded["content_sha256"] and entry["content_verified"] is True
    assert entry["file_sha256"] == recorded["file_sha256"]
    assert document["activations"][str(tiny)]["weights"] == local
    assert document["activations"][str(qwen)]["weights"] == hub
    assert "checksums" not in document["activations"][str(tiny)]
    # the activations' content digest: same content, same digest; other content, another
    assert document["activations"][str(tiny)]["content_sha256"] == document["activations"][str(qwen)]["content_sha256"]
    _store(qwen, hub, ids[::-1])
    again = run_provenance(activations=[tiny, qwen], stimuli=[stimuli])
    assert again["activations"][str(qwen)]["content_sha256"] != document["activations"][str(tiny)]["content_sha256"]

    # a stimuli file that changed after its provenance was written is flagged
    save_npz(stimuli, ids=np.array(ids), sentences=np.array(SENTENCES[::-1]))
    assert run_provenance(activations=[], stimuli=[stimuli])["stimuli"][str(stimuli)]["content_verified"] is False


def test_git_state_of_this_repository():
    from pathlib import Path

    state = git_state(Path(__file__).resolve().parents[1])
    if state is None:
        pytest.skip("not a git checkout (or no git)")
    assert len(state["commit"]) == 40 and state["dirty"] in (True, False)
