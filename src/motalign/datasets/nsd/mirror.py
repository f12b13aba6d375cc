"""A local mirror of the NSD files the paper uses (paper Sec. 3.2), under the **same
relative keys as the bucket**, so that the readers of this package read the folder as an
NSD root (:mod:`.layout`).

:func:`download_nsd` mirrors exactly ``nsddata/experiments/nsd/nsd_expdesign.mat``, per
subject the two ROI volumes ``nsddata/ppdata/subjXX/func1pt8mm/roi/{prf-visualrois,
streams}.nii.gz`` and the betas of every session
``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionYY.nii.gz``.
It never downloads the ~37 GB ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``: the shared
images are fetched with ranged requests by
:func:`motalign.datasets.nsd.images.fetch_shared_stimuli`.

* A file already present with the object's size is kept; when the object's ETag is a
  single-part ETag (the MD5 of the content), or a multipart ETag whose part size can be
  inferred, the local digest must match too (otherwise the size is the check).  Otherwise it is
  downloaded by :func:`motalign.datasets.nsd.transfer.download_object` (resume, retries,
  verification, atomic replace).
* ``<root>/.motalign_manifest.json`` (written atomically after every file) records, per
  key: size, etag, sha256, md5, how it was verified, and the file's ``mtime_ns``.  It lets
  a re-run skip hashing a file whose size, ETag and modification time are unchanged since
  it was recorded (``rehash=True`` always hashes).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...io.atomic import write_json
from .layout import BETA_NAME, BETAS_DIR, EXPDESIGN_PATH, ROI_DIR, STIMULI_PATH, subject_id
from .s3 import MissingObjectError, _bucket, _call, _client, _url, head
from .transfer import _verify_local, download_object

logger = logging.getLogger(__name__)

#: Manifest of the mirrored files, at the root of the local mirror.
MANIFEST_NAME = ".motalign_manifest.json"
MANIFEST_FORMAT = "motalign-nsd-manifest/1"

#: ROI volumes downloaded per subject by default (the paper's seven regions use these two).
DEFAULT_ROI_FILES = ("prf-visualrois", "streams")


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


def _list_keys(client, bucket: str, prefix: str) -> list[str]:
    keys, token = [], None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        resp = _call(client.list_objects_v2, bucket, prefix, "prefix", **kwargs)
        keys.extend(obj["Key"] for obj in resp.get("Contents", []) or [])
        if not resp.get("IsTruncated"):
            return keys
        token = resp.get("NextContinuationToken")
        if not token:  # pragma: no cover - defensive
            return keys


def _session_list(sessions, subject: str):
    if isinstance(sessions, Mapping):
        norm = {subject_id(k): v for k, v in sessions.items()}
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
                bucket=None, betas_ext: str = ".nii.gz", include_expdesign: bool = True) -> list[str]:
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
        name = subject_id(s)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no subject requested")
    if isinstance(regions_files, str):
        regions_files = [regions_files]
    bucket = _bucket(bucket)
    keys = [EXPDESIGN_PATH] if include_expdesign else []
    pattern = re.compile(r"^betas_session(\d+)" + re.escape(betas_ext) + "$")
    for name in names:
        roi_dir = ROI_DIR.format(subject=name)
        keys.extend(f"{roi_dir}/{stem}.nii.gz" for stem in regions_files)
        betas_dir = BETAS_DIR.format(subject=name)
        wanted = _session_list(sessions, name)
        if wanted is None:
            client = _client(client)
            prefix = betas_dir + "/"
            found = {}
            for k in _list_keys(client, bucket, prefix):
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
            keys.extend(f"{betas_dir}/" + BETA_NAME.format(session=s, ext=betas_ext) for s in wanted)
    if STIMULI_PATH in keys:  # pragma: no cover - defensive
        raise AssertionError("the full stimuli file must never be mirrored")
    return keys


def download_nsd(root, *, subjects, sessions=None, regions_files=DEFAULT_ROI_FILES, client=None,
                 bucket=None, betas_ext: str = ".nii.gz", include_expdesign: bool = True,
                 rehash: bool = False, sleep=time.sleep) -> dict:
    """Mirror the NSD files the paper needs into ``root``, under the bucket's keys.

    Files: the experiment design, per subject the ROI volumes ``regions_files`` and the
    betas of ``sessions`` (default: every session present in the bucket, found by
    listing).  Never the full stimuli file (see
    :func:`motalign.datasets.nsd.images.fetch_shared_stimuli`).
    Each file is skipped when present and matching (size, and MD5 for a single-part ETag;
    a manifest entry with the same size, ETag and mtime is trusted unless ``rehash``),
    otherwise downloaded by :func:`download_object` (resume, retries, verification,
    atomic replace).  The manifest is updated after every file.

    Parameters
    ----------
    root : path-like
        The local NSD root (created); the readers of this package read it directly.
    subjects : sequence
        Paper letters, NSD names or numbers (e.g. ``["A", "B", "C", "D"]``).
    sessions : None, int, sequence or mapping
        See :func:`needed_keys`.
    regions_files : sequence of str
        ROI file stems in ``func1pt8mm/roi/``.
    client, bucket
        Default :func:`~motalign.datasets.nsd.s3.s3_client` and
        :func:`~motalign.datasets.nsd.s3.default_bucket`.
    sleep
        How to wait between resumptions of a cut download (the retry policy is the
        client's, see :mod:`motalign.datasets.nsd.s3`).
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
        A download failed after the client's retries, or access was denied.
    """
    root = Path(root)
    client = _client(client)
    bucket = _bucket(bucket)
    keys = needed_keys(subjects, sessions=sessions, regions_files=regions_files, client=client,
                       bucket=bucket, betas_ext=betas_ext, include_expdesign=include_expdesign)
    heads = {}
    for key in keys:  # check every key first, so a missing one fails before any transfer
        heads[key] = head(client, bucket, key, what="file")
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
            record = download_object(client, bucket, key, dest, info=info, sleep=sleep)
            transferred += record["bytes_transferred"]
            downloaded.append(key)
        manifest["files"][key] = {
            "bucket": bucket, "key": key, "size": record["size"], "etag": record["etag"],
            "sha256": record["sha256"], "md5": record.get("md5"),
            "verified": record.get("verified"), "mtime_ns": record["mtime_ns"],
        }
        write_json(manifest_path, manifest)
    return {
        "root": str(root), "bucket": bucket, "files": keys, "downloaded": downloaded,
        "skipped": skipped, "bytes": transferred,
        "total_bytes": sum(heads[k]["size"] for k in keys), "manifest": str(manifest_path),
    }
