"""Loading helpers shared by the extraction back ends (:mod:`.extract` for transformers
models, :mod:`.timm_backend` for timm models): resolving a model name to a local folder or a
hub id, friendly hub errors, device and dtype, batching, and the checks on image inputs
(an ``N x H x W x 3`` uint8 array, or a sequence of ``H x W x 3`` uint8 images of any sizes,
e.g. the lazily decoded originals of :class:`motalign.io.stimuli.EncodedImages`)."""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


def _is_plausible_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and "--" not in name


def _resolve(model_name_or_path, revision):
    """Return ``(name_or_path, hub_revision, is_local)`` or raise ValueError."""
    if isinstance(model_name_or_path, os.PathLike):
        model_name_or_path = os.fspath(model_name_or_path)
    if not isinstance(model_name_or_path, str) or not model_name_or_path:
        raise ValueError(f"model_name_or_path must be a non-empty string or path, got {model_name_or_path!r}")
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        if revision is None:
            return str(path), None, True
        sub = path / str(revision)
        if not sub.is_dir():
            available = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "config.json").exists())
            raise ValueError(
                f"revision {revision!r} of local model {str(path)!r} not found: expected a folder "
                f"{str(sub)!r} (local revisions are sub-folders); available: {available or 'none'}"
            )
        return str(sub), None, True
    if path.exists():
        raise ValueError(f"model path {model_name_or_path!r} is a file, not a save_pretrained folder")
    if not _is_plausible_hub_id(model_name_or_path):
        raise ValueError(
            f"model {model_name_or_path!r} is neither an existing local folder nor a plausible "
            f"Hugging Face hub id (expected 'owner/name')"
        )
    return model_name_or_path, revision, False


def _hub_error(exc: Exception, name: str, revision) -> OSError:
    rev = f" (revision {revision!r})" if revision else ""
    msg = (
        f"could not load {name!r}{rev}: {exc}\n"
        f"No local folder named {name!r} exists, so it was treated as a Hugging Face hub id. "
        f"If the model is gated (e.g. meta-llama/*), request access at https://huggingface.co/{name} "
        f"and make a token available in the HF_TOKEN environment variable "
        f"(or run `huggingface-cli login`); check the id, the revision and your network otherwise."
    )
    return OSError(msg)


def _load(loader, name, hub_revision, is_local, **kwargs):
    """Call ``loader.from_pretrained`` with friendly errors for hub ids."""
    if hub_revision is not None:
        kwargs["revision"] = hub_revision
    if is_local:
        return loader.from_pretrained(name, **kwargs)
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as exc:  # GatedRepoError, RepositoryNotFoundError, offline, ... are OSErrors
        raise _hub_error(exc, name, hub_revision) from exc


def _device_and_dtype(device):
    import torch  # deferred: the models extra, slow to import

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    return device, dtype


def _check_batch_size(batch_size):
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _batches(n, batch_size, progress, desc):
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm  # deferred: only with progress bars

        return tqdm(starts, desc=desc, unit="batch", total=len(starts))
    return starts


def _accepts(module, arg: str) -> bool:
    try:
        return arg in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _is_timm(name) -> bool:
    return isinstance(name, str) and (name.startswith("timm/") or name.startswith("hf-hub:"))


def is_timm_folder(path) -> bool:
    """Whether ``path`` is a local timm model folder: a ``config.json`` naming a timm
    ``architecture`` (timm's ``save_for_hf`` layout, as :mod:`motalign.models.pretrained`
    writes it) rather than a transformers ``model_type``."""
    config = Path(os.fspath(path)).expanduser() / "config.json" if isinstance(path, (str, os.PathLike)) else None
    if config is None or not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "architecture" in data and "model_type" not in data


def _check_image(image, index) -> np.ndarray:
    """One image as an (H x W x 3) uint8 array, or a ValueError naming ``images[index]``."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"images[{index}] must be an (H x W x 3) array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"images[{index}] must be uint8 (0..255), got dtype {array.dtype}")
    if 0 in array.shape:
        raise ValueError(f"images[{index}] is empty (shape {array.shape})")
    return array


class _CheckedImages(Sequence):
    """A lazy sequence of images (e.g. :class:`motalign.io.stimuli.EncodedImages`), each
    checked by :func:`_check_image` when it is taken: an index gives one array, a slice a
    list of arrays, and only what is taken is read (or decoded)."""

    def __init__(self, images):
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i):
        if isinstance(i, slice):
            positions = range(*i.indices(len(self)))
            return [_check_image(image, k) for k, image in zip(positions, self._images[i])]
        return _check_image(self._images[i], i)


def _check_images(images):
    """The images to extract from, checked: an (N x H x W x 3) uint8 array (returned as is),
    or a sequence of (H x W x 3) uint8 arrays of possibly different sizes -- a list or
    tuple (each checked now, returned as a list) or a lazy sequence such as
    :class:`motalign.io.stimuli.EncodedImages` (each checked when it is taken, so that the
    images are decoded one batch at a time).  Either way, ``len(images)`` and
    ``images[start:stop]`` (an array or a list of HxWx3 arrays) work."""
    if isinstance(images, (str, bytes, dict)):
        raise TypeError(f"images must be an array or a sequence of images, not {type(images).__name__}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is empty")
        return [_check_image(image, k) for k, image in enumerate(images)]
    if not isinstance(images, np.ndarray) and isinstance(images, Sequence):
        if len(images) == 0:
            raise ValueError("images is empty")
        return _CheckedImages(images)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be an (N x H x W x 3) array, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    return images

