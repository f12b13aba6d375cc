"""Tiny, briefly trained instances of the paper's architectures (paper Sec. 3.1 and 3.3), for offline tests.

Each model is built from its family's config class with small sizes, trained for a few
dozen AdamW steps on CPU, and saved with ``save_pretrained`` together with its tokenizer or
image processor, so that :mod:`motalign.models.extract` loads it exactly like a hub model:

* text: ``"llama"`` (LlamaConfig), ``"qwen2"`` (Qwen2Config), ``"gpt_neox"`` (GPTNeoXConfig,
  as in Pythia) -- a byte-level BPE tokenizer trained on the sentences, a causal-LM objective;
  optional Pythia-style checkpoints ``out_dir/step{N}/`` (read them with ``revision="step{N}"``).
* vision: ``"dinov2"`` (Dinov2Config; trained as Dinov2ForImageClassification on labels) and
  ``"vit_mae"`` (ViTMAEConfig; trained with ViTMAEForPreTraining's reconstruction loss, saved
  config keeps the default ``mask_ratio = 0.75``).

Weights are stored in the layout of the corresponding hub checkpoints: the full causal LM for
text (as Pythia / Llama / Qwen are), ``ViTMAEForPreTraining`` (encoder + decoder) for ViT-MAE,
the bare ``Dinov2Model`` for DINOv2. ``AutoModel.from_pretrained(out_dir)`` therefore returns
the trained base model with no missing weights (the LM head / MAE decoder are reported as
unused, exactly as for the real checkpoints). Every output folder is written atomically: into
a temporary folder beside ``out_dir``, renamed at the end (an existing ``out_dir`` is
replaced). A ``training_summary.json`` (the returned dict) is saved with each model.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_dir

__all__ = ["TEXT_FAMILIES", "VISION_FAMILIES", "train_text_model", "train_vision_model",
           "n_hidden_states", "default_architecture"]

TEXT_FAMILIES = ("llama", "qwen2", "gpt_neox")
VISION_FAMILIES = ("dinov2", "vit_mae")

_TEXT_DEFAULTS = {
    "llama": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, max_position_embeddings=128, tie_word_embeddings=False),
    "qwen2": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, max_position_embeddings=128, tie_word_embeddings=True),
    "gpt_neox": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                     max_position_embeddings=128, rotary_pct=0.25, tie_word_embeddings=False),
}
_VISION_DEFAULTS = {
    "dinov2": dict(hidden_size=48, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2),
    "vit_mae": dict(hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96,
                    decoder_hidden_size=32, decoder_num_hidden_layers=1,
                    decoder_num_attention_heads=4, decoder_intermediate_size=64),
}
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
SUMMARY_FILE = "training_summary.json"


def _check_family(family, allowed):
    if family not in allowed:
        raise ValueError(f"unknown family {family!r}; expected one of {list(allowed)}")


def default_architecture(family: str) -> dict:
    """The small default sizes used for ``family`` (before ``architecture`` overrides)."""
    _check_family(family, TEXT_FAMILIES + VISION_FAMILIES)
    return dict((_TEXT_DEFAULTS | _VISION_DEFAULTS)[family])


def n_hidden_states(family: str, architecture: dict | None = None) -> int:
    """Number of hidden states extraction returns for this model: ``num_hidden_layers + 1``."""
    arch = default_architecture(family) | dict(architecture or {})
    return int(arch["num_hidden_layers"]) + 1


# --------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def _one_thread():
    """Train on one CPU thread: faster for models this small (no thread synchronisation,
    no oversubscription when other processes run) and independent of the machine's core count."""
    import torch  # deferred: the models extra, slow to import

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_summary(folder: Path, summary: dict):
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- text


def _train_tokenizer(sentences, vocab_size, family):
    from tokenizers import (  # deferred: the models extra
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast  # deferred: the models extra, slow to import

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(sentences), trainer)
    if family == "llama":  # Llama tokenizers prepend BOS; Qwen and Pythia do not
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>", model_max_length=512)
    fast.padding_side = "right"
    return fast


def _text_classes(family):
    import transformers as tf  # deferred: the models extra, slow to import

    return {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM),
    }[family]


def _base_model(model):
    return getattr(model, model.base_model_prefix)


def _save_text(model, tokenizer, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # the full causal LM, as hub checkpoints are stored
    tokenizer.save_pretrained(folder)


def train_text_model(family: str, architecture: dict, sentences: list[str], out_dir, *,
                     steps: int = 60, batch_size: int = 16, learning_rate: float = 3e-3,
                     seed: int = 0, vocab_size: int = 512,
                     checkpoint_steps: list[int] | None = None) -> dict:
    """Train a tiny causal LM of ``family`` on ``sentences`` and save it to ``out_dir``.

    ``architecture`` overrides the family's small defaults (:func:`default_architecture`);
    any keyword of the family's config class is accepted. Training is deterministic given
    ``seed`` (one CPU thread, seeded init and batch order).

    Returns ``{"family", "n_parameters" (base model), "steps", "initial_loss", "final_loss",
    "checkpoints", "num_hidden_layers", "hidden_size", "vocab_size", "seed", "seconds"}``;
    ``checkpoints`` lists the ``step{N}`` sub-folders written (each a full model + tokenizer;
    ``step0`` is the untrained initialisation).
    """
    import torch  # deferred: the models extra, slow to import

    _check_family(family, TEXT_FAMILIES)
    sentences = [s for s in sentences]
    if len(sentences) < 2 or not all(isinstance(s, str) and s.strip() for s in sentences):
        raise ValueError("sentences must be at least 2 non-empty strings")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    ckpts = sorted({int(s) for s in (checkpoint_steps or [])})
    if any(s < 0 or s > steps for s in ckpts):
        raise ValueError(f"checkpoint_steps must lie in [0, steps={steps}], got {checkpoint_steps}")

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = _train_tokenizer(sentences, vocab_size, family)
    config_cls, lm_cls = _text_classes(family)
    arch = _TEXT_DEFAULTS[family] | dict(architecture or {})
    config = config_cls(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        **arch)
    model = lm_cls(config)
    model.train()

    enc = tokenizer(sentences, padding=True, truncation=True, max_length=config.max_position_embeddings,
                    return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    bs = min(int(batch_size), len(sentences))

    losses = []
    with atomic_dir(out_dir) as tmp, _one_thread():
        for step in range(steps + 1):
            if step in ckpts:
                model.eval()
                _save_text(model, tokenizer, tmp / f"step{step}")
                model.train()
            if step == steps:
                break
            idx = torch.randperm(len(sentences), generator=gen)[:bs]
            out = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(out.loss.detach()))
        model.eval()
        _save_text(model, tokenizer, tmp)
        summary = {
            "family": family, "n_parameters": int(sum(p.numel() for p in _base_model(model).parameters())),
            "steps": steps, "initial_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "checkpoints": [f"step{s}" for s in ckpts],
            "num_hidden_layers": int(config.num_hidden_layers), "hidden_size": int(config.hidden_size),
            "vocab_size": len(tokenizer), "seed": int(seed), "seconds": time.perf_counter() - t0,
        }
        _write_summary(tmp, summary)
    return summary


# --------------------------------------------------------------------------- vision


def _image_processor(family, image_size):
    import transformers as tf  # deferred: the models extra, slow to import

    if family == "dinov2":
        cls = getattr(tf, "BitImageProcessorPil", None) or tf.BitImageProcessor
        return cls(do_resize=True, size={"shortest_edge": image_size}, do_center_crop=True,
                   crop_size={"height": image_size, "width": image_size}, do_rescale=True,
                   do_normalize=True, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD,
                   do_convert_rgb=True)
    cls = getattr(tf, "ViTImageProcessorPil", None) or tf.ViTImageProcessor
    return cls(do_resize=True, size={"height": image_size, "width": image_size}, do_rescale=True,
               do_normalize=True, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD)


def _train_vision_loop(model, optimizer, pixels, targets, steps, bs, gen, n_patches):
    import torch  # deferred: the models extra, slow to import

    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(pixels), generator=gen)[:bs]
        if targets is not None:
            out = model(pixel_values=pixels[idx], labels=targets[idx])
        else:  # MAE: seeded masking noise, so training is reproducible
            noise = torch.rand(len(idx), n_patches, generator=gen)
            out = model(pixel_values=pixels[idx], noise=noise)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return losses


def train_vision_model(family: str, architecture: dict, images: np.ndarray, labels, out_dir, *,
                       image_size: int = 32, patch_size: int = 8, steps: int = 60,
                       batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0) -> dict:
    """Train a tiny vision transformer of ``family`` and save its base model + image processor.

    ``images``: (N x H x W x 3) uint8. ``labels`` (N ints) are required for ``"dinov2"``
    (classification) and ignored for ``"vit_mae"`` (masked reconstruction).
    """
    import torch  # deferred: the models extra, slow to import
    import transformers as tf  # deferred: the models extra, slow to import

    _check_family(family, VISION_FAMILIES)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be an (N x H x W x 3) uint8 array, got {images.shape} {images.dtype}")
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if family == "dinov2":
        if labels is None:
            raise ValueError("dinov2 is trained as a classifier: labels are required")
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
        classes, y = np.unique(labels, return_inverse=True)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    processor = _image_processor(family, image_size)
    pixels = processor(images=[im for im in images], return_tensors="pt")["pixel_values"].float()
    arch = _VISION_DEFAULTS[family] | dict(architecture or {})
    if family == "dinov2":
        config = tf.Dinov2Config(image_size=image_size, patch_size=patch_size, num_labels=len(classes),
                                 id2label={i: str(c) for i, c in enumerate(classes)},
                                 label2id={str(c): i for i, c in enumerate(classes)}, **arch)
        model = tf.Dinov2ForImageClassification(config)
        targets = torch.as_tensor(y, dtype=torch.long)
    else:
        config = tf.ViTMAEConfig(image_size=image_size, patch_size=patch_size, **arch)
        model = tf.ViTMAEForPreTraining(config)
        targets = None
    model.train()
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    bs = min(int(batch_size), len(images))

    with _one_thread():
        losses = _train_vision_loop(model, optimizer, pixels, targets, steps, bs, gen,
                                        (image_size // patch_size) ** 2)
    model.eval()

    with atomic_dir(out_dir) as tmp:
        # hub layouts: facebook/vit-mae-* hold ViTMAEForPreTraining (encoder + decoder),
        # facebook/dinov2-* the bare Dinov2Model (our classifier head is a training device)
        (model if family == "vit_mae" else _base_model(model)).save_pretrained(tmp)
        processor.save_pretrained(tmp)
        summary = {
            "family": family, "n_parameters": int(sum(p.numel() for p in _base_model(model).parameters())),
            "steps": steps, "initial_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "checkpoints": [],
            "num_hidden_layers": int(config.num_hidden_layers), "hidden_size": int(config.hidden_size),
            "image_size": int(image_size), "patch_size": int(patch_size), "seed": int(seed),
            "seconds": time.perf_counter() - t0,
        }
        if family == "vit_mae":
            summary["saved_mask_ratio"] = float(config.mask_ratio)
        _write_summary(tmp, summary)
    return summary
