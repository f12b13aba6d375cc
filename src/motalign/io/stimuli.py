"""The stimuli and split file formats.

* stimuli ``.npz``: ``ids`` (str) and ``sentences`` (str) or ``images`` (N x H x W x 3
  uint8), optionally ``labels``;
* splits ``.npz``: ``fit`` and ``held_out`` row indices into the stimuli, and ``seed``.
"""

from __future__ import annotations

import numpy as np


def read_stimuli(path) -> dict:
    """Load a stimuli file as a dict of arrays (``ids`` plus ``sentences`` or ``images``)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}

def stimulus_payload(stimuli: dict):
    """The sentences (list of str) or images (uint8 array) of a stimuli dict."""
    if "sentences" in stimuli:
        return [str(s) for s in stimuli["sentences"]]
    return stimuli["images"]

def read_split(path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["fit"], data["held_out"]
