"""The public NSD bucket ``s3://natural-scenes-dataset``: the S3 client, the errors, and
the retry policy shared by every remote operation of this package (:mod:`.transfer`,
:mod:`.mirror`, :mod:`.ranged`).

Bucket and access
-----------------
The bucket is ``natural-scenes-dataset`` in region ``us-east-2`` (AWS Open Data registry,
``datasets/nsd.yaml``), public, readable without an AWS account: :func:`s3_client` makes
anonymous (unsigned) requests by default.  ``NSD_S3_ENDPOINT`` (an S3-compatible endpoint
URL, e.g. a local test server) and ``NSD_S3_BUCKET`` override endpoint and bucket.
The NSD terms of use (the NSD Data Access Agreement) apply to the data.

Retries
-------
One policy, the S3 client's own: :func:`s3_client` configures botocore's retries
(``Config(retries={"max_attempts": N, "mode": "standard"})``: connection errors, throttling
and 5xx answers are retried by botocore inside every request), and nothing here retries a
request again.  What botocore cannot retry -- a body cut after the response began, a body
shorter than its object, a download that fails verification -- is resumed (or restarted)
by :mod:`.transfer` and :mod:`.ranged` under the same configuration
(:func:`retry_policy`: as many retries as ``max_attempts``, waits ``2**k`` seconds capped
at 20 s as botocore's standard mode, without its jitter; the count restarts once an attempt
made progress); ``sleep`` is injectable.  A missing key or bucket raises
:class:`MissingObjectError` naming both; other failures raise :class:`NSDRemoteError`.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os

logger = logging.getLogger(__name__)

#: The public NSD bucket, its region, and the environment variables that override them.
DEFAULT_BUCKET = "natural-scenes-dataset"
DEFAULT_REGION = "us-east-2"
ENDPOINT_ENV = "NSD_S3_ENDPOINT"
BUCKET_ENV = "NSD_S3_BUCKET"

MiB = 1024 * 1024
#: Bytes read from a response body at once while downloading.
DOWNLOAD_CHUNK = 1 * MiB

_RETRYABLE_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "500", "502", "503", "504",
})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


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
        botocore's retries (standard mode; the one retry policy of this package, see
        "Retries") and socket timeouts in seconds.
    """
    import boto3  # deferred: optional dependency, nsd extra
    from botocore import UNSIGNED  # deferred: optional dependency, nsd extra
    from botocore.config import Config  # deferred: optional dependency, nsd extra

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


def _error_code(exc) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status


def _is_client_error(exc) -> bool:
    from botocore.exceptions import ClientError  # deferred: optional dependency, nsd extra

    return isinstance(exc, ClientError)


def _is_retryable_client_error(exc) -> bool:
    code, status = _error_code(exc)
    return code in _RETRYABLE_CODES or (status is not None and 500 <= int(status) < 600)


def _network_errors() -> tuple:
    """Exceptions that mean "the connection failed or the body was cut": retried."""
    import botocore.exceptions as be  # deferred: optional dependency, nsd extra
    import urllib3.exceptions as ue  # deferred: optional dependency, nsd extra

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
    suffix = " (after the S3 client's retries)" if _is_retryable_client_error(exc) else ""
    raise NSDRemoteError(f"{_url(bucket, key)}: {code or status}: {exc}{suffix}") from exc


#: botocore's standard mode: waits grow as 2**k seconds up to this cap
_MAX_BACKOFF = 20.0


def retry_policy(client) -> int:
    """The number of retries the client's configuration allows (botocore's
    ``retries["max_attempts"]``, or ``total_max_attempts - 1``; botocore's default, 4 in
    standard mode, when the client does not say)."""
    config = getattr(getattr(client, "meta", None), "config", None)
    retries = getattr(config, "retries", None) or {}
    if retries.get("total_max_attempts") is not None:
        return max(0, int(retries["total_max_attempts"]) - 1)
    if retries.get("max_attempts") is not None:
        return max(0, int(retries["max_attempts"]))
    return 4


class _Retrier:
    """Resumption bookkeeping for failures botocore cannot retry (see "Retries"):
    ``failed()`` sleeps or raises after ``retries`` consecutive failures without progress;
    ``progressed()`` restarts the count."""

    def __init__(self, retries: int, sleep, what: str, backoff: float = 1.0,
                 max_backoff: float = _MAX_BACKOFF, left=None):
        self.left = left  # () -> str: what is left on disk, said when giving up
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.sleep = sleep
        self.what = what
        self.failures = 0

    @classmethod
    def for_client(cls, client, sleep, what: str, left=None) -> _Retrier:
        return cls(retry_policy(client), sleep, what, left=left)

    def progressed(self):
        self.failures = 0

    def failed(self, exc, reason: str | None = None):
        self.failures += 1
        cause = exc.__cause__ if isinstance(exc, _TransientError) and exc.__cause__ else exc
        if self.failures > self.retries:
            raise NSDRemoteError(
                f"{self.what}: giving up after {self.retries} retries (the S3 client's "
                f"max_attempts) ({reason or type(cause).__name__ + ': ' + str(cause)})"
                + (f"; {self.left()}" if self.left else "")) from cause
        delay = min(self.max_backoff, self.backoff * 2 ** (self.failures - 1))
        logger.warning("%s: %s; retry %d/%d in %.1f s", self.what,
                       reason or f"{type(cause).__name__}: {cause}", self.failures, self.retries, delay)
        self.sleep(delay)


def _call(fn, bucket: str, key: str, what: str = "object", **kwargs):
    """``fn(**kwargs)``, a request that botocore has retried already; its failure raises
    :class:`MissingObjectError` or :class:`NSDRemoteError` naming the key and bucket."""
    net = _network_errors()
    try:
        return fn(**kwargs)
    except net as exc:
        if _is_client_error(exc):  # pragma: no cover - ClientError is not a network error
            raise
        raise NSDRemoteError(f"{_url(bucket, key)}: {type(exc).__name__}: {exc} (after the S3 "
                             "client's retries)") from exc
    except Exception as exc:
        if not _is_client_error(exc):
            raise
        _raise_for_client_error(exc, bucket, key, what)


def head(client, bucket: str, key: str, *, what: str = "object") -> dict:
    """``{"size": int, "etag": str}`` of ``s3://bucket/key`` (HeadObject; retried by the
    client).

    Raises :class:`MissingObjectError` (naming key and bucket) if it does not exist.
    """
    resp = _call(client.head_object, bucket, key, what, Bucket=bucket, Key=key)
    return {"size": int(resp["ContentLength"]), "etag": str(resp.get("ETag", ""))}


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
