"""A minimal read-only S3-compatible server that serves objects (and byte ranges) from disk.

Enough for boto3 and s3fs to HEAD an object and GET byte ranges (plus a one-page
ListObjectsV2 and HeadBucket); signatures are not checked. Unlike moto's server it reads only
the bytes asked for, so it can time range reads of large files. For benchmarks and tests only.

    python -m benchmarks.s3_range_server ROOT_DIR [--port 9000]

serves ``ROOT_DIR/BUCKET/KEY`` as ``s3://BUCKET/KEY``.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _etag(path: Path) -> str:
    st = path.stat()
    return hashlib.md5(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path = Path(".")

    def log_message(self, *args) -> None:  # quiet
        pass

    def _count(self, nbytes: int) -> None:
        counter = self.server.counter
        with counter["lock"]:
            counter[self.command] = counter.get(self.command, 0) + 1
            counter["bytes"] += nbytes

    def _path(self) -> tuple[str, str, Path]:
        parsed = urlparse(self.path)
        parts = unquote(parsed.path).lstrip("/").split("/", 1)
        bucket = parts[0]
        key = parts[1] if len(parts) > 1 else ""
        target = (self.root / bucket / key).resolve()
        if self.root.resolve() not in target.parents and target != self.root.resolve() / bucket:
            return bucket, key, self.root / "__nothing__"
        return bucket, key, target

    def _error(self, status: int, code: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{code}</Message></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _headers(self, path: Path, length: int, status: int = 200, extra: dict | None = None):
        st = path.stat()
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{_etag(path)}"')
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        bucket, key, path = self._path()
        if not key:
            return self._headers_bucket(bucket)
        if not path.is_file():
            return self._error(404, "NoSuchKey")
        self._count(0)
        self._headers(path, path.stat().st_size)

    def _headers_bucket(self, bucket: str) -> None:
        if not (self.root / bucket).is_dir():
            return self._error(404, "NoSuchBucket")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        bucket, key, path = self._path()
        if not key:
            return self._list(bucket)
        if not path.is_file():
            return self._error(404, "NoSuchKey")
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip('"') != _etag(path):
            return self._error(412, "PreconditionFailed")
        size = path.stat().st_size
        start, end, status, extra = 0, size - 1, 200, {}
        header = self.headers.get("Range")
        if header:
            match = _RANGE.match(header.strip())
            if not match:
                return self._error(416, "InvalidRange")
            first, last = match.groups()
            if first == "":
                start, end = max(0, size - int(last)), size - 1
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start >= size:
                return self._error(416, "InvalidRange")
            status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{size}"}
        length = end - start + 1
        self._count(length)
        self._headers(path, length, status, extra)
        with open(path, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining:
                block = f.read(min(remaining, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)

    def _list(self, bucket: str) -> None:
        folder = self.root / bucket
        if not folder.is_dir():
            return self._error(404, "NoSuchBucket")
        query = parse_qs(urlparse(self.path).query)
        prefix = query.get("prefix", [""])[0]
        items = []
        for path in sorted(folder.rglob("*")):
            key = path.relative_to(folder).as_posix()
            if path.is_file() and key.startswith(prefix):
                st = path.stat()
                items.append(
                    f"<Contents><Key>{escape(key)}</Key><Size>{st.st_size}</Size>"
                    f"<LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                    f'<ETag>"{_etag(path)}"</ETag></Contents>'
                )
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
                f"<KeyCount>{len(items)}</KeyCount><MaxKeys>1000</MaxKeys>"
                f"<IsTruncated>false</IsTruncated>{''.join(items)}</ListBucketResult>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RangeServer:
    """Serve ``root/BUCKET/KEY`` on 127.0.0.1 in a background thread (context manager)."""

    def __init__(self, root: str | os.PathLike, port: int = 0):
        handler = type("Handler", (_Handler,), {"root": Path(root)})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._server.counter = {"lock": threading.Lock(), "bytes": 0}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def counts(self) -> dict:
        """Requests served so far by method (``GET``, ``HEAD``) and ``bytes`` of bodies sent."""
        counter = self._server.counter
        with counter["lock"]:
            return {k: v for k, v in counter.items() if k != "lock"}

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    with RangeServer(args.root, args.port) as server:
        print(f"serving {args.root} at {server.endpoint}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
