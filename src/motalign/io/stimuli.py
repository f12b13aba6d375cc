"""The stimuli and split file formats.

* stimuli ``.npz``: ``ids`` (str) and one payload, optionally ``labels``:

  - ``sentences`` (str);
  - ``images``: N x H x W x 3 uint8, images of one size (the scikit-learn digits, the NSD
    shared images at their native 425 x 425);
  - ``image_bytes`` + ``image_offsets``: images of varying size as their original encoded
    files (JPEG, PNG, ... exactly as in the source archive, never re-encoded), concatenated
    into one 1-D uint8 array; ``image_offsets`` (int64, N + 1) is where each file starts,
    the last entry the total length, so image ``i`` is
    ``image_bytes[image_offsets[i]:image_offsets[i + 1]]``.  A digest of ``image_bytes``
    is therefore a digest of the source files.  :class:`EncodedImages` decodes them one at
    a time;

* splits ``.npz``: ``fit`` and ``held_out`` row indices into the stimuli, and ``seed``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from .readers import check_array, corrupt, load_npz, open_npz, reading

#: the arrays of the encoded image representation
ENCODED_IMAGE_KEYS = ("image_bytes", "image_offsets")


def read_stimuli(path) -> dict:
    """Load a stimuli file as a dict of arrays (``ids`` plus ``sentences``, ``images`` or
    ``image_bytes`` and ``image_offsets``)."""
    with reading(f"{path}: not a readable stimuli file"):
        with open_npz(path) as data:
            if "ids" not in data.files:
                raise corrupt(path, f"stimuli file without ids (members: {sorted(data.files)})")
            return {key: data[key] for key in data.files}


def has_encoded_images(stimuli: dict) -> bool:
    """Whether a stimuli dict holds images as their original encoded files."""
    return "image_bytes" in stimuli


def stimulus_payload(stimuli: dict):
    """The payload of a stimuli dict: the sentences (list of str), the images (an N x H x W
    x 3 uint8 array) or, for encoded originals, an :class:`EncodedImages` sequence that
    decodes each image when it is indexed (never all at once)."""
    if "sentences" in stimuli:
        return [str(s) for s in stimuli["sentences"]]
    if has_encoded_images(stimuli):
        missing = [key for key in ENCODED_IMAGE_KEYS if key not in stimuli]
        if missing:
            raise ValueError(f"stimuli with image_bytes lack {missing}")
        return EncodedImages(stimuli["image_bytes"], stimuli["image_offsets"], ids=stimuli.get("ids"))
    return stimuli["images"]


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """One encoded image file as an H x W x 3 uint8 RGB array: decoded by Pillow and
    converted with ``convert("RGB")`` (greyscale, palette, CMYK and alpha images alike; no
    EXIF rotation, as torchvision's and transformers' loaders).  A file Pillow cannot read
    raises ValueError naming ``what``."""
    from PIL import Image, UnidentifiedImageError  # deferred: Pillow only for encoded images

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"{what}: cannot decode the image ({error})") from error
    array = np.array(rgb, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"{what}: decoded to an array of shape {array.shape}")
    return array


class EncodedImages(Sequence):
    """The images of a stimuli file stored as encoded files (``image_bytes`` and
    ``image_offsets``), as a lazy sequence: ``len``; an integer index decodes that image
    (:func:`decode_image`, H x W x 3 uint8 RGB, each at its own size); a slice gives a list
    of decoded arrays.  Only the images indexed are decoded, so iterating in batches keeps
    one batch in memory.  Decoding errors name the stimulus id (``ids``)."""

    def __init__(self, data, offsets, ids=None):
        data = np.asarray(data)
        offsets = np.asarray(offsets)
        if data.ndim != 1 or data.dtype != np.uint8:
            raise ValueError(f"image_bytes must be a 1-D uint8 array, got {data.dtype} of shape {data.shape}")
        if offsets.ndim != 1 or offsets.size < 1 or not np.issubdtype(offsets.dtype, np.integer):
            raise ValueError(f"image_offsets must be a 1-D integer array of N + 1 entries, got {offsets.dtype} "
                             f"of shape {offsets.shape}")
        offsets = offsets.astype(np.int64)
        if offsets[0] != 0 or offsets[-1] != data.size:
            raise ValueError(f"image_offsets must start at 0 and end at len(image_bytes) = {data.size}, "
                             f"got {int(offsets[0])}..{int(offsets[-1])}")
        empty = np.flatnonzero(np.diff(offsets) <= 0)
        if empty.size:
            raise ValueError(f"image_offsets must increase strictly: image {int(empty[0])} is empty or negative")
        if ids is not None and len(ids) != offsets.size - 1:
            raise ValueError(f"{len(ids)} ids for {offsets.size - 1} encoded images")
        self._data, self._offsets, self._ids = data, offsets, ids

    def __len__(self) -> int:
        return int(self._offsets.size - 1)

    def _index(self, i) -> int:
        n = len(self)
        k = int(i)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        return k

    def name(self, i) -> str:
        """The stimulus id of image ``i`` (``image <i>`` without ids)."""
        k = self._index(i)
        return f"stimulus {self._ids[k]}" if self._ids is not None else f"image {k}"

    def encoded(self, i) -> bytes:
        """The original file of image ``i``, byte for byte."""
        k = self._index(i)
        return self._data[self._offsets[k]:self._offsets[k + 1]].tobytes()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"EncodedImages indices must be integers or slices, not {type(i).__name__}")
        return decode_image(self.encoded(i), self.name(i))

    def __repr__(self) -> str:
        return f"EncodedImages({len(self)} images, {self._data.size} bytes)"


def read_split(path, n_stimuli: int | None = None, stimuli: str = "the stimuli") -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held_out)`` row indices of a split file, checked: 1-D integer arrays of at
    least 2 distinct indices each, disjoint, and (given ``n_stimuli``, the number of stimuli
    of ``stimuli``, e.g. an activation file) in range.  Raises :class:`CorruptFileError`
    naming the file."""
    data = load_npz(path, "split file", ("fit", "held_out"))
    for name in ("fit", "held_out"):
        index = check_array(path, data[name], name, "split file", ndim=1, integer=True)
        if np.unique(index).size != index.size or index.size < 2:
            raise corrupt(path, f"split file: {name} holds {index.size} indices, "
                                f"{np.unique(index).size} distinct (at least 2 distinct needed)")
        if index.min() < 0:
            raise corrupt(path, f"split file: {name} holds negative indices ({index.min()})")
        if n_stimuli is not None and index.max() >= n_stimuli:
            raise corrupt(path, f"split file: {name} indices reach {index.max()}, but {stimuli} has "
                                f"{n_stimuli} stimuli; the split was made for other stimuli")
    shared = np.intersect1d(data["fit"], data["held_out"])
    if shared.size:
        raise corrupt(path, f"split file: {shared.size} stimuli are both fit and held out "
                            f"(e.g. {shared[:5].tolist()})")
    return data["fit"], data["held_out"]
