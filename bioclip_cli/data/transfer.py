"""HTTP(S) transfers that resume, retry, verify, and never leave a corrupt file looking complete.

`fetch(url, dest, size=, checksum=)` writes into `<dest>.part` (resuming it with a `Range` request when
it exists), retries connection errors and 5xx answers with exponential backoff (a refused connection, where
nothing listens, once at most), hashes the bytes as they
arrive, and renames `.part` to `dest` only after the size and checksum verify. A mismatch moves the
bytes to `<dest>.bad` and raises :class:`~bioclip_cli.errors.ChecksumMismatch`. Standard library only.

Timeouts and retries come from :class:`TransferSettings` (environment: BIOCLIP_DOWNLOAD_TIMEOUT seconds,
BIOCLIP_DOWNLOAD_RETRIES, BIOCLIP_DOWNLOAD_BACKOFF seconds for the first pause, doubled each retry).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bioclip_cli import __version__
from bioclip_cli.data.artifacts import Checksum, format_size
from bioclip_cli.errors import BioclipError, ChecksumMismatch

try:  # advisory lock on the .part file, so two downloads of one file cannot interleave
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

MIRROR_HINT = "if the file is available elsewhere, pass --mirror BASE_URL (the same paths are fetched from that host)"
_RETRY_CODES = {408, 425, 429}


class TransferError(BioclipError):
    """A URL could not be fetched. `try_next_source` is True when another source may still work."""

    def __init__(self, url: str, message: str, hint: str | None = None, try_next_source: bool = True):
        super().__init__(message, hint)
        self.url = url
        self.try_next_source = try_next_source


@dataclass(frozen=True)
class TransferSettings:
    """Timeout per socket operation, retries per file (reset whenever bytes arrive), backoff pauses."""

    timeout: float = 30.0
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    chunk_size: int = 1 << 20

    @classmethod
    def from_env(cls) -> TransferSettings:
        env = os.environ
        return cls(
            timeout=float(env.get("BIOCLIP_DOWNLOAD_TIMEOUT", cls.timeout)),
            retries=int(env.get("BIOCLIP_DOWNLOAD_RETRIES", cls.retries)),
            backoff=float(env.get("BIOCLIP_DOWNLOAD_BACKOFF", cls.backoff)),
        )

    def pause(self, failures: int) -> float:
        """Seconds to wait before retry number `failures` (1, 2, ...): backoff * 2**(failures-1), capped."""
        return min(self.max_backoff, self.backoff * 2 ** (failures - 1))


@dataclass(frozen=True)
class TransferResult:
    """What one `fetch` did: bytes received now, bytes reused from `.part`, requests made."""

    url: str
    dest: Path
    size: int
    fetched: int
    resumed_from: int
    requests: int
    checksum: Checksum | None
    skipped: bool = False


# ------------------------------------------------------------------------------------------- checksums


def file_digest(path: str | Path, kind: str, chunk_size: int = 1 << 20) -> str:
    """The hex digest (md5 or sha256) of a file, read in chunks (bounded memory)."""
    digest = hashlib.new(kind)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, size: int | None = None, checksum: Checksum | None = None) -> bool:
    """True when `path` exists and has the given size and checksum (each checked only when given)."""
    path = Path(path)
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return checksum is None or file_digest(path, checksum.kind) == checksum.value


# ----------------------------------------------------------------------------------------------- http


def check_url_allowed(url: str, allow_http: bool = False) -> None:
    """Only HTTPS, unless the user named a mirror (then plain http is accepted too)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (allow_http and scheme == "http"):
        return
    raise TransferError(
        url,
        f"refusing to download {url}: only HTTPS sources are allowed",
        "to fetch from a host you trust over http, name it with --mirror BASE_URL",
        try_next_source=False,
    )


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from HTTPS down to another scheme unless http is allowed."""

    def __init__(self, allow_http: bool):
        super().__init__()
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url_allowed(newurl, self.allow_http)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, settings: TransferSettings, allow_http: bool, headers: dict, method: str = "GET"):
    opener = urllib.request.build_opener(_SafeRedirect(allow_http))
    base = {"User-Agent": f"bioscan-clip/{__version__}", "Accept-Encoding": "identity"}
    request = urllib.request.Request(url, headers={**base, **headers}, method=method)
    return opener.open(request, timeout=settings.timeout)


class _Retry(Exception):
    """A transient failure: pause and try again, keeping the bytes already written."""

    def __init__(self, reason: str, server_error: bool = False, refused: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.server_error = server_error  # the host answered (5xx, 429), as opposed to a network failure
        self.refused = refused  # nothing listens there: one quick retry at most, not the whole backoff


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _unreachable(url: str, reason: str) -> TransferError:
    return TransferError(
        url,
        f"cannot reach {_host(url)} ({reason}): no network connection, or the host is down",
        f"check the connection and run the same command again (it resumes); {MIRROR_HINT}",
    )


def _http_error(url: str, exc: urllib.error.HTTPError) -> Exception:
    code = exc.code
    if code in _RETRY_CODES or code >= 500:
        return _Retry(f"HTTP {code} {exc.reason}", server_error=True)
    if code in (404, 410):
        return TransferError(url, f"{url} was not found (HTTP {code})", f"the link may have moved; {MIRROR_HINT}")
    return TransferError(url, f"{url} answered HTTP {code} {exc.reason}", MIRROR_HINT)


def _url_error(url: str, exc: urllib.error.URLError) -> Exception:
    reason = exc.reason
    if isinstance(reason, socket.gaierror):
        return _unreachable(url, "the host name does not resolve")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return TransferError(url, f"the TLS certificate of {_host(url)} does not verify ({reason.verify_message})")
    refused = isinstance(reason, ConnectionRefusedError)
    return _Retry(str(getattr(reason, "strerror", None) or reason), refused=refused)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); `bytes */1000` -> (None, 1000); unknown parts are None."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def probe_size(url: str, settings: TransferSettings | None = None, allow_http: bool = False) -> int | None:
    """The size of a remote file from a HEAD (or a one-byte range GET); None when the server will not say."""
    settings = settings or TransferSettings.from_env()
    check_url_allowed(url, allow_http)
    for method, headers in (("HEAD", {}), ("GET", {"Range": "bytes=0-0"})):
        try:
            with _open(url, settings, allow_http, headers, method) as resp:
                if resp.status == 206:
                    return _content_range(resp.headers.get("Content-Range"))[1]
                length = resp.headers.get("Content-Length")
                if resp.status == 200 and length is not None and method == "HEAD":
                    return int(length)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, BioclipError):
            continue
    return None


# ---------------------------------------------------------------------------------------------- fetch


class _Partial:
    """The open `.part` file with its running digest; every byte written is hashed exactly once."""

    def __init__(self, path: Path, checksum: Checksum | None, chunk_size: int, on_bytes):
        self.path = path
        self.fh = open(path, "a+b")  # noqa: SIM115 - closed by fetch
        if fcntl is not None:
            try:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.fh.close()
                raise BioclipError(
                    f"another download is writing {path}", "wait for it to finish, then run the command again"
                ) from None
        self.kind = checksum.kind if checksum else None
        self.digest = hashlib.new(self.kind) if self.kind else None
        self.on_bytes = on_bytes
        self.received = 0  # bytes written by this process (network bytes)
        self.offset = self.fh.seek(0, os.SEEK_END)
        if self.digest is not None and self.offset:  # resuming: the digest must cover what is already there
            self.fh.seek(0)
            while block := self.fh.read(chunk_size):
                self.digest.update(block)

    def write(self, block: bytes) -> None:
        self.fh.write(block)
        if self.digest is not None:
            self.digest.update(block)
        self.offset += len(block)
        self.received += len(block)
        self.on_bytes(len(block))

    def restart(self) -> None:
        """Drop what was written (the server cannot continue it) and start again from byte 0."""
        self.fh.truncate(0)
        self.fh.seek(0)
        self.on_bytes(-self.offset)
        self.offset = 0
        self.digest = hashlib.new(self.kind) if self.kind else None

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def _attempt(url: str, part: _Partial, size: int | None, settings: TransferSettings, allow_http: bool) -> int | None:
    """One request: continue `part` from its offset to the end. Returns the file's total size if known."""
    headers = {"Range": f"bytes={part.offset}-"} if part.offset else {}
    try:
        resp = _open(url, settings, allow_http, headers)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and part.offset:  # nothing left to send, or our partial is longer than the file
            total = _content_range(exc.headers.get("Content-Range"))[1]
            if total is not None and total == part.offset:
                return total
            part.restart()
            raise _Retry("the server refused the resume range; starting again") from None
        raise _http_error(url, exc) from None
    except urllib.error.URLError as exc:
        raise _url_error(url, exc) from None
    except ConnectionRefusedError as exc:
        raise _Retry(exc.strerror or "Connection refused", refused=True) from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    with resp:
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != part.offset:
                part.restart()
                raise _Retry("the server sent a different byte range than asked; starting again")
        else:
            if part.offset:  # the server ignores Range: the body starts at byte 0
                part.restart()
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        if size is not None and total is not None and total != size:
            raise TransferError(
                url,
                f"{url} is {total} bytes, but the registry says {size} bytes",
                f"the file on the server changed or is not the published one; {MIRROR_HINT}",
            )
        while True:
            try:
                block = resp.read1(settings.chunk_size)  # what has arrived, up to a chunk
            except (http.client.HTTPException, OSError) as exc:
                raise _Retry(f"connection dropped after {format_size(part.offset)} ({type(exc).__name__})") from None
            if not block:
                break
            part.write(block)
    if total is not None and part.offset != total:
        if part.offset > total:
            part.restart()
        raise _Retry(f"connection closed at {format_size(part.offset)} of {format_size(total)}")
    return total if total is not None else part.offset


def fetch(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    checksum: Checksum | None = None,
    settings: TransferSettings | None = None,
    allow_http: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    check: Callable[[Path], object] | None = None,
) -> TransferResult:
    """Download `url` to `dest`, resuming `<dest>.part`; verify `size`/`checksum` before the rename.

    `check(part_path)` (e.g. a format check, for files without a published checksum) runs after the size and
    checksum and before the rename; a BioclipError from it moves the bytes to `<dest>.bad` and is raised.
    `on_bytes(n)` is told of every block written (n < 0 when the partial file had to be dropped);
    the bytes already in `.part` are reported once at the start. An existing `dest` that verifies is
    left alone (no request is made).
    """
    settings = settings or TransferSettings.from_env()
    on_bytes = on_bytes or (lambda n: None)
    check_url_allowed(url, allow_http)
    dest = Path(dest)
    if verify_file(dest, size, checksum):
        return TransferResult(url, dest, dest.stat().st_size, 0, 0, 0, checksum, skipped=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Partial(dest.with_name(dest.name + ".part"), checksum, settings.chunk_size, on_bytes)
    try:
        if size is not None and part.offset > size:
            part.restart()
        resumed_from = part.offset
        on_bytes(resumed_from)
        failures = requests = 0
        while True:
            if size is not None and part.offset == size:
                break
            requests += 1
            before = part.offset
            try:
                _attempt(url, part, size, settings, allow_http)
                break
            except _Retry as exc:
                failures = 1 if part.offset > before else failures + 1
                limit = min(1, settings.retries) if exc.refused else settings.retries
                if failures > limit:
                    reason = f"{exc.reason}; gave up after {limit} {'retry' if limit == 1 else 'retries'}"
                    if exc.server_error:
                        raise TransferError(
                            url,
                            f"{_host(url)} keeps failing ({reason})",
                            f"the server may be overloaded: run the same command later (it resumes); {MIRROR_HINT}",
                        ) from None
                    raise _unreachable(url, reason) from None
                time.sleep(settings.pause(failures))
        fetched = part.received
        actual = part.digest.hexdigest() if part.digest is not None else None
    except BaseException:
        part.close()
        if part.path.stat().st_size == 0:  # nothing arrived: leave no empty .part behind
            part.path.unlink()
        raise
    part.close()
    final_size = part.path.stat().st_size
    bad = dest.with_name(dest.name + ".bad")
    hint = f"the downloaded bytes are kept in {bad}; run the command again to retry, or {MIRROR_HINT}"
    if size is not None and final_size != size:
        os.replace(part.path, bad)
        raise ChecksumMismatch(dest, "size", f"{size} bytes", f"{final_size} bytes", hint)
    if checksum is not None and actual != checksum.value:
        os.replace(part.path, bad)
        raise ChecksumMismatch(dest, checksum.kind, checksum.value, actual, hint)
    if check is not None:
        try:
            check(part.path)
        except BioclipError as exc:
            os.replace(part.path, bad)
            exc.hint = f"{exc.hint}; the bytes are kept in {bad}" if exc.hint else hint
            raise
    os.replace(part.path, dest)
    return TransferResult(url, dest, final_size, fetched, resumed_from, requests, checksum)
