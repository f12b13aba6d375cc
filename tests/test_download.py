"""Hub downloads through huggingface_hub against a loopback hub (offline): the digest checks
added on top of the client (SHA-256 / git SHA-1 ETag, pins), cut bodies with and without a
length, resumption, retries exhausted, gated repositories, offline mode from a warm cache."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from conftest import LoopbackServer  # noqa: E402
from motalign.datasets.download import file_sha256  # noqa: E402
from motalign.datasets.hub import DownloadError, hub_file, hub_url  # noqa: E402

REPO = "org/data"
HELP = "request access at https://huggingface.co/datasets/ILSVRC/imagenet-1k"


def payload(tag: int, n: int = 10_240) -> bytes:
    """Distinct content per test file (the hub cache shares blobs of equal content)."""
    return bytes([tag]) * 64 + bytes(range(256)) * (n // 256)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with LoopbackServer(max_requests=100) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def sleeps(monkeypatch):
    """huggingface_hub's retry sleeps, recorded instead of slept."""
    import huggingface_hub.utils._http as hf_http

    seen = []
    monkeypatch.setattr(hf_http.time, "sleep", seen.append)
    return seen


def _resolve(filename, revision="main"):
    return f"/datasets/{REPO}/resolve/{revision}/{filename}"


def _left(cache: Path) -> list[str]:
    """Every file (or link) left in the cache for REPO, but the refs."""
    root = cache / f"datasets--{REPO.replace('/', '--')}"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if (p.is_file() or p.is_symlink()) and "refs" not in p.parts)


# --------------------------------------------------------------------------- verified downloads
def test_lfs_file_verified_by_its_sha256_etag_then_served_from_the_cache(hub, tmp_path):
    data = payload(1)
    hub.add_hub_file(REPO, "main", "data/a.parquet", data)
    first = hub_file(REPO, "data/a.parquet", revision="main", cache_dir=tmp_path)
    assert first.path.read_bytes() == data and first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.verified == ("etag-sha256",) and first.size == len(data)
    assert first.commit == hashlib.sha1(b"main").hexdigest()  # the loopback's commit of "main"
    assert first.path.parent.parent.name == first.commit  # snapshots/<commit>/data/a.parquet
    assert [r.method for r in hub.requests_for(_resolve("data/a.parquet"))] == ["HEAD", "GET"]

    again = hub_file(REPO, "data/a.parquet", revision="main", cache_dir=tmp_path)
    assert again == first
    assert [r.method for r in hub.requests_for(_resolve("data/a.parquet"))] == ["HEAD", "GET", "HEAD"]


def test_git_file_verified_by_its_git_blob_sha1(hub, tmp_path):
    data = payload(2)
    hub.add_hub_file(REPO, "main", "README.md", data, lfs=False)
    got = hub_file(REPO, "README.md", revision="main", cache_dir=tmp_path)
    assert got.verified == ("etag-git-sha1",) and got.path.read_bytes() == data


def test_pinned_sha256_is_checked_too(hub, tmp_path):
    data = payload(3)
    hub.add_hub_file(REPO, "main", "data/p.bin", data)
    got = hub_file(REPO, "data/p.bin", revision="main", cache_dir=tmp_path,
                   sha256="SHA256:" + hashlib.sha256(data).hexdigest().upper())
    assert got.verified == ("etag-sha256", "pinned-sha256")
    with pytest.raises(ValueError, match=r"datasets\.x\.sha256.*expected 0{64}") as info:
        hub_file(REPO, "data/p.bin", revision="main", cache_dir=tmp_path, sha256="0" * 64,
                 pin_name="datasets.x.sha256")
    assert "kept in the cache" in str(info.value) and got.path.read_bytes() == data
    with pytest.raises(ValueError, match="64 hexadecimal"):
        hub_file(REPO, "data/p.bin", revision="main", cache_dir=tmp_path, sha256="abc")


def test_content_differing_from_the_etag_is_rejected_and_nothing_is_left(hub, tmp_path):
    data = payload(4)
    hub.add_hub_file(REPO, "main", "data/bad.bin", data, etag="0" * 64)
    with pytest.raises(ValueError) as info:
        hub_file(REPO, "data/bad.bin", revision="main", cache_dir=tmp_path)
    message = str(info.value)
    assert "data/bad.bin" in message and "0" * 64 in message
    assert hashlib.sha256(data).hexdigest() in message
    assert "nothing of it is left in the cache" in message
    assert _left(tmp_path) == []


def test_file_no_digest_can_verify_is_refused_unless_pinned(hub, tmp_path):
    data = payload(5)
    hub.add_hub_file(REPO, "main", "data/odd.bin", data, etag="not-a-digest", no_length=True,
                     head_size=False)
    with pytest.raises(ValueError, match="cannot verify") as info:
        hub_file(REPO, "data/odd.bin", revision="main", cache_dir=tmp_path)
    assert hashlib.sha256(data).hexdigest() in str(info.value)
    assert _left(tmp_path) == []
    got = hub_file(REPO, "data/odd.bin", revision="main", cache_dir=tmp_path,
                   sha256=hashlib.sha256(data).hexdigest())
    assert got.verified == ("pinned-sha256",) and got.path.read_bytes() == data


# --------------------------------------------------------------------------- cut bodies, retries
def test_cut_body_without_content_length_is_rejected(hub, tmp_path):
    """No length anywhere, connection closed mid-file: the client takes the short body as
    complete; the ETag check refuses it and leaves nothing."""
    data = payload(6)
    hub.add_hub_file(REPO, "main", "data/cut.bin", data, cut_after=3000, no_length=True,
                     head_size=False)
    with pytest.raises(ValueError, match="corrupt or incomplete.*3000 bytes"):
        hub_file(REPO, "data/cut.bin", revision="main", cache_dir=tmp_path)
    assert _left(tmp_path) == []
    got = hub_file(REPO, "data/cut.bin", revision="main", cache_dir=tmp_path)  # the next run
    assert got.path.read_bytes() == data


def test_cut_body_shorter_than_the_announced_size_fails_and_says_nothing_is_kept(hub, tmp_path):
    """The metadata announces the size, the body comes without Content-Length and is cut:
    huggingface_hub's size check fails; the message says truthfully that nothing is kept."""
    hub.add_hub_file(REPO, "main", "data/short.bin", payload(7), cut_after=3000, no_length=True)
    with pytest.raises(DownloadError) as info:
        hub_file(REPO, "data/short.bin", revision="main", cache_dir=tmp_path)
    message = str(info.value)
    assert "data/short.bin" in message and "should be of size" in message
    assert "no partial file is left" in message and ".part" not in message
    assert not list(tmp_path.rglob("*.incomplete")) and _left(tmp_path) == []


def test_cut_body_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants
    import huggingface_hub.file_download as hf_download

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 1024)  # resume at 1 KiB granularity
    monkeypatch.setattr(hf_download.time, "sleep", lambda s: None)
    data = payload(8)
    hub.add_hub_file(REPO, "main", "data/big.bin", data, cut_after=3000)
    got = hub_file(REPO, "data/big.bin", revision="main", cache_dir=tmp_path)
    assert got.path.read_bytes() == data and got.verified == ("etag-sha256",)
    first, second = hub.requests_for(_resolve("data/big.bin"), "GET")
    assert first.headers.get("Range") is None
    assert second.headers.get("Range") == "bytes=2048-" and second.status == 206


def test_5xx_retries_exhausted_message_is_truthful_about_leftovers(hub, tmp_path, sleeps):
    hub.add_hub_file(REPO, "main", "data/down.bin", payload(9), head_statuses=[503] * 20)
    with pytest.raises(DownloadError) as info:
        hub_file(REPO, "data/down.bin", revision="main", cache_dir=tmp_path)
    message = str(info.value)
    assert "data/down.bin" in message and "HTTP 503" in message and "retries" in message
    assert "no partial file is left" in message and ".part" not in message
    assert not list(tmp_path.rglob("*.incomplete")) and _left(tmp_path) == []
    assert len(sleeps) == 5  # huggingface_hub's policy: 5 retries of the metadata request
    assert all(r.status == 503 for r in hub.requests_for(_resolve("data/down.bin")))

    hub.add_hub_file(REPO, "main", "data/get5xx.bin", payload(10), statuses=[500])
    with pytest.raises(DownloadError, match=r"get5xx\.bin.*HTTP 500.*no partial file is left"):
        hub_file(REPO, "data/get5xx.bin", revision="main", cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.incomplete"))


def test_missing_file_is_a_file_not_found_error(hub, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
        hub_file(REPO, "data/missing.bin", revision="main", cache_dir=tmp_path)


# --------------------------------------------------------------------------- authentication
def test_gated_repository_messages_and_token(hub, tmp_path, monkeypatch):
    data = payload(11)
    hub.add_hub_file(REPO, "main", "data/g.bin", data, token="s3cret", gated=True)
    with pytest.raises(PermissionError) as info:
        hub_file(REPO, "data/g.bin", revision="main", cache_dir=tmp_path, token_help=HELP)
    message = str(info.value)
    assert "HF_TOKEN" in message and "not set" in message and HELP in message
    assert "GatedRepo" in message and "data/g.bin" in message
    assert len(hub.requests_for(_resolve("data/g.bin"))) == 1  # not retried
    assert _left(tmp_path) == []

    monkeypatch.setenv("HF_TOKEN", "wrong-token")
    with pytest.raises(PermissionError) as info:
        hub_file(REPO, "data/g.bin", revision="main", cache_dir=tmp_path, token_help=HELP)
    message = str(info.value)
    assert "rejected" in message and "GatedRepo" in message and "wrong-token" not in message

    monkeypatch.setenv("HF_TOKEN", "s3cret")
    got = hub_file(REPO, "data/g.bin", revision="main", cache_dir=tmp_path, token_help=HELP)
    assert got.path.read_bytes() == data
    assert all(r.headers.get("Authorization") == "Bearer s3cret"
               for r in hub.requests_for(_resolve("data/g.bin"))[2:])


def test_private_repository_without_gate_says_401_may_mean_missing(hub, tmp_path):
    hub.add_hub_file(REPO, "main", "data/private.bin", payload(12), token="s3cret")
    with pytest.raises(PermissionError, match="HF_TOKEN.*not set.*check the name and revision"):
        hub_file(REPO, "data/private.bin", revision="main", cache_dir=tmp_path)


# --------------------------------------------------------------------------- offline mode
def test_offline_mode_serves_a_warm_cache_without_requests(hub, tmp_path, monkeypatch):
    data = payload(13)
    hub.add_hub_file(REPO, "main", "data/warm.bin", data)
    online = hub_file(REPO, "data/warm.bin", revision="main", cache_dir=tmp_path)
    n_requests = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = hub_file(REPO, "data/warm.bin", revision="main", cache_dir=tmp_path)
    assert offline == online and len(hub.requests) == n_requests
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE.*cold.bin|cold.bin.*HF_HUB_OFFLINE"):
        hub_file(REPO, "data/cold.bin", revision="main", cache_dir=tmp_path)
    assert len(hub.requests) == n_requests


def test_offline_mode_from_the_environment_in_a_fresh_process(hub, tmp_path):
    """HF_HUB_OFFLINE=1 set before huggingface_hub is imported (as a user sets it), with the
    server gone: the cached file is found and verified against its blob's ETag."""
    data = payload(14)
    hub.add_hub_file(REPO, "main", "data/warm.bin", data)
    hub_file(REPO, "data/warm.bin", revision="main", cache_dir=tmp_path)
    hub.close()
    script = textwrap.dedent(f"""
        from motalign.datasets.hub import hub_file
        got = hub_file({REPO!r}, "data/warm.bin", revision="main", cache_dir={str(tmp_path)!r})
        print(got.sha256, ",".join(got.verified))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub.url}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [hashlib.sha256(data).hexdigest(), "etag-sha256"]


# --------------------------------------------------------------------------- helpers
def test_hub_url_follows_hf_endpoint_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    assert hub_url("a/b", "x y.txt", revision="refs/convert/parquet") == (
        "http://127.0.0.1:1234/datasets/a/b/resolve/refs%2Fconvert%2Fparquet/x%20y.txt")


def test_file_sha256(tmp_path):
    data = payload(15)
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f", chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_unreachable_hub_is_a_download_error(tmp_path, monkeypatch, sleeps):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DownloadError, match=r"x\.bin.*did not answer.*no partial file is left"):
        hub_file(REPO, "x.bin", revision="main", cache_dir=tmp_path)
