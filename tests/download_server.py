"""A local HTTP file server for the download tests: Range support and injectable faults.

Runs a ThreadingHTTPServer on 127.0.0.1 (an ephemeral port) in a daemon thread. Files live in memory.
Faults are queued per path and consumed one per GET: "drop" (send half the body, then close the
connection), "500" (one server error), "404", "wrong" (same length, different bytes). Every request
is logged as (method, path, Range header or None, status). `add(..., rate=)` throttles a file.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _reply(self, status: int, headers: dict, body: bytes = b"", send_body: bool = True) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        owner: FileServer = self.server.owner
        path = urlsplit(self.path).path
        rng = self.headers.get("Range")
        fault = None if head else owner._next_fault(path)
        entry = owner.files.get(path)
        if entry is None or fault == "404":
            owner._log(self.command, path, rng, 404)
            self._reply(404, {"Connection": "close"}, b"not found", not head)
            self.close_connection = True
            return
        data, no_range, extra = entry
        if fault == "500":
            owner._log(self.command, path, rng, 500)
            self._reply(500, {"Connection": "close"}, b"boom", not head)
            self.close_connection = True
            return
        if fault == "wrong":
            data = bytes(b ^ 0xFF for b in data)
        status, start, end = 200, 0, len(data)
        headers = {"Accept-Ranges": "none" if no_range else "bytes", **extra}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if match and not no_range:
            start = int(match.group(1))
            if start >= len(data):
                owner._log(self.command, path, rng, 416)
                self._reply(416, {"Content-Range": f"bytes */{len(data)}"}, b"", not head)
                return
            end = min(len(data), int(match.group(2)) + 1) if match.group(2) else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        owner._log(self.command, path, rng, status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        if fault == "drop":
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        if fault == "drop":
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            return
        rate = owner.rates.get(path)
        if not rate:
            self.wfile.write(body)
            return
        step = 16_384
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(step / rate)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (e.g. Ctrl-C)
            self.close_connection = True


class FileServer:
    """In-memory files over HTTP on 127.0.0.1; use as a context manager."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, bool, dict]] = {}
        self.faults: dict[str, list[str]] = {}
        self.rates: dict[str, float | None] = {}
        self.log: list[tuple[str, str, str | None, int]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(
        self, path: str, data: bytes, no_range: bool = False, headers: dict | None = None, rate: float | None = None
    ) -> str:
        """Serve `data` at `path` (a URL path starting with /), at most `rate` bytes/s; returns its URL."""
        self.files[path] = (data, no_range, dict(headers or {}))
        self.rates[path] = rate
        return self.url(path)

    def fault(self, path: str, *faults: str) -> None:
        """Queue faults for the next GET requests of `path`, one per request."""
        with self._lock:
            self.faults.setdefault(path, []).extend(faults)

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    def _log(self, method: str, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.log.append((method, path, rng, status))

    def gets(self, path: str | None = None) -> list[tuple[str, str, str | None, int]]:
        """The GET requests served (for one path, or all)."""
        with self._lock:
            return [e for e in self.log if e[0] == "GET" and (path is None or e[1] == path)]
