"""Job functions of the model rules (``workflow/rules/models.smk``, ``extract.smk``)."""

from __future__ import annotations

from ..io.stimuli import read_stimuli, stimulus_payload
from ..io.store import write_activations


def train_tiny_model(model: dict, stimuli_path, out_dir) -> dict:
    """Train a tiny instance of a paper architecture (``models.<name>`` with source tiny)."""
    from ..models import tiny as tiny_models

    stimuli = read_stimuli(stimuli_path)
    train = model["train"]
    if model["modality"] == "text":
        return tiny_models.train_text_model(
            model["family"], model["architecture"], stimulus_payload(stimuli), out_dir,
            steps=train.get("steps", 60), seed=train.get("seed", 0),
            checkpoint_steps=train.get("checkpoint_steps"),
        )
    return tiny_models.train_vision_model(
        model["family"], model["architecture"], stimuli["images"], stimuli.get("labels"), out_dir,
        image_size=int(stimuli["images"].shape[1]), steps=train.get("steps", 60),
        seed=train.get("seed", 0),
    )

def extract_activations(model: dict, model_path, stimuli_path, out, *, revision=None,
                        include_embeddings=False, batch_size=32, device="auto", meta=None) -> dict:
    """Layer activations of a model on a data set, as an activation store."""
    from ..models import extract

    stimuli = read_stimuli(stimuli_path)
    device = None if device == "auto" else device
    kwargs = dict(batch_size=batch_size, device=device, revision=revision, progress=True)
    if model["modality"] == "text":
        hidden = extract.text_activations(model_path, stimulus_payload(stimuli), **kwargs)
    else:
        hidden = extract.image_activations(model_path, stimuli["images"], **kwargs)
    names = extract.hidden_state_names(len(hidden))
    if not include_embeddings:
        hidden, names = hidden[1:], names[1:]
    write_activations(out, dict(zip(names, hidden)), stimulus_ids=stimuli["ids"],
                      metadata={**(meta or {}), "model": str(model_path), "revision": revision,
                                "include_embeddings": include_embeddings})
    return {"layers": len(names), "width": int(hidden[0].shape[1])}
