"""The provenance of a run (rule ``provenance``: ``results/provenance.json``): which weights
and which data every activation file of the run came from, and with which software.

* ``activations``: per activation (or brain response) file of the run, its store metadata
  (``weights``: hub commit or local weight digest, ``software``: the extraction packages;
  :func:`motalign.workflow.model_jobs.extract_activations`) without the per-layer checksums,
  which ``content_sha256`` sums up;
* ``stimuli``: per stimuli file, its provenance document ``<file>.json``
  (:mod:`motalign.datasets.stimuli`) and its content digest recomputed from the file
  (``content_verified``: whether the two agree);
* ``packages`` (the versions installed where the provenance job ran), ``python``, ``platform``
  and ``git`` (the repository's commit and whether its tracked files differ from it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata

from ..datasets.builtin import stimuli_digests
from ..datasets.download import provenance_path
from ..io.atomic import write_json
from ..io.store import ActivationStore, array_checksum

#: the distributions whose versions the run's provenance records (those installed)
RUN_PACKAGES = ("motalign", "numpy", "scipy", "POT", "scikit-learn", "torch", "transformers",
                "tokenizers", "huggingface-hub", "safetensors", "snakemake")
#: store metadata left out of the run's provenance (per-layer details)
_BULKY = ("checksums", "dtypes")


def installed_versions(distributions) -> dict[str, str]:
    """``{distribution: version}`` of those of ``distributions`` that are installed."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git(repository, *args) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: never refresh the index
    try:
        result = subprocess.run(["git", "-C", str(repository), *args], capture_output=True, text=True,
                                timeout=30, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(repository) -> dict | None:
    """``{"commit", "dirty"}`` of the git repository at ``repository`` (``dirty``: tracked
    files differ from the commit), or None where there is no repository (or no git)."""
    commit = _git(repository, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(repository, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def activation_provenance(path) -> dict:
    """The provenance of one activation store: its metadata without the per-layer checksums
    and dtypes, plus ``content_sha256`` over its stimulus ids and layers' checksums."""
    with ActivationStore(path) as store:
        meta = dict(store.metadata)
        content = {"stimulus_ids": array_checksum(store.stimulus_ids),
                   "layers": dict(zip(store.layer_names, meta.get("checksums", [])))}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {**{k: v for k, v in meta.items() if k not in _BULKY}, "content_sha256": digest}


def stimuli_provenance(path) -> dict:
    """The provenance document of one stimuli file (``{}`` where it has none) with the
    digests of its content recomputed, and whether they match the recorded ones."""
    try:
        recorded = json.loads(provenance_path(path).read_text())
    except (OSError, ValueError):
        recorded = {}
    digests = stimuli_digests(path)
    verified = None if "content_sha256" not in recorded else recorded["content_sha256"] == digests["content_sha256"]
    return {**recorded, **digests, "content_verified": verified}


def run_provenance(*, activations, stimuli, repository=None) -> dict:
    """The provenance document of a run from its activation and stimuli files."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": None if repository is None else git_state(repository),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": installed_versions(RUN_PACKAGES),
        "stimuli": {str(p): stimuli_provenance(p) for p in sorted(map(str, stimuli))},
        "activations": {str(p): activation_provenance(p) for p in sorted(map(str, activations))},
    }


def write_run_provenance(out, *, activations, stimuli, repository=None) -> dict:
    """Write :func:`run_provenance` to ``out`` (JSON, atomically); returns a summary."""
    document = run_provenance(activations=activations, stimuli=stimuli, repository=repository)
    write_json(out, document)
    unpinned = sorted(p for p, a in document["activations"].items()
                      if (a.get("weights") or {}).get("kind") == "hub"
                      and a["weights"].get("revision") != a["weights"].get("commit"))
    return {"stimuli": len(document["stimuli"]), "activations": len(document["activations"]),
            "git": document["git"], "unpinned_hub_revisions": unpinned}
