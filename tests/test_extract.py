"""Activation extraction (SPEC §2) on tiny trained models loaded by path, like hub models."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import motalign.models.extract as ex  # noqa: E402
from motalign.models.extract import hidden_state_names, image_activations, text_activations  # noqa: E402
from motalign.models.tiny import TEXT_FAMILIES, train_text_model, train_vision_model  # noqa: E402

SENTENCES = [
    "a green kite", "the miller grinds corn at dawn while the village sleeps",
    "rain", "four old sailors mend a torn net on the pier",
    "the choir sings", "a heron stands in the shallow reeds by the mill pond",
    "bright lamps", "the blacksmith hammers a horseshoe on his anvil",
    "we climb the hill", "an owl calls from the chestnut tree behind the church",
    "the ferry is late", "the shepherd counts his sheep before the gate closes",
    "cold tea", "a young painter sketches boats in the evening harbour light",
    "the bell rings", "my cousin repairs clocks in a shop near the station",
    "the fog lifts", "three geese fly low over the flooded meadow",
    "salt and bread", "the weaver sells blankets at the autumn fair",
    "the path bends", "a beekeeper lifts the lid of the humming hive",
    "dry leaves", "the captain studies the chart by candle light",
    "the dog barks", "an old woman feeds pigeons in the square",
    "snow falls", "the carpenter measures the oak plank twice",
    "the gate creaks", "a fisherman sells mackerel from a wooden crate",
    "warm soup", "the teacher reads a poem about the sea",
    "the moon rises", "two brothers plough the field behind the farm",
    "ripe plums", "the guard lights the lamp at the castle gate",
    "the stream runs", "a merchant weighs saffron on brass scales",
    "the bread rises", "the postman whistles along the muddy lane",
]
LONG = " ".join(SENTENCES[1::2])  # far longer than any single prompt
TEXT_ARCH = {
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64),
}
ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract_text")
    for family in TEXT_FAMILIES:
        ckpt = [0] if family == "gpt_neox" else None
        train_text_model(family, TEXT_ARCH[family], SENTENCES, root / family, steps=20,
                         checkpoint_steps=ckpt)
    return root


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("extract_vision")
    labels = np.arange(len(images)) % 3
    train_vision_model("dinov2", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
                       images, labels, root / "dinov2", steps=15)
    train_vision_model("vit_mae", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                       intermediate_size=64), images, None, root / "vit_mae", steps=15)
    return root


def _assert_all_close(a, b, atol=ATOL):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


def _load_text(path):
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    return tok, model


# ------------------------------------------------------------------ names


def test_hidden_state_names():
    assert hidden_state_names(1) == ["embeddings"]
    assert hidden_state_names(4) == ["embeddings", "block_01", "block_02", "block_03"]
    assert hidden_state_names(41)[-1] == "block_40"
    with pytest.raises(ValueError):
        hidden_state_names(0)


# ------------------------------------------------------------------ text


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_shapes_and_batch_invariance(text_models, family):
    path = text_models / family
    arch = TEXT_ARCH[family]
    one = text_activations(path, SENTENCES, batch_size=1)
    assert len(one) == arch["num_hidden_layers"] + 1
    for a in one:
        assert a.shape == (len(SENTENCES), arch["hidden_size"]) and a.dtype == np.float32
        assert np.isfinite(a).all()
    _assert_all_close(text_activations(str(path), SENTENCES, batch_size=32), one)
    _assert_all_close(text_activations(path, SENTENCES, batch_size=7, progress=True), one)
    # layers really differ from each other (not the same array repeated)
    assert not np.allclose(one[0], one[-1])


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_padding_does_not_change_a_prompt(text_models, family):
    path = text_models / family
    short = SENTENCES[0]
    alone = text_activations(path, [short])
    padded = text_activations(path, [short, LONG], batch_size=2)  # short gets many pad tokens
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert len(tok(LONG)["input_ids"]) > 5 * len(tok(short)["input_ids"])
    _assert_all_close([p[:1] for p in padded], alone)
    # left padding (with mask-derived positions) gives the same numbers as right padding
    tok, model = _load_text(path)
    right = ex._text_activations_loaded(model, tok, [short, LONG, SENTENCES[3]], padding_side="right")
    left = ex._text_activations_loaded(model, tok, [short, LONG, SENTENCES[3]], padding_side="left")
    _assert_all_close(left, right)


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_mean_matches_manual_computation(text_models, family):
    path = text_models / family
    tok, model = _load_text(path)
    prompt = SENTENCES[5]
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    manual = [h[0].mean(dim=0).numpy() for h in hs]
    got = text_activations(path, [SENTENCES[4], prompt, LONG], batch_size=3)
    _assert_all_close([g[1] for g in got], manual)
    # the mean is over tokens, not e.g. the last token only
    assert not np.allclose(got[-1][1], hs[-1][0, -1].numpy(), atol=1e-3)


def test_truncation_to_max_length(text_models):
    path = text_models / "llama"
    tok, model = _load_text(path)
    enc = tok(LONG, return_tensors="pt")
    with torch.no_grad():
        hs = model(input_ids=enc["input_ids"][:, :6], output_hidden_states=True).hidden_states
    got = text_activations(path, [LONG, SENTENCES[0]], max_length=6)
    _assert_all_close([g[0] for g in got], [h[0].mean(0).numpy() for h in hs])


def test_missing_pad_token_falls_back_to_eos(text_models):
    tok, model = _load_text(text_models / "qwen2")
    reference = ex._text_activations_loaded(model, tok, SENTENCES[:6], batch_size=3)
    tok.pad_token = None
    assert tok.pad_token is None
    got = ex._text_activations_loaded(model, tok, SENTENCES[:6], batch_size=3)
    assert tok.pad_token == tok.eos_token
    _assert_all_close(got, reference)


def test_local_revision_is_a_subfolder(text_models):
    path = text_models / "gpt_neox"
    final = text_activations(path, SENTENCES[:6])
    step0 = text_activations(path, SENTENCES[:6], revision="step0")
    direct = text_activations(path / "step0", SENTENCES[:6])
    _assert_all_close(step0, direct, atol=0)
    assert not np.allclose(step0[-1], final[-1], atol=1e-3)
    with pytest.raises(ValueError, match=r"step7.*step0"):
        text_activations(path, SENTENCES[:2], revision="step7")


def test_text_argument_errors(text_models):
    path = text_models / "llama"
    with pytest.raises(TypeError):
        text_activations(path, "a single string")
    with pytest.raises(ValueError, match="empty"):
        text_activations(path, [])
    with pytest.raises(ValueError, match="indices"):
        text_activations(path, ["fine", ""])
    with pytest.raises(ValueError, match="batch_size"):
        text_activations(path, ["fine"], batch_size=0)


# ------------------------------------------------------------------ errors and hub ids


def test_nonexistent_path_is_a_value_error_naming_it(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ValueError, match="no_such_model"):
        text_activations(missing, ["hello"])
    with pytest.raises(ValueError, match="no_such_model"):
        image_activations(str(missing), np.zeros((1, 8, 8, 3), np.uint8))
    for bad in ("./models/nope", "a/b/c", "../up", "/abs/path/model", "has space/model"):
        with pytest.raises(ValueError, match="plausible"):
            text_activations(bad, ["hello"])
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"")
    with pytest.raises(ValueError, match="file"):
        text_activations(afile, ["hello"])


def test_hub_ids_are_recognised():
    for good in ("EleutherAI/pythia-14m-seed1", "facebook/dinov2-small", "Qwen/Qwen2.5-0.5B", "gpt2"):
        assert ex._is_plausible_hub_id(good)
    name, rev, local = ex._resolve("EleutherAI/pythia-14m-seed1", "step1000")
    assert (name, rev, local) == ("EleutherAI/pythia-14m-seed1", "step1000", False)


def test_hub_load_errors_mention_token_and_access_page():
    class Gated:
        @staticmethod
        def from_pretrained(name, **kwargs):
            raise OSError(f"You are trying to access a gated repo. Access to model {name} is restricted.")

    with pytest.raises(OSError) as info:
        ex._load(Gated, "meta-llama/Llama-3.2-1B", "main", False)
    msg = str(info.value)
    assert "HF_TOKEN" in msg and "https://huggingface.co/meta-llama/Llama-3.2-1B" in msg
    assert "gated repo" in msg  # the original reason is kept
    assert isinstance(info.value.__cause__, OSError)


def test_unreachable_hub_id_fails_fast_offline(monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="HF_TOKEN"):
        text_activations("motalign-tests/surely-not-cached", ["hello"])


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("family", ["dinov2", "vit_mae"])
def test_image_shapes_and_batch_invariance(vision_models, images, family):
    path = vision_models / family
    n_layers = json.loads((path / "config.json").read_text())["num_hidden_layers"]
    one = image_activations(path, images, batch_size=1)
    assert len(one) == n_layers + 1
    for a in one:
        assert a.shape == (len(images), 32) and a.dtype == np.float32 and np.isfinite(a).all()
    _assert_all_close(image_activations(path, images, batch_size=32), one)
    _assert_all_close(image_activations(path, images, batch_size=5, progress=True), one)


def test_vit_mae_is_unmasked_deterministic_and_ignores_saved_mask_ratio(vision_models, images, tmp_path):
    path = vision_models / "vit_mae"
    assert json.loads((path / "config.json").read_text())["mask_ratio"] == 0.75
    a = image_activations(path, images, batch_size=8)
    b = image_activations(path, images, batch_size=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # bit for bit: no random shuffle / masking
    # whatever the saved mask ratio, the result is the same
    other = tmp_path / "vit_mae_other_ratio"
    shutil.copytree(path, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["mask_ratio"] = 0.3
    (other / "config.json").write_text(json.dumps(cfg))
    _assert_all_close(image_activations(other, images, batch_size=8), a, atol=0)
    assert json.loads((path / "config.json").read_text())["mask_ratio"] == 0.75  # untouched on disk

    # manual check: all 16 patches present; the mean does not depend on patch order
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, mask_ratio=0.0).eval()
    pixels = processor(images=list(images[:4]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True,
                    noise=torch.rand(4, 16, generator=torch.Generator().manual_seed(0)))
    assert out.hidden_states[0].shape[1] == 1 + 16
    assert out.mask.sum() == 0
    manual = [h[:, 1:].mean(1).numpy() for h in out.hidden_states]
    _assert_all_close([x[:4] for x in a], manual)
    # whereas the default (masked) model sees only a quarter of the patches
    masked = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        assert masked(pixel_values=pixels).last_hidden_state.shape[1] == 1 + 4


def test_dinov2_patch_mean_excludes_cls(vision_models, images):
    path = vision_models / "dinov2"
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    pixels = processor(images=list(images[:5]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hs = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert hs[0].shape[1] == 1 + 16
    got = image_activations(path, images[:5])
    _assert_all_close(got, [h[:, 1:].mean(1).numpy() for h in hs])
    assert not np.allclose(got[-1], hs[-1].mean(1).numpy(), atol=1e-4)  # CLS would change it


def test_register_tokens_are_excluded(tmp_path, images):
    config = transformers.Dinov2WithRegistersConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        mlp_ratio=2, num_register_tokens=4)
    torch.manual_seed(0)
    model = transformers.Dinov2WithRegistersModel(config).eval()
    with torch.no_grad():  # make the registers stand out, so including them would show
        model.embeddings.register_tokens.normal_(0, 5.0)
    model.save_pretrained(tmp_path / "reg")
    from motalign.models.tiny import _image_processor

    _image_processor("dinov2", 32).save_pretrained(tmp_path / "reg")
    got = image_activations(tmp_path / "reg", images[:6], batch_size=4)
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "reg")
    pixels = processor(images=list(images[:6]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hs = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert hs[0].shape[1] == 1 + 4 + 16
    _assert_all_close(got, [h[:, 5:].mean(1).numpy() for h in hs])
    assert not np.allclose(got[0], hs[0][:, 1:].mean(1).numpy(), atol=1e-3)


def test_image_argument_errors(vision_models, images):
    path = vision_models / "dinov2"
    with pytest.raises(ValueError, match="uint8"):
        image_activations(path, images.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        image_activations(path, images[..., 0])
    with pytest.raises(ValueError, match="empty"):
        image_activations(path, images[:0])


def test_timm_names_need_timm(images):
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install timm"):
            image_activations("timm/vit_small_patch14_dinov2.lvd142m", images[:2])
    else:
        pytest.skip("timm is installed; its hub models cannot be fetched offline")
