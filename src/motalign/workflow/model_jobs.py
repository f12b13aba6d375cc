"""Job functions of the model rules (``workflow/rules/models.smk``, ``extract.smk``)."""

from __future__ import annotations

import logging

from ..io.stimuli import has_encoded_images, read_stimuli, stimulus_payload
from ..io.store import write_activations
from .devices import require_device
from .provenance import installed_versions

log = logging.getLogger(__name__)

#: the distributions whose versions an activation file records (those installed)
EXTRACTION_PACKAGES = ("torch", "transformers", "tokenizers", "huggingface-hub", "safetensors", "timm")


def train_tiny_model(model: dict, stimuli_path, out_dir) -> dict:
    """Train a tiny instance of a paper architecture (``models.<name>`` with source tiny, its
    defaults filled in by the workflow's schema)."""
    from ..models import tiny as tiny_models  # deferred: torch and transformers

    stimuli = read_stimuli(stimuli_path)
    train = model["train"]
    if model["modality"] == "text":
        return tiny_models.train_text_model(
            model["family"], model["architecture"], stimulus_payload(stimuli), out_dir,
            steps=train["steps"], seed=train["seed"],
            checkpoint_steps=train.get("checkpoint_steps"),
        )
    if has_encoded_images(stimuli):
        dataset = train.get("dataset", stimuli_path)
        raise ValueError(f"train.dataset {dataset!r} ({stimuli_path}) holds images as their original files, "
                         "of varying size; a tiny vision model trains on images of one size (an N x H x W x 3 "
                         "'images' array, e.g. a data set of source sklearn_digits)")
    return tiny_models.train_vision_model(
        model["family"], model["architecture"], stimuli["images"], stimuli.get("labels"), out_dir,
        image_size=int(stimuli["images"].shape[1]), steps=train["steps"], seed=train["seed"],
    )


def extract_activations(model: dict, model_path, stimuli_path, out, *, revision, include_embeddings: bool,
                        batch_size: int, device: str, meta=None) -> dict:
    """Layer activations of a model on a data set, as an activation store.  The settings
    come from the workflow's config (``include_embeddings``, ``extraction``).  The store's
    metadata records where the weights came from (``weights``:
    :func:`motalign.models.extract.weights_provenance`) and the versions of the extraction
    packages (``software``); a hub revision that is not a commit is logged as a warning
    that names the commit to pin.  A CUDA ``device`` that this machine lacks stops the job
    before anything is loaded, naming ``extraction.device``."""
    require_device(device, "extraction.device")
    from ..models import extract  # deferred: torch and transformers

    stimuli = read_stimuli(stimuli_path)
    device = None if device == "auto" else device
    kwargs = dict(batch_size=batch_size, device=device, revision=revision, progress=True)
    if model["modality"] == "text":
        hidden = extract.text_activations(model_path, stimulus_payload(stimuli), **kwargs)
    else:
        # an image array, or the original files decoded one batch at a time
        hidden = extract.image_activations(model_path, stimulus_payload(stimuli), **kwargs)
    names = extract.hidden_state_names(len(hidden))
    if not include_embeddings:
        hidden, names = hidden[1:], names[1:]
    weights = extract.weights_provenance(model_path, revision)
    name = (meta or {}).get("name", "?")
    setting = (f"models.{name}.revision" if revision == model.get("revision")
               else f"the revision of models.{name} (three_level.revisions)")
    warning = extract.branch_revision_warning(setting, weights)
    if warning:
        log.warning(warning)
    write_activations(out, dict(zip(names, hidden)), stimulus_ids=stimuli["ids"],
                      metadata={**(meta or {}), "model": str(model_path), "revision": revision,
                                "include_embeddings": include_embeddings, "weights": weights,
                                "software": installed_versions(EXTRACTION_PACKAGES)})
    return {"layers": len(names), "width": int(hidden[0].shape[1]), "weights": weights}
