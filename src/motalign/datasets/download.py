"""One robust HTTP downloader, the Hugging Face hub's ``resolve`` URLs and the local cache
of hub files, and where a prepared stimuli file's provenance document goes.

:func:`download` streams a URL to ``dest.part`` beside ``dest`` and renames it onto ``dest``
only once it is complete (and, when a digest is given, verified), so a partial or corrupt
download is never found at ``dest``.  An interrupted download resumes from the ``.part``
file with an HTTP ``Range`` request; transient failures (connection errors, timeouts, bodies
cut short of their ``Content-Length``, HTTP 5xx and 429) are retried with exponential
backoff; authentication failures (401/403, or the hub's "gated repository" answer) raise a
:class:`PermissionError` that says which environment variable to set and where to get access.

Every downloaded file gets a ``<dest>.sha256`` sidecar (``sha256sum`` format); a later call
finds ``dest`` there, checks it against the sidecar (and the expected digest, when given) and
returns without touching the network.

Two processes must not download to the same ``dest`` at the same time (there is no lock).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from ..io.atomic import atomic_path

if TYPE_CHECKING:
    import requests

__all__ = [
    "DownloadError",
    "HF_ENDPOINT_DEFAULT",
    "download",
    "file_sha256",
    "hf_cache_path",
    "hf_file_url",
    "provenance_path",
    "read_sidecar",
    "sidecar_path",
]

log = logging.getLogger(__name__)

HF_ENDPOINT_DEFAULT = "https://huggingface.co"

#: HTTP statuses worth retrying: the server (or a proxy) is overloaded or failed transiently.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$")


class DownloadError(OSError):
    """A download failed for good (retries exhausted, or a non-retryable HTTP answer)."""


class _Transient(Exception):
    """A failure worth retrying (resuming from what was written)."""


def hf_file_url(repo_id: str, filename: str, *, revision: str = "main",
                repo_type: str = "dataset", endpoint: str | None = None) -> str:
    """The hub's ``resolve`` URL of one file of a repository.

    ``{endpoint}/[datasets/|spaces/]{repo_id}/resolve/{revision}/{filename}``: the revision is
    quoted completely (so ``refs/convert/parquet`` becomes ``refs%2Fconvert%2Fparquet``), the
    file name with its slashes kept.  ``endpoint`` defaults to the ``HF_ENDPOINT`` environment
    variable, else https://huggingface.co (tests point ``HF_ENDPOINT`` at a loopback server).
    """
    prefixes = {"model": "", "dataset": "datasets/", "space": "spaces/"}
    if repo_type not in prefixes:
        raise ValueError(f"repo_type must be one of {sorted(prefixes)}, got {repo_type!r}")
    if not repo_id or repo_id.strip("/") != repo_id or repo_id.count("/") > 1:
        raise ValueError(f"repo_id must look like 'owner/name' (or 'name'), got {repo_id!r}")
    if not filename or filename.startswith("/"):
        raise ValueError(f"filename must be a path inside the repository, got {filename!r}")
    if not revision:
        raise ValueError("revision must be a branch, tag or commit, got an empty string")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT_DEFAULT).rstrip("/")
    return (f"{endpoint}/{prefixes[repo_type]}{repo_id}/resolve/"
            f"{quote(revision, safe='')}/{quote(filename)}")


def hf_cache_path(cache_dir, repo_id: str, revision: str, filename: str) -> Path:
    """Where :func:`download` keeps ``filename`` of the hub repository ``repo_id`` at
    ``revision``: ``<cache_dir>/<owner>--<name>/<revision>/<filename>``."""
    if cache_dir is None:
        raise ValueError("cache_dir is required to download from the hub "
                         "(a folder for the downloaded files)")
    safe_revision = revision.replace("/", "--")
    return Path(cache_dir) / repo_id.replace("/", "--") / safe_revision / filename


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


def sidecar_path(dest) -> Path:
    """``<dest>.sha256``: the digest of a downloaded file, in ``sha256sum`` format."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def read_sidecar(dest) -> str | None:
    """The digest recorded beside ``dest``, or None when there is no (readable) sidecar."""
    try:
        text = sidecar_path(dest).read_text().strip()
    except OSError:
        return None
    digest = text.split()[0].lower() if text else ""
    return digest if _HEX64.match(digest) else None


def _write_sidecar(dest: Path, digest: str) -> None:
    with atomic_path(sidecar_path(dest)) as tmp:
        tmp.write_text(f"{digest}  {dest.name}\n")


def _normalise_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = str(sha256).strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    if not _HEX64.match(value):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return value


def _existing_ok(dest: Path, expected: str | None) -> bool:
    """Whether ``dest`` is already there and good (so the download can be skipped)."""
    if not dest.is_file():
        return False
    recorded = read_sidecar(dest)
    if expected is not None and recorded is not None and recorded != expected:
        log.warning("%s: recorded digest %s differs from the expected %s; downloading again",
                    dest, recorded, expected)
        _discard(dest)
        return False
    reference = expected or recorded
    actual = file_sha256(dest)
    if reference is None:
        # A file put there by hand (or by an older run): nothing to check it against.
        log.info("%s: already present without a digest to check; recording %s", dest, actual)
        _write_sidecar(dest, actual)
        return True
    if actual != reference:
        log.warning("%s: content digest %s does not match %s; downloading again",
                    dest, actual, reference)
        _discard(dest)
        return False
    if recorded != actual:
        _write_sidecar(dest, actual)
    return True


def _discard(dest: Path) -> None:
    """Remove a file that failed verification (and its sidecar): never leave it at ``dest``."""
    dest.unlink(missing_ok=True)
    sidecar_path(dest).unlink(missing_ok=True)


def download(url: str, dest, *, sha256: str | None = None, headers: dict | None = None,
             token_env: str | None = None, token_help: str | None = None, retries: int = 5,
             backoff: float = 1.0, timeout: float = 60, chunk_size: int = 1 << 20,
             session: requests.Session | None = None, sleep=time.sleep) -> Path:
    """Download ``url`` to ``dest`` (resumable, retried, verified, atomic); return ``dest``.

    * Streams to ``dest.part``; an existing ``.part`` is resumed with ``Range: bytes=N-``
      (a server answering 200 instead of 206 restarts from byte 0; 416 means the part is
      already complete).
    * Retries connection errors, timeouts, truncated bodies and HTTP 5xx/429 up to
      ``retries`` times, sleeping ``backoff * 2**attempt`` seconds (``sleep`` is injectable),
      each time resuming from what was already written.  401/403/404 are not retried.
    * ``sha256``: expected hex digest; a mismatch raises :class:`ValueError` (naming the URL,
      the file and both digests) and removes the bad file.
    * ``token_env``: name of an environment variable (e.g. ``"HF_TOKEN"``) whose value, when
      set, is sent as ``Authorization: Bearer <token>``; on 401/403 or a gated-repository
      answer a :class:`PermissionError` names the variable and ``token_help``.  (``requests``
      drops the header when a redirect leaves the host, e.g. to the hub's CDN.)
    * A ``<dest>.sha256`` sidecar records the digest; when ``dest`` exists and matches its
      sidecar (and ``sha256``), nothing is downloaded.
    """
    import requests  # deferred: optional dependency, data extra
    import urllib3  # deferred: optional dependency, data extra

    dest = Path(dest)
    expected = _normalise_digest(sha256)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if _existing_ok(dest, expected):
        log.debug("%s: present and verified; not downloading %s", dest, url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    request_headers = {"Accept-Encoding": "identity"}  # byte ranges of the stored bytes
    request_headers.update(headers or {})
    token = os.environ.get(token_env, "").strip() if token_env else ""
    if token:
        request_headers["Authorization"] = f"Bearer {token}"
    auth = _AuthContext(token_env, token_help, bool(token))

    own_session = session is None
    session = session or requests.Session()
    try:
        attempt = 0
        while True:
            try:
                _fetch_once(session, url, part, request_headers, timeout, chunk_size, auth)
                break
            except (_Transient, requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError,
                    urllib3.exceptions.HTTPError) as error:
                if attempt >= retries:
                    raise DownloadError(
                        f"{url}: download to {dest} failed after {attempt + 1} attempts "
                        f"({error}); the partial file {part} is kept and the next call "
                        "resumes from it") from error
                delay = backoff * 2 ** attempt
                retry_after = getattr(error, "retry_after", None)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, 300.0))
                have = part.stat().st_size if part.exists() else 0
                log.warning("%s: %s; retry %d/%d in %.1f s (resuming at byte %d)",
                            url, error, attempt + 1, retries, delay, have)
                sleep(delay)
                attempt += 1
    finally:
        if own_session:
            session.close()

    actual = file_sha256(part)
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise ValueError(
            f"{url}: SHA-256 mismatch for {dest}: expected {expected}, got {actual}; "
            "the downloaded file was removed")
    _write_sidecar(dest, actual)
    os.replace(part, dest)
    log.info("%s: downloaded to %s (%d bytes, sha256 %s)", url, dest, dest.stat().st_size, actual)
    return dest


class _AuthContext:
    def __init__(self, token_env, token_help, token_sent):
        self.token_env = token_env
        self.token_help = token_help
        self.token_sent = token_sent

    def error(self, url: str, response) -> PermissionError:
        code = response.headers.get("X-Error-Code", "")
        server_message = response.headers.get("X-Error-Message", "")
        what = f"HTTP {response.status_code}"
        if code:
            what += f" {code}"
        if server_message:
            what += f": {server_message}"
        parts = [f"{url}: access denied ({what})."]
        if self.token_env:
            if self.token_sent:
                parts.append(f"The token in the environment variable {self.token_env} was "
                             "rejected or has no access to this resource.")
            else:
                parts.append(f"The environment variable {self.token_env} is not set; set it "
                             "to an access token.")
        else:
            parts.append("The server wants credentials.")
        if self.token_help:
            parts.append(f"To get access: {self.token_help}.")
        if response.status_code == 401 and code != "GatedRepo":
            parts.append("(Hugging Face also answers 401 for repositories or files that do "
                         "not exist: check the name and revision.)")
        return PermissionError(" ".join(parts))


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _transient(message: str, response=None) -> _Transient:
    error = _Transient(message)
    error.retry_after = _retry_after(response) if response is not None else None
    return error


def _fetch_once(session, url, part: Path, base_headers, timeout, chunk_size, auth) -> None:
    """One request: append to (or restart) ``part``; raise _Transient for retryable trouble."""
    offset = part.stat().st_size if part.exists() else 0
    request_headers = dict(base_headers)
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=request_headers, stream=True, timeout=timeout,
                     allow_redirects=True) as response:
        status = response.status_code
        if status == 403 and _left_host(url, response):
            # a signed CDN URL handed out by a redirect may expire: ask the origin again
            raise _transient(f"HTTP 403 from the redirect target {urlsplit(response.url).netloc}")
        if response.headers.get("X-Error-Code") == "GatedRepo" or status in (401, 403):
            raise auth.error(url, response)
        if status == 404:
            raise FileNotFoundError(f"{url}: not found (HTTP 404)")
        if status == 416 and offset:
            total = _content_range(response.headers.get("Content-Range"))[2]
            if total is None or total == offset:
                return  # the part file already holds the whole resource
            log.warning("%s: range %d- not satisfiable (size %s); restarting from 0",
                        url, offset, total)
            part.unlink(missing_ok=True)
            raise _transient(f"HTTP 416 with a {offset}-byte part of a {total}-byte file")
        if status in _RETRY_STATUSES:
            raise _transient(f"HTTP {status} {response.reason}", response)
        if status >= 400 or status < 200 or status in (204, 205):
            raise DownloadError(f"{url}: HTTP {status} {response.reason}")

        if status == 206 and offset:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                log.warning("%s: asked for bytes %d-, got a range starting at %s; restarting",
                            url, offset, start)
                part.unlink(missing_ok=True)
                raise _transient("server returned the wrong range")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the range request (HTTP %d); restarting from 0",
                         url, status)
            offset = 0
            mode = "wb"
        length = response.headers.get("Content-Length")
        expected_length = int(length) if length and length.isdigit() else None

        with open(part, mode) as handle:
            try:
                for block in _blocks(response, chunk_size):
                    handle.write(block)
            finally:  # keep every byte received, also when the connection breaks
                handle.flush()
                os.fsync(handle.fileno())
        received = _wire_bytes(response)
        if expected_length is not None and received is not None and received < expected_length:
            raise _transient(f"body truncated at {received} of {expected_length} bytes")


def _blocks(response, chunk_size):
    """The body in blocks; each block is handed over as soon as it arrives (``read1``), so
    the bytes before a broken connection are written, not lost in a read buffer."""
    raw = response.raw
    if hasattr(raw, "read1"):  # urllib3 >= 2
        while True:
            block = raw.read1(chunk_size, decode_content=True)
            if not block:
                return
            yield block
    else:  # pragma: no cover - urllib3 1.x
        for block in response.iter_content(chunk_size=chunk_size):
            if block:
                yield block


def _wire_bytes(response):
    """How many body bytes came over the wire (before any content decoding)."""
    try:
        return int(response.raw.tell())
    except (AttributeError, TypeError, ValueError, OSError):  # pragma: no cover
        return None


def _left_host(url: str, response) -> bool:
    """Whether redirects took the request to another host than ``url``'s."""
    return bool(response.history) and urlsplit(response.url).netloc != urlsplit(url).netloc


def _content_range(value):
    """``(start, end, total)`` of a ``Content-Range`` header (None where absent or '*')."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None, None
    start, end, total = match.groups()

    def as_int(s):
        return int(s) if s is not None and s != "*" else None

    return as_int(start), as_int(end), as_int(total)
