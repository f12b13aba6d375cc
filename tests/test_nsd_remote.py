"""Remote NSD access against a loopback S3 server (moto in server mode on 127.0.0.1).

The server holds a small NSD written by ``simulate_nsd`` in the real formats, under
the real bucket keys, readable anonymously (as the public bucket is).  Nothing here
reaches the network.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers_nsd import local_shared_ids
from motalign.datasets.nsd.images import fetch_shared_stimuli, nsd_stimulus_id, read_shared_images
from motalign.datasets.nsd.layout import (
    EXPDESIGN_PATH,
    REGIONS,
    SHARED_STIMULI_PATH,
    STIMULI_PATH,
    nsd_paths,
    subject_id,
)
from motalign.datasets.nsd.mirror import MANIFEST_NAME, download_nsd, needed_keys
from motalign.datasets.nsd.ranged import RangedS3File
from motalign.datasets.nsd.responses import subject_responses
from motalign.datasets.nsd.s3 import (
    BUCKET_ENV,
    ENDPOINT_ENV,
    MiB,
    MissingObjectError,
    NSDRemoteError,
    default_bucket,
    head,
    s3_client,
)
from motalign.datasets.nsd.simulate import simulate_nsd
from motalign.datasets.nsd.transfer import download_object, etag_kind, multipart_etag

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")  # moto[server]: the loopback S3 server
h5py = pytest.importorskip("h5py")
pytest.importorskip("nibabel")

from botocore.exceptions import EndpointConnectionError  # noqa: E402

BUCKET = "natural-scenes-dataset"
VOLUME = (9, 11, 10)
SUBJECTS = ("A", "C")  # subj01, subj05
N_SESSIONS = 2
BETA_KEY = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.nii.gz"
DECOYS = {  # objects of the real bucket that download_nsd must leave alone
    "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5": b"h" * 100,
    "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/ncsnr.nii.gz": b"n" * 100,
    "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/valid_session01.nii.gz": b"v" * 50,
    "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz": b"g" * 100,
}


def digit_images(n, size=64, seed=0):
    """``n`` sklearn digits upsampled to size x size, tinted into RGB uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]
    rng = np.random.default_rng(seed)
    k = size // 8
    out = []
    for img in digits:
        grey = np.kron(img * 15.0, np.ones((k, k)))
        out.append(np.clip(grey[..., None] * rng.uniform(0.4, 1.0, size=3), 0, 255).astype(np.uint8))
    return np.stack(out)


def admin_client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-2",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def put_public(admin, key, body):
    # moto checks anonymous HEAD against the object ACL (it maps HEAD to s3:HeadObject, not
    # s3:GetObject as AWS does), so objects are also public-read besides the bucket policy.
    admin.put_object(Bucket=BUCKET, Key=key, Body=body, ACL="public-read")


def anon(endpoint):
    return s3_client(endpoint_url=endpoint)


def record_requests(client, operation="GetObject"):
    """List of the headers of every ``operation`` request the client sends."""
    seen = []

    def hook(request, **_):
        seen.append({k.lower(): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in request.headers.items()})

    client.meta.events.register(f"before-send.s3.{operation}", hook)
    return seen


@pytest.fixture(scope="module")
def server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def remote(server, tmp_path_factory):
    """The simulated NSD uploaded under its real keys to a public bucket."""
    src = tmp_path_factory.mktemp("nsd_src")
    images = digit_images(40)
    sim = simulate_nsd(src, images, subjects=SUBJECTS, n_shared=24, n_specific=2,
                           n_sessions=N_SESSIONS, repetitions=3, volume_shape=VOLUME, seed=1)
    admin = admin_client(server)
    admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    admin.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*",
                       "Action": ["s3:GetObject", "s3:ListBucket"],
                       "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}],
    }))
    keys = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = path.relative_to(src).as_posix()
        put_public(admin, key, path.read_bytes())
        keys.append(key)
    for key, body in DECOYS.items():
        put_public(admin, key, body)
    return {"endpoint": server, "src": src, "sim": sim, "images": images, "keys": keys, "admin": admin}


@pytest.fixture(scope="module")
def mirror(remote, tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd_mirror")
    summary = download_nsd(root, subjects=SUBJECTS, client=anon(remote["endpoint"]), bucket=BUCKET)
    return root, summary


def expected_keys():
    keys = {EXPDESIGN_PATH}
    for s in SUBJECTS:
        name = subject_id(s)
        keys |= {f"nsddata/ppdata/{name}/func1pt8mm/roi/{stem}.nii.gz" for stem in ("prf-visualrois", "streams")}
        keys |= {f"nsddata_betas/ppdata/{name}/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session{k:02d}.nii.gz"
                 for k in range(1, N_SESSIONS + 1)}
    return keys


def local_files(root):
    return {p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- client


def test_anonymous_unsigned_requests_and_env(remote, monkeypatch):
    monkeypatch.setenv(ENDPOINT_ENV, remote["endpoint"])
    monkeypatch.delenv(BUCKET_ENV, raising=False)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    client = s3_client()  # endpoint from the environment, no credentials anywhere
    assert client.meta.region_name == "us-east-2"
    heads = record_requests(client, "HeadObject")
    gets = record_requests(client, "GetObject")
    info = head(client, default_bucket(), EXPDESIGN_PATH)
    assert info["size"] == (remote["src"] / EXPDESIGN_PATH).stat().st_size
    body = client.get_object(Bucket=BUCKET, Key=EXPDESIGN_PATH)["Body"].read()
    assert body == (remote["src"] / EXPDESIGN_PATH).read_bytes()
    assert heads and gets
    assert all("authorization" not in h for h in heads + gets)
    assert default_bucket() == "natural-scenes-dataset"
    monkeypatch.setenv(BUCKET_ENV, "my-mirror")
    assert default_bucket() == "my-mirror"


# --------------------------------------------------------------------------- download_nsd


def test_download_mirrors_exactly_the_needed_keys(remote, mirror):
    root, summary = mirror
    want = expected_keys()
    assert set(summary["files"]) == want
    assert local_files(root) == want | {MANIFEST_NAME}
    assert STIMULI_PATH not in local_files(root)
    assert set(summary["downloaded"]) == want and summary["skipped"] == []
    assert summary["bytes"] == summary["total_bytes"] == sum((remote["src"] / k).stat().st_size for k in want)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == want
    for key in want:
        data = (root / key).read_bytes()
        assert data == (remote["src"] / key).read_bytes()
        entry = manifest["files"][key]
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["etag"].strip('"') == hashlib.md5(data).hexdigest()
        assert entry["verified"] == "md5"


def test_reader_on_mirror_equals_reader_on_original(remote, mirror):
    root, _ = mirror
    for subject in SUBJECTS:
        ids_a, resp_a, info_a = subject_responses(remote["src"], subject)
        ids_b, resp_b, info_b = subject_responses(root, subject)
        np.testing.assert_array_equal(ids_a, ids_b)
        assert list(resp_a) == list(resp_b) == list(REGIONS)
        for region in resp_a:
            np.testing.assert_array_equal(resp_a[region], resp_b[region])
        assert info_b["sessions"] == list(range(1, N_SESSIONS + 1))


def test_rerun_skips_everything(remote, mirror):
    root, first = mirror
    client = anon(remote["endpoint"])
    gets = record_requests(client)
    again = download_nsd(root, subjects=SUBJECTS, client=client, bucket=BUCKET)
    assert again["downloaded"] == [] and again["bytes"] == 0
    assert again["skipped"] == first["files"]
    assert gets == []  # nothing transferred, only HEAD/LIST


def test_explicit_sessions_and_mapping(remote, tmp_path):
    client = anon(remote["endpoint"])
    keys = needed_keys(["A", "subj05"], sessions={"subj01": 2, "C": [1]}, client=client,
                          bucket=BUCKET, regions_files=["streams"])
    assert keys == [
        EXPDESIGN_PATH,
        "nsddata/ppdata/subj01/func1pt8mm/roi/streams.nii.gz",
        "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session02.nii.gz",
        "nsddata/ppdata/subj05/func1pt8mm/roi/streams.nii.gz",
        "nsddata_betas/ppdata/subj05/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.nii.gz",
    ]
    summary = download_nsd(tmp_path, subjects=["A"], sessions=[2], client=client, bucket=BUCKET)
    assert nsd_paths(tmp_path, "A").sessions() == [2]
    assert len(summary["files"]) == 4


def test_corrupted_file_is_downloaded_again(remote, mirror, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(mirror[0], root)  # copy2 keeps mtimes: the manifest still vouches
    client = anon(remote["endpoint"])
    path = root / BETA_KEY
    original = path.read_bytes()
    st = path.stat()

    def corrupt(keep_mtime):
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        ns = st.st_mtime_ns if keep_mtime else st.st_mtime_ns + 5_000_000_000
        os.utime(path, ns=(st.st_atime_ns, ns))
        assert path.stat().st_size == st.st_size

    corrupt(keep_mtime=False)  # right size, wrong MD5, changed mtime: hashed and refetched
    s1 = download_nsd(root, subjects=SUBJECTS, client=client, bucket=BUCKET)
    assert s1["downloaded"] == [BETA_KEY]
    assert path.read_bytes() == original

    # same size and mtime as recorded: trusted by the manifest, but rehash=True checks it
    st = path.stat()
    corrupt(keep_mtime=True)
    s2 = download_nsd(root, subjects=SUBJECTS, client=client, bucket=BUCKET)
    assert s2["downloaded"] == []
    s3 = download_nsd(root, subjects=SUBJECTS, client=client, bucket=BUCKET, rehash=True)
    assert s3["downloaded"] == [BETA_KEY]
    assert path.read_bytes() == original

    # wrong size, and a manifest that was lost: both handled
    path.write_bytes(original[:100])
    (root / MANIFEST_NAME).unlink()
    s4 = download_nsd(root, subjects=SUBJECTS, client=client, bucket=BUCKET)
    assert s4["downloaded"] == [BETA_KEY]
    assert path.read_bytes() == original
    assert set(json.loads((root / MANIFEST_NAME).read_text())["files"]) == expected_keys()


def test_missing_keys_give_clear_errors(remote, tmp_path):
    client = anon(remote["endpoint"])
    missing = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session07.nii.gz"
    with pytest.raises(MissingObjectError) as err:
        download_nsd(tmp_path / "a", subjects=["A"], sessions=[1, 7], client=client, bucket=BUCKET)
    assert missing in str(err.value) and BUCKET in str(err.value)
    assert err.value.key == missing and err.value.bucket == BUCKET
    assert not (tmp_path / "a").exists()  # checked before any transfer

    with pytest.raises(MissingObjectError, match="subj02.*natural-scenes-dataset"):
        download_nsd(tmp_path / "b", subjects=["B"], client=client, bucket=BUCKET)
    with pytest.raises(MissingObjectError, match="no-such-bucket"):
        download_nsd(tmp_path / "c", subjects=["A"], sessions=[1], client=client, bucket="no-such-bucket")


# --------------------------------------------------------------------------- download_object


class CuttingProxy:
    """TCP proxy to the S3 server that can cut the connection in the middle of the body of
    the next GET response (after forwarding ``cut_get_after`` bytes of it)."""

    def __init__(self, endpoint):
        host, port = endpoint.rsplit("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut_get_after = None
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        upstream = socket.create_connection(self.target)
        state = {"budget": None}

        def client_to_server():
            with contextlib.suppress(OSError):
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    if data.startswith(b"GET ") and self.cut_get_after is not None:
                        state["budget"], self.cut_get_after = self.cut_get_after, None
                    upstream.sendall(data)

        threading.Thread(target=client_to_server, daemon=True).start()
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                budget = state["budget"]
                if budget is not None:
                    if len(data) >= budget:
                        conn.sendall(data[:budget])
                        self.cuts += 1
                        break
                    state["budget"] = budget - len(data)
                conn.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (conn, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self):
        self.listener.close()


def test_resume_after_cut_connection(remote, tmp_path):
    proxy = CuttingProxy(remote["endpoint"])
    try:
        client = s3_client(endpoint_url=proxy.endpoint)
        gets = record_requests(client)
        original = (remote["src"] / BETA_KEY).read_bytes()
        assert len(original) > 20_000
        proxy.cut_get_after = 6_000  # headers + a few KB of body, then the socket dies
        sleeps = []
        dest = tmp_path / "x" / "betas.nii.gz"
        rec = download_object(client, BUCKET, BETA_KEY, dest, sleep=sleeps.append)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert dest.read_bytes() == original
    assert not dest.with_name(dest.name + ".part").exists()
    assert not dest.with_name(dest.name + ".part.json").exists()
    ranges = [h.get("range") for h in gets]
    assert ranges[0] is None and len(ranges) == 2
    offset = rec["resumed_from"][0]
    assert 0 < offset < len(original) and ranges[1] == f"bytes={offset}-"
    assert rec["bytes_transferred"] == len(original)  # nothing fetched twice
    assert sleeps == [1.0]
    assert rec["verified"] == "md5" and rec["sha256"] == hashlib.sha256(original).hexdigest()


class _Interrupt(BaseException):
    pass


class StoppingClient:
    """Delegates to a client; the first GetObject body raises ``_Interrupt`` (a killed
    process) after ``after`` bytes."""

    def __init__(self, client, after):
        self._client, self._after = client, after

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_object(self, **kwargs):
        resp = self._client.get_object(**kwargs)
        if self._after is not None:
            after, self._after = self._after, None
            body = resp["Body"]
            given = [0]

            class Body:
                def read(self, n=-1):
                    if given[0] >= after:
                        raise _Interrupt()
                    data = body.read(min(n, after - given[0]) if n and n > 0 else after - given[0])
                    given[0] += len(data)
                    return data

                def close(self):
                    body.close()

            resp["Body"] = Body()
        return resp


def test_resume_a_part_file_left_by_a_killed_run(remote, tmp_path):
    client = anon(remote["endpoint"])
    original = (remote["src"] / BETA_KEY).read_bytes()
    dest = tmp_path / "betas.nii.gz"
    with pytest.raises(_Interrupt):
        download_object(StoppingClient(client, 10_000), BUCKET, BETA_KEY, dest, sleep=lambda s: None)
    part = dest.with_name(dest.name + ".part")
    assert part.stat().st_size == 10_000 and not dest.exists()
    gets = record_requests(client)
    rec = download_object(client, BUCKET, BETA_KEY, dest)
    assert [h.get("range") for h in gets] == ["bytes=10000-"]
    assert rec["bytes_transferred"] == len(original) - 10_000
    assert dest.read_bytes() == original


def test_part_of_an_older_version_is_discarded(remote, tmp_path):
    admin, key = remote["admin"], "test/changing.bin"
    rng = np.random.default_rng(5)
    v1, v2 = rng.bytes(50_000), rng.bytes(50_000)
    put_public(admin, key, v1)
    client = anon(remote["endpoint"])
    dest = tmp_path / "changing.bin"
    with pytest.raises(_Interrupt):
        download_object(StoppingClient(client, 20_000), BUCKET, key, dest)
    put_public(admin, key, v2)  # same size, new content and ETag
    gets = record_requests(client)
    download_object(client, BUCKET, key, dest)
    assert dest.read_bytes() == v2
    assert [h.get("range") for h in gets] == [None]


class _CutBody:
    """A response body whose connection dies after ``after`` bytes."""

    def __init__(self, body, after):
        self._body, self._left = body, after

    def read(self, n=-1):
        from botocore.exceptions import ResponseStreamingError

        if self._left <= 0:
            raise ResponseStreamingError(error="connection reset mid-body (scripted)")
        data = self._body.read(min(n, self._left) if n and n > 0 else self._left)
        self._left -= len(data)
        return data

    def close(self):
        self._body.close()


class FlakyClient:
    """Delegates to a client; the first ``cut`` GetObject bodies die after ``after`` bytes
    (``after=0``: before any byte, so no progress), ``fail`` GetObject requests raise a
    connection error (as botocore does once its own retries are spent), and the first
    successful body is corrupted when ``corrupt``."""

    def __init__(self, client, cut=0, after=0, fail=0, corrupt=False):
        self._client, self.cut, self.after, self.fail, self.corrupt = client, cut, after, fail, corrupt
        self.gets = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_object(self, **kwargs):
        self.gets += 1
        if self.fail:
            self.fail -= 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        resp = self._client.get_object(**kwargs)
        if self.cut:
            self.cut -= 1
            resp["Body"] = _CutBody(resp["Body"], self.after)
        elif self.corrupt:
            self.corrupt = False
            data = bytearray(resp["Body"].read())
            data[0] ^= 0xFF
            resp["Body"] = io.BytesIO(bytes(data))
        return resp


def test_one_retry_policy_the_clients_max_attempts(remote, tmp_path):
    """Cut bodies are resumed as often as the client's botocore config retries a request
    (max_attempts), waiting 1, 2, 4, ... s; then the error says what is left on disk."""
    client = s3_client(endpoint_url=remote["endpoint"], max_attempts=3)
    sleeps = []
    flaky = FlakyClient(client, cut=100)
    with pytest.raises(NSDRemoteError, match="giving up after 3 retries .*max_attempts") as err:
        download_object(flaky, BUCKET, BETA_KEY, tmp_path / "f", sleep=sleeps.append)
    assert sleeps == [1.0, 2.0, 4.0] and flaky.gets == 4
    part = tmp_path / "f.part"
    assert part.exists() and f"the partial file {part} (0 bytes) is kept" in str(err.value)
    assert not (tmp_path / "f").exists()

    sleeps = []
    rec = download_object(FlakyClient(client, cut=2), BUCKET, BETA_KEY, tmp_path / "g",
                          sleep=sleeps.append)
    assert sleeps == [1.0, 2.0]
    assert (tmp_path / "g").read_bytes() == (remote["src"] / BETA_KEY).read_bytes()
    assert rec["attempts"] == 3


def test_a_request_botocore_gave_up_on_is_not_retried_again(remote, tmp_path):
    client = anon(remote["endpoint"])
    sleeps = []
    flaky = FlakyClient(client, cut=1, after=5_000, fail=1)
    with pytest.raises(NSDRemoteError, match="after the S3 client's retries.*partial file") as err:
        download_object(flaky, BUCKET, BETA_KEY, tmp_path / "f", sleep=sleeps.append)
    assert flaky.gets == 1 and sleeps == []
    assert "5000 bytes" not in str(err.value)  # the failed request wrote nothing
    # a dead endpoint: botocore's own attempts, then one clear error naming the object
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = s3_client(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=0, connect_timeout=2)
    with pytest.raises(NSDRemoteError, match=f"s3://{BUCKET}/{BETA_KEY}.*client's retries"):
        head(dead, BUCKET, BETA_KEY)


def test_corrupted_transfer_fails_md5_and_is_fetched_again(remote, tmp_path):
    client = anon(remote["endpoint"])
    sleeps = []
    rec = download_object(FlakyClient(client, corrupt=True), BUCKET, BETA_KEY, tmp_path / "c",
                          sleep=sleeps.append)
    assert (tmp_path / "c").read_bytes() == (remote["src"] / BETA_KEY).read_bytes()
    assert sleeps == [1.0] and rec["attempts"] == 2 and rec["verified"] == "md5"


def test_body_shorter_than_the_object_is_never_accepted(remote, tmp_path):
    """A body that ends early without a connection error (no length to catch it on the
    wire) is caught by the size recorded by the server, and resumed."""

    class ShortBody:
        def __init__(self, body, n):
            self._data = body.read()[:n]
            self._pos = 0

        def read(self, n=-1):
            n = len(self._data) - self._pos if n is None or n < 0 else n
            out = self._data[self._pos:self._pos + n]
            self._pos += len(out)
            return out

        def close(self):
            pass

    class ShortClient(FlakyClient):
        def get_object(self, **kwargs):
            resp = self._client.get_object(**kwargs)
            if self.cut:
                self.cut -= 1
                resp["Body"] = ShortBody(resp["Body"], 7_000)
            return resp

    client = anon(remote["endpoint"])
    gets = record_requests(client)
    sleeps = []
    rec = download_object(ShortClient(client, cut=1), BUCKET, BETA_KEY, tmp_path / "s",
                          sleep=sleeps.append)
    assert (tmp_path / "s").read_bytes() == (remote["src"] / BETA_KEY).read_bytes()
    assert [h.get("range") for h in gets] == [None, "bytes=7000-"] and sleeps == [1.0]
    assert rec["verified"] == "md5"


def test_multipart_etag(remote, tmp_path):
    from boto3.s3.transfer import TransferConfig

    key = "test/multipart.bin"
    data = np.random.default_rng(2).bytes(6 * MiB + 123)
    remote["admin"].upload_fileobj(
        io.BytesIO(data), BUCKET, key, ExtraArgs={"ACL": "public-read"},
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    client = anon(remote["endpoint"])
    info = head(client, BUCKET, key)
    assert etag_kind(info["etag"]) == "multipart" and info["etag"].strip('"').endswith("-2")
    rec = download_object(client, BUCKET, key, tmp_path / "mp.bin")
    assert (tmp_path / "mp.bin").read_bytes() == data
    assert rec["verified"] == "multipart-md5"
    assert multipart_etag(tmp_path / "mp.bin", 5 * MiB) == info["etag"].strip('"')

    # a part size that no usual default reproduces (6 MiB): only the size can be checked
    odd = "test/multipart-odd.bin"
    remote["admin"].upload_fileobj(
        io.BytesIO(data), BUCKET, odd, ExtraArgs={"ACL": "public-read"},
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=6 * MiB))
    rec = download_object(client, BUCKET, odd, tmp_path / "odd.bin")
    assert (tmp_path / "odd.bin").read_bytes() == data and rec["verified"] == "size"


# --------------------------------------------------------------------------- ranged reads, stimuli


def test_ranged_file_h5py_reads_a_small_fraction(remote):
    client = anon(remote["endpoint"])
    ids = [31, 4, 17]
    with RangedS3File(client, BUCKET, STIMULI_PATH, block_size=16 * 1024, cache_blocks=8) as f:
        assert f.size == (remote["src"] / STIMULI_PATH).stat().st_size
        with h5py.File(f, "r") as h:
            assert h["imgBrick"].shape == remote["images"].shape
        got = read_shared_images(f, ids)
        fetched = f.bytes_fetched
    np.testing.assert_array_equal(got, remote["images"][np.array(ids) - 1])
    assert fetched < 0.5 * f.size, (fetched, f.size)

    got2 = read_shared_images(None, [5, 5, 40], client=client, bucket=BUCKET, block_size=16 * 1024)
    np.testing.assert_array_equal(got2, remote["images"][[4, 4, 39]])


def test_ranged_file_contiguous_layout_and_direct_reads(remote, tmp_path):
    # the real imgBrick may be stored contiguously: rows are then plain byte ranges
    path = tmp_path / "contig.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=remote["images"])  # no chunks
    key = "test/contiguous_stimuli.hdf5"
    put_public(remote["admin"], key, path.read_bytes())
    client = anon(remote["endpoint"])
    with RangedS3File(client, BUCKET, key, block_size=8 * 1024, direct_threshold=4096) as f:
        got = read_shared_images(f, [40, 1, 22])
        np.testing.assert_array_equal(got, remote["images"][[39, 0, 21]])
        assert f.bytes_fetched < 0.5 * f.size


def test_ranged_file_is_a_correct_seekable_file(remote):
    key = "test/random.bin"
    data = np.random.default_rng(3).bytes(100_003)
    put_public(remote["admin"], key, data)
    client = anon(remote["endpoint"])
    rng = np.random.default_rng(4)
    f = RangedS3File(client, BUCKET, key, block_size=4096, cache_blocks=3, direct_threshold=20_000)
    assert f.readable() and f.seekable() and not f.writable()
    assert f.name == f"s3://{BUCKET}/{key}"
    for _ in range(200):
        pos = int(rng.integers(0, len(data) + 10))
        n = int(rng.choice([1, 17, 4096, 5000, 30_000]))
        assert f.seek(pos) == pos
        assert f.read(n) == data[pos:pos + n]
        assert f.tell() == min(pos + n, len(data)) if pos < len(data) else f.tell() == pos
    f.seek(-10, io.SEEK_END)
    assert f.read() == data[-10:]
    f.seek(0)
    assert f.read() == data
    f.seek(100)
    f.seek(50, io.SEEK_CUR)
    assert f.read(3) == data[150:153]
    assert io.BufferedReader(f).read(10) == data[153:163]
    with pytest.raises(ValueError):
        f.seek(-1)
    f.close()
    with pytest.raises(ValueError):
        f.read(1)
    with pytest.raises(MissingObjectError, match="test/absent.bin"):
        RangedS3File(client, BUCKET, "test/absent.bin")


def test_fetch_shared_stimuli_and_read_local(remote, mirror, tmp_path):
    root = tmp_path / "root"
    (root / EXPDESIGN_PATH).parent.mkdir(parents=True)
    shutil.copy(mirror[0] / EXPDESIGN_PATH, root / EXPDESIGN_PATH)
    client = anon(remote["endpoint"])
    out = fetch_shared_stimuli(root, client=client, bucket=BUCKET, batch_size=7, block_size=16 * 1024)
    sharedix = remote["sim"]["sharedix"]
    assert out["path"] == str(root / SHARED_STIMULI_PATH) and not out["skipped"]
    assert out["n_images"] == len(sharedix) == 24
    np.testing.assert_array_equal(local_shared_ids(root), sharedix)
    images = remote["images"]

    ids = local_shared_ids(root)
    all_images = read_shared_images(root, ids)
    np.testing.assert_array_equal(ids, sharedix)
    np.testing.assert_array_equal(all_images, images[sharedix - 1])
    want = [int(sharedix[5]), int(sharedix[0]), int(sharedix[5]), int(sharedix[-1])]
    np.testing.assert_array_equal(read_shared_images(out["path"], want), images[np.array(want) - 1])
    assert read_shared_images(root, []).shape == (0,) + images.shape[1:]
    not_shared = sorted(set(range(1, 41)) - set(sharedix.tolist()))[0]
    with pytest.raises(ValueError, match=f"\\[{not_shared}\\]"):
        read_shared_images(root, [int(sharedix[0]), not_shared])
    with h5py.File(out["path"], "r") as f:  # cannot be mistaken for the full file
        assert "imgBrick" not in f

    again = fetch_shared_stimuli(root, client=client, bucket=BUCKET)
    assert again["skipped"] and again["bytes_fetched"] == 0
    subset = fetch_shared_stimuli(root, tmp_path / "two.hdf5", nsd_ids=[7, 3], client=client, bucket=BUCKET)
    assert not subset["skipped"]
    np.testing.assert_array_equal(read_shared_images(tmp_path / "two.hdf5", [7, 3]), images[[6, 2]])


# --------------------------------------------------------------------------- the workflow's path


def test_pipeline_mirror_then_stimuli_then_brain_responses(remote, tmp_path, monkeypatch):
    """download_nsd (the workflow's rule) -> shared images -> one subject's responses."""
    from motalign.datasets.stimuli import prepare_stimuli
    from motalign.io.stimuli import read_stimuli
    from motalign.io.store import ActivationStore
    from motalign.workflow import data_jobs

    monkeypatch.setenv(ENDPOINT_ENV, remote["endpoint"])
    monkeypatch.setenv(BUCKET_ENV, BUCKET)
    root = tmp_path / "nsd"
    summary = data_jobs.download_nsd(root, cache_root=tmp_path / "cache", subjects=list(SUBJECTS))
    assert summary["shared_images"] == len(remote["sim"]["sharedix"])
    assert not (root / STIMULI_PATH).exists()  # never the whole brick
    stimuli = tmp_path / "stimuli.npz"
    prepare_stimuli({"source": "nsd", "kind": "images"}, stimuli, nsd_root=root)
    data = read_stimuli(stimuli)
    ids = np.sort(remote["sim"]["sharedix"])
    np.testing.assert_array_equal(data["images"], remote["images"][ids - 1])
    out = tmp_path / "subject.npz"
    data_jobs.brain_responses(root, SUBJECTS[0], stimuli, out, regions=["V1", "V4", "Dorsal"])
    with ActivationStore(out) as store:
        assert store.layer_names == ("V1", "V4", "Dorsal")
        assert list(store.stimulus_ids) == [nsd_stimulus_id(i) for i in ids]


def test_the_workflow_job_mirrors_into_a_cache_that_outlives_its_output(remote, tmp_path):
    """download_nsd (the workflow's job): the files are fetched into a cache that is not a
    Snakemake output, then hard-linked into the output folder; an output folder deleted by
    Snakemake (a failed or forced job) is rebuilt from the cache without fetching again."""
    from motalign.workflow import data_jobs

    out, cache = tmp_path / "results" / "data" / "nsd", tmp_path / "results" / "downloads" / "nsd"
    client = anon(remote["endpoint"])
    first = data_jobs.download_nsd(out, cache_root=cache, subjects=["A"], client=client, bucket=BUCKET)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert first["linked"] == len(files) and EXPDESIGN_PATH in files
    assert all((out / f).stat().st_ino == (cache / f).stat().st_ino for f in files)  # no copies
    shutil.rmtree(out)
    seen = record_requests(client)
    again = data_jobs.download_nsd(out, cache_root=cache, subjects=["A"], client=client, bucket=BUCKET)
    assert again["linked"] == len(files)
    assert seen == []  # nothing fetched again
    ids, responses, _ = subject_responses(out, "A", regions=("V1",))
    assert responses["V1"].shape[0] == len(ids) > 0
