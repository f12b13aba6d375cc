"""The stimuli file of a data set from its config entry (``datasets.<name>``), dispatched over
its ``source``: the built-in sets (:mod:`.builtin`), STS-B (:mod:`.stsb`), the ImageNet
validation subset (:mod:`.imagenet`) and the shared NSD images
(:mod:`.nsd.images`).  The file format is :mod:`motalign.io.stimuli`'s."""

from __future__ import annotations

from pathlib import Path

from .builtin import prepare_digit_images, prepare_text_stimuli
from .imagenet import IMAGENET_HUB_REPO, prepare_imagenet
from .nsd.images import prepare_nsd_images
from .stsb import STSB_REVISION, prepare_stsb


def prepare_stimuli(dataset: dict, out, *, nsd_root=None, cache_dir=None, name="?") -> dict:
    """Build a data set's stimuli file from its config entry (``datasets.<name>``).
    Downloads (STSB, the ImageNet hub shards) are kept in ``cache_dir``."""
    source = dataset["source"]
    if source == "file":
        return prepare_text_stimuli(dataset["path"], out)
    if source == "sklearn_digits":
        return prepare_digit_images(out, n_images=dataset["n_images"],
                                    image_size=dataset["image_size"], seed=dataset.get("seed", 0))
    if source == "nsd":
        return prepare_nsd_images(nsd_root, out)
    if source == "stsb":
        return prepare_stsb(
            out, cache_dir=cache_dir, revision=dataset.get("revision", STSB_REVISION),
            expected_count=dataset.get("expected_count", 2552),
        )
    if source == "imagenet":
        archive = dataset.get("archive")
        if archive and not Path(archive).is_file():
            raise ValueError(f"datasets.{name}.archive: {archive} does not exist (a local "
                             "ILSVRC2012_img_val.tar; remove the key to use the hub data set)")
        return prepare_imagenet(
            out, per_class=dataset.get("per_class", 20), seed=dataset.get("seed", 0),
            image_size=dataset.get("image_size", 224), archive=archive,
            devkit=dataset.get("devkit"), labels_file=dataset.get("labels_file"),
            hub_repo=dataset.get("hub_dataset", IMAGENET_HUB_REPO),
            revision=dataset.get("revision", "main"), cache_dir=cache_dir,
        )
    raise ValueError(f"datasets.{name}.source: unknown source {source!r}")
