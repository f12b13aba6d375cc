"""The stimuli file of a data set from its config entry (``datasets.<name>``), dispatched over
its ``source``: the built-in sets (:mod:`.builtin`), STS-B (:mod:`.stsb`), the ImageNet
validation subset (:mod:`.imagenet`) and the shared NSD images
(:mod:`.nsd.images`).  The file format is :mod:`motalign.io.stimuli`'s.

Every stimuli file gets a provenance document beside it, ``<out>.json``
(:func:`motalign.datasets.download.provenance_path`): what its source recorded (STSB and
ImageNet: repository, pinned revision, file digests; a text file: its path and SHA-256;
scikit-learn's digits: the scikit-learn version; NSD: the root and the images' digest),
the data set's name and config entry, and the digests of the file's arrays
(:func:`.builtin.stimuli_digests`; for ImageNet's original files, ``image_bytes`` is their
concatenation byte for byte), by which two runs' stimuli can be compared."""

from __future__ import annotations

from pathlib import Path

from ..io.atomic import write_json
from .builtin import prepare_digit_images, prepare_text_stimuli, stimuli_digests
from .download import provenance_path
from .imagenet import IMAGENET_HUB_REPO, prepare_imagenet
from .nsd.images import prepare_nsd_images
from .photos import prepare_photo_crops
from .stsb import STSB_REVISION, prepare_stsb


def prepare_stimuli(dataset: dict, out, *, nsd_root=None, cache_dir=None, name="?") -> dict:
    """Build a data set's stimuli file from its config entry (``datasets.<name>``), and its
    provenance document ``<out>.json``.  Downloads (STSB, the ImageNet hub shards) are kept
    in the hub cache: ``cache_dir``, default huggingface_hub's (``HF_HUB_CACHE``, shared with
    transformers).  ``datasets.<name>.sha256`` pins the content: STSB's parquet file (one
    digest), the ImageNet shards (a mapping shard file -> digest).  Returns the
    provenance."""
    info = _prepare(dataset, out, nsd_root=nsd_root, cache_dir=cache_dir, name=name)
    digests = stimuli_digests(out)
    if dataset["source"] == "nsd":
        arrays = digests["arrays"]
        info = {**info, "source": "nsd", "nsd_root": str(nsd_root),
                "images_sha256": arrays["images"] if "images" in arrays else arrays.get("image_bytes")}
    provenance = {**info, "name": name, "config": dataset, **digests}
    write_json(provenance_path(out), provenance)
    return provenance


def _prepare(dataset: dict, out, *, nsd_root, cache_dir, name) -> dict:
    source = dataset["source"]
    if source == "file":
        info = prepare_text_stimuli(dataset["path"], out)
        return {**info, "source": "file", "path": info["source"]}
    if source == "sklearn_digits":
        info = prepare_digit_images(out, n_images=dataset["n_images"],
                                    image_size=dataset["image_size"], seed=dataset.get("seed", 0))
        return {**info, "source": "sklearn_digits"}
    if source == "nsd":
        return prepare_nsd_images(nsd_root, out)
    if source == "skimage_photos":
        info = prepare_photo_crops(out, crops_per_photo=dataset.get("crops_per_photo", 16),
                                   crop_size=dataset.get("crop_size", 256), seed=dataset.get("seed", 0))
        return {**info, "source": "skimage_photos"}
    if source == "stsb":
        return prepare_stsb(
            out, cache_dir=cache_dir, revision=dataset.get("revision", STSB_REVISION),
            expected_count=dataset.get("expected_count", 2552),
            sha256=dataset.get("sha256"), pin_name=f"datasets.{name}.sha256",
        )
    if source == "imagenet":
        if "image_size" in dataset:
            raise ValueError(f"datasets.{name}.image_size: ImageNet stimuli are the original images, stored "
                             "unresized; each model's image processor resizes and crops them (remove the key)")
        archive = dataset.get("archive")
        if archive and not Path(archive).is_file():
            raise ValueError(f"datasets.{name}.archive: {archive} does not exist (a local "
                             "ILSVRC2012_img_val.tar; remove the key to use the hub data set)")
        return prepare_imagenet(
            out, per_class=dataset.get("per_class", 20), seed=dataset.get("seed", 0), archive=archive,
            devkit=dataset.get("devkit"), labels_file=dataset.get("labels_file"),
            hub_repo=dataset.get("hub_dataset", IMAGENET_HUB_REPO),
            revision=dataset.get("revision", "main"), cache_dir=cache_dir,
            sha256=_shard_pins(dataset.get("sha256"), name), pin_name=f"datasets.{name}.sha256",
        )
    raise ValueError(f"datasets.{name}.source: unknown source {source!r}")


def _shard_pins(value, name: str) -> dict | None:
    """``datasets.<name>.sha256`` of an ImageNet hub data set: shard file -> SHA-256."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"datasets.{name}.sha256: for ImageNet, a mapping of shard file "
                         f"(e.g. data/validation-00000-of-00014.parquet) to SHA-256, got {value!r}")
    return {str(k): v for k, v in value.items()}
