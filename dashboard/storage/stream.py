"""Object bytes as a stream: for downloads to a folder and to the user's browser (single files
and zip archives), with memory bounded by one chunk.

:func:`object_chunks` yields one object's bytes, resuming a body cut short. :func:`zip_chunks`
yields a zip archive of several objects as it is built (stdlib :mod:`zipfile` writing into a
buffer that is emptied after every chunk; entries stored uncompressed, ZIP64 when needed), so
neither the objects nor the archive are ever held whole. An object that cannot be read before
its entry starts is left out and named in ``DOWNLOAD-ERRORS.txt`` at the end of the archive; a
failure in the middle of an entry stops the archive (the browser then reports the download as
failed) rather than leaving a silently truncated file in it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator

from .s3 import body_errors

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20  # 1 MiB per read: fine-grained progress and prompt cancel
ERRORS_NAME = "DOWNLOAD-ERRORS.txt"


def is_single_part_etag(etag: str) -> bool:
    """True for an ETag that is the object's MD5 (32 hex digits, no ``-N`` part count)."""
    return bool(re.fullmatch(r"[0-9a-fA-F]{32}", etag.strip('"')))


class StreamStopped(Exception):
    """The stream was cancelled, or an object failed mid-way (the message says which)."""


def unsafe_key_reason(key: str) -> str | None:
    """Why ``key`` cannot be a relative file name (a path in a folder or in a zip), or None.

    Refused: empty keys, NUL, backslashes, absolute keys, empty segments (``a//b``, folder
    markers), ``.`` and ``..`` segments (and ``:`` on Windows).
    """
    if not isinstance(key, str) or not key:
        return "an empty key is not a file name"
    if "\x00" in key:
        return "it contains a NUL character"
    if "\\" in key:
        return "it contains a backslash, which could name another folder"
    if key.startswith("/") or os.path.isabs(key):
        return "it is an absolute path"
    segments = key.split("/")
    if "" in segments:
        if key.endswith("/"):
            return "it is a folder marker, not a file"
        return "it contains an empty path segment ('//')"
    if ".." in segments:
        return "it contains a '..' segment, which could leave the download folder"
    if "." in segments:
        return "it contains a '.' segment"
    if os.name == "nt" and any(":" in s for s in segments):  # pragma: no cover - Windows only
        return "it contains ':', which Windows reads as a drive or stream"
    return None



class _RemoteError(Exception):
    """Marks an exception raised by S3 (its ``__cause__``) rather than the local disk."""


def object_chunks(s3, bucket: str, key: str, etag: str = ""):
    """The bytes of ``s3://bucket/key`` in pieces of :data:`CHUNK_SIZE` (a generator).

    With ``etag``, every GET is pinned to it (``If-Match``). A body cut short mid-transfer
    (botocore does not retry those) is picked up where it stopped: a ranged GET from the bytes
    already given, up to the connection's ``max_attempts`` in all. S3 failures are raised as
    ``_RemoteError`` with the original exception as ``__cause__``.
    """
    done = 0
    attempts = max(1, int(getattr(s3, "max_attempts", 1)))
    for attempt in range(1, attempts + 1):
        body = _open_body(s3, bucket, key, etag, done)
        try:
            while True:
                try:
                    chunk = body.read(CHUNK_SIZE)
                except body_errors() as exc:
                    if attempt == attempts:
                        raise _RemoteError() from exc
                    log.info("Download of s3://%s/%s cut short at %d bytes (%s); resuming",
                             bucket, key, done, type(exc).__name__)
                    break
                except Exception as exc:
                    raise _RemoteError() from exc
                if not chunk:
                    return
                done += len(chunk)
                yield chunk
        finally:
            body.close()


def _open_body(s3, bucket: str, key: str, etag: str, start: int):
    """The streaming body of a GET of ``key`` from byte ``start`` (same ETag only)."""
    kwargs = {"IfMatch": f'"{etag}"'} if etag else {}
    if start:
        kwargs["Range"] = f"bytes={start}-"
    try:
        return s3.client.get_object(Bucket=bucket, Key=key, **kwargs)["Body"]
    except Exception as exc:
        raise _RemoteError() from exc




def zip_chunks(s3, bucket: str, keys: Iterable[str], *,
               cancel: threading.Event | None = None,
               message=None) -> Iterator[bytes]:
    """A zip archive of ``keys`` (entry names: the keys), yielded as it is built.

    Parameters
    ----------
    s3 : S3
    bucket : str
    keys : iterable of str
        Unsafe keys (see :func:`unsafe_key_reason`) are left out and listed in the errors entry.
    cancel : threading.Event, optional
        Set: the generator raises :class:`StreamStopped` at the next chunk.
    message : callable, optional
        ``message(exc, key) -> str``: one sentence for an object that could not be read
        (default: the exception's type).

    Raises
    ------
    StreamStopped
        Cancelled, or an object failed after its entry had started.
    """
    sink = _Sink()
    problems: list[str] = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key in dict.fromkeys(keys):
            reason = unsafe_key_reason(key)
            if reason is not None:
                problems.append(f"{key!r}: not saved: {reason}.")
                continue
            try:
                head = s3.client.head_object(Bucket=bucket, Key=key)
            except Exception as exc:  # noqa: BLE001 - named in the errors entry
                problems.append(f"{key}: " + (message(exc, key) if message
                                              else f"not saved ({type(exc).__name__})."))
                continue
            size = int(head["ContentLength"])
            etag = str(head.get("ETag", "")).strip('"')
            info = zipfile.ZipInfo(key, date_time=time.localtime(
                head["LastModified"].timestamp())[:6] if "LastModified" in head else
                (1980, 1, 1, 0, 0, 0))
            info.file_size = size
            with archive.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as entry:
                for chunk in _read(s3, bucket, key, etag, size, cancel):
                    entry.write(chunk)
                    yield from sink.drain()
            yield from sink.drain()
        if problems:
            archive.writestr(ERRORS_NAME, "\n".join(problems) + "\n")
    yield from sink.drain()


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what is written until :meth:`drain` takes it."""

    def __init__(self):
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        if self._parts:
            data, self._parts = b"".join(self._parts), []
            yield data


def browser_stream(s3, bucket: str, keys: list[str], *,
                   cancel: threading.Event | None = None, message=None):
    """What the browser receives for ``keys``: ``(size, chunks)``.

    One key: its bytes as they are (``size`` for Content-Length; the last chunk is held back
    until the size and, for single-part ETags, the MD5 are checked, so a damaged file never
    arrives whole). Several: :func:`zip_chunks` (``size`` None). Raises the S3 error (an
    :class:`~dashboard.errors.EchoError`) when the single object cannot be read at all.
    """
    if len(keys) != 1:
        return None, zip_chunks(s3, bucket, keys, cancel=cancel, message=message)
    key = keys[0]
    try:
        head = s3.client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - translated into one sentence
        raise s3.translate(exc, bucket=bucket, key=key, action="download") from None
    size = int(head["ContentLength"])
    etag = str(head.get("ETag", "")).strip('"')
    return size, _checked(s3, bucket, key, size, etag, cancel)


def _checked(s3, bucket, key, size, etag, cancel) -> Iterator[bytes]:
    """:func:`_read`, holding the last chunk back until the whole object is checked."""
    held = b""
    for chunk in _read(s3, bucket, key, etag, size, cancel):
        if held:
            yield held
        held = chunk
    if held:
        yield held


def _read(s3, bucket, key, etag, size, cancel) -> Iterator[bytes]:
    """:func:`object_chunks`, stopped by ``cancel``; after the last chunk the size and (for a
    single-part ETag) the MD5 are checked. Raises :class:`StreamStopped`."""
    md5 = hashlib.md5(usedforsecurity=False)
    done = 0
    chunks = object_chunks(s3, bucket, key, etag)
    try:
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                raise StreamStopped("The download was cancelled.")
            md5.update(chunk)
            done += len(chunk)
            yield chunk
    except _RemoteError as exc:
        raise StreamStopped(f"{key} could not be read to the end: "
                            f"{type(exc.__cause__).__name__}.") from None
    finally:
        chunks.close()
    if done != size or (is_single_part_etag(etag) and md5.hexdigest() != etag.lower()):
        raise StreamStopped(f"{key} changed or arrived damaged; the download was stopped.")


def archive_name(bucket: str, keys: list[str]) -> str:
    """The file name the browser saves: the key's name for one file, ``BUCKET.zip`` (or
    ``BUCKET-FOLDER.zip`` when every key shares a first folder) for several."""
    if len(keys) == 1:
        return keys[0].rsplit("/", 1)[-1] or "download"
    folders = {k.split("/", 1)[0] for k in keys if "/" in k}
    stem = bucket + (f"-{folders.pop()}" if len(folders) == 1 and all("/" in k for k in keys)
                     else "")
    return f"{stem}.zip"
