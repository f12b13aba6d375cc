"""Job functions of the data rules (``workflow/rules/data.smk``, ``splits.smk``): one per
rule; ``workflow/scripts/`` only unpacks Snakemake's inputs and calls these.  Every output
is written atomically."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from ..datasets.builtin import digit_images
from ..datasets.nsd import mirror, simulate
from ..datasets.nsd.images import fetch_shared_stimuli, nsd_stimulus_id
from ..datasets.nsd.layout import REGIONS
from ..datasets.nsd.responses import subject_responses
from ..datasets.nsd.s3 import s3_client
from ..io.atomic import atomic_dir, atomic_path, save_npz
from ..io.stimuli import read_stimuli
from ..io.store import ActivationStore, write_activations
from .config import MIN_SPLIT_SIDE


def simulate_nsd(out_root, *, subjects, n_images, n_shared, n_specific, n_sessions, volume_shape,
                 seed) -> dict:
    """A miniature NSD in the real file layout, its images drawn from scikit-learn's digits."""
    images = digit_images(n_images=n_images, image_size=32, seed=seed)["images"]
    # written into a temporary folder renamed onto out_root at the end: an interrupted job
    # leaves no half-written NSD behind
    with atomic_dir(out_root) as tmp:
        info = simulate.simulate_nsd(tmp, images, subjects=tuple(subjects), n_shared=n_shared,
                                     n_specific=n_specific, n_sessions=n_sessions,
                                     volume_shape=tuple(volume_shape), seed=seed)
    return {**info, "root": str(out_root)}

def brain_responses(nsd_root, subject, stimuli_path, out, *, regions, sessions=None) -> dict:
    """One subject's region responses to a data set's NSD images (z-scored per session,
    repetitions averaged), written as an activation store with regions as layers."""
    nsd_ids, responses, info = subject_responses(
        nsd_root, subject, sessions=sessions, regions={r: REGIONS[r] for r in regions}
    )
    wanted = read_stimuli(stimuli_path)["ids"]
    position = {nsd_stimulus_id(i): k for k, i in enumerate(nsd_ids)}
    missing = [s for s in wanted if s not in position]
    if missing:
        raise ValueError(f"{subject}: no responses to {len(missing)} stimuli of {stimuli_path} "
                         f"(e.g. {missing[:3]})")
    rows = np.array([position[s] for s in wanted])
    layers = {region: responses[region][rows] for region in regions}
    write_activations(out, layers, stimulus_ids=wanted,
                      metadata={"subject": subject, "source": "nsd", "root": str(nsd_root),
                                "info": info})
    return {region: int(a.shape[1]) for region, a in layers.items()}

def make_split(stimuli_path, out, *, seed: int, fit_fraction: float) -> dict:
    """A seeded random split of the stimuli: ``fit_fraction`` fit, the rest held out."""
    n = len(read_stimuli(stimuli_path)["ids"])
    order = np.random.default_rng(seed).permutation(n)
    n_fit = int(round(fit_fraction * n))
    if not MIN_SPLIT_SIDE <= n_fit <= n - MIN_SPLIT_SIDE:
        raise ValueError(f"{stimuli_path}: {n} stimuli cannot be split {fit_fraction:.0%} / rest "
                         f"with at least {MIN_SPLIT_SIDE} on each side")
    save_npz(out, fit=np.sort(order[:n_fit]), held_out=np.sort(order[n_fit:]), seed=np.array(seed))
    return {"n_fit": n_fit, "n_held_out": n - n_fit}

def download_nsd(out_root, *, cache_root, subjects, sessions=None, client=None, bucket=None) -> dict:
    """Mirror what the paper needs from the public NSD bucket (anonymous access): the
    experimental design, the ROI volumes and every session's betas of ``subjects``, and
    only the shared images of ``nsd_stimuli.hdf5``, read with ranged requests.

    The files are mirrored into ``cache_root``, which no rule declares as an output, so
    that Snakemake, which deletes a failed job's output folder, never discards tens of GB
    already fetched: a re-run resumes there (manifest, per-file resume).  Once complete,
    ``out_root`` is made from hard links to the cache (moves where the file system has no
    hard links), atomically."""
    client = client or s3_client()
    where = {} if bucket is None else {"bucket": bucket}
    summary = mirror.download_nsd(cache_root, subjects=subjects, sessions=sessions, client=client, **where)
    shared = fetch_shared_stimuli(cache_root, client=client, block_size=256 * 1024, **where)
    with atomic_dir(out_root) as tmp:
        linked = _link_tree(Path(cache_root), tmp)
    return {"files": summary["files"], "bytes": summary["bytes"], "cache": str(cache_root),
            "linked": linked, "shared_images": shared["n_images"],
            "stimuli_bytes_fetched": shared["bytes_fetched"]}


def _link_tree(source: Path, dest: Path) -> int:
    """Hard-link every finished file under ``source`` into ``dest`` (``.part`` files left
    out), moving instead where hard links are impossible; the number of files."""
    count = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".part")):
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # no hard links here (another file system, FAT, some network mounts)
            shutil.move(path, target)
        count += 1
    return count

def nsd_voxel_counts(brain_paths: dict, out_csv) -> int:
    """Voxels per region and subject (``{brain name: response file}``), as a CSV: the
    region's voxels, the data set's images, the shared images the subject's responses were
    kept for (seen at least the required number of times), and the voxels the region shares
    with other requested regions (a voxel in a visual area and a stream ROI is in both
    layers), as ``other:count`` entries joined by ``;``."""
    fields = ["brain", "subject", "region", "voxels", "images", "shared_images_kept", "shared_voxels"]
    rows = []
    for brain, path in brain_paths.items():
        with ActivationStore(path) as store:
            subject = store.metadata.get("subject", brain)
            info = store.metadata.get("info", {})
            shared = {}
            for a, others in info.get("overlaps", {}).items():
                for b, n in others.items():
                    shared.setdefault(a, {})[b] = n
                    shared.setdefault(b, {})[a] = n
            for region, width in zip(store.layer_names, store.widths):
                rows.append({
                    "brain": brain, "subject": subject, "region": region, "voxels": width,
                    "images": len(store.stimulus_ids),
                    "shared_images_kept": info.get("n_images", ""),
                    "shared_voxels": ";".join(f"{b}:{n}" for b, n in shared.get(region, {}).items()),
                })
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
