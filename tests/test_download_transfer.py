"""transfer.fetch against a local HTTP server: resume, retries, verification, refusals. No internet."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
from download_server import FileServer

from bioclip_cli.data.artifacts import Checksum
from bioclip_cli.data.transfer import (
    TransferError,
    TransferSettings,
    fetch,
    file_digest,
    probe_size,
    verify_file,
)
from bioclip_cli.errors import ChecksumMismatch

FAST = TransferSettings(timeout=5.0, retries=3, backoff=0.01, chunk_size=4096)
DATA = os.urandom(50_000)
MD5 = Checksum("md5", hashlib.md5(DATA).hexdigest())


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def test_fresh_download_verifies_and_renames(server, tmp_path):
    url = server.add("/f.bin", DATA)
    dest = tmp_path / "sub" / "f.bin"
    seen = []
    result = fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True, on_bytes=seen.append)
    assert dest.read_bytes() == DATA
    assert not dest.with_name("f.bin.part").exists()
    assert (result.size, result.fetched, result.resumed_from, result.requests) == (len(DATA), len(DATA), 0, 1)
    assert sum(seen) == len(DATA)
    assert result.checksum == MD5
    assert server.gets("/f.bin") == [("GET", "/f.bin", None, 200)]


def test_dropped_connection_resumes_with_range(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.fault("/f.bin", "drop")
    dest = tmp_path / "f.bin"
    result = fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True)
    assert dest.read_bytes() == DATA
    first, second = server.gets("/f.bin")
    assert first == ("GET", "/f.bin", None, 200)
    half = len(DATA) // 2
    assert second == ("GET", "/f.bin", f"bytes={half}-", 206)  # resumed where the drop cut it
    assert result.requests == 2 and result.fetched == len(DATA)


def test_existing_part_is_resumed_across_runs(server, tmp_path):
    url = server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(DATA[:12_345])  # an interrupted earlier run
    result = fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True)
    assert dest.read_bytes() == DATA
    assert server.gets("/f.bin") == [("GET", "/f.bin", "bytes=12345-", 206)]
    assert (result.resumed_from, result.fetched) == (12_345, len(DATA) - 12_345)


def test_one_500_is_retried(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.fault("/f.bin", "500")
    result = fetch(url, tmp_path / "f.bin", checksum=MD5, settings=FAST, allow_http=True)
    assert [e[3] for e in server.gets("/f.bin")] == [500, 200]
    assert result.requests == 2
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_persistent_500_gives_up_after_the_retries(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.fault("/f.bin", *["500"] * 10)
    with pytest.raises(TransferError, match=r"keeps failing \(HTTP 500 .*; gave up after 3 retries\)") as info:
        fetch(url, tmp_path / "f.bin", settings=FAST, allow_http=True)
    assert len(server.gets("/f.bin")) == 4  # 1 + 3 retries
    assert "--mirror" in info.value.hint


def test_wrong_bytes_are_kept_as_bad_and_reported(server, tmp_path):
    url = server.add("/f.bin", DATA)
    server.fault("/f.bin", "wrong")
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumMismatch) as info:
        fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True)
    bad = tmp_path / "f.bin.bad"
    wrong = bytes(b ^ 0xFF for b in DATA)
    assert bad.read_bytes() == wrong
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    err = info.value
    assert (err.algorithm, err.expected, err.actual) == ("md5", MD5.value, hashlib.md5(wrong).hexdigest())
    assert MD5.value in err.message and err.actual in err.message
    assert str(bad) in err.hint


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    url = server.add("/f.bin", DATA, no_range=True)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"x" * 20_000)  # garbage that must not survive
    seen = []
    result = fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True, on_bytes=seen.append)
    assert dest.read_bytes() == DATA
    assert server.gets("/f.bin") == [("GET", "/f.bin", "bytes=20000-", 200)]  # asked, got the whole file
    assert sum(seen) == len(DATA)  # the progress went back by the dropped 20000 bytes
    assert result.fetched == len(DATA)


def test_drop_on_a_server_without_range_support_restarts(server, tmp_path):
    url = server.add("/f.bin", DATA, no_range=True)
    server.fault("/f.bin", "drop")
    dest = tmp_path / "f.bin"
    fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True)
    assert dest.read_bytes() == DATA
    assert [e[3] for e in server.gets("/f.bin")] == [200, 200]


def test_existing_verified_file_is_skipped_without_a_request(server, tmp_path):
    url = server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(DATA)
    result = fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True)
    assert result.skipped and result.requests == 0
    assert server.log == []


def test_corrupt_existing_file_is_fetched_again(server, tmp_path):
    url = server.add("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"corrupt")
    result = fetch(url, dest, checksum=MD5, settings=FAST, allow_http=True)
    assert not result.skipped and dest.read_bytes() == DATA


def test_sha256_and_size_are_checked(server, tmp_path):
    url = server.add("/f.bin", DATA)
    sha = Checksum("sha256", hashlib.sha256(DATA).hexdigest())
    fetch(url, tmp_path / "f.bin", size=len(DATA), checksum=sha, settings=FAST, allow_http=True)
    assert file_digest(tmp_path / "f.bin", "sha256") == sha.value
    assert verify_file(tmp_path / "f.bin", len(DATA), sha)
    assert not verify_file(tmp_path / "f.bin", len(DATA) + 1, sha)


def test_size_that_differs_from_the_registry_fails_before_downloading(server, tmp_path):
    url = server.add("/f.bin", DATA)
    with pytest.raises(TransferError, match=r"is 50000 bytes, but the registry says 49999 bytes"):
        fetch(url, tmp_path / "f.bin", size=49_999, settings=FAST, allow_http=True)
    assert not (tmp_path / "f.bin").exists()


def test_http_is_refused_without_a_mirror(server, tmp_path):
    url = server.add("/f.bin", DATA)
    with pytest.raises(TransferError, match=r"only HTTPS sources are allowed") as info:
        fetch(url, tmp_path / "f.bin", settings=FAST)
    assert "--mirror" in info.value.hint
    assert server.log == [] and not (tmp_path / "f.bin.part").exists()


def test_404_names_the_url_and_suggests_a_mirror(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(TransferError) as info:
        fetch(url, tmp_path / "m.bin", settings=FAST, allow_http=True)
    assert info.value.message == f"{url} was not found (HTTP 404)"
    assert "--mirror" in info.value.hint
    assert len(server.gets()) == 1  # not retried
    assert list(tmp_path.iterdir()) == []  # no empty .part left behind


def test_unreachable_host_is_one_sentence(tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    quick = TransferSettings(timeout=2.0, retries=1, backoff=0.01)
    with pytest.raises(TransferError) as info:
        fetch(f"http://127.0.0.1:{port}/f.bin", tmp_path / "f.bin", settings=quick, allow_http=True)
    message = info.value.message
    assert message.startswith(f"cannot reach 127.0.0.1:{port} (")
    assert message.endswith("no network connection, or the host is down")
    assert "\n" not in message


def test_probe_size_uses_head(server):
    url = server.add("/f.bin", DATA)
    assert probe_size(url, FAST, allow_http=True) == len(DATA)
    assert [e[0] for e in server.log] == ["HEAD"]
    assert probe_size(server.url("/nope"), FAST, allow_http=True) is None


def test_backoff_doubles_and_is_capped():
    settings = TransferSettings(backoff=0.5, max_backoff=3.0)
    assert [settings.pause(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("BIOCLIP_DOWNLOAD_TIMEOUT", "1.5")
    monkeypatch.setenv("BIOCLIP_DOWNLOAD_RETRIES", "7")
    monkeypatch.setenv("BIOCLIP_DOWNLOAD_BACKOFF", "0.25")
    settings = TransferSettings.from_env()
    assert (settings.timeout, settings.retries, settings.backoff) == (1.5, 7, 0.25)
