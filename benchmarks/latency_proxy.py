"""A small HTTP proxy that adds a fixed delay to every request and counts them.

Put it in front of an S3 endpoint to act like a remote ECHO (``delay=0.020`` for 20 ms per
request); ``requests`` records ``(method, path, Range header)`` of each request, so tests can
count GETs at the wire. For benchmarks and tests only.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
        "trailer", "proxy-authenticate", "proxy-authorization"}


class LatencyProxy:
    """Forward HTTP requests to ``upstream`` after ``delay`` seconds (context manager)."""

    def __init__(self, upstream: str, delay: float = 0.020, port: int = 0):
        self.upstream = urlparse(upstream)
        self.delay = delay
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("Range")))
                if proxy.delay:
                    time.sleep(proxy.delay)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = proxy._connection()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except Exception:
                    conn.close()
                    proxy._local.conn = None
                    raise
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
            self._local.conn = conn
        return conn

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, method: str = "GET", path_contains: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _r in self.requests if m == method and path_contains in p)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
