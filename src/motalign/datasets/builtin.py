"""The built-in stimulus sets, which need no download: sentences from a text file, and
scikit-learn's handwritten digits (a small image set for tests and the miniature NSD).
Each ``prepare_*`` writes a stimuli file (format in :mod:`motalign.io.stimuli`)
atomically.  :func:`stimuli_digests` is the content digest of any stimuli file, which its
provenance document records (:mod:`.stimuli`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..io.atomic import save_npz
from ..io.store import array_checksum


def stimuli_digests(arrays) -> dict:
    """Content digests of a stimuli file's arrays (``ids``, ``sentences``, ``images`` or
    ``image_bytes`` and ``image_offsets``, ``labels``; a dict of arrays or a path):
    ``{"content_sha256", "arrays": {name: sha256}}``.
    Each array is digested with its dtype and shape (:func:`motalign.io.store.array_checksum`);
    ``content_sha256`` hashes ``"{name}\\0{digest}\\n"`` over the names in sorted order, so two
    files with the same stimuli have the same digest whatever else differs."""
    if not isinstance(arrays, dict):
        with np.load(arrays, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    digests = {name: array_checksum(np.asarray(arrays[name])) for name in sorted(arrays)}
    content = hashlib.sha256()
    for name, digest in digests.items():
        content.update(f"{name}\0{digest}\n".encode())
    return {"content_sha256": content.hexdigest(), "arrays": digests}


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
    return {"n_sentences": len(sentences), "n_lines": len(lines), "source": str(source),
            "file_sha256": hashlib.sha256(Path(source).read_bytes()).hexdigest()}


def digit_images(*, n_images: int, image_size: int, seed: int = 0) -> dict:
    """Handwritten digits shipped with scikit-learn (8 x 8 greyscale), a seeded class-balanced
    selection, upsampled to ``image_size`` and replicated to RGB uint8: ``ids``, ``images``,
    ``labels``."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

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
    from sklearn import __version__ as sklearn_version  # deferred: scikit-learn is slow to import

    digits = digit_images(n_images=n_images, image_size=image_size, seed=seed)
    save_npz(out, **digits)
    return {"n_images": int(len(digits["ids"])), "sklearn_version": sklearn_version}
