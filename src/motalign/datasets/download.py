"""File digests, and where a prepared stimuli file's provenance document goes.

Downloads themselves are done by the clients of their sources: files of the Hugging Face
hub by ``huggingface_hub`` (:mod:`motalign.datasets.hub`), the NSD files by boto3
(:mod:`motalign.datasets.nsd.transfer`); each downloaded file is verified against a digest
(or, for S3 multipart uploads whose part size cannot be inferred, the size) recorded by the
server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256", "provenance_path"]


def provenance_path(out) -> Path:
    """Where the provenance document of the stimuli file ``out`` goes: ``<out>.json``."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def file_sha256(path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
