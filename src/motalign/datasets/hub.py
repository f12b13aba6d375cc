"""Files of data sets on the Hugging Face hub, downloaded by the hub's own client
(``huggingface_hub``) and verified here against the hub's digest.

:func:`hub_file` calls :func:`huggingface_hub.hf_hub_download`, so the files land in the
hub cache that ``transformers`` uses too (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``; ``cache_dir`` overrides it), the token is ``HF_TOKEN`` (or the
one saved by ``hf auth login``), ``HF_ENDPOINT`` points at another hub, and
``HF_HUB_OFFLINE=1`` serves the files from the cache without any network request.

What huggingface_hub (2.x) checks, and what is added here
--------------------------------------------------------
``hf_hub_download`` reads the file's metadata with a HEAD request (``X-Repo-Commit``, the
ETag -- ``X-Linked-Etag`` for LFS files, which is the SHA-256 of the content; the git blob
SHA-1 for other files -- and the size, ``X-Linked-Size`` or ``Content-Length``), streams
the body to a process-unique temporary file, resumes a cut body with a ``Range`` request
(from the last whole ``DOWNLOAD_CHUNK_SIZE`` block, 10 MiB, it wrote),
compares the number of bytes received with the size *when the size is known*, and renames
the file into the cache under its ETag.  It does **not** hash the bytes it received (only
Xet-stored files are checked chunk by chunk by ``hf_xet``), and it accepts a body of unknown
length as complete.  So :func:`hub_file` hashes every file it returns and accepts it only
when a digest verifies it: the SHA-256 ETag (LFS files) or the git blob SHA-1 ETag (other
files), and, when given, the pinned ``sha256`` of the config.  A file that no digest can
verify is refused.  A file whose content does not match the hub's ETag is removed from the
cache (the blob and the snapshot link), so nothing of it is left.

Retries, timeouts, resumption
-----------------------------
One policy, huggingface_hub's: the metadata request is retried (up to 5 times, 1 to 8 s
apart) on connection errors, timeouts, 408, 429 and 5xx; a body cut mid-transfer is resumed
with ``Range`` up to 5 times (1 s apart, counted from the last progress); the body request
is retried on 408 and 429 only (a 5xx there fails at once). This module adds no retries.
Timeouts: ``HF_HUB_ETAG_TIMEOUT`` (metadata) and ``HF_HUB_DOWNLOAD_TIMEOUT`` (body), in
seconds, default 10. huggingface_hub keeps no partial file across calls: a download that
fails for good leaves nothing in the cache and the next call starts again from byte 0.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DownloadError", "HubFile", "hub_file", "hub_url"]

log = logging.getLogger(__name__)

TOKEN_ENV = "HF_TOKEN"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class DownloadError(OSError):
    """A download failed for good (after huggingface_hub's retries, or for a non-retryable
    reason); the message says what is left on disk."""


@dataclass(frozen=True)
class HubFile:
    """A verified file of the hub cache."""

    path: Path          #: the file in the cache (``snapshots/<commit>/<filename>``)
    repo_id: str
    filename: str
    revision: str       #: as asked (branch, tag or commit)
    commit: str | None  #: the commit it resolved to
    sha256: str         #: of the content
    size: int
    verified: tuple     #: the digests that verified it: "etag-sha256", "etag-git-sha1", "pinned-sha256"
    url: str            #: the hub's resolve URL


def _offline() -> bool:
    from huggingface_hub import constants  # deferred: optional dependency, data extra

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def _endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def hub_url(repo_id: str, filename: str, *, revision: str, repo_type: str = "dataset") -> str:
    """The hub's resolve URL of a file (``HF_ENDPOINT`` honoured at call time)."""
    from huggingface_hub import hf_hub_url  # deferred: optional dependency, data extra

    return hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=_endpoint())


def normalise_sha256(value, what: str = "sha256") -> str | None:
    """A 64-hex-digit lower-case SHA-256 (``sha256:`` prefix allowed), or None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    text = text[len("sha256:"):] if text.startswith("sha256:") else text
    if not _HEX64.match(text):
        raise ValueError(f"{what} must be 64 hexadecimal digits, got {value!r}")
    return text


def _digests(path: Path) -> tuple[str, str, int]:
    """(sha256, git blob sha1, size) of a file, in one pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha256.update(block)
            git.update(block)
    return sha256.hexdigest(), git.hexdigest(), size


def _storage(cache_dir, repo_id: str, repo_type: str) -> Path:
    from huggingface_hub import constants  # deferred: optional dependency, data extra

    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    return root / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _leftovers(cache_dir, repo_id: str, repo_type: str) -> str:
    """What a failed download left in the cache, as checked on disk."""
    blobs = _storage(cache_dir, repo_id, repo_type) / "blobs"
    partial = sorted(str(p) for p in blobs.glob("*.incomplete")) if blobs.is_dir() else []
    if partial:
        return f"partial files are left in the cache: {', '.join(partial)}"
    return (f"no partial file is left in {blobs} (huggingface_hub keeps none); the next run "
            "downloads the file from the start")


def _etag(local: Path, url: str, offline: bool) -> str | None:
    """The hub's ETag of a cached file: the name of its blob (``blobs/<etag>``), else (no
    symlinks in the cache) the metadata's."""
    real = Path(os.path.realpath(local))
    if real.parent.name == "blobs":
        return real.name
    if offline:
        return None
    from huggingface_hub import get_hf_file_metadata  # deferred: optional dependency, data extra

    return get_hf_file_metadata(url, endpoint=_endpoint()).etag


def _remove(local: Path) -> list[str]:
    """Remove a cached file and its blob; the paths that are gone."""
    real = Path(os.path.realpath(local))
    gone = []
    for path in dict.fromkeys((local, real)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        if not os.path.lexists(path):
            gone.append(str(path))
    return gone


def _permission_error(error, where: str, token_help: str | None) -> PermissionError:
    from huggingface_hub import get_token  # deferred: optional dependency, data extra

    response = getattr(error, "response", None)
    headers = response.headers if response is not None else {}
    code = headers.get("X-Error-Code", "")
    server_message = headers.get("X-Error-Message", "")
    status = getattr(response, "status_code", "?")
    what = f"HTTP {status}" + (f" {code}" if code else "") + (f": {server_message}" if server_message else "")
    parts = [f"{where}: access denied ({what})."]
    if get_token():
        parts.append(f"The token in the environment variable {TOKEN_ENV} (or saved by `hf auth "
                     "login`) was rejected or has no access to this resource.")
    else:
        parts.append(f"The environment variable {TOKEN_ENV} is not set (and no token is saved by "
                     "`hf auth login`); set it to an access token.")
    if token_help:
        parts.append(f"To get access: {token_help}.")
    if status == 401 and code != "GatedRepo":
        parts.append("(Hugging Face also answers 401 for repositories or files that do not "
                     "exist: check the name and revision.)")
    return PermissionError(" ".join(parts))


def _download(repo_id, filename, revision, repo_type, cache_dir, offline, where, token_help):
    """hf_hub_download, its errors turned into this package's (messages name the file)."""
    from huggingface_hub import hf_hub_download  # deferred: optional dependency, data extra
    from huggingface_hub.errors import (  # deferred: optional dependency, data extra
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                                    cache_dir=cache_dir, endpoint=_endpoint(),
                                    local_files_only=offline))
    except (GatedRepoError, RepositoryNotFoundError) as error:
        if isinstance(error, GatedRepoError) or error.response.status_code in (401, 403):
            raise _permission_error(error, where, token_help) from error
        raise FileNotFoundError(f"{where}: repository {repo_id!r} not found (HTTP "
                                f"{error.response.status_code})") from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(f"{where}: revision {revision!r} of {repo_id!r} not found") from error
    except RemoteEntryNotFoundError as error:
        raise FileNotFoundError(f"{where}: no file {filename!r} in {repo_id!r} at {revision!r}") from error
    except LocalEntryNotFoundError as error:
        if offline:
            raise DownloadError(
                f"{where}: HF_HUB_OFFLINE is set and the file is not in the hub cache "
                f"({_storage(cache_dir, repo_id, repo_type)}); run once with network access, "
                "or unset HF_HUB_OFFLINE") from error
        cause = error.__cause__ or error
        if isinstance(cause, HfHubHTTPError) and cause.response.status_code in (401, 403):
            raise _permission_error(cause, where, token_help) from error
        raise DownloadError(
            f"{where}: the hub did not answer after huggingface_hub's retries ({_reason(cause)}); "
            f"{_leftovers(cache_dir, repo_id, repo_type)}") from error
    except HfHubHTTPError as error:
        if error.response.status_code in (401, 403):
            raise _permission_error(error, where, token_help) from error
        raise DownloadError(f"{where}: download failed ({_reason(error)}); "
                            f"{_leftovers(cache_dir, repo_id, repo_type)}") from error
    except Exception as error:
        # e.g. huggingface_hub's "Consistency check failed: file should be of size N but has
        # size M" (a body shorter than the size the hub announced, an OSError), or a
        # connection lost for good (an error of its HTTP client, httpx2)
        if not (isinstance(error, OSError) or _is_transport_error(error)):
            raise
        raise DownloadError(f"{where}: download failed ({_reason(error)}); "
                            f"{_leftovers(cache_dir, repo_id, repo_type)}") from error


def _is_transport_error(error) -> bool:
    """An error of huggingface_hub's HTTP client (httpx2), told by its module so that this
    package does not import the client itself."""
    return any(cls.__module__.split(".")[0] in ("httpx", "httpx2") for cls in type(error).__mro__)


def _reason(error) -> str:
    response = getattr(error, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def hub_file(repo_id: str, filename: str, *, revision: str, repo_type: str = "dataset",
             cache_dir=None, sha256: str | None = None, token_help: str | None = None,
             pin_name: str = "sha256") -> HubFile:
    """Download (or find in the hub cache) one file of a hub repository and verify it.

    ``cache_dir`` defaults to huggingface_hub's (``HF_HUB_CACHE``).  ``sha256``: a pinned
    digest the content must have as well (``pin_name`` names it in messages, e.g. the config
    key).  Raises :class:`PermissionError` (gated or private repository: says to set
    ``HF_TOKEN`` and where to get access), :class:`FileNotFoundError` (no such repository,
    revision or file), :class:`DownloadError` (network, server or offline-mode trouble; the
    message says what is left on disk) or :class:`ValueError` (the content does not match a
    digest, or no digest can verify it).
    """
    pinned = normalise_sha256(sha256, pin_name)
    offline = _offline()
    url = hub_url(repo_id, filename, revision=revision, repo_type=repo_type)
    where = f"{url} ({repo_type} {repo_id}, file {filename}, revision {revision})"
    local = _download(repo_id, filename, revision, repo_type, cache_dir, offline, where, token_help)

    etag = _etag(local, url, offline)
    etag = etag.strip().strip('"').lower() if etag else None
    actual, git_sha1, size = _digests(local)
    verified, problem = [], None
    if etag and _HEX64.match(etag):
        if actual != etag:
            problem = f"its SHA-256 {actual} differs from the hub's ETag {etag}"
        verified.append("etag-sha256")
    elif etag and _HEX40.match(etag):
        if git_sha1 != etag:
            problem = f"its git blob SHA-1 {git_sha1} differs from the hub's ETag {etag}"
        verified.append("etag-git-sha1")
    if problem is not None:
        gone = _remove(local)
        left = [p for p in (str(local), os.path.realpath(local)) if os.path.lexists(p)]
        raise ValueError(
            f"{where}: the downloaded file is corrupt or incomplete: {problem} ({size} bytes); "
            f"removed {', '.join(gone) or 'nothing'}"
            + (f"; still present: {', '.join(left)}" if left else "; nothing of it is left in the cache"))
    if pinned is not None:
        if actual != pinned:
            if verified:
                state = f"{local} matches the hub's ETag and is kept in the cache"
            else:
                gone = _remove(local)
                state = f"removed {', '.join(gone)}" if gone else f"{local} could not be removed"
            raise ValueError(f"{where}: SHA-256 mismatch with the pinned {pin_name}: expected "
                             f"{pinned}, got {actual} ({state}); the hub's file differs from the "
                             "pinned one: check the revision, or update the pin")
        verified.append("pinned-sha256")
    if not verified and etag is None and offline:
        # a cache without blob links (no symlinks) and no network to ask for the ETag: the
        # file may be fine, so it is left alone
        raise ValueError(
            f"{where}: cannot verify {local} offline: the cache does not link it to its blob "
            f"(named by the hub's ETag) and HF_HUB_OFFLINE is set; run once with network access, "
            f"or pin {pin_name} (its SHA-256 is {actual})")
    if not verified:
        gone = _remove(local)
        raise ValueError(
            f"{where}: cannot verify the downloaded file: the hub gave no SHA-256 or git SHA-1 "
            f"ETag (ETag {etag!r}) and no {pin_name} is pinned, and a file whose length and "
            f"content cannot be verified is not accepted; removed {', '.join(gone) or 'nothing'} "
            f"(its SHA-256 was {actual}: pin it as {pin_name} if you trust this file)")
    snapshot = local.parents[len(filename.split("/")) - 1]  # snapshots/<commit>/<filename>
    commit = snapshot.name if _HEX40.match(snapshot.name) else None
    log.info("%s: %s (%d bytes, sha256 %s, verified by %s)", where, local, size, actual,
             ", ".join(verified))
    return HubFile(Path(local), repo_id, filename, revision, commit, actual, size,
                   tuple(verified), url)
