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
import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets.download import file_sha256

__all__ = ["text_activations", "image_activations", "hidden_state_names", "weights_provenance",
           "weights_digest", "hub_snapshot_commit", "branch_revision_warning"]

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
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
    :func:`weights_digest`)."""
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
    return {"kind": "local", "id": name, "revision": revision, "path": path, "sha256": sha256, "files": files}


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


def _is_timm(name) -> bool:
    return isinstance(name, str) and (name.startswith("timm/") or name.startswith("hf-hub:"))


def _check_images(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be an (N x H x W x 3) array, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    return images


def _load_vision(model_name_or_path, revision, device):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel  # deferred: the models extra, slow to import

    name, hub_rev, is_local = _resolve(model_name_or_path, revision)
    device, dtype = _device_and_dtype(device)
    config = _load(AutoConfig, name, hub_rev, is_local)
    kwargs = {"dtype": dtype}
    if getattr(config, "model_type", None) == "vit_mae" or hasattr(config, "mask_ratio"):
        kwargs["mask_ratio"] = 0.0  # overrides the saved config in memory only
    processor = _load(AutoImageProcessor, name, hub_rev, is_local)
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
    """Image activations from an already loaded model/processor (used by the tests too)."""
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
            chunk = [im for im in images[start:start + batch_size]]
            pixels = processor(images=chunk, return_tensors="pt")["pixel_values"]
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

    ``images`` is an ``(N x H x W x 3)`` uint8 array, preprocessed with the model's saved
    image processor. Returns one float32 ``(N x hidden_size)`` array per hidden state
    (index 0 = embedding output, then one per block); CLS and register tokens are excluded
    from the mean. ViT-MAE masking is switched off (see the module docstring). Names starting
    with ``"timm/"`` or ``"hf-hub:"`` are loaded with ``timm`` (which must be installed).
    """
    if _is_timm(model_name_or_path):
        return _timm_image_activations(model_name_or_path, images, batch_size=batch_size,
                                       device=device, revision=revision, progress=progress)
    processor, model, device = _load_vision(model_name_or_path, revision, device)
    return _image_activations_loaded(model, processor, images, batch_size=batch_size,
                                     device=device, progress=progress)


def _timm_image_activations(name, images, *, batch_size, device, revision, progress):
    """timm ViTs: embedding output (after positional embedding) + every block, patch tokens."""
    try:
        import timm  # deferred: optional, only for timm models
        from timm.data import create_transform, resolve_data_config  # deferred: optional, only for timm models
    except ImportError as exc:
        raise ImportError(f"{name!r} is a timm model: `pip install timm` to use it") from exc
    import torch  # deferred: the models extra, slow to import
    from PIL import Image  # deferred: only for timm models

    if revision is not None:
        raise ValueError("revision is not supported for timm models")
    images = _check_images(images)
    batch_size = _check_batch_size(batch_size)
    device, dtype = _device_and_dtype(device)
    hub = name if name.startswith("hf-hub:") else f"hf-hub:{name}"
    try:
        model = timm.create_model(hub, pretrained=True)
    except OSError as exc:
        raise _hub_error(exc, hub[len("hf-hub:"):], None) from exc
    model = model.to(device=device, dtype=dtype).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    captured = []
    hooks = [model.pos_drop.register_forward_hook(lambda m, i, o: captured.append(o))]
    hooks += [b.register_forward_hook(lambda m, i, o: captured.append(o)) for b in model.blocks]
    sums = None
    try:
        with torch.inference_mode():
            for start in _batches(len(images), batch_size, progress, "image activations"):
                x = torch.stack([transform(Image.fromarray(im)) for im in images[start:start + batch_size]])
                captured.clear()
                model.forward_features(x.to(device=device, dtype=dtype))
                means = [h[:, n_prefix:].to(torch.float32).mean(dim=1).cpu().numpy() for h in captured]
                sums = sums or [[] for _ in means]
                for acc, m in zip(sums, means):
                    acc.append(m)
    finally:
        for h in hooks:
            h.remove()
    return [np.ascontiguousarray(np.concatenate(acc, axis=0), dtype=np.float32) for acc in sums]
