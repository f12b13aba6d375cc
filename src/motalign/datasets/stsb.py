"""The STS-B prompts of the language-model comparison (paper Sec. 3.1: 2,552 sentences), as
a stimuli file.

:func:`prepare_stsb` writes the unique sentences of the STS-B test split, from the
``sentence-transformers/stsb`` parquet file on the Hugging Face hub at a pinned commit, as
a stimuli file (format in :mod:`motalign.io.stimuli`, written atomically), plus a
provenance document ``<out>.json`` (:func:`motalign.datasets.download.provenance_path`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..io.atomic import save_npz, write_json
from .download import provenance_path
from .hub import hub_file

log = logging.getLogger(__name__)

STSB_REPO = "sentence-transformers/stsb"
#: The commit of ``sentence-transformers/stsb`` whose ``data/`` holds
#: ``{train,validation,test}-00000-of-00001.parquet``.
STSB_REVISION = "ab7a5ac0e35aa22088bdcf23e7fd99b220e53308"
STSB_PAPER_COUNT = 2552


def derive_stsb_sentences(sentence1: Sequence, sentence2: Sequence) -> tuple[list[str], dict]:
    """The unique sentences of sentence pairs, in first-appearance order.

    Row by row, ``sentence1`` then ``sentence2``; surrounding whitespace stripped; missing or
    empty sentences dropped; exact-string deduplication keeping the first.  Returns the
    sentences and the counts of the derivation.
    """
    if len(sentence1) != len(sentence2):
        raise ValueError(f"sentence1 has {len(sentence1)} rows, sentence2 {len(sentence2)}")
    ordered = []
    n_empty = 0
    for first, second in zip(sentence1, sentence2):
        for sentence in (first, second):
            text = sentence.strip() if isinstance(sentence, str) else ""
            if text:
                ordered.append(text)
            else:
                n_empty += 1
    unique = list(dict.fromkeys(ordered))
    counts = {
        "n_pairs": len(sentence1),
        "n_sentences_before_dedup": len(ordered),
        "n_empty_dropped": n_empty,
        "n_sentences_after_dedup": len(unique),
    }
    return unique, counts


def prepare_stsb(out, *, cache_dir=None, repo_id: str = STSB_REPO, revision: str = STSB_REVISION,
                 split: str = "test", expected_count: int | None = STSB_PAPER_COUNT,
                 sha256: str | None = None, pin_name: str = "sha256") -> dict:
    """Write the STS-B prompts (unique sentences of ``split``) as a stimuli file.

    Downloads ``data/{split}-00000-of-00001.parquet`` of the hub data set ``repo_id`` at
    ``revision`` with huggingface_hub into its cache (``cache_dir``, default ``HF_HUB_CACHE``),
    verified against the hub's SHA-256 ETag and, when given, the pinned ``sha256``
    (:func:`motalign.datasets.hub.hub_file`; ``pin_name`` names the pin in messages), reads
    the ``sentence1``/``sentence2`` columns and keeps the unique sentences
    (:func:`derive_stsb_sentences`); ids are ``stsb00000``, ``stsb00001``, ...  A count other
    than ``expected_count`` is recorded (``count_matches_paper: false``) and logged, not an
    error: that the paper's 2,552 prompts are exactly this derivation is unverified.
    Returns the provenance (also written to ``<out>.json``).
    """
    import pyarrow.parquet as pq  # deferred: optional dependency, data extra

    filename = f"data/{split}-00000-of-00001.parquet"
    hub = hub_file(repo_id, filename, revision=revision, cache_dir=cache_dir, sha256=sha256,
                   pin_name=pin_name, token_help=f"check https://huggingface.co/datasets/{repo_id}")
    local, url = hub.path, hub.url
    try:
        table = pq.read_table(local)
    except Exception as error:  # pyarrow raises its own error types
        raise ValueError(f"{local} (from {url}): not a readable parquet file ({error})") from error
    missing = [c for c in ("sentence1", "sentence2") if c not in table.column_names]
    if missing:
        raise ValueError(f"{local} (from {url}): no column(s) {missing}; "
                         f"columns are {table.column_names}")
    sentences, counts = derive_stsb_sentences(table.column("sentence1").to_pylist(),
                                              table.column("sentence2").to_pylist())
    if not sentences:
        raise ValueError(f"{local} (from {url}): no sentences in split {split!r}")
    ids = np.array([f"stsb{i:05d}" for i in range(len(sentences))])
    save_npz(out, ids=ids, sentences=np.array(sentences))

    matches = None if expected_count is None else len(sentences) == int(expected_count)
    if matches is False:
        log.warning("STS-B %s split of %s@%s gives %d unique sentences; the paper reports %d",
                    split, repo_id, revision, len(sentences), expected_count)
    provenance = {
        "dataset": "stsb",
        "source": "huggingface",
        "repo_id": repo_id,
        "revision": revision,
        "split": split,
        "file": filename,
        "commit": hub.commit,
        "url": url,
        "file_sha256": hub.sha256,
        "file_verified_by": list(hub.verified),
        "derivation": ("unique sentences of the split in first-appearance order: row by row, "
                       "sentence1 then sentence2; whitespace stripped; empty dropped; "
                       "exact-string deduplication keeping the first"),
        **counts,
        "n_stimuli": len(sentences),
        "expected_count": expected_count,
        "count_matches_paper": matches,
        "ids": "stsb{i:05d}",
        "out": str(out),
    }
    write_json(provenance_path(out), provenance)
    return provenance
