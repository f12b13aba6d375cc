"""Tiny trained models of the paper's families: saved like hub checkpoints, reproducible."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from motalign.models.extract import _image_activations_loaded, image_activations, text_activations  # noqa: E402
from motalign.models.tiny import (  # noqa: E402
    SUMMARY_FILE,
    TEXT_FAMILIES,
    VISION_FAMILIES,
    default_architecture,
    n_hidden_states,
    train_text_model,
    train_vision_model,
)

SENTENCES = [
    "the red fox jumps over the sleepy dog", "a small boat drifts across the quiet lake",
    "seven blue birds sing on the old fence", "my neighbour bakes bread every sunday morning",
    "the library opens late on rainy days", "children build castles from wet sand",
    "an orange cat sleeps beside the warm stove", "the train to the coast leaves at noon",
    "farmers harvest wheat before the storm arrives", "she painted the door a bright green",
    "two students argue about the final exam", "the river floods the lower fields each spring",
    "a tall lighthouse guards the rocky shore", "he forgot his umbrella at the station",
    "the baker sells warm rolls and sweet cakes", "fresh snow covers the mountain village",
    "the clock in the tower stopped at midnight", "bees collect pollen from the wild flowers",
    "our team won the match in the last minute", "the market is crowded on saturday",
    "a gentle wind moves the tall grass", "the old map shows a hidden valley",
    "grandmother tells stories about the war", "the museum displays ancient coins",
    "thunder rolls across the dark hills", "the chef tastes the soup with a wooden spoon",
    "a lost dog waits at the garden gate", "the pilot lands the plane in heavy fog",
    "students plant trees along the new road", "the violinist practises scales for hours",
    "waves crash against the stone harbour wall", "the mayor opens the bridge with a speech",
    "the kettle whistles in the small kitchen", "a fox hunts mice in the frozen field",
    "the doctor listens to the patient's heart", "lanterns glow along the narrow street",
    "the gardener waters roses in the evening", "a comet crosses the winter sky",
    "the poet writes a letter to the sea", "ice cracks under the heavy cart",
]
TEXT_ARCH = {
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}
VISION_ARCH = {
    "dinov2": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2),
    "vit_mae": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a busy 2-core box
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images[:160]  # 8 x 8, values 0..16
    x = np.kron(x, np.ones((4, 4)))  # 32 x 32
    x = np.round(x * (255 / 16)).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=-1), d.target[:160]


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_text")
    out = {}
    for family in TEXT_FAMILIES:
        ckpt = [0, 10] if family == "gpt_neox" else None
        summary = train_text_model(family, TEXT_ARCH[family], SENTENCES, root / family, steps=30,
                                   checkpoint_steps=ckpt)
        out[family] = (root / family, summary)
    return out


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory, digits):
    images, labels = digits
    root = tmp_path_factory.mktemp("tiny_vision")
    out = {}
    for family in VISION_FAMILIES:
        summary = train_vision_model(family, VISION_ARCH[family], images, labels, root / family,
                                     steps=30)
        out[family] = (root / family, summary)
    return out


def _leftovers(folder):
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


# ------------------------------------------------------------------ text


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_model_saved_like_a_hub_checkpoint(text_models, family):
    path, summary = text_models[family]
    arch = TEXT_ARCH[family]
    assert summary["family"] == family and summary["steps"] == 30
    assert summary["num_hidden_layers"] == arch["num_hidden_layers"]
    assert summary["final_loss"] < summary["initial_loss"]
    assert summary["n_parameters"] > 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", SUMMARY_FILE):
        assert (path / name).is_file(), name
    assert json.loads((path / SUMMARY_FILE).read_text())["family"] == family
    assert not _leftovers(path)
    config = transformers.AutoConfig.from_pretrained(path)
    assert config.model_type == family and config.hidden_size == arch["hidden_size"]
    # base model: every weight found (the LM head is the only unused tensor)
    model, info = transformers.AutoModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info.get("mismatched_keys")
    assert all("head" in k or "embed_out" in k for k in info["unexpected_keys"])
    # the saved folder is also a usable causal LM
    lm, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    acts = text_activations(path, SENTENCES[:5])
    assert len(acts) == n_hidden_states(family, arch) == arch["num_hidden_layers"] + 1
    assert all(a.shape == (5, arch["hidden_size"]) and a.dtype == np.float32 for a in acts)


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_tokenizer_round_trip(text_models, family):
    path, _ = text_models[family]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>"
    assert tok.bos_token == "<s>" and tok.unk_token == "<unk>"
    assert len(tok) <= 512
    text = "the quick fox reads a map"  # unseen words: byte-level BPE has no unknowns
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert (ids[0] == tok.bos_token_id) == (family == "llama")  # Llama prepends BOS


def test_loaded_weights_are_the_trained_ones(text_models):
    path, _ = text_models["llama"]
    a = text_activations(path, SENTENCES[:6])
    b = text_activations(path, SENTENCES[:6])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    config = transformers.AutoConfig.from_pretrained(path)
    torch.manual_seed(123)
    fresh = transformers.AutoModel.from_config(config).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        h = fresh(**tok(SENTENCES[0], return_tensors="pt"), output_hidden_states=True).hidden_states
    assert not np.allclose(h[-1][0].mean(0).numpy(), a[-1][0], atol=1e-3)


def test_checkpoint_steps_are_loadable_revisions(text_models):
    path, summary = text_models["gpt_neox"]
    assert summary["checkpoints"] == ["step0", "step10"]
    for name in summary["checkpoints"]:
        assert (path / name / "model.safetensors").is_file()
        assert (path / name / "tokenizer.json").is_file()
    final = text_activations(path, SENTENCES[:8])
    step0 = text_activations(path, SENTENCES[:8], revision="step0")
    step10 = text_activations(path, SENTENCES[:8], revision="step10")
    assert len(step0) == len(final)
    assert not np.allclose(step0[-1], final[-1], atol=1e-3)
    assert not np.allclose(step10[-1], final[-1], atol=1e-3)
    # language-model loss falls along the trajectory
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(SENTENCES, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    losses = []
    for sub in (path / "step0", path / "step10", path):
        lm = transformers.AutoModelForCausalLM.from_pretrained(sub).eval()
        with torch.no_grad():
            losses.append(float(lm(**enc, labels=labels).loss))
    assert losses[0] > losses[1] > losses[2]


def test_text_training_is_deterministic(tmp_path):
    arch = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=32)
    s1 = train_text_model("llama", arch, SENTENCES, tmp_path / "a", steps=8, seed=3)
    s2 = train_text_model("llama", arch, SENTENCES, tmp_path / "b", steps=8, seed=3)
    train_text_model("llama", arch, SENTENCES, tmp_path / "c", steps=8, seed=4, checkpoint_steps=[0])
    assert s1["final_loss"] == s2["final_loss"]
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    from safetensors.numpy import load_file

    wa, wb, wc = (load_file(tmp_path / n / "model.safetensors") for n in "abc")
    assert wa.keys() == wb.keys() == wc.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa)
    # step 0 is the untrained initialisation: equal to a 0-step run with the same seed
    s0 = train_text_model("llama", arch, SENTENCES, tmp_path / "d", steps=0, seed=4)
    assert s0["final_loss"] is None
    w0, wc0 = load_file(tmp_path / "d" / "model.safetensors"), load_file(tmp_path / "c" / "step0" / "model.safetensors")
    for k in w0:
        np.testing.assert_array_equal(w0[k], wc0[k])


def test_interrupted_training_leaves_nothing_and_success_replaces(tmp_path, monkeypatch):
    import motalign.models.tiny as tm

    arch = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=32)
    out = tmp_path / "model"
    real_save = tm._save_text
    calls = []

    def failing_save(model, tokenizer, folder):
        calls.append(folder)
        real_save(model, tokenizer, folder)
        if len(calls) == 2:  # after the step-0 checkpoint and the final weights
            raise KeyboardInterrupt

    monkeypatch.setattr(tm, "_save_text", failing_save)
    with pytest.raises(KeyboardInterrupt):
        train_text_model("qwen2", arch, SENTENCES, out, steps=3, checkpoint_steps=[0])
    assert not out.exists() and not _leftovers(out)
    monkeypatch.setattr(tm, "_save_text", real_save)

    out.mkdir()
    (out / "stale.txt").write_text("old")
    train_text_model("qwen2", arch, SENTENCES, out, steps=2)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert not _leftovers(out)


def test_text_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown family"):
        train_text_model("gpt2", {}, SENTENCES, tmp_path / "x")
    with pytest.raises(ValueError, match="checkpoint_steps"):
        train_text_model("llama", {}, SENTENCES, tmp_path / "x", steps=5, checkpoint_steps=[6])
    with pytest.raises(ValueError, match="sentences"):
        train_text_model("llama", {}, ["only one"], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_n_hidden_states_and_defaults():
    for family in TEXT_FAMILIES + VISION_FAMILIES:
        arch = default_architecture(family)
        assert n_hidden_states(family) == arch["num_hidden_layers"] + 1
        assert n_hidden_states(family, {"num_hidden_layers": 5}) == 6
        assert 32 <= arch["hidden_size"] <= 64 and 2 <= arch["num_hidden_layers"] <= 6
    with pytest.raises(ValueError):
        n_hidden_states("resnet")


# ------------------------------------------------------------------ vision


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_vision_model_saved_like_a_hub_checkpoint(vision_models, digits, family):
    path, summary = vision_models[family]
    arch = VISION_ARCH[family]
    images, _ = digits
    assert summary["final_loss"] < summary["initial_loss"]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", SUMMARY_FILE):
        assert (path / name).is_file(), name
    assert not _leftovers(path)
    config = json.loads((path / "config.json").read_text())
    assert config["image_size"] == 32 and config["patch_size"] == 8
    if family == "vit_mae":
        assert config["mask_ratio"] == 0.75  # the family default stays in the saved config
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    pixels = processor(images=list(images[:3]), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (3, 3, 32, 32)
    model, info = transformers.AutoModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info.get("mismatched_keys")
    assert all(k.startswith("decoder.") for k in info["unexpected_keys"])
    acts = image_activations(path, images[:10])
    assert len(acts) == n_hidden_states(family, arch) == arch["num_hidden_layers"] + 1
    assert all(a.shape == (10, arch["hidden_size"]) and a.dtype == np.float32 for a in acts)


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_vision_weights_are_the_trained_ones(vision_models, digits, family):
    path, _ = vision_models[family]
    images, _ = digits
    a = image_activations(path, images[:12])
    b = image_activations(path, images[:12])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    kwargs = {"mask_ratio": 0.0} if family == "vit_mae" else {}
    config = transformers.AutoConfig.from_pretrained(path, **kwargs)
    torch.manual_seed(321)
    fresh = transformers.AutoModel.from_config(config).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    r = _image_activations_loaded(fresh, processor, images[:12])
    assert not np.allclose(r[-1], a[-1], atol=1e-3)


def test_vision_training_is_deterministic(tmp_path, digits):
    images, labels = digits
    arch = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                decoder_hidden_size=16, decoder_intermediate_size=32, decoder_num_attention_heads=2)
    from safetensors.numpy import load_file

    for family in VISION_FAMILIES:
        a = dict(arch) if family == "vit_mae" else dict(hidden_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2)
        s1 = train_vision_model(family, a, images[:40], labels[:40], tmp_path / f"{family}1", steps=4, seed=1)
        s2 = train_vision_model(family, a, images[:40], labels[:40], tmp_path / f"{family}2", steps=4, seed=1)
        assert s1["final_loss"] == s2["final_loss"]
        w1 = load_file(tmp_path / f"{family}1" / "model.safetensors")
        w2 = load_file(tmp_path / f"{family}2" / "model.safetensors")
        for k in w1:
            np.testing.assert_array_equal(w1[k], w2[k])


def test_vision_argument_errors(tmp_path, digits):
    images, labels = digits
    with pytest.raises(ValueError, match="labels"):
        train_vision_model("dinov2", {}, images[:8], None, tmp_path / "x")
    with pytest.raises(ValueError, match="uint8"):
        train_vision_model("vit_mae", {}, images[:8].astype(np.float32), None, tmp_path / "x")
    with pytest.raises(ValueError, match="multiple"):
        train_vision_model("vit_mae", {}, images[:8], None, tmp_path / "x", patch_size=5)
    with pytest.raises(ValueError, match="unknown family"):
        train_vision_model("llama", {}, images[:8], None, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not os.listdir(tmp_path)
