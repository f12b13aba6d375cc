"""A seekable, read-only file over one S3 object, read with ranged requests: ``h5py`` reads a
few rows of the remote ``nsd_stimuli.hdf5`` through it while transferring a small fraction
of the file (see :func:`motalign.datasets.nsd.images.read_shared_images`)."""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict

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
                 cache_blocks: int = 16, direct_threshold: int = 256 * 1024, sleep=time.sleep):
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
        self._sleep = sleep
        info = head(client, self.bucket, self.key)
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
        """Bytes ``[lo, hi)`` of the object (one ranged GET; the request retried by the
        client, a cut or short body fetched again under the client's policy)."""
        what = f"ranged read {lo}-{hi - 1} of {self.name}"
        retrier = _Retrier.for_client(self.client, self._sleep, what)
        net = _network_errors()
        while True:
            kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={lo}-{hi - 1}"}
            if self.etag:
                kwargs["IfMatch"] = self.etag
            try:
                self.requests += 1
                try:
                    resp = self.client.get_object(**kwargs)
                except net as exc:  # botocore has retried the request already
                    if _is_client_error(exc):  # pragma: no cover
                        raise
                    raise NSDRemoteError(f"{what}: {type(exc).__name__}: {exc} (after the S3 "
                                         "client's retries)") from exc
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
                _raise_for_client_error(exc, self.bucket, self.key)  # retried by botocore
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
