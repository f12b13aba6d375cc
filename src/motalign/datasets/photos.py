"""Real photographs shipped with scikit-image, as an offline image stimulus set.

scikit-image's wheel carries a handful of real photographs (``skimage.data``: an astronaut,
a cat, a cup of coffee, a rocket launch, a motorcycle, the Hubble deep field, a retina,
textures such as brick and gravel, ...).  :func:`photo_crops` cuts ``crops_per_photo``
seeded windows of ``crop_size x crop_size`` pixels out of each, at the photograph's own
resolution (no resizing: each model's processor resizes and crops them itself), greyscale
photographs replicated to RGB.  With the defaults: 15 photographs x 16 crops = 240 images of
256 x 256.  Ids are ``{photo}_{k:02d}``; ``labels`` is the photograph's index.
"""

from __future__ import annotations

import numpy as np

from ..io.atomic import save_npz

__all__ = ["PHOTOS", "photo_crops", "prepare_photo_crops"]

#: the real photographs of skimage.data that are used (every one is at least 300 px wide and high)
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "brick", "grass", "gravel", "moon", "coins", "clock", "stereo_motorcycle")


def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data  # deferred: scikit-image is optional (the pretrained extra)
    except ImportError as exc:
        raise ImportError("the skimage_photos data set needs scikit-image (`pip install scikit-image`)") from exc
    image = getattr(data, name)()
    if name == "stereo_motorcycle":
        image = image[0]  # the left view
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name}: unexpected image {image.shape} {image.dtype}")
    return image


def photo_crops(*, crops_per_photo: int = 16, crop_size: int = 256, seed: int = 0,
                photos=PHOTOS) -> dict:
    """``ids``, ``images`` (N x crop_size x crop_size x 3 uint8) and ``labels`` (photograph
    index): ``crops_per_photo`` windows per photograph at seeded positions, without resizing."""
    if crops_per_photo < 1 or crop_size < 16:
        raise ValueError(f"crops_per_photo must be >= 1 and crop_size >= 16, got {crops_per_photo}, {crop_size}")
    rng = np.random.default_rng(seed)
    ids, images, labels = [], [], []
    for label, name in enumerate(photos):
        image = _photo(name)
        height, width = image.shape[:2]
        if min(height, width) < crop_size:
            raise ValueError(f"skimage.data.{name} is {height} x {width}, smaller than crop_size={crop_size}")
        tops = rng.integers(0, height - crop_size + 1, size=crops_per_photo)
        lefts = rng.integers(0, width - crop_size + 1, size=crops_per_photo)
        for k, (top, left) in enumerate(zip(tops, lefts)):
            ids.append(f"{name}_{k:02d}")
            images.append(image[top:top + crop_size, left:left + crop_size])
            labels.append(label)
    return {"ids": np.array(ids), "images": np.ascontiguousarray(np.stack(images)),
            "labels": np.array(labels, dtype=np.int64)}


def prepare_photo_crops(out, *, crops_per_photo: int = 16, crop_size: int = 256, seed: int = 0) -> dict:
    """Write :func:`photo_crops` as a stimuli file (atomically)."""
    from skimage import __version__ as skimage_version  # deferred: optional

    crops = photo_crops(crops_per_photo=crops_per_photo, crop_size=crop_size, seed=seed)
    save_npz(out, **crops)
    return {"n_images": int(len(crops["ids"])), "photos": list(PHOTOS), "crop_size": crop_size,
            "crops_per_photo": crops_per_photo, "seed": seed, "scikit_image_version": skimage_version}
