"""Remote access to the public NSD bucket ``s3://natural-scenes-dataset``.

Two ways to get the Natural Scenes Dataset files that the paper needs (SPEC §3, NSD):

* :func:`download_nsd` mirrors, into a local folder and under the **same relative keys as
  the bucket** (so that :mod:`motalign.nsd` reads the folder as an NSD root), exactly the
  files the paper uses: ``nsddata/experiments/nsd/nsd_expdesign.mat``, per subject the two
  ROI volumes ``nsddata/ppdata/subjXX/func1pt8mm/roi/{prf-visualrois,streams}.nii.gz`` and
  the betas of every session
  ``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionYY.nii.gz``.
  It never downloads the ~37 GB ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``.
* :class:`RangedS3File` is a seekable read-only file object over one S3 object that fetches
  byte ranges (``GetObject`` with ``Range``) and caches blocks, so that
  ``h5py.File(RangedS3File(...), "r")`` reads a few rows of ``imgBrick`` while transferring
  a small fraction of the file.  :func:`read_shared_images_remote` reads images this way
  (through :func:`motalign.nsd.read_stimuli`), and :func:`fetch_shared_stimuli` writes only
  the shared images (``sharedix``) into a small local HDF5 file, read back with
  :func:`read_local_shared`.

Bucket and access
-----------------
The bucket is ``natural-scenes-dataset`` in region ``us-east-2`` (AWS Open Data registry,
``datasets/nsd.yaml``), public, readable without an AWS account: :func:`s3_client` makes
anonymous (unsigned) requests by default.  ``NSD_S3_ENDPOINT`` (an S3-compatible endpoint
URL, e.g. a local test server) and ``NSD_S3_BUCKET`` override endpoint and bucket.
The NSD terms of use (the NSD Data Access Agreement) apply to the data.

Download guarantees (:func:`download_object`)
----------------------------------------------
* A file already present with the object's size is kept; when the object's ETag is a
  single-part ETag (32 hex digits, the MD5 of the content) the local MD5 must match too.
  The manifest (below) lets a re-run skip hashing a file whose size, ETag and
  modification time are unchanged since it was recorded (``rehash=True`` always hashes).
* Otherwise the object is streamed into ``<file>.part`` (with ``<file>.part.json`` naming
  the ETag it belongs to).  After a cut connection, the download resumes with a ranged
  ``GetObject`` (``Range: bytes=N-``, ``If-Match: <etag>`` so that a changed object is never
  spliced); an interrupted run resumes the same way.  Transient failures (connection
  errors, truncated bodies, 5xx/throttling) are retried with exponential backoff
  (``backoff * 2**k`` seconds, capped; the count restarts once an attempt made progress);
  ``sleep`` is injectable.
* The finished ``.part`` must have the object's size, and the MD5 of a single-part ETag
  (a multipart ETag ``<md5 of part md5s>-<n>`` is checked against the usual part sizes
  when one fits; otherwise the size is the check); it is then fsynced and moved into
  place with :func:`os.replace` (atomic).
* ``<root>/.motalign_manifest.json`` (written atomically after every file) records, per
  key: size, etag, sha256, md5, how it was verified, and the file's ``mtime_ns``.

Local shared-stimuli file (:func:`fetch_shared_stimuli`)
-------------------------------------------------------
``nsddata_stimuli/stimuli/nsd/nsd_shared_stimuli.hdf5`` under the root (a derived file,
not a bucket key) holds datasets ``images`` (n x H x W x 3 uint8, one chunk per image) and
``nsd_ids`` (n int64, **1-based NSD ids, increasing**): row ``i`` of ``images`` is NSD id
``nsd_ids[i]``.  The image dataset is deliberately *not* named ``imgBrick``: in the real
file, NSD id ``k`` is row ``k - 1`` of ``imgBrick``, and a small file whose rows are not
indexed by id must not be readable as if it were (:func:`motalign.nsd.read_stimuli` fails
on it with "no dataset 'imgBrick'" instead of returning wrong images).  Attributes record
the source (``s3://bucket/key``), its ETag and size, and a format tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import _nsd as nsd

logger = logging.getLogger(__name__)

#: The public NSD bucket, its region, and the environment variables that override them.
DEFAULT_BUCKET = "natural-scenes-dataset"
DEFAULT_REGION = "us-east-2"
ENDPOINT_ENV = "NSD_S3_ENDPOINT"
BUCKET_ENV = "NSD_S3_BUCKET"

#: Manifest of the mirrored files, at the root of the local mirror.
MANIFEST_NAME = ".motalign_manifest.json"
MANIFEST_FORMAT = "motalign-nsd-manifest/1"

#: ROI volumes downloaded per subject by default (the paper's seven regions use these two).
DEFAULT_ROI_FILES = ("prf-visualrois", "streams")

#: Derived local file with the shared images only (not a bucket key; see module docstring).
SHARED_STIMULI_PATH = "nsddata_stimuli/stimuli/nsd/nsd_shared_stimuli.hdf5"
SHARED_STIMULI_FORMAT = "motalign-nsd-shared-stimuli/1"

MiB = 1024 * 1024
#: Bytes read from a response body at once while downloading.
DOWNLOAD_CHUNK = 1 * MiB
#: Part sizes tried when checking a multipart ETag (common client defaults).
_MULTIPART_PART_SIZES = tuple(s * MiB for s in (8, 5, 16, 15, 32, 50, 64, 100, 128, 256, 512))

_SINGLE_ETAG_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_MULTI_ETAG_RE = re.compile(r"^([0-9a-fA-F]{32})-(\d+)$")
_RETRYABLE_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "500", "502", "503", "504",
})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


# --------------------------------------------------------------------------- errors


class NSDRemoteError(RuntimeError):
    """A remote NSD operation failed (after retries, or for a non-transient reason)."""


class MissingObjectError(NSDRemoteError, LookupError):
    """An object (or the bucket) does not exist; ``key`` and ``bucket`` name it."""

    def __init__(self, message: str, *, key: str | None = None, bucket: str | None = None):
        super().__init__(message)
        self.key = key
        self.bucket = bucket


class _TransientError(Exception):
    """Internal: a network failure worth retrying (the cause is chained)."""


# --------------------------------------------------------------------------- client


def default_bucket() -> str:
    """``$NSD_S3_BUCKET`` if set (non-empty), else :data:`DEFAULT_BUCKET`."""
    return os.environ.get(BUCKET_ENV) or DEFAULT_BUCKET


def _bucket(bucket) -> str:
    return default_bucket() if bucket is None else str(bucket)


def s3_client(endpoint_url: str | None = None, region: str = DEFAULT_REGION, *,
              anonymous: bool = True, max_attempts: int = 5, connect_timeout: float = 20.0,
              read_timeout: float = 60.0):
    """A boto3 S3 client for the NSD bucket.

    Parameters
    ----------
    endpoint_url : str, optional
        S3-compatible endpoint; default ``$NSD_S3_ENDPOINT`` if set, else AWS S3.
        A custom endpoint uses path-style addressing.
    region : str, default ``"us-east-2"``
        The bucket's region.
    anonymous : bool, default True
        Unsigned requests (no credentials needed, as for the public NSD bucket).  False
        uses the usual boto3 credential chain.
    max_attempts, connect_timeout, read_timeout
        botocore retry attempts (standard mode) and socket timeouts in seconds.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    options = dict(
        region_name=region,
        retries={"max_attempts": int(max_attempts), "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    if anonymous:
        options["signature_version"] = UNSIGNED
    if endpoint_url:
        options["s3"] = {"addressing_style": "path"}
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=Config(**options))


def _client(client):
    return s3_client() if client is None else client


# --------------------------------------------------------------------------- error helpers


def _error_code(exc) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status


def _is_client_error(exc) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


def _is_retryable_client_error(exc) -> bool:
    code, status = _error_code(exc)
    return code in _RETRYABLE_CODES or (status is not None and 500 <= int(status) < 600)


def _network_errors() -> tuple:
    """Exceptions that mean "the connection failed or the body was cut": retried."""
    import http.client

    import botocore.exceptions as be
    import urllib3.exceptions as ue

    return (be.ConnectionError, be.HTTPClientError, be.IncompleteReadError,
            be.ResponseStreamingError, ue.HTTPError, http.client.HTTPException, OSError)


def _url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _raise_for_client_error(exc, bucket: str, key: str, what: str = "object"):
    """Turn a non-retryable ClientError into a clear error naming the key and bucket."""
    code, status = _error_code(exc)
    if code == "NoSuchBucket":
        raise MissingObjectError(
            f"bucket {bucket!r} does not exist (while fetching {_url(bucket, key)})",
            key=key, bucket=bucket) from exc
    if code in _MISSING_CODES or status == 404:
        raise MissingObjectError(
            f"missing NSD {what}: key {key!r} does not exist in bucket {bucket!r} "
            f"({_url(bucket, key)})", key=key, bucket=bucket) from exc
    if code in ("403", "AccessDenied", "Forbidden") or status == 403:
        raise NSDRemoteError(
            f"access denied to {_url(bucket, key)} (key {key!r} in bucket {bucket!r}); the "
            f"object may not exist or may not be public, or the client may need "
            f"anonymous=True / credentials") from exc
    raise NSDRemoteError(f"{_url(bucket, key)}: {code or status}: {exc}") from exc


class _Retrier:
    """Exponential backoff bookkeeping: ``failed()`` sleeps or raises after ``retries``
    consecutive failures without progress; ``progressed()`` restarts the count."""

    def __init__(self, retries: int, backoff: float, max_backoff: float, sleep, what: str):
        if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.sleep = sleep
        self.what = what
        self.failures = 0

    def progressed(self):
        self.failures = 0

    def failed(self, exc, reason: str | None = None):
        self.failures += 1
        cause = exc.__cause__ if isinstance(exc, _TransientError) and exc.__cause__ else exc
        if self.failures > self.retries:
            raise NSDRemoteError(
                f"{self.what}: giving up after {self.retries} retries "
                f"({reason or type(cause).__name__ + ': ' + str(cause)})") from cause
        delay = min(self.max_backoff, self.backoff * 2 ** (self.failures - 1))
        logger.warning("%s: %s; retry %d/%d in %.1f s", self.what,
                       reason or f"{type(cause).__name__}: {cause}", self.failures, self.retries, delay)
        self.sleep(delay)


def _call(fn, retrier: _Retrier, bucket: str, key: str, what: str = "object", **kwargs):
    """``fn(**kwargs)`` with retries of transient failures; missing keys raise clearly."""
    net = _network_errors()
    while True:
        try:
            return fn(**kwargs)
        except net as exc:
            if _is_client_error(exc):  # pragma: no cover - ClientError is not a network error
                raise
            retrier.failed(exc)
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            if _is_retryable_client_error(exc):
                retrier.failed(exc)
                continue
            _raise_for_client_error(exc, bucket, key, what)


def head(client, bucket: str, key: str, *, retries: int = 5, backoff: float = 1.0,
         max_backoff: float = 60.0, sleep=time.sleep, what: str = "object") -> dict:
    """``{"size": int, "etag": str}`` of ``s3://bucket/key`` (HeadObject, retried).

    Raises :class:`MissingObjectError` (naming key and bucket) if it does not exist.
    """
    retrier = _Retrier(retries, backoff, max_backoff, sleep, f"HEAD {_url(bucket, key)}")
    resp = _call(client.head_object, retrier, bucket, key, what, Bucket=bucket, Key=key)
    return {"size": int(resp["ContentLength"]), "etag": str(resp.get("ETag", ""))}


# --------------------------------------------------------------------------- hashing


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


# --------------------------------------------------------------------------- atomic json


def _write_json_atomic(path: Path, obj) -> None:
    from ...io.atomic import write_json

    write_json(path, obj)


def read_manifest(root) -> dict:
    """The manifest of the mirror at ``root`` (an empty one if absent or unreadable)."""
    path = Path(root) / MANIFEST_NAME
    empty = {"format": MANIFEST_FORMAT, "files": {}}
    if not path.is_file():
        return empty
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s); starting a new manifest", path, exc)
        return empty
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        logger.warning("%s has an unexpected structure; starting a new manifest", path)
        return empty
    data.setdefault("format", MANIFEST_FORMAT)
    return data


# --------------------------------------------------------------------------- download one object


def _iter_body(body, chunk: int):
    """Chunks of a response body; network failures become :class:`_TransientError`."""
    net = _network_errors()
    try:
        while True:
            try:
                data = body.read(chunk)
            except net as exc:
                raise _TransientError(f"connection cut while reading the body: {exc}") from exc
            if not data:
                return
            yield data
    finally:
        with contextlib.suppress(Exception):
            body.close()


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _discard(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def download_object(client, bucket: str, key: str, dest, *, info: dict | None = None,
                    retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                    sleep=time.sleep, chunk_size: int = DOWNLOAD_CHUNK) -> dict:
    """Download ``s3://bucket/key`` to ``dest`` with resume, retries and verification.

    See the module docstring ("Download guarantees").  ``dest`` is always replaced (use
    :func:`download_nsd` for skip-if-present).  ``info`` (``{"size", "etag"}`` from
    :func:`head`) saves the HEAD request.

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
    retrier = _Retrier(retries, backoff, max_backoff, sleep, what)
    if info is None:
        info = head(client, bucket, key, retries=retries, backoff=backoff,
                    max_backoff=max_backoff, sleep=sleep)
    size, etag = int(info["size"]), str(info["etag"])
    part, meta = _part_paths(dest)
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
        _write_json_atomic(meta, {"key": key, "bucket": bucket, "etag": etag, "size": size})
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
                except net as exc:
                    if _is_client_error(exc):  # pragma: no cover
                        raise
                    raise _TransientError(str(exc)) from exc
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
                    info = head(client, bucket, key, retries=retries, backoff=backoff,
                                max_backoff=max_backoff, sleep=sleep)
                    size, etag = int(info["size"]), str(info["etag"])
                    _discard(part, meta)
                    _write_json_atomic(meta, {"key": key, "bucket": bucket, "etag": etag, "size": size})
                    part.touch()
                    retrier.failed(exc, "object changed during the download")
                    continue
                if code in ("InvalidRange", "416"):
                    _discard(part)
                    part.touch()
                    retrier.failed(exc, "range not satisfiable; restarting from byte 0")
                    continue
                if _is_retryable_client_error(exc):
                    retrier.failed(exc)
                    continue
                _raise_for_client_error(exc, bucket, key)
            if part.stat().st_size < size:
                # body ended early without a connection error
                retrier.failed(NSDRemoteError("short body"),
                               f"body ended at byte {part.stat().st_size} of {size}")
                continue
        ok, verified, hashes = _verify_local(part, size, etag)
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


# --------------------------------------------------------------------------- which keys


def _list_keys(client, bucket: str, prefix: str, retries: int, sleep) -> list[str]:
    retrier = _Retrier(retries, 1.0, 60.0, sleep, f"LIST {_url(bucket, prefix)}")
    keys, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        resp = _call(client.list_objects_v2, retrier, bucket, prefix, "prefix", **kwargs)
        keys.extend(obj["Key"] for obj in resp.get("Contents", []) or [])
        if not resp.get("IsTruncated"):
            return keys
        token = resp.get("NextContinuationToken")
        if not token:  # pragma: no cover - defensive
            return keys


def _session_list(sessions, subject: str):
    if isinstance(sessions, Mapping):
        norm = {nsd.subject_id(k): v for k, v in sessions.items()}
        if subject not in norm:
            raise ValueError(f"sessions mapping has no entry for {subject} (keys: {sorted(norm)})")
        sessions = norm[subject]
    if sessions is None:
        return None
    if isinstance(sessions, (int, np.integer)) and not isinstance(sessions, bool):
        sessions = [sessions]
    out = []
    for s in sessions:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"sessions must be positive integers (1-based, as in betas_sessionYY), got {s!r}")
        if int(s) not in out:
            out.append(int(s))
    if not out:
        raise ValueError(f"no session requested for {subject}")
    return sorted(out)


def needed_keys(subjects, *, sessions=None, regions_files=DEFAULT_ROI_FILES, client=None,
                bucket=None, betas_ext: str = ".nii.gz", include_expdesign: bool = True,
                retries: int = 5, sleep=time.sleep) -> list[str]:
    """The bucket keys :func:`download_nsd` mirrors, in download order.

    ``sessions``: None (every ``betas_sessionYY<betas_ext>`` listed under the subject's
    betas prefix), an int, a sequence of ints, or a mapping subject -> any of these.
    Listing needs the client; explicit sessions do not.
    """
    if betas_ext not in (".nii.gz", ".hdf5"):
        raise ValueError(f"betas_ext must be '.nii.gz' or '.hdf5', got {betas_ext!r}")
    if isinstance(subjects, (str, int, np.integer)):
        subjects = [subjects]
    names = []
    for s in subjects:
        name = nsd.subject_id(s)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no subject requested")
    if isinstance(regions_files, str):
        regions_files = [regions_files]
    bucket = _bucket(bucket)
    keys = [nsd.EXPDESIGN_PATH] if include_expdesign else []
    pattern = re.compile(r"^betas_session(\d+)" + re.escape(betas_ext) + "$")
    for name in names:
        roi_dir = nsd.ROI_DIR.format(subject=name)
        keys.extend(f"{roi_dir}/{stem}.nii.gz" for stem in regions_files)
        betas_dir = nsd.BETAS_DIR.format(subject=name)
        wanted = _session_list(sessions, name)
        if wanted is None:
            client = _client(client)
            prefix = betas_dir + "/"
            found = {}
            for k in _list_keys(client, bucket, prefix, retries, sleep):
                m = pattern.match(k[len(prefix):])
                if m:
                    found[int(m.group(1))] = k
            if not found:
                raise MissingObjectError(
                    f"no beta files betas_sessionYY{betas_ext} for {name} under prefix "
                    f"{prefix!r} in bucket {bucket!r} ({_url(bucket, prefix)})",
                    key=prefix, bucket=bucket)
            keys.extend(found[s] for s in sorted(found))
        else:
            keys.extend(f"{betas_dir}/" + nsd.BETA_NAME.format(session=s, ext=betas_ext) for s in wanted)
    if nsd.STIMULI_PATH in keys:  # pragma: no cover - defensive
        raise AssertionError("the full stimuli file must never be mirrored")
    return keys


# --------------------------------------------------------------------------- download the subset


def download_nsd(root, *, subjects, sessions=None, regions_files=DEFAULT_ROI_FILES, client=None,
                 bucket=None, retries: int = 5, betas_ext: str = ".nii.gz",
                 include_expdesign: bool = True, rehash: bool = False, backoff: float = 1.0,
                 max_backoff: float = 60.0, sleep=time.sleep) -> dict:
    """Mirror the NSD files the paper needs into ``root``, under the bucket's keys.

    Files: the experiment design, per subject the ROI volumes ``regions_files`` and the
    betas of ``sessions`` (default: every session present in the bucket, found by
    listing).  Never the full stimuli file (see :func:`fetch_shared_stimuli`).
    Each file is skipped when present and matching (size, and MD5 for a single-part ETag;
    a manifest entry with the same size, ETag and mtime is trusted unless ``rehash``),
    otherwise downloaded by :func:`download_object` (resume, retries, verification,
    atomic replace).  The manifest is updated after every file.

    Parameters
    ----------
    root : path-like
        The local NSD root (created); :mod:`motalign.nsd` reads it directly.
    subjects : sequence
        Paper letters, NSD names or numbers (e.g. ``["A", "B", "C", "D"]``).
    sessions : None, int, sequence or mapping
        See :func:`needed_keys`.
    regions_files : sequence of str
        ROI file stems in ``func1pt8mm/roi/``.
    client, bucket
        Default :func:`s3_client` and :func:`default_bucket`.
    retries, backoff, max_backoff, sleep
        Retry policy of every request (see :func:`download_object`).
    betas_ext : {".nii.gz", ".hdf5"}
    rehash : bool
        Hash every present file even if the manifest vouches for it.

    Returns
    -------
    dict
        ``root``, ``bucket``, ``files`` (every key, in order), ``downloaded`` and
        ``skipped`` (keys), ``bytes`` (bytes transferred by this call), ``total_bytes``
        (size of all files), ``manifest`` (path).

    Raises
    ------
    MissingObjectError
        A needed key (or, when listing, any session) is absent; the message names the key
        and the bucket.  Nothing is downloaded then (all keys are checked first).
    NSDRemoteError
        A download failed after ``retries`` retries, or access was denied.
    """
    root = Path(root)
    client = _client(client)
    bucket = _bucket(bucket)
    keys = needed_keys(subjects, sessions=sessions, regions_files=regions_files, client=client,
                       bucket=bucket, betas_ext=betas_ext, include_expdesign=include_expdesign,
                       retries=retries, sleep=sleep)
    heads = {}
    for key in keys:  # check every key first, so a missing one fails before any transfer
        heads[key] = head(client, bucket, key, retries=retries, backoff=backoff,
                          max_backoff=max_backoff, sleep=sleep, what="file")
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    manifest["format"] = MANIFEST_FORMAT
    manifest_path = root / MANIFEST_NAME
    downloaded, skipped, transferred = [], [], 0
    for key in keys:
        info = heads[key]
        dest = root / key
        entry = manifest["files"].get(key)
        record = None
        if dest.is_file() and dest.stat().st_size == info["size"]:
            st = dest.stat()
            trusted = (not rehash and isinstance(entry, dict) and entry.get("bucket") == bucket
                       and entry.get("etag") == info["etag"] and entry.get("size") == info["size"]
                       and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("sha256"))
            if trusted:
                record = dict(entry)
            else:
                ok, verified, hashes = _verify_local(dest, info["size"], info["etag"])
                if ok:
                    record = {"key": key, "size": info["size"], "etag": info["etag"],
                              "sha256": hashes["sha256"], "md5": hashes["md5"],
                              "verified": verified, "mtime_ns": st.st_mtime_ns}
                else:
                    logger.warning("%s: present but does not match %s (%s); downloading again",
                                   dest, _url(bucket, key), "MD5 differs from the ETag")
        if record is not None:
            skipped.append(key)
            logger.info("skip %s (present, verified)", key)
        else:
            logger.info("download %s (%d bytes)", key, info["size"])
            record = download_object(client, bucket, key, dest, info=info, retries=retries,
                                     backoff=backoff, max_backoff=max_backoff, sleep=sleep)
            transferred += record["bytes_transferred"]
            downloaded.append(key)
        manifest["files"][key] = {
            "bucket": bucket, "key": key, "size": record["size"], "etag": record["etag"],
            "sha256": record["sha256"], "md5": record.get("md5"),
            "verified": record.get("verified"), "mtime_ns": record["mtime_ns"],
        }
        _write_json_atomic(manifest_path, manifest)
    return {
        "root": str(root), "bucket": bucket, "files": keys, "downloaded": downloaded,
        "skipped": skipped, "bytes": transferred,
        "total_bytes": sum(heads[k]["size"] for k in keys), "manifest": str(manifest_path),
    }


# --------------------------------------------------------------------------- ranged file


class RangedS3File(io.RawIOBase):
    """Seekable, read-only binary file over ``s3://bucket/key`` using ranged GETs.

    Reads shorter than ``direct_threshold`` go through a cache of ``cache_blocks`` aligned
    blocks of ``block_size`` bytes (least recently used evicted); consecutive missing
    blocks are fetched in one request.  Longer reads fetch exactly the requested range
    (uncached), so that reading a large array row does not round up to whole blocks.
    Every request carries ``If-Match`` with the ETag seen at open time, so a file replaced
    while open raises instead of mixing versions.  ``bytes_fetched`` and ``requests`` count
    the transfer.

    ``h5py.File(RangedS3File(client, bucket, key), "r")`` works (h5py's file-object driver).
    """

    def __init__(self, client, bucket: str, key: str, *, block_size: int = 4 * MiB,
                 cache_blocks: int = 16, direct_threshold: int = 256 * 1024, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, sleep=time.sleep):
        super().__init__()
        if int(block_size) < 1 or int(cache_blocks) < 1:
            raise ValueError("block_size and cache_blocks must be positive")
        self.client = client
        self.bucket = str(bucket)
        self.key = str(key)
        self.name = _url(self.bucket, self.key)
        self.block_size = int(block_size)
        self.cache_blocks = int(cache_blocks)
        self.direct_threshold = int(direct_threshold)
        self._retry = dict(retries=retries, backoff=backoff, max_backoff=max_backoff, sleep=sleep)
        info = head(client, self.bucket, self.key, **self._retry)
        self.size = info["size"]
        self.etag = info["etag"]
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.RLock()
        self.bytes_fetched = 0
        self.requests = 0

    # -- io.RawIOBase interface
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        offset = int(offset)
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        self._checkClosed()
        with self._lock:
            mv = memoryview(b).cast("B")
            start = self._pos
            n = min(len(mv), max(0, self.size - start))
            if n <= 0:
                return 0
            end = start + n
            if n >= self.direct_threshold:
                mv[:n] = self._fetch(start, end)
            else:
                self._read_blocks(mv, start, end)
            self._pos = end
            return n

    def readall(self) -> bytes:
        n = max(0, self.size - self.tell())
        buf = bytearray(n)
        got = self.readinto(buf) if n else 0
        return bytes(buf[:got])

    def close(self) -> None:
        self._cache = OrderedDict()
        super().close()

    # -- internals
    def _read_blocks(self, mv: memoryview, start: int, end: int) -> None:
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        local: dict[int, bytes] = {}
        missing = []
        for i in range(first, last + 1):
            block = self._cache.get(i)
            if block is None:
                missing.append(i)
            else:
                self._cache.move_to_end(i)
                local[i] = block
        runs = []
        for i in missing:
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        for i0, i1 in runs:
            lo, hi = i0 * bs, min((i1 + 1) * bs, self.size)
            data = self._fetch(lo, hi)
            for i in range(i0, i1 + 1):
                block = data[(i - i0) * bs:(i - i0 + 1) * bs]
                local[i] = block
                self._cache[i] = block
                self._cache.move_to_end(i)
            while len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
        out = 0
        for i in range(first, last + 1):
            block = local[i]
            lo = max(start - i * bs, 0)
            hi = min(end - i * bs, len(block))
            mv[out:out + hi - lo] = block[lo:hi]
            out += hi - lo

    def _fetch(self, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` of the object (one ranged GET, retried)."""
        what = f"ranged read {lo}-{hi - 1} of {self.name}"
        retrier = _Retrier(self._retry["retries"], self._retry["backoff"],
                           self._retry["max_backoff"], self._retry["sleep"], what)
        net = _network_errors()
        while True:
            kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={lo}-{hi - 1}"}
            if self.etag:
                kwargs["IfMatch"] = self.etag
            try:
                self.requests += 1
                try:
                    resp = self.client.get_object(**kwargs)
                except net as exc:
                    if _is_client_error(exc):  # pragma: no cover
                        raise
                    raise _TransientError(str(exc)) from exc
                parts = list(_iter_body(resp["Body"], DOWNLOAD_CHUNK))
            except _TransientError as exc:
                retrier.failed(exc)
                continue
            except Exception as exc:
                if not _is_client_error(exc):
                    raise
                code, _ = _error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    raise NSDRemoteError(
                        f"{self.name} changed while open (ETag no longer {self.etag}); reopen it") from exc
                if _is_retryable_client_error(exc):
                    retrier.failed(exc)
                    continue
                _raise_for_client_error(exc, self.bucket, self.key)
            data = b"".join(parts)
            self.bytes_fetched += len(data)
            content_range = str(resp.get("ContentRange") or "")
            if content_range and not content_range.startswith(f"bytes {lo}-"):
                retrier.failed(NSDRemoteError("bad range"), f"server answered range {content_range!r}")
                continue
            if not content_range and len(data) == self.size and (lo, hi) != (0, self.size):
                data = data[lo:hi]  # the server ignored the Range header
            if len(data) != hi - lo:
                retrier.failed(NSDRemoteError("short range"), f"got {len(data)} of {hi - lo} bytes")
                continue
            return data


# --------------------------------------------------------------------------- stimuli


def read_shared_images_remote(nsd_ids, *, client=None, bucket=None, key: str = nsd.STIMULI_PATH,
                              block_size: int = 4 * MiB, cache_blocks: int = 16) -> np.ndarray:
    """Images of ``nsd_ids`` (1-based NSD ids, any order) read from the remote
    ``nsd_stimuli.hdf5`` through :class:`RangedS3File` and :func:`motalign.nsd.read_stimuli`.

    Only the requested rows of ``imgBrick`` (plus HDF5 metadata) are transferred.
    Returns uint8 ``(len(nsd_ids), H, W, 3)``.
    """
    client = _client(client)
    with RangedS3File(client, _bucket(bucket), key, block_size=block_size,
                      cache_blocks=cache_blocks) as f:
        return nsd.read_stimuli(f, nsd_ids)


def shared_stimuli_path(root) -> Path:
    """Default path of the local shared-images file under an NSD root."""
    return Path(root) / SHARED_STIMULI_PATH


def _resolve_local_shared(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = shared_stimuli_path(path)
    if not path.is_file():
        raise ValueError(
            f"missing local shared-stimuli file: {path} does not exist (write it with "
            f"motalign.nsd_remote.fetch_shared_stimuli; default NSD path {SHARED_STIMULI_PATH})")
    return path


def local_shared_ids(path) -> np.ndarray:
    """The 1-based NSD ids held by a local shared-stimuli file (or NSD root), increasing."""
    import h5py

    path = _resolve_local_shared(path)
    with h5py.File(path, "r") as f:
        if "nsd_ids" not in f or "images" not in f:
            raise ValueError(f"{path}: not a shared-stimuli file (needs datasets 'images' and 'nsd_ids')")
        return np.asarray(f["nsd_ids"][...], dtype=np.int64)


def read_local_shared(path, nsd_ids=None):
    """Images of ``nsd_ids`` from a local shared-stimuli file (see module docstring).

    Parameters
    ----------
    path : path-like
        The file, or an NSD root folder (then :data:`SHARED_STIMULI_PATH` in it).
    nsd_ids : sequence of int, optional
        1-based NSD ids in any order (duplicates allowed); each must be in the file.
        None: every image in the file.

    Returns
    -------
    uint8 array (len(nsd_ids), H, W, 3); with ``nsd_ids=None``, a pair
    ``(ids, images)`` of every id in the file (increasing) and its image.
    """
    import h5py

    path = _resolve_local_shared(path)
    with h5py.File(path, "r") as f:
        if "nsd_ids" not in f or "images" not in f:
            raise ValueError(f"{path}: not a shared-stimuli file (needs datasets 'images' and 'nsd_ids')")
        have = np.asarray(f["nsd_ids"][...], dtype=np.int64)
        dset = f["images"]
        if dset.shape[0] != have.size:
            raise ValueError(f"{path}: 'images' has {dset.shape[0]} rows but 'nsd_ids' {have.size}")
        if nsd_ids is None:
            return have, dset[...]
        ids = nsd.check_nsd_ids(nsd_ids)
        if not ids.size:
            return np.empty((0,) + tuple(dset.shape[1:]), dtype=dset.dtype)
        order = np.argsort(have, kind="stable")
        pos = np.searchsorted(have[order], ids)
        pos_c = np.minimum(pos, have.size - 1)
        found = (pos < have.size) & (have[order][pos_c] == ids)
        if not found.all():
            missing = np.unique(ids[~found])
            raise ValueError(
                f"{path}: NSD ids {missing[:10].tolist()}{' ...' if missing.size > 10 else ''} "
                f"are not in the file ({have.size} shared images)")
        rows = order[pos_c]
        urows, inverse = np.unique(rows, return_inverse=True)
        block = dset[urows] if urows.size > 1 else dset[int(urows[0])][None]
    return block[inverse.ravel()]


def fetch_shared_stimuli(root, out=None, *, nsd_ids=None, client=None, bucket=None,
                         key: str = nsd.STIMULI_PATH, batch_size: int = 50,
                         block_size: int = 4 * MiB, cache_blocks: int = 16,
                         overwrite: bool = False) -> dict:
    """Write only the shared images into a small local HDF5 file.

    The ids default to ``sharedix`` of the local experiment design (``root`` must hold
    ``nsddata/experiments/nsd/nsd_expdesign.mat``, e.g. after :func:`download_nsd`).  The
    images are read from the remote ``nsd_stimuli.hdf5`` with ranged requests (batches of
    ``batch_size`` through :func:`motalign.nsd.read_stimuli`), written to a temporary file
    and moved into place atomically.  An existing file holding exactly these ids from the
    same source (same ETag) is kept unless ``overwrite``.

    Returns
    -------
    dict
        ``path``, ``n_images``, ``nsd_ids``, ``skipped`` (bool), ``bytes_fetched``,
        ``requests``, ``source`` (``s3://bucket/key``), ``source_size``.
    """
    import h5py

    root = Path(root)
    out = shared_stimuli_path(root) if out is None else Path(out)
    if nsd_ids is None:
        design = nsd.read_expdesign(root)
        ids = np.unique(np.asarray(design["sharedix"], dtype=np.int64))
    else:
        ids = np.unique(np.asarray(nsd_ids, dtype=np.int64))
    if ids.size == 0:
        raise ValueError("no NSD id to fetch")
    if ids.min() < 1:
        raise ValueError("NSD ids are 1-based: found ids < 1")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    client = _client(client)
    bucket = _bucket(bucket)
    source = _url(bucket, key)
    with RangedS3File(client, bucket, key, block_size=block_size, cache_blocks=cache_blocks) as rf:
        if out.is_file() and not overwrite:
            try:
                with h5py.File(out, "r") as f:
                    same = (f.attrs.get("format") == SHARED_STIMULI_FORMAT
                            and f.attrs.get("source") == source
                            and f.attrs.get("source_etag") == rf.etag
                            and "nsd_ids" in f and np.array_equal(f["nsd_ids"][...], ids)
                            and "images" in f and f["images"].shape[0] == ids.size)
            except OSError:
                same = False
            if same:
                return {"path": str(out), "n_images": int(ids.size), "nsd_ids": ids, "skipped": True,
                        "bytes_fetched": rf.bytes_fetched, "requests": rf.requests,
                        "source": source, "source_size": rf.size}
        from ...io.atomic import atomic_path

        with atomic_path(out, suffix=".tmp.hdf5") as tmp, h5py.File(tmp, "w") as f:
            dset = None
            for b0 in range(0, ids.size, int(batch_size)):
                batch = ids[b0:b0 + int(batch_size)]
                images = nsd.read_stimuli(rf, batch)
                if dset is None:
                    dset = f.create_dataset("images", shape=(ids.size,) + images.shape[1:],
                                            dtype=np.uint8, chunks=(1,) + images.shape[1:])
                dset[b0:b0 + batch.size] = images
            f.create_dataset("nsd_ids", data=ids)
            f.attrs["format"] = SHARED_STIMULI_FORMAT
            f.attrs["source"] = source
            f.attrs["source_etag"] = rf.etag
            f.attrs["source_size"] = rf.size
            f.attrs["description"] = (
                "row i of 'images' is NSD id nsd_ids[i] (1-based); NOT an imgBrick: "
                "rows are not indexed by NSD id")
        return {"path": str(out), "n_images": int(ids.size), "nsd_ids": ids, "skipped": False,
                "bytes_fetched": rf.bytes_fetched, "requests": rf.requests,
                "source": source, "source_size": rf.size}


__all__ = [
    "DEFAULT_BUCKET", "DEFAULT_REGION", "ENDPOINT_ENV", "BUCKET_ENV", "MANIFEST_NAME",
    "DEFAULT_ROI_FILES", "SHARED_STIMULI_PATH", "NSDRemoteError", "MissingObjectError",
    "default_bucket", "s3_client", "head", "etag_kind", "file_hashes", "multipart_etag",
    "read_manifest", "download_object", "needed_keys", "download_nsd", "RangedS3File",
    "read_shared_images_remote", "shared_stimuli_path", "local_shared_ids",
    "read_local_shared", "fetch_shared_stimuli",
]
