"""Download selected objects into a local folder: parallel, verified, atomic, resumable.

How one batch runs
------------------
1. Every key is mapped to a local path by :func:`safe_local_path` (``out_dir / key``). A key
   that could land outside ``out_dir`` (absolute, ``..`` or ``.`` segments, empty segments,
   backslashes, NUL, or a path through a symlink that leaves the folder) fails on its own with a
   message; the rest of the batch goes on.
2. The remaining keys are HEADed in parallel to learn sizes and ETags (the progress total).
3. A file that already exists with the same size (and, for a single-part ETag, the same MD5)
   is *skipped*, so running the same download again resumes where it stopped.
4. Every other object is streamed with one GET (``If-Match`` its ETag, so an object replaced
   meanwhile fails instead of mixing versions) into a hidden temporary file in the destination
   folder (``.NAME.part-RANDOM``), hashing as it goes. Only when the byte count matches, and for
   single-part ETags (32 hex digits) the MD5 matches, is the file renamed to its final name
   (``os.replace``, atomic on one file system). Otherwise the temporary file is deleted.
5. ``cancel`` (a :class:`threading.Event`) is checked between chunks: set it and the batch stops
   within one chunk per worker, removes its temporary files and reports the rest as cancelled.
   Ctrl+C (``KeyboardInterrupt``) in the calling thread does the same and is then re-raised.

One streaming GET per file, a few files at a time, was chosen over s3transfer's ranged
multi-part GETs: the MD5 is computed while the bytes stream (no second read of the file), the
temporary-file/rename protocol stays in one place, and with several files in flight the
connection is already kept busy.

Examples
--------
>>> report = download_objects(s3, "bucket", ["raw/scan.h5"], "data/")     # doctest: +SKIP
>>> report.summary()                                                      # doctest: +SKIP
'1 downloaded (12.3 MB in 0.4 s).'
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EchoError
from .area import AreaError, UserArea
from .paths import AtomicFile, UnusablePath, local_path
from .stream import (
    CHUNK_SIZE,
    _RemoteError,
    is_single_part_etag,
    object_chunks,
    unsafe_key_reason,
)
from .transfer import (  # noqa: F401 (re-exported: callers import them from here)
    CANCELLED,
    DOWNLOADED,
    FAILED,
    SKIPPED,
    DownloadProgress,
    DownloadReport,
    FileResult,
)

log = logging.getLogger(__name__)

__all__ = [
    "CANCELLED",
    "DOWNLOADED",
    "DownloadError",
    "FAILED",
    "SKIPPED",
    "DownloadProgress",
    "DownloadReport",
    "FileResult",
    "UnsafeKeyError",
    "download_objects",
    "is_single_part_etag",
    "safe_local_path",
]

PART_MARKER = ".part-"  # temporary files are ".<name>.part-<random hex>"


class DownloadError(EchoError):
    """The download as a whole cannot start (e.g. the target folder cannot be created)."""


class UnsafeKeyError(EchoError):
    """An object key would be written outside the download folder (or is not a file name)."""


def safe_local_path(out_dir: str | os.PathLike, key: str) -> Path:
    """The local path for ``key`` under ``out_dir``, or :class:`UnsafeKeyError`.

    The key's ``/``-separated segments become folders below ``out_dir``. Refused: empty keys,
    absolute keys (``/abs.h5``), backslashes (``a\\b.h5``), NUL characters, empty segments
    (``a//b.h5``, folder markers ending in ``/``), ``.`` and ``..`` segments, and any key
    whose resolved path (following symlinks already present) leaves ``out_dir``.
    """
    reason = unsafe_key_reason(key)
    if reason is None:
        root = Path(out_dir).expanduser()
        path = root.joinpath(*key.split("/"))
        try:
            inside = path.resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError, ValueError):  # symlink loops, odd names
            inside = False
        if inside:
            return path
        reason = "its path leads outside the download folder"
    raise UnsafeKeyError(f"Refused to download {key!r}: {reason}.")


def download_objects(
    s3,
    bucket: str,
    keys: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[DownloadProgress], None] | None = None,
    cancel: threading.Event | None = None,
    max_workers: int = 4,
    progress_interval: float = 0.1,
    area: UserArea | None = None,
) -> DownloadReport:
    """Download ``keys`` of ``bucket`` into ``out_dir`` (``out_dir/KEY``), verified and atomic.

    Parameters
    ----------
    s3 : dashboard.storage.s3.S3
        The connection (its thread-safe boto3 client is shared by the workers).
    bucket : str
    keys : iterable of str
        Object keys; duplicates are downloaded once.
    out_dir : path
        Created if missing. Each key's folders are recreated below it.
    progress : callable, optional
        Called with a :class:`DownloadProgress`, at most every ``progress_interval`` seconds
        while bytes move, and once at the end with the final totals. Calls come from worker
        threads but never overlap, and the counters in successive calls never decrease.
    cancel : threading.Event, optional
        Set it to stop: in-flight files are abandoned within one chunk (temporary files
        removed, nothing left at a final name); unstarted ones are reported as cancelled.
    max_workers : int
        Files downloaded at the same time.
    progress_interval : float
        Minimum seconds between progress calls (0 reports every chunk).
    area : UserArea, optional
        On a shared server: ``out_dir`` is a path relative to this user's area
        (:mod:`dashboard.storage.area`), refused with :class:`DownloadError` when it leads
        outside; folders are made one level at a time inside the area.

    Returns
    -------
    DownloadReport
        One :class:`FileResult` per key, in input order. Failures carry a one-sentence
        message (403, 404, changed on the server, size/MD5 mismatch, unsafe key, disk error);
        this function does not raise for a failing file.

    Raises
    ------
    DownloadError
        If ``out_dir`` is unusable (outside the area) or cannot be created.
    """
    started = time.monotonic()
    try:
        if area is not None:
            out_dir = area.resolve(out_dir, what="download folder", example="downloads")
        else:
            out_dir = local_path(out_dir, what="download folder")
    except UnusablePath as exc:
        raise DownloadError(str(exc)) from None
    keys = list(dict.fromkeys(keys))
    results: dict[str, FileResult] = {}
    try:
        if area is not None:
            area.make_folders(out_dir)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
    except AreaError as exc:
        raise DownloadError(str(exc)) from None
    except OSError as exc:
        shown = area.shown(out_dir) if area is not None else out_dir
        raise DownloadError(
            f"Cannot create the download folder {shown}: {_os_reason(exc)}."
        ) from None

    batch = _Batch(
        s3=s3, bucket=bucket, files_total=len(keys), callback=progress,
        interval=progress_interval, cancel=cancel, area=area,
    )
    paths: dict[str, Path] = {}
    for key in keys:
        try:
            paths[key] = safe_local_path(out_dir, key)
        except UnsafeKeyError as exc:
            log.warning("%s", exc)
            results[key] = FileResult(key, FAILED, message=str(exc))
            batch.finish_file(0)

    pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="s3-download")
    try:
        heads = dict(zip(paths, pool.map(batch.head, paths), strict=True))
        for key, head in heads.items():
            if isinstance(head, FileResult):
                results[key] = head
                batch.finish_file(0)
        todo = {key: head for key, head in heads.items() if not isinstance(head, FileResult)}
        batch.add_total(sum(size for size, _etag in todo.values()))
        futures = {
            key: pool.submit(batch.fetch, key, paths[key], size, etag)
            for key, (size, etag) in todo.items()
        }
        for key, future in futures.items():
            results[key] = future.result()
    except BaseException:  # KeyboardInterrupt: stop the workers, clean up, re-raise
        batch.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    batch.emit(force=True)

    report = DownloadReport(
        out_dir=out_dir,
        results=tuple(results[key] for key in keys),
        cancelled=batch.cancelled(),
        seconds=time.monotonic() - started,
    )
    log.info("Download of %d object(s) from %s to %s: %s", len(keys), bucket, out_dir,
             report.summary())
    return report


@dataclass
class _Batch:
    """Shared counters and per-file work of one :func:`download_objects` call."""

    s3: object
    bucket: str
    files_total: int
    callback: Callable[[DownloadProgress], None] | None
    interval: float
    cancel: threading.Event | None
    area: UserArea | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _emit_lock: threading.Lock = field(default_factory=threading.Lock)
    _last_emit: float = float("-inf")
    _last_file: tuple[str, int, int] = ("", 0, 0)

    # -- counters and progress ---------------------------------------------------------

    def cancelled(self) -> bool:
        return self.stop.is_set() or (self.cancel is not None and self.cancel.is_set())

    def add_total(self, n: int) -> None:
        with self._lock:
            self.bytes_total += n

    def add_bytes(self, key: str, n: int, file_bytes: int, file_total: int) -> None:
        with self._lock:
            self.bytes_done += n
            self._last_file = (key, file_bytes, file_total)
        self.emit()

    def finish_file(self, remaining_bytes: int) -> None:
        """Count one file as done; ``remaining_bytes`` not streamed count as processed."""
        with self._lock:
            self.bytes_done += remaining_bytes
            self.files_done += 1
        self.emit()

    def emit(self, *, force: bool = False) -> None:
        """Call the progress callback, throttled, never concurrently, never going backwards."""
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last_emit < self.interval:
            return
        if not self._emit_lock.acquire(blocking=force):
            return  # another worker is reporting right now; its snapshot is as fresh
        try:
            with self._lock:
                key, file_bytes, file_total = ("", 0, 0) if force else self._last_file
                snapshot = DownloadProgress(
                    key=key, file_bytes=file_bytes, file_total=file_total,
                    bytes_done=self.bytes_done, bytes_total=self.bytes_total,
                    files_done=self.files_done, files_total=self.files_total,
                )
            self._last_emit = now
            try:
                self.callback(snapshot)
            except Exception:  # a broken progress display must not corrupt downloads
                log.exception("The download progress callback failed")
        finally:
            self._emit_lock.release()

    # -- per-file work -----------------------------------------------------------------

    def head(self, key: str) -> tuple[int, str] | FileResult:
        """(size, etag) of ``key``, or a failed/cancelled result."""
        if self.cancelled():
            return FileResult(key, CANCELLED, message="Cancelled before it started.")
        try:
            response = self.s3.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            return self._failed(key, exc)
        return int(response["ContentLength"]), str(response.get("ETag", "")).strip('"')

    def fetch(self, key: str, path: Path, size: int, etag: str) -> FileResult:
        """Skip, download or fail one file; always leaves no temporary file behind."""
        if self.cancelled():
            return FileResult(key, CANCELLED, path, size, "Cancelled before it started.")
        try:
            if _same_file(path, size, etag):
                self.finish_file(size)
                return FileResult(key, SKIPPED, path, size, "Already present and identical.")
        except OSError as exc:
            self.finish_file(size)
            return FileResult(key, FAILED, path, size, _local_error(path, exc, self.area))

        written = 0
        try:
            with AtomicFile(path, area=self.area, marker=PART_MARKER) as out:
                written, md5 = self._stream(key, out.file, size, etag)
                if written is None:  # cancelled mid-file
                    return FileResult(key, CANCELLED, path, size,
                                      "Cancelled; partial data removed.")
                problem = _verify(written, md5, size, etag)
                if problem:
                    log.warning("Download of s3://%s/%s rejected: %s", self.bucket, key, problem)
                    return self._finish(FileResult(
                        key, FAILED, path, size,
                        f"Download of s3://{self.bucket}/{key} rejected: {problem}.",
                    ), size, written)
                out.commit()
            return self._finish(FileResult(key, DOWNLOADED, path, size), size, written)
        except _RemoteError as exc:
            return self._finish(self._failed(key, exc.__cause__, path, size), size, written)
        except AreaError as exc:
            log.warning("%s", exc)
            return self._finish(FileResult(key, FAILED, path, size, str(exc)), size, written)
        except OSError as exc:
            return self._finish(FileResult(key, FAILED, path, size,
                                           _local_error(path, exc, self.area)), size, written)

    def _finish(self, result: FileResult, size: int, written: int | None) -> FileResult:
        self.finish_file(max(0, size - (written or 0)))
        return result

    def _stream(self, key: str, handle, size: int, etag: str):
        """Copy the object into ``handle``; (bytes, md5) or (None, None) when cancelled."""
        md5 = hashlib.md5(usedforsecurity=False)
        written = 0
        chunks = object_chunks(self.s3, self.bucket, key, etag)
        try:
            for chunk in chunks:
                if self.cancelled():
                    return None, None
                handle.write(chunk)
                md5.update(chunk)
                written += len(chunk)
                self.add_bytes(key, len(chunk), written, size)
        finally:
            chunks.close()
        return written, md5.hexdigest()

    def _failed(self, key: str, exc: BaseException, path: Path | None = None,
                size: int = 0) -> FileResult:
        message = _remote_message(self.s3, exc, self.bucket, key)
        log.warning("Download of s3://%s/%s failed: %s", self.bucket, key, message)
        return FileResult(key, FAILED, path, size, message)


def _remote_message(s3, exc: BaseException, bucket: str, key: str) -> str:
    response = getattr(exc, "response", None)  # None on botocore's connection errors
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if code in {"PreconditionFailed", "412"}:
        return (f"s3://{bucket}/{key} changed on the server during the download; "
                "run the download again.")
    return str(s3.translate(exc, bucket=bucket, key=key, action="download"))


def _verify(written: int, md5: str, size: int, etag: str) -> str:
    if written != size:
        return f"got {written} bytes, expected {size}"
    if is_single_part_etag(etag) and md5 != etag.lower():
        return "the MD5 checksum does not match the ETag"
    return ""


def _same_file(path: Path, size: int, etag: str) -> bool:
    """True when ``path`` already holds this object (same size; same MD5 if the ETag is one)."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
    except OSError:
        return False
    if not is_single_part_etag(etag):
        return True
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            md5.update(chunk)
    return md5.hexdigest() == etag.lower()


def _local_error(path: Path, exc: OSError, area: UserArea | None = None) -> str:
    shown = area.shown(path) if area is not None else path  # the user's own words in an area
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return f"Cannot write {shown}: a folder of that name is in the way."
    return f"Cannot write {shown}: {_os_reason(exc)}."


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
