"""Layer activations of timm models (vision transformers and convolutional networks).

Loaded either from the hub (``"timm/<name>"`` or ``"hf-hub:<owner>/<name>"``) or from a
local folder in timm's ``save_for_hf`` layout (``config.json`` with ``architecture`` and
``pretrained_cfg``, weights in ``model.safetensors``), such as the folders
:mod:`motalign.models.pretrained` converts packaged checkpoints into.

Hidden states, in order (named by :func:`motalign.models.extract.hidden_state_names`):

* the embedding output: ``pos_drop`` of a ViT (patch tokens after the positional embedding),
  the stem (``conv_stem`` + ``bn1``) of a convolutional network;
* every block: each ViT block; each block of every stage of a CNN (nested stages are
  flattened, so EfficientNet-Lite0 gives 16 blocks);
* for CNNs with a head convolution (``conv_head`` + ``bn2``, as EfficientNet), its output,
  the last feature map before pooling.

Token outputs ``(B, T, C)`` are averaged over the patch tokens (prefix tokens excluded);
feature maps ``(B, C, H, W)`` over space.  Images go through the model's own evaluation
transform (``timm.data.resolve_data_config`` + ``create_transform``: for EfficientNet-Lite0
a bicubic resize of the shorter side to 256 and a centre crop of 224), from the stimuli as
stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._loading import _batches, _check_batch_size, _check_images, _device_and_dtype, _hub_error

__all__ = ["timm_image_activations", "load_timm_model", "feature_modules"]


def _import_timm(name):
    try:
        import timm  # deferred: optional, only for timm models
    except ImportError as exc:
        raise ImportError(f"{name!r} is a timm model: `pip install timm` to use it") from exc
    return timm


def load_timm_model(name_or_path, *, revision=None):
    """A timm model, in eval mode, from the hub (``timm/...``, ``hf-hub:...``) or from a local
    ``save_for_hf`` folder (``local-dir:`` is implied)."""
    timm = _import_timm(name_or_path)
    name = os.fspath(name_or_path)
    if revision is not None:
        raise ValueError("revision is not supported for timm models")
    local = Path(name).expanduser()
    if local.is_dir():
        try:
            model = timm.create_model(f"local-dir:{local}", pretrained=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"could not load the timm model folder {str(local)!r}: {exc}") from exc
        return model.eval()
    hub = name if name.startswith("hf-hub:") else f"hf-hub:{name}"
    try:
        model = timm.create_model(hub, pretrained=True)
    except OSError as exc:
        raise _hub_error(exc, hub[len("hf-hub:"):], None) from exc
    return model.eval()


def feature_modules(model) -> list:
    """The modules whose outputs are the hidden states (see the module docstring)."""
    import torch  # deferred: the models extra, slow to import

    modules = []
    if hasattr(model, "pos_drop"):  # ViT: tokens after the positional embedding
        modules.append(model.pos_drop)
    elif hasattr(model, "bn1") and hasattr(model, "conv_stem"):  # EfficientNet / MobileNet stem
        modules.append(model.bn1)
    else:
        raise ValueError(f"unsupported timm model {type(model).__name__}: no pos_drop or conv_stem + bn1")
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"unsupported timm model {type(model).__name__}: no blocks")

    def leaves(module):
        if isinstance(module, torch.nn.Sequential):
            for child in module:
                yield from leaves(child)
        else:
            yield module

    modules.extend(leaves(blocks))
    if hasattr(model, "conv_head") and hasattr(model, "bn2"):
        modules.append(model.bn2)
    return modules


def _summary(h, n_prefix):
    import torch  # deferred: the models extra, slow to import

    h = h.to(torch.float32)
    if h.ndim == 4:  # feature map (B, C, H, W): spatial mean
        return h.mean(dim=(2, 3)).cpu().numpy()
    if h.ndim == 3:  # tokens (B, T, C): mean over the patch tokens
        return h[:, n_prefix:].mean(dim=1).cpu().numpy()
    raise RuntimeError(f"unexpected hidden state of shape {tuple(h.shape)}")


def timm_image_activations(name_or_path, images, *, batch_size=32, device=None, revision=None,
                           progress=False, dtype=None) -> list[np.ndarray]:
    """One float32 ``(N x channels)`` array per hidden state of a timm model (see the module
    docstring), each image passed through the model's own evaluation transform.  The weights
    run in ``dtype`` (a torch dtype; default: bfloat16 or float16 on CUDA, float32 on the
    CPU, as for transformers models); the means are accumulated in float32."""
    import torch  # deferred: the models extra, slow to import
    from PIL import Image  # deferred: only for image models

    _import_timm(name_or_path)  # a clear error when timm is missing
    from timm.data import create_transform, resolve_data_config  # deferred: optional

    images = _check_images(images)
    batch_size = _check_batch_size(batch_size)
    device, default_dtype = _device_and_dtype(device)
    dtype = default_dtype if dtype is None else dtype
    model = load_timm_model(name_or_path, revision=revision).to(device=device, dtype=dtype)
    transform = create_transform(**resolve_data_config({}, model=model))
    n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    captured = []
    hooks = [m.register_forward_hook(lambda mod, i, o: captured.append(o)) for m in feature_modules(model)]
    sums = None
    try:
        with torch.inference_mode():
            for start in _batches(len(images), batch_size, progress, "image activations"):
                batch = [Image.fromarray(np.asarray(im)).convert("RGB") for im in images[start:start + batch_size]]
                x = torch.stack([transform(im) for im in batch])
                captured.clear()
                model.forward_features(x.to(device=device, dtype=dtype))
                means = [_summary(h, n_prefix) for h in captured]
                sums = sums or [[] for _ in means]
                for acc, m in zip(sums, means):
                    acc.append(m)
    finally:
        for h in hooks:
            h.remove()
    return [np.ascontiguousarray(np.concatenate(acc, axis=0), dtype=np.float32) for acc in sums]
