"""Each vision model gets its own standard preprocessing of the ORIGINAL image.

ImageNet stimuli are stored as their original files (``image_bytes``/``image_offsets``,
:mod:`motalign.io.stimuli`) and decoded one batch at a time at extraction; each model's
own image processor then resizes and crops the original.  These tests pin that with the
processor configurations DINOv2 and ViT-MAE ship on the hub, real photographs of
non-square size (scikit-image's ``chelsea`` and ``coffee``), tiny random models of both
architectures, and a hook that captures the ``pixel_values`` the model is called with.
"""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")
skimage_data = pytest.importorskip("skimage.data")

from motalign.datasets.imagenet import prepare_imagenet  # noqa: E402
from motalign.io.atomic import save_npz  # noqa: E402
from motalign.io.stimuli import EncodedImages, read_stimuli, stimulus_payload  # noqa: E402
from motalign.models import extract  # noqa: E402
from motalign.workflow import model_jobs  # noqa: E402

# facebook/dinov2-small, preprocessor_config.json as published on the hub
# (https://huggingface.co/facebook/dinov2-small/raw/main/preprocessor_config.json; the same
# file ships with dinov2-base/-large/-giant): BitImageProcessor, shorter side resized to 256
# (resample 3 = bicubic), centre crop 224 x 224, ImageNet mean/std.
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
# facebook/vit-mae-base, preprocessor_config.json as published on the hub (217 bytes, last
# changed by commit 127ef37 "Remove feature_extractor_type";
# https://huggingface.co/facebook/vit-mae-base/blob/main/preprocessor_config.json).  It
# names no processor class: transformers picks ViTImageProcessor from config.json's
# model_type vit_mae, whose defaults add do_rescale (1/255) and read size 224 as 224 x 224:
# the whole image resized to 224 x 224 (resample 2 = bilinear), no crop, ImageNet mean/std.
VIT_MAE_PREPROCESSOR = {
    "_processor_class": None,
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "size": 224,
}
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=224, patch_size=32)


def _jpeg(array, quality=92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos():
    """Real photographs as JPEG files, of four different non-square sizes (H x W)."""
    chelsea, coffee = skimage_data.chelsea(), skimage_data.coffee()  # 300 x 451, 400 x 600
    arrays = [chelsea, coffee, coffee[:, 130:380], chelsea[40:290, 10:441]]  # + 400 x 250, 250 x 431
    return [_jpeg(np.ascontiguousarray(a)) for a in arrays]


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"))


def _encoded(files, ids=None):
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
    data = np.frombuffer(b"".join(files), dtype=np.uint8)
    return EncodedImages(data, offsets, ids=ids)


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory):
    """Tiny random DINOv2 and ViT-MAE folders holding the hub's preprocessor configs,
    loaded the way extraction loads them (AutoImageProcessor + AutoModel)."""
    root = tmp_path_factory.mktemp("hub_like")
    torch.manual_seed(0)
    models = {
        "dinov2": transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=2, **TINY)),
        "vit_mae": transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(
            intermediate_size=32, decoder_hidden_size=16, decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2, decoder_intermediate_size=32, **TINY)),
    }
    configs = {"dinov2": DINOV2_PREPROCESSOR, "vit_mae": VIT_MAE_PREPROCESSOR}
    loaded = {}
    for family, model in models.items():
        folder = root / family
        model.save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(configs[family], indent=2))
        processor, model, _ = extract._load_vision(folder, None, "cpu")
        assert processor.to_dict() == transformers.AutoImageProcessor.from_pretrained(folder).to_dict()
        loaded[family] = (processor, model, folder)
    return loaded


def _run_capturing(model, processor, images, batch_size=1):
    """Activations, and the pixel_values of every forward call."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]).detach().clone())

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = extract._image_activations_loaded(model, processor, images, batch_size=batch_size)
    finally:
        handle.remove()
    return out, seen


def _pillow_dinov2(original: np.ndarray) -> np.ndarray:
    """Independent reference of DINOv2's standard evaluation transform, with Pillow: shorter
    side to 256 (bicubic, the longer side truncated as transformers does), centre crop 224,
    scaled to 0..1 and normalised by the ImageNet mean/std.  3 x 224 x 224."""
    height, width = original.shape[:2]
    if width <= height:
        size = (256, int(256 * height / width))
    else:
        size = (int(256 * width / height), 256)
    resized = Image.fromarray(original).resize(size, Image.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float64) / 255
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


def _pillow_vit_mae(original: np.ndarray) -> np.ndarray:
    """Independent reference of ViT-MAE's: the whole image to 224 x 224 (bilinear)."""
    resized = np.asarray(Image.fromarray(original).resize((224, 224), Image.BILINEAR), dtype=np.float64) / 255
    return ((resized - MEAN) / STD).transpose(2, 0, 1)


def _old_pipeline(original: np.ndarray) -> np.ndarray:
    """What the stimuli used to hold: shorter side to 224 (bicubic), centre crop 224."""
    height, width = original.shape[:2]
    scale = 224 / min(height, width)
    size = (max(224, round(width * scale)), max(224, round(height * scale)))
    image = Image.fromarray(original).resize(size, Image.BICUBIC)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    return np.array(image.crop((left, top, left + 224, top + 224)))


# ------------------------------------------------------------------ (a) the standard pipelines


def test_hub_processor_configs_load_as_the_standard_processors(hub_like):
    dinov2, _, _ = hub_like["dinov2"]
    assert type(dinov2).__name__.startswith("BitImageProcessor")
    assert dict(dinov2.size) == {"shortest_edge": 256} and dict(dinov2.crop_size) == {"height": 224, "width": 224}
    assert dinov2.do_center_crop and int(dinov2.resample) == 3
    mae, _, _ = hub_like["vit_mae"]
    assert type(mae).__name__.startswith("ViTImageProcessor")
    assert dict(mae.size) == {"height": 224, "width": 224} and int(mae.resample) == 2
    assert not getattr(mae, "do_center_crop", False) and mae.do_rescale
    for processor in (dinov2, mae):
        assert list(processor.image_mean) == list(MEAN) and list(processor.image_std) == list(STD)


def test_dinov2_gets_resize_256_and_centre_crop_224_of_the_original(hub_like, photos):
    processor, model, _ = hub_like["dinov2"]
    for data in photos:
        original = _decoded(data)
        _, seen = _run_capturing(model, processor, _encoded([data], ids=np.array(["photo"])))
        (pixels,) = seen
        assert tuple(pixels.shape) == (1, 3, 224, 224)
        expected = processor(images=[original], return_tensors="pt")["pixel_values"]
        assert torch.equal(pixels, expected)  # exactly the processor's output for the original
        reference = _pillow_dinov2(original)  # and that is the standard transform, by Pillow
        diff = np.abs(pixels[0].numpy() - reference)
        # with the Pillow backend the two agree to float round-off; transformers' torchvision
        # backend rounds its bicubic kernel differently: up to 3 grey levels (of 255) a pixel
        assert diff.max() < 3 / 255 / STD.min() and diff.mean() < 1e-3, (original.shape, diff.max(), diff.mean())
        # not what a stored 224 crop gave: the same field of view, but resampled twice (the
        # central 196 px of the 224 crop upsampled to 224), so fine detail is lost
        stale = processor(images=[_old_pipeline(original)], return_tensors="pt")["pixel_values"]
        assert float((stale - pixels).abs().mean()) > 10 * diff.mean()


def test_vit_mae_gets_the_whole_original_resized_to_224(hub_like, photos):
    processor, model, _ = hub_like["vit_mae"]
    assert model.config.mask_ratio == 0.0
    for data in photos:
        original = _decoded(data)
        _, seen = _run_capturing(model, processor, _encoded([data]))
        (pixels,) = seen
        assert tuple(pixels.shape) == (1, 3, 224, 224)
        assert torch.equal(pixels, processor(images=[original], return_tensors="pt")["pixel_values"])
        diff = np.abs(pixels[0].numpy() - _pillow_vit_mae(original))
        assert diff.mean() < 0.02, (original.shape, diff.mean())
        # the whole image, squashed, not a centre crop of it
        cropped = processor(images=[_old_pipeline(original)], return_tensors="pt")["pixel_values"]
        assert float((cropped - pixels).abs().mean()) > 0.05


# ------------------------------------------------------------------ (b) ImageNet originals end to end


def test_imagenet_originals_reach_each_model_unchanged(hub_like, photos, tmp_path):
    archive = tmp_path / "ILSVRC2012_img_val.tar"
    with tarfile.open(archive, "w") as tar:
        for n, data in enumerate(photos, start=1):
            info = tarfile.TarInfo(f"val/ILSVRC2012_val_{n:08d}.JPEG")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n1\n0\n1\n")
    out = tmp_path / "imagenet.npz"
    prepare_imagenet(out, per_class=2, archive=archive, labels_file=labels)

    stimuli = read_stimuli(out)
    assert "images" not in stimuli
    images = stimulus_payload(stimuli)
    assert isinstance(images, EncodedImages) and len(images) == 4
    offsets = stimuli["image_offsets"]
    for k, data in enumerate(photos):
        stored = stimuli["image_bytes"][offsets[k]:offsets[k + 1]].tobytes()
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
        assert images[k].shape == _decoded(data).shape  # the original size
    for family in ("dinov2", "vit_mae"):
        processor, model, _ = hub_like[family]
        _, seen = _run_capturing(model, processor, images, batch_size=3)
        got = torch.cat(seen)
        expected = torch.cat([processor(images=[_decoded(d)], return_tensors="pt")["pixel_values"] for d in photos])
        assert torch.equal(got, expected), family


# ------------------------------------------------------------------ (c) batches of varying sizes


@pytest.mark.parametrize("family", ["dinov2", "vit_mae"])
def test_batched_extraction_over_varying_sizes_equals_one_by_one(hub_like, photos, family):
    processor, model, _ = hub_like[family]
    lazy = _encoded(photos)
    one = extract._image_activations_loaded(model, processor, lazy, batch_size=1)
    for batch_size, images in ((3, lazy), (4, lazy), (2, [_decoded(d) for d in photos])):
        got = extract._image_activations_loaded(model, processor, images, batch_size=batch_size)
        assert len(got) == len(one) == 2
        for a, b in zip(got, one):
            assert a.shape == (4, 16)
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_image_activations_from_a_folder_take_encoded_originals(hub_like, photos):
    _, _, folder = hub_like["dinov2"]
    lazy = _encoded(photos)
    a = extract.image_activations(folder, lazy, batch_size=2, device="cpu")
    b = extract.image_activations(folder, [_decoded(d) for d in photos], batch_size=4, device="cpu")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


def test_timm_backend_takes_the_lazy_sequence(photos, monkeypatch):
    timm = pytest.importorskip("timm")
    from motalign.models import timm_backend

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=0).eval()
    monkeypatch.setattr(timm_backend, "load_timm_model", lambda name, revision=None: model)
    lazy = _encoded(photos)
    a = timm_backend.timm_image_activations("local", lazy, batch_size=3, device="cpu")
    b = timm_backend.timm_image_activations("local", [_decoded(d) for d in photos], batch_size=1, device="cpu")
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x.shape == (4, 192)
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ formats and errors


def test_encoded_images_sequence(photos):
    ids = np.array([f"img{k}" for k in range(4)])
    images = _encoded(photos, ids=ids)
    assert len(images) == 4 and images.encoded(-1) == photos[-1]
    assert images[1].shape == (400, 600, 3) and images[1].dtype == np.uint8
    assert [im.shape for im in images[1:3]] == [(400, 600, 3), (400, 250, 3)]
    np.testing.assert_array_equal(images[-1], _decoded(photos[-1]))
    with pytest.raises(IndexError):
        images[4]
    with pytest.raises(TypeError):
        images[1.0]
    # greyscale and CMYK files decode to RGB
    grey = _jpeg(skimage_data.camera()[:100, :150])
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()[:60, :90]).convert("CMYK").save(buffer, format="JPEG")
    both = _encoded([grey, buffer.getvalue()])
    assert both[0].shape == (100, 150, 3) and both[1].shape == (60, 90, 3)
    assert np.array_equal(both[0][..., 0], both[0][..., 2])


def test_encoded_images_errors_name_the_stimulus(photos):
    broken = _encoded([photos[0], b"\xff\xd8 not a jpeg"], ids=np.array(["ILSVRC2012_val_1", "ILSVRC2012_val_2"]))
    with pytest.raises(ValueError, match="stimulus ILSVRC2012_val_2: cannot decode"):
        broken[1]
    data = np.frombuffer(photos[0], dtype=np.uint8)
    with pytest.raises(ValueError, match="end at len"):
        EncodedImages(data, np.array([0, 10]))
    with pytest.raises(ValueError, match="increase strictly"):
        EncodedImages(data, np.array([0, 0, data.size]))
    with pytest.raises(ValueError, match="1-D uint8"):
        EncodedImages(data.astype(np.int16), np.array([0, data.size]))
    with pytest.raises(ValueError, match="2 ids for 1"):
        EncodedImages(data, np.array([0, data.size]), ids=np.array(["a", "b"]))


def test_fixed_size_images_are_passed_through_unchanged():
    images = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    stimuli = {"ids": np.array(["a", "b", "c"]), "images": images}
    assert stimulus_payload(stimuli) is images
    assert extract._check_images(images) is images


def test_check_images_accepts_varying_sizes_and_names_bad_ones(photos):
    ok = extract._check_images([np.zeros((5, 7, 3), np.uint8), np.zeros((9, 4, 3), np.uint8)])
    assert [im.shape for im in ok] == [(5, 7, 3), (9, 4, 3)]
    with pytest.raises(ValueError, match=r"images\[1\] must be uint8"):
        extract._check_images([np.zeros((5, 7, 3), np.uint8), np.zeros((5, 7, 3), np.float32)])
    with pytest.raises(ValueError, match=r"images\[0\] must be an \(H x W x 3\)"):
        extract._check_images([np.zeros((5, 7), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        extract._check_images([])
    with pytest.raises(ValueError, match="empty"):
        extract._check_images(EncodedImages(np.empty(0, np.uint8), np.zeros(1, np.int64)))
    lazy = extract._check_images(_encoded(photos))
    assert len(lazy) == 4 and [im.shape for im in lazy[2:]] == [(400, 250, 3), (250, 431, 3)]


def test_extraction_fails_on_an_undecodable_stimulus_naming_it(hub_like, photos):
    processor, model, _ = hub_like["dinov2"]
    broken = _encoded([photos[0], b"garbage"], ids=np.array(["first", "second"]))
    with pytest.raises(ValueError, match="stimulus second: cannot decode"):
        extract._image_activations_loaded(model, processor, broken, batch_size=2)


def _encoded_stimuli_file(path, photos):
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in photos])]).astype(np.int64)
    save_npz(path, ids=np.array([f"p{k}" for k in range(len(photos))]),
             image_bytes=np.frombuffer(b"".join(photos), dtype=np.uint8), image_offsets=offsets,
             labels=np.arange(len(photos)))
    return path


def test_model_jobs_extract_encoded_stimuli(hub_like, photos, tmp_path):
    from motalign.io.store import load_network

    _, _, folder = hub_like["dinov2"]
    stimuli = _encoded_stimuli_file(tmp_path / "s.npz", photos)
    out = tmp_path / "acts.npz"
    info = model_jobs.extract_activations({"modality": "images"}, folder, stimuli, out, revision=None,
                                          include_embeddings=True, batch_size=3, device="cpu")
    assert info["layers"] == 2
    arrays, _, ids = load_network(out)
    assert list(ids) == ["p0", "p1", "p2", "p3"]
    expected = extract.image_activations(folder, [_decoded(d) for d in photos], batch_size=1, device="cpu")
    for x, y in zip(arrays, expected):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-5)


def test_tiny_vision_training_refuses_encoded_originals(photos, tmp_path):
    stimuli = _encoded_stimuli_file(tmp_path / "s.npz", photos)
    model = {"modality": "images", "family": "dinov2", "architecture": {},
             "train": {"dataset": "imagenet", "steps": 0, "seed": 0}}
    with pytest.raises(ValueError, match="'imagenet'.*original files"):
        model_jobs.train_tiny_model(model, stimuli, tmp_path / "model")
