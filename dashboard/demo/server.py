"""An S3 server on 127.0.0.1 (moto's ``ThreadedMotoServer``) for the demo and the tests."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MotoS3Server:
    """moto's S3 API over real HTTP on loopback, at a free port.

    moto keeps its state per process: every server started in one process sees the same buckets.

    Examples
    --------
    >>> with MotoS3Server() as server:          # doctest: +SKIP
    ...     S3(server.endpoint, DEMO_CREDENTIALS).list_buckets()
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoS3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

        for _attempt in range(5):
            port = self.port or free_port(self.host)
            server = ThreadedMotoServer(ip_address=self.host, port=port, verbose=False)
            try:
                server.start()
            except OSError:  # the port was taken between probing and binding
                if self.port:
                    raise
                continue
            self._server, self.port = server, port
            log.info("S3 server (moto) listening on %s", self.endpoint)
            return self
        raise OSError("Could not find a free port for the S3 server")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
