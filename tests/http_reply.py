"""A tiny HTTP service on 127.0.0.1 for the tests: it answers every request at once with the
reply a test sets, and counts the requests it received (an "internal service" that an endpoint
field must not reach, or an endpoint whose error replies must not be repeated)."""

from __future__ import annotations

import http.server
import threading
import typing


class _Handler(http.server.BaseHTTPRequestHandler):
    # A reason phrase is part of the reply too (botocore shows it as the Message of a HEAD).
    reason = "hello internal-token-7731"

    def _answer(self) -> None:
        server = self.server
        server.requests += 1
        status, ctype, body = server.reply
        self.send_response(status, self.reason)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


class ReplyServer(http.server.ThreadingHTTPServer):
    """``with ReplyServer() as service``: ``service.endpoint``, ``service.reply = (status,
    content type, body)``, ``service.requests``."""

    def __init__(self, reply=(400, "application/json", b'{"b": "hello"}')):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply = reply
        self.requests = 0
        self.endpoint = f"http://127.0.0.1:{self.server_port}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> typing.Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
