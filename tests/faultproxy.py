"""A fault-injecting HTTP proxy for the tests: clients -> FaultProxy (127.0.0.1) -> moto.

Point an :class:`~dashboard.storage.s3.S3` at :attr:`FaultProxy.endpoint` instead of the moto
server's. Requests are forwarded unchanged (method, path with query, headers including ``Host``
and ``Range``, body); moto does not check SigV4 signatures, so the signed ``Host`` of the proxy
is accepted. Client connections are kept alive (HTTP/1.1), one upstream connection per client
connection.

Faults (:class:`Fault`) are chosen per request, either for the next ``count`` matching requests
or at a ``rate`` drawn from a seeded :class:`random.Random`, optionally only for one ``method``
and paths matching ``path`` (a regular expression):

``slowdown``  503 with an S3 ``SlowDown`` XML error body (retryable)
``internal``  500 with an S3 ``InternalError`` XML error body (retryable)
``reset``     the client socket is reset (RST) after reading the request, nothing answered
``truncate``  the real status and headers (full ``Content-Length``), half the body, then close
``latency``   ``delay`` seconds before forwarding (then a normal answer)

:meth:`FaultProxy.go_down` makes the "server" vanish (connections refused, open ones reset),
:meth:`FaultProxy.go_down_after` does so after N more requests (deterministically mid-run), and
:meth:`FaultProxy.come_back` brings it back on the same port.

The proxy is bounded: it stops itself after ``max_requests`` requests or ``max_lifetime``
seconds (whichever first), and :attr:`requests` / :attr:`faults` count what it did.

Examples
--------
>>> with FaultProxy(moto.endpoint) as proxy:                     # doctest: +SKIP
...     proxy.inject("truncate", rate=0.1, method="GET")
...     s3 = S3(proxy.endpoint, credentials)
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("slowdown", "internal", "reset", "truncate", "latency")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "expect"}
_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
    "</Message><RequestId>faultproxy-{n}</RequestId></Error>"
)


@dataclass
class Fault:
    """One fault rule: ``kind`` for the next ``count`` matches, or at ``rate`` (0-1)."""

    kind: str
    rate: float = 0.0
    count: int | None = None
    method: str | None = None
    path: str | None = None
    delay: float = 0.0
    down: bool = False  # the proxy goes down (go_down_after) instead of one reset

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        return self.path is None or re.search(self.path, path) is not None


class FaultProxy:
    """A bounded, fault-injecting HTTP/1.1 proxy in front of ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, *, seed: int = 0, max_requests: int = 20_000,
                 max_lifetime: float = 300.0, upstream_timeout: float = 30.0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.max_requests = max_requests
        self.max_lifetime = max_lifetime
        self.upstream_timeout = upstream_timeout
        self.requests = 0
        self.faults: Counter = Counter()
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault kind or "")
        self.ranges: list[tuple[str, str, str]] = []  # (method, path, Range header or "")
        self._rules: list[Fault] = []
        self._down_after: int | None = None
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self.port: int | None = None
        self.stopped = threading.Event()

    # -- life cycle ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._listen(self.port or 0)
        self._timer = threading.Timer(self.max_lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _listen(self, port: int) -> None:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    def go_down(self) -> None:
        """Refuse new connections and reset the open ones (the S3 server "stops")."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _reset(sock)

    def come_back(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            self._down_after = None
        if self._server is None and not self.stopped.is_set():
            self._listen(self.port)

    def go_down_after(self, n: int) -> None:
        """Answer ``n`` more requests, then go down (the next request is reset)."""
        with self._lock:
            self._down_after = self.requests + n

    def stop(self) -> None:
        self.stopped.set()
        self.go_down()
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- rules ----------------------------------------------------------------------------

    def inject(self, kind: str, *, rate: float = 0.0, count: int | None = None,
               method: str | None = None, path: str | None = None, delay: float = 0.5) -> Fault:
        """Add a rule; ``count`` (the next N matching requests) wins over ``rate``."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {KINDS}")
        rule = Fault(kind, rate=rate, count=count, method=method, path=path, delay=delay)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _choose(self, method: str, path: str) -> Fault | None:
        """Count the request and pick the fault for it (under the lock: deterministic order)."""
        with self._lock:
            if self.requests >= self.max_requests:  # a keep-alive request racing the shutdown
                return Fault("reset", down=True)
            self.requests += 1  # the handler stops the proxy once the last one is answered
            chosen = None
            if self._down_after is not None and self.requests > self._down_after:
                self.faults["down"] += 1
                self.log.append((method, path, "down"))
                return Fault("reset", down=True)
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.count is not None:
                    if rule.count > 0:
                        rule.count -= 1
                        chosen = rule
                        break
                elif self._random.random() < rule.rate:
                    chosen = rule
                    break
            kind = chosen.kind if chosen else ""
            if chosen:
                self.faults[kind] += 1
            self.log.append((method, path, kind))
            return chosen

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)


def _reset(sock: socket.socket) -> None:
    """Abort ``sock``: SO_LINGER 0 (the final close sends a TCP RST) and shut it down now.

    ``shutdown`` acts even while the handler's file objects still reference the socket (a
    plain ``close`` would wait for them); the handler then sees EOF and closes it for good.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for boto3's uploads
    owner: FaultProxy

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, True)
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.owner._track(self.connection, False)
        if self._upstream is not None:
            self._upstream.close()

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):  # a stale keep-alive upstream connection gets one reconnect
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    *self.owner.upstream, timeout=self.owner.upstream_timeout)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                data = response.read()
                return response.status, response.reason, response.getheaders(), data
            except (ConnectionError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        try:
            self._answer()
        finally:
            owner = self.owner
            if owner.requests >= owner.max_requests and not owner.stopped.is_set():
                # After the answer: stopping resets open connections, and stopping while the
                # last request was still being answered reset it too (seen under load).
                threading.Thread(target=owner.stop, daemon=True).start()

    def _answer(self) -> None:
        body = self._body()
        with self.owner._lock:
            self.owner.ranges.append((self.command, self.path, self.headers.get("Range", "")))
        fault = self.owner._choose(self.command, self.path)
        kind = fault.kind if fault else ""
        if kind == "reset":
            self.close_connection = True
            if fault.down:
                self.owner.go_down()  # listener closed before any client sees this reset
            _reset(self.connection)
            return
        if kind in ("slowdown", "internal"):
            status, code, message = (
                (503, "SlowDown", "Please reduce your request rate.") if kind == "slowdown"
                else (500, "InternalError", "We encountered an internal error. Please try again.")
            )
            xml = _ERROR_XML.format(code=code, message=message, n=self.owner.requests).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        if kind == "latency":
            time.sleep(fault.delay)  # the injected fault itself, not a synchronisation
        try:
            status, reason, headers, data = self._forward(body)
        except OSError:
            self.close_connection = True
            _reset(self.connection)  # upstream gone: so is the "server"
            return
        if kind == "truncate" and len(data) < 2:
            kind = ""  # nothing to cut (HEAD, empty bodies): answer normally
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() not in ("content-length", "date",
                                                                         "server"):
                self.send_header(name, value)
        length = next((v for k, v in headers if k.lower() == "content-length"), str(len(data)))
        self.send_header("Content-Length", length)
        self.end_headers()
        if kind == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


# -- helpers shared by the fault tests ------------------------------------------------------

#: Connection settings of the "everything fails" tests: short timeouts, two attempts.
FAST_FAIL = {"connect_timeout": 1.0, "read_timeout": 1.0, "max_attempts": 2}


def failure_bound(*, connect_timeout: float, read_timeout: float, max_attempts: int,
                  delay: float = 0.0, requests: int = 1, slack: float = 15.0) -> float:
    """A generous upper bound (s) for ``requests`` sequential requests that all fail.

    Each attempt may take connect + read timeout + injected delay; botocore's standard mode
    sleeps at most ``2 ** attempt`` s (with jitter) between attempts. A sanity bound that
    proves an action *ends*, not a speed claim.
    """
    per_request = max_attempts * (connect_timeout + read_timeout + delay) + sum(
        2.0**i for i in range(1, max_attempts))
    return requests * per_request + slack


def assert_clear_message(exc: BaseException, *secrets: str) -> str:
    """``exc`` is an EchoError whose text is one short line with no traceback or secret."""
    from dashboard.errors import EchoError

    assert isinstance(exc, EchoError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert len(text) < 400, text
    for secret in secrets:
        assert secret not in text, text
    return text


def write_stack(path, n: int = 30, h: int = 48, w: int = 64, *, seed: int = 0):
    """A small Bitshuffle-LZ4 uint16 stack at /entry/data/data, one frame per chunk."""
    import h5py
    import hdf5plugin
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    beam = 2000 + 1500 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (w * h / 5))
    data = np.stack([rng.poisson(beam * (1 + 0.02 * k)) for k in range(n)]).astype("uint16")
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=data, chunks=(1, h, w),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
    return data
