"""One S3 object to one local file, resumable, retried and verified
(:func:`download_object`), and the check of a local file against an object's size and
ETag.

Download guarantees
-------------------
* The object is streamed into ``<file>.part`` (with ``<file>.part.json`` naming the ETag
  it belongs to).  After a cut connection, the download resumes with a ranged
  ``GetObject`` (``Range: bytes=N-``, ``If-Match: <etag>`` so that a changed object is never
  spliced); an interrupted run resumes the same way.  Requests are retried by the S3
  client; a cut body is resumed under the same policy (:mod:`.s3`, "Retries").
* The finished ``.part`` must have the object's size (``Content-Length`` of HEAD; a body
  that ends early, with or without a length, is resumed, never accepted), and the digest
  the server records: a single-part ETag (32 hex digits) is the MD5 of the content and
  must match; a multipart ETag ``<md5 of the parts' md5s>-<n>`` is recomputed for the part
  sizes that give ``n`` parts among the usual client defaults (8, 5, 16, 15, 32, 50, 64,
  100, 128, 256, 512 MiB) and must match when one of them does; when none does (the part
  size cannot be inferred) the size is the only check (``verified: "size"``, logged).  It
  is then fsynced and moved into place with :func:`os.replace` (atomic).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path

from ...io.atomic import write_json
from .s3 import (
    DOWNLOAD_CHUNK,
    MiB,
    NSDRemoteError,
    _error_code,
    _is_client_error,
    _iter_body,
    _network_errors,
    _raise_for_client_error,
    _Retrier,
    _TransientError,
    _url,
    head,
)

logger = logging.getLogger(__name__)

#: Part sizes tried when checking a multipart ETag (common client defaults).
_MULTIPART_PART_SIZES = tuple(s * MiB for s in (8, 5, 16, 15, 32, 50, 64, 100, 128, 256, 512))

_SINGLE_ETAG_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_MULTI_ETAG_RE = re.compile(r"^([0-9a-fA-F]{32})-(\d+)$")


def _strip_etag(etag: str) -> str:
    return (etag or "").strip().strip('"')


def etag_kind(etag: str) -> str:
    """``"md5"`` (single-part ETag = MD5 of the content), ``"multipart"`` or ``"other"``."""
    e = _strip_etag(etag)
    if _SINGLE_ETAG_RE.match(e):
        return "md5"
    if _MULTI_ETAG_RE.match(e):
        return "multipart"
    return "other"


def _md5():
    try:
        return hashlib.md5(usedforsecurity=False)
    except TypeError:  # pragma: no cover - very old Pythons
        return hashlib.md5()


def file_hashes(path, chunk: int = 4 * MiB) -> dict:
    """``{"md5": hex, "sha256": hex, "size": int}`` of a local file (one pass)."""
    md5, sha = _md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                break
            md5.update(data)
            sha.update(data)
            size += len(data)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest(), "size": size}


def multipart_etag(path, part_size: int) -> str:
    """The S3 ETag a multipart upload of ``path`` with ``part_size`` parts would have."""
    digests = []
    with open(path, "rb") as f:
        while True:
            data = f.read(part_size)
            if not data:
                break
            digests.append(_md5())
            digests[-1].update(data)
    whole = _md5()
    for d in digests:
        whole.update(d.digest())
    return f"{whole.hexdigest()}-{len(digests)}"


def _multipart_matches(path, etag: str, size: int) -> bool | None:
    """True/False if a plausible part size reproduces ``etag``; None if none fits."""
    m = _MULTI_ETAG_RE.match(_strip_etag(etag))
    if not m:
        return None
    n = int(m.group(2))
    if n < 1:
        return None
    candidates = [ps for ps in _MULTIPART_PART_SIZES if math.ceil(size / ps) == n]
    if not candidates:
        return None
    target = _strip_etag(etag).lower()
    return any(multipart_etag(path, ps) == target for ps in candidates[:4])


def _verify_local(path: Path, size: int, etag: str, hashes: dict | None = None) -> tuple[bool, str, dict]:
    """Check a local file against an object's size and ETag.

    Returns ``(ok, verified, hashes)``; ``verified`` is ``"md5"``, ``"multipart-md5"`` or
    ``"size"`` (only the size could be checked).
    """
    hashes = hashes or file_hashes(path)
    if hashes["size"] != size:
        return False, "size", hashes
    kind = etag_kind(etag)
    if kind == "md5":
        return hashes["md5"] == _strip_etag(etag).lower(), "md5", hashes
    if kind == "multipart":
        match = _multipart_matches(path, etag, size)
        if match is True:
            return True, "multipart-md5", hashes
        # no plausible part size reproduces it: the part size is unknown, not a mismatch
        return True, "size", hashes
    return True, "size", hashes


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _left(part: Path) -> str:
    """What an unfinished download leaves on disk, as checked there."""
    if part.exists():
        return (f"the partial file {part} ({part.stat().st_size} bytes) is kept and the next "
                "call resumes from it")
    return "no partial file is left"


def _discard(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def download_object(client, bucket: str, key: str, dest, *, info: dict | None = None,
                    sleep=time.sleep, chunk_size: int = DOWNLOAD_CHUNK) -> dict:
    """Download ``s3://bucket/key`` to ``dest`` with resume, retries and verification.

    See the module docstring ("Download guarantees").  ``dest`` is always replaced (use
    :func:`motalign.datasets.nsd.mirror.download_nsd` for skip-if-present).  ``info``
    (``{"size", "etag"}`` from :func:`head`) saves the HEAD request.

    Returns
    -------
    dict
        ``key``, ``size``, ``etag``, ``sha256``, ``md5``, ``verified`` (``"md5"``,
        ``"multipart-md5"`` or ``"size"``), ``bytes_transferred`` (body bytes received,
        all attempts), ``resumed_from`` (byte offsets of the ranged requests),
        ``attempts`` (GET requests), ``mtime_ns``.
    """
    dest = Path(dest)
    what = f"download of {_url(bucket, key)}"
    part, meta = _part_paths(dest)
    retrier = _Retrier.for_client(client, sleep, what, left=lambda: _left(part))
    if info is None:
        info = head(client, bucket, key)
    size, etag = int(info["size"]), str(info["etag"])
    dest.parent.mkdir(parents=True, exist_ok=True)

    def _meta_ok() -> bool:
        try:
            with open(meta) as f:
                m = json.load(f)
            return m.get("etag") == etag and int(m.get("size", -1)) == size and m.get("key") == key
        except (OSError, ValueError, TypeError):
            return False

    if part.exists() and not _meta_ok():
        _discard(part, meta)
    if not part.exists():
        write_json(meta, {"key": key, "bucket": bucket, "etag": etag, "size": size})
        part.touch()

    transferred, resumed_from, attempts = 0, [], 0
    net = _network_errors()
    while True:
        offset = part.stat().st_size
        if offset > size:
            _discard(part)
            part.touch()
            offset = 0
        if offset < size:
            kwargs = {"Bucket": bucket, "Key": key}
            if etag:
                kwargs["IfMatch"] = etag
            if offset:
                kwargs["Range"] = f"bytes={offset}-"
                resumed_from.append(offset)
            gained = 0
            try:
                attempts += 1
                try:
                    resp = client.get_object(**kwargs)
                except net as exc:  # botocore has retried the request already
                    if _is_client_error(exc):  # pragma: no cover
                        raise
                    raise NSDRemoteError(f"{what}: {type(exc).__name__}: {exc} (after the S3 "
                                         f"client's retries); {_left(part)}") from exc
                status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
                mode = "ab"
                if offset and status != 206 and not resp.get("ContentRange"):
                    mode = "wb"  # the server ignored the range: the body is the whole object
                with open(part, mode) as f:
                    for data in _iter_body(resp["Body"], chunk_size):
                        f.write(data)
                        gained += len(data)
                transferred += gained
            except _TransientError as exc:
                transferred += gained
                if gained:
                    retrier.progressed()
                retrier.failed(exc)
                continue
            except Exception as exc:
                if not _is_client_error(exc):
                    raise
                code, _ = _error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    # the object changed since HEAD: restart on the new version
                    logger.warning("%s changed during the download; restarting", _url(bucket, key))
                    info = head(client, bucket, key)
                    size, etag = int(info["size"]), str(info["etag"])
                    _discard(part, meta)
                    write_json(meta, {"key": key, "bucket": bucket, "etag": etag, "size": size})
                    part.touch()
                    retrier.failed(exc, "object changed during the download")
                    continue
                if code in ("InvalidRange", "416"):
                    _discard(part)
                    part.touch()
                    retrier.failed(exc, "range not satisfiable; restarting from byte 0")
                    continue
                _raise_for_client_error(exc, bucket, key)  # botocore has retried it already
            if part.stat().st_size < size:
                # body ended early without a connection error
                retrier.failed(NSDRemoteError("short body"),
                               f"body ended at byte {part.stat().st_size} of {size}")
                continue
        ok, verified, hashes = _verify_local(part, size, etag)
        if ok and verified == "size":
            logger.info("%s: ETag %s gives no digest to check (multipart upload of an unknown "
                        "part size); verified by its size, %d bytes", _url(bucket, key), etag, size)
        if not ok:
            _discard(part)
            part.touch()
            reason = (f"size {hashes['size']} != {size}" if hashes["size"] != size
                      else f"MD5 {hashes['md5']} != ETag {_strip_etag(etag)}")
            retrier.failed(NSDRemoteError(reason), f"verification failed: {reason}")
            continue
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(part, 0o644)
        os.replace(part, dest)
        _discard(meta)
        return {
            "key": key, "size": size, "etag": etag, "sha256": hashes["sha256"],
            "md5": hashes["md5"], "verified": verified, "bytes_transferred": transferred,
            "resumed_from": resumed_from, "attempts": attempts,
            "mtime_ns": dest.stat().st_mtime_ns,
        }
