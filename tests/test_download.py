"""The downloader against a loopback HTTP server (offline): resume, retry, restart, auth,
digests, sidecars, and the hub's resolve URLs."""

import hashlib
import socket

import pytest

from conftest import LoopbackServer
from motalign.datasets.download import (
    DownloadError,
    download,
    file_sha256,
    hf_file_url,
    read_sidecar,
    sidecar_path,
)

DATA = bytes(range(256)) * 40  # 10,240 bytes
DIGEST = hashlib.sha256(DATA).hexdigest()
HELP = "request access at https://huggingface.co/datasets/ILSVRC/imagenet-1k"


@pytest.fixture
def server():
    with LoopbackServer(max_requests=100) as srv:
        yield srv


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def fast(sleeps):
    """Keyword arguments that make retries instant (and record the delays)."""
    return {"sleep": sleeps.append, "timeout": 10}


@pytest.fixture(autouse=True)
def _no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)


# --------------------------------------------------------------------------- basics
def test_download_writes_file_and_sidecar(server, tmp_path, fast):
    url = server.add("/files/a.bin", DATA)
    dest = tmp_path / "sub" / "a.bin"
    assert download(url, dest, **fast) == dest
    assert dest.read_bytes() == DATA
    assert read_sidecar(dest) == DIGEST
    assert sidecar_path(dest).read_text() == f"{DIGEST}  a.bin\n"
    assert not (tmp_path / "sub" / "a.bin.part").exists()
    assert server.requests_for("/files/a.bin")[0].headers.get("Range") is None


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path, fast):
    url = server.add("/a.bin", DATA)
    dest = tmp_path / "a.bin"
    download(url, dest, sha256=DIGEST, **fast)
    download(url, dest, sha256=DIGEST, **fast)
    download(url, dest, **fast)
    assert len(server.requests) == 1


def test_corrupt_existing_file_is_replaced(server, tmp_path, fast):
    url = server.add("/a.bin", DATA)
    dest = tmp_path / "a.bin"
    download(url, dest, **fast)
    dest.write_bytes(b"corrupted")
    download(url, dest, **fast)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 2


def test_sidecar_disagreeing_with_expected_digest_triggers_download(server, tmp_path, fast):
    url = server.add("/a.bin", DATA)
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old content")
    sidecar_path(dest).write_text(hashlib.sha256(b"old content").hexdigest() + "  a.bin\n")
    download(url, dest, sha256=DIGEST, **fast)
    assert dest.read_bytes() == DATA and read_sidecar(dest) == DIGEST


# --------------------------------------------------------------------------- resume / retry
def test_cut_connection_is_resumed_with_range(server, tmp_path, fast, sleeps):
    url = server.add("/big.bin", DATA, cut_after=3000)
    dest = tmp_path / "big.bin"
    download(url, dest, sha256=DIGEST, backoff=0.5, **fast)
    assert dest.read_bytes() == DATA
    first, second = server.requests_for("/big.bin")
    assert first.headers.get("Range") is None
    assert second.headers.get("Range") == "bytes=3000-"
    assert second.status == 206
    assert sleeps == [0.5]


def test_existing_part_file_is_resumed(server, tmp_path, fast):
    url = server.add("/big.bin", DATA)
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(DATA[:4096])
    download(url, dest, sha256=DIGEST, **fast)
    assert dest.read_bytes() == DATA
    (request,) = server.requests
    assert request.headers.get("Range") == "bytes=4096-" and request.status == 206


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, fast):
    url = server.add("/big.bin", DATA, ignore_range=True)
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(b"X" * 500)  # would corrupt the file if appended
    download(url, dest, sha256=DIGEST, **fast)
    assert dest.read_bytes() == DATA
    (request,) = server.requests
    assert request.headers.get("Range") == "bytes=500-" and request.status == 200


def test_complete_part_file_gets_416_and_is_finished(server, tmp_path, fast):
    url = server.add("/big.bin", DATA)
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(DATA)
    download(url, dest, sha256=DIGEST, **fast)
    assert dest.read_bytes() == DATA
    (request,) = server.requests
    assert request.status == 416


def test_503_twice_then_success_with_exponential_backoff(server, tmp_path, fast, sleeps):
    url = server.add("/flaky.bin", DATA, statuses=[503, 503])
    dest = tmp_path / "flaky.bin"
    download(url, dest, backoff=1.0, **fast)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.requests] == [503, 503, 200]
    assert sleeps == [1.0, 2.0]


def test_429_is_retried(server, tmp_path, fast):
    url = server.add("/a.bin", DATA, statuses=[429])
    download(url, tmp_path / "a.bin", **fast)
    assert [r.status for r in server.requests] == [429, 200]


def test_retries_exhausted_raise_and_leave_nothing_at_dest(server, tmp_path, fast, sleeps):
    url = server.add("/down.bin", DATA, statuses=[500] * 10)
    dest = tmp_path / "down.bin"
    with pytest.raises(DownloadError, match="down.bin"):
        download(url, dest, retries=3, backoff=0.25, **fast)
    assert not dest.exists()
    assert len(server.requests) == 4
    assert sleeps == [0.25, 0.5, 1.0]


def test_connection_refused_is_retried_then_fails(tmp_path, fast, sleeps):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError):
        download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", retries=2, **fast)
    assert len(sleeps) == 2
    assert not (tmp_path / "x.bin").exists()


def test_404_is_not_retried(server, tmp_path, fast, sleeps):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        download(server.url + "/missing.bin", tmp_path / "missing.bin", **fast)
    assert len(server.requests) == 1 and sleeps == []


# --------------------------------------------------------------------------- digests
def test_sha256_mismatch_raises_and_removes_the_file(server, tmp_path, fast):
    url = server.add("/wrong.bin", b"not the file you wanted")
    dest = tmp_path / "wrong.bin"
    with pytest.raises(ValueError) as info:
        download(url, dest, sha256=DIGEST, **fast)
    message = str(info.value)
    assert url in message and str(dest) in message and DIGEST in message
    assert hashlib.sha256(b"not the file you wanted").hexdigest() in message
    assert not dest.exists()
    assert not (tmp_path / "wrong.bin.part").exists()
    assert not sidecar_path(dest).exists()


def test_malformed_expected_digest_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download("http://127.0.0.1:9/x", tmp_path / "x", sha256="abc")


def test_file_sha256():
    import tempfile

    with tempfile.NamedTemporaryFile() as handle:
        handle.write(DATA)
        handle.flush()
        assert file_sha256(handle.name, chunk_size=1000) == DIGEST


# --------------------------------------------------------------------------- authentication
def test_missing_token_gives_permission_error_naming_the_variable(server, tmp_path, fast, sleeps):
    url = server.add("/gated.bin", DATA, token="s3cret")
    with pytest.raises(PermissionError) as info:
        download(url, tmp_path / "gated.bin", token_env="HF_TOKEN", token_help=HELP, **fast)
    message = str(info.value)
    assert "HF_TOKEN" in message and "not set" in message and HELP in message
    assert len(server.requests) == 1 and sleeps == []
    assert "Authorization" not in server.requests[0].headers
    assert not (tmp_path / "gated.bin").exists()


def test_token_from_environment_is_sent(server, tmp_path, fast, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "s3cret")
    url = server.add("/gated.bin", DATA, token="s3cret")
    download(url, tmp_path / "gated.bin", token_env="HF_TOKEN", token_help=HELP, **fast)
    assert (tmp_path / "gated.bin").read_bytes() == DATA
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"


def test_rejected_token_and_gated_answer(server, tmp_path, fast, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "wrong-token")
    url = server.add("/gated.bin", DATA, token="s3cret", gated=True)
    with pytest.raises(PermissionError) as info:
        download(url, tmp_path / "gated.bin", token_env="HF_TOKEN", token_help=HELP, **fast)
    message = str(info.value)
    assert "HF_TOKEN" in message and "rejected" in message and "GatedRepo" in message
    assert HELP in message and "wrong-token" not in message


def test_403_is_a_permission_error(server, tmp_path, fast):
    url = server.add("/forbidden.bin", DATA, statuses=[403])
    with pytest.raises(PermissionError, match="HF_TOKEN"):
        download(url, tmp_path / "f.bin", token_env="HF_TOKEN", **fast)
    assert len(server.requests) == 1


def _need_localhost():
    try:
        if socket.gethostbyname("localhost") != "127.0.0.1":
            pytest.skip("localhost does not resolve to 127.0.0.1")
    except OSError:
        pytest.skip("localhost does not resolve")


def test_token_is_not_forwarded_to_another_host_on_redirect(server, tmp_path, fast, monkeypatch):
    _need_localhost()
    monkeypatch.setenv("HF_TOKEN", "s3cret")
    cdn = f"http://localhost:{server.port}/cdn/blob"
    server.add("/cdn/blob", DATA, statuses=[403])  # e.g. an expired signed URL: retried
    url = server.add("/resolve/file.bin", b"", token="s3cret", redirect=cdn)
    download(url, tmp_path / "file.bin", token_env="HF_TOKEN", sha256=DIGEST, **fast)
    assert (tmp_path / "file.bin").read_bytes() == DATA
    assert server.requests_for("/resolve/file.bin")[0].headers["Authorization"] == "Bearer s3cret"
    assert [r.status for r in server.requests_for("/cdn/blob")] == [403, 200]
    assert all("Authorization" not in r.headers for r in server.requests_for("/cdn/blob"))


def test_resume_through_a_redirect_keeps_the_range(server, tmp_path, fast):
    _need_localhost()
    server.add("/cdn/blob", DATA, cut_after=5000)
    url = server.add("/resolve/file.bin", b"", redirect=f"http://localhost:{server.port}/cdn/blob")
    download(url, tmp_path / "file.bin", sha256=DIGEST, **fast)
    assert [r.headers.get("Range") for r in server.requests_for("/cdn/blob")] == [
        None, "bytes=5000-"]


# --------------------------------------------------------------------------- hub URLs
def test_hf_file_url(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert (hf_file_url("sentence-transformers/stsb", "data/test-00000-of-00001.parquet",
                        revision="ab7a5ac0e35aa22088bdcf23e7fd99b220e53308")
            == "https://huggingface.co/datasets/sentence-transformers/stsb/resolve/"
               "ab7a5ac0e35aa22088bdcf23e7fd99b220e53308/data/test-00000-of-00001.parquet")
    assert (hf_file_url("Qwen/Qwen2.5-0.5B", "config.json", repo_type="model")
            == "https://huggingface.co/Qwen/Qwen2.5-0.5B/resolve/main/config.json")
    assert (hf_file_url("a/b", "x y.txt", revision="refs/convert/parquet")
            == "https://huggingface.co/datasets/a/b/resolve/refs%2Fconvert%2Fparquet/x%20y.txt")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1234/")
    assert hf_file_url("a/b", "f") == "http://127.0.0.1:1234/datasets/a/b/resolve/main/f"
    assert hf_file_url("a/b", "f", endpoint="http://h") == "http://h/datasets/a/b/resolve/main/f"
    with pytest.raises(ValueError, match="repo_type"):
        hf_file_url("a/b", "f", repo_type="bucket")
    with pytest.raises(ValueError, match="repo_id"):
        hf_file_url("/a/b", "f")


def test_download_from_emulated_hub(server, tmp_path, fast, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.add_hub_file("org/data", "abc123", "data/part-0.parquet", DATA)
    url = hf_file_url("org/data", "data/part-0.parquet", revision="abc123")
    assert url.startswith(server.url + "/datasets/org/data/resolve/abc123/")
    dest = download(url, tmp_path / "part-0.parquet", sha256=DIGEST, **fast)
    assert dest.read_bytes() == DATA
