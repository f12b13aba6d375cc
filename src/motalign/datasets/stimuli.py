"""Stimuli files of the built-in data sets and the dispatch over every source of
``datasets.<name>.source`` (see :mod:`motalign.io.stimuli` for the format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import save_npz


def prepare_text_stimuli(source, out, *, deduplicate: bool = True) -> dict:
    """Sentences from a UTF-8 text file, one per line (blank lines dropped; duplicates
    dropped keeping the first, when ``deduplicate``)."""
    lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line]
    if deduplicate:
        sentences = list(dict.fromkeys(sentences))
    if len(sentences) < 10:
        raise ValueError(f"{source}: only {len(sentences)} sentences; at least 10 are needed")
    ids = np.array([f"s{i:05d}" for i in range(len(sentences))])
    save_npz(out, ids=ids, sentences=np.array(sentences))
    return {"n_sentences": len(sentences), "n_lines": len(lines), "source": str(source)}

def digit_images(*, n_images: int, image_size: int, seed: int = 0) -> dict:
    """Handwritten digits shipped with scikit-learn (8 x 8 greyscale), a seeded class-balanced
    selection, upsampled to ``image_size`` and replicated to RGB uint8: ``ids``, ``images``,
    ``labels``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    per_class = n_images // 10
    chosen = []
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        if per_class > members.size:
            raise ValueError(f"n_images={n_images} asks for {per_class} digits of class {label}; "
                             f"only {members.size} exist")
        chosen.extend(rng.choice(members, per_class, replace=False))
    chosen = np.sort(np.array(chosen))
    images = digits.images[chosen] / 16.0  # 0..1
    factor = -(-image_size // 8)
    images = np.kron(images, np.ones((factor, factor)))[:, :image_size, :image_size]
    images = np.repeat((images * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    return {"ids": np.array([f"digit{i:04d}" for i in chosen]), "images": images,
            "labels": digits.target[chosen].astype(np.int64)}

def prepare_digit_images(out, *, n_images: int, image_size: int, seed: int = 0) -> dict:
    """Write :func:`digit_images` as a stimuli file."""
    digits = digit_images(n_images=n_images, image_size=image_size, seed=seed)
    save_npz(out, **digits)
    return {"n_images": int(len(digits["ids"]))}

def prepare_nsd_images(nsd_root, out) -> dict:
    """The shared NSD images (``sharedix`` of the experimental design), read from
    ``nsd_stimuli.hdf5`` row by row, sorted by NSD id; ids are ``nsd#####``."""
    from .nsd import _nsd as nsd

    from .nsd import _remote as nsd_remote

    shared = np.sort(nsd.read_expdesign(nsd_root)["sharedix"])
    if nsd_remote.shared_stimuli_path(nsd_root).is_file():  # a mirror: only the shared images
        images = nsd_remote.read_local_shared(nsd_root, shared)
    else:  # the full nsd_stimuli.hdf5 (a complete local copy, or the simulated layout)
        images = nsd.read_stimuli(nsd_root, shared)
    save_npz(out, ids=np.array([nsd_stimulus_id(i) for i in shared]), images=images)
    return {"n_images": int(len(shared))}

def nsd_stimulus_id(nsd_id: int) -> str:
    return f"nsd{int(nsd_id):05d}"

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
    from . import sources

    if source == "stsb":
        return sources.prepare_stsb(
            out, cache_dir=cache_dir, revision=dataset.get("revision", sources.STSB_REVISION),
            expected_count=dataset.get("expected_count", 2552),
        )
    if source == "imagenet":
        archive = dataset.get("archive")
        if archive and not Path(archive).is_file():
            raise ValueError(f"datasets.{name}.archive: {archive} does not exist (a local "
                             "ILSVRC2012_img_val.tar; remove the key to use the hub data set)")
        return sources.prepare_imagenet(
            out, per_class=dataset.get("per_class", 20), seed=dataset.get("seed", 0),
            image_size=dataset.get("image_size", 224), archive=archive,
            devkit=dataset.get("devkit"), labels_file=dataset.get("labels_file"),
            hub_repo=dataset.get("hub_dataset", sources.IMAGENET_HUB_REPO),
            revision=dataset.get("revision", "main"), cache_dir=cache_dir,
        )
    raise ValueError(f"datasets.{name}.source: unknown source {source!r}")
