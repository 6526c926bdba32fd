"""Open an HDF5 file on S3 (or a local path) read-only, and read exact byte ranges of it.

One :class:`Source` per open file holds

* an ``h5py.File`` (hdf5plugin's filters registered) for metadata: on S3 it reads through
  :class:`RangeFile`, a file object with a small block cache over ranged GETs, so opening a
  stack costs a handful of small requests instead of s3fs's 50 MiB read-ahead;
* :meth:`Source.read_range`, one exact ranged GET (or ``pread`` for local files) that many
  threads may call at once, used for chunk data;
* an :class:`IOStats` counting requests and bytes, split into metadata and data.

h5py calls go through ``with source.h5():`` (HDF5 serialises them anyway); it counts the
threads waiting so that a long background walk (the chunk index) can step aside for them.
:meth:`read_range` needs no lock.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import stat
import threading
import weakref
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers Blosc, Bitshuffle, LZ4, Zstd, ... with HDF5)

from ..storage.credentials import Credentials, load_credentials
from ..storage.s3 import S3, StorageError, is_s3_url, parse_s3_url
from .errors import HDF5Error, NotHDF5File, ObjectChanged, TruncatedFile

log = logging.getLogger(__name__)

from .rangefile import (  # noqa: F401 (constants re-exported)
    BLOCK_SIZE,
    DIRECT_READ,
    FIRST_BLOCK,
    MAX_CACHED_BLOCKS,
    IOStats,
    OverBudget,
    RangeFile,
)


def _writable_by_others(path: Path) -> bool:
    """Whether another account could put a file at ``path``: it (or, while it does not exist,
    its nearest existing folder) is group/world-writable or someone else's, or a folder above
    it is writable by others without the sticky bit."""
    path = Path(os.path.abspath(path))
    first = True
    for folder in (path, *path.parents):
        try:
            st = folder.stat()
        except OSError:
            continue  # missing: whoever can write its parent can create it
        others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if first:
            if others_write or st.st_uid not in (0, os.getuid()):
                return True
            first = False
        elif others_write and not st.st_mode & stat.S_ISVTX:
            return True
    return False


def _guard_plugin_path() -> None:
    """Drop HDF5 filter-plugin folders that another account could write to (say
    ``HDF5_PLUGIN_PATH`` pointing into ``/tmp`` or a user's area): HDF5 loads any library found
    there when a file names a filter it does not know. hdf5plugin's filters are registered
    directly and never need the search path."""
    from h5py import h5pl

    for index in reversed(range(h5pl.size())):
        folder = os.fsdecode(h5pl.get(index))
        if _writable_by_others(Path(folder)):
            h5pl.remove(index)
            log.warning("HDF5 plugin folder %s is writable by other accounts: not searched",
                        folder)


_guard_plugin_path()


def make_s3(
    *, endpoint: str | None = None, credentials=None, s3: S3 | None = None
) -> S3:
    """The :class:`S3` to use: ``s3`` if given, else one built from endpoint + credentials.

    ``credentials`` is a :class:`Credentials`, a path to a JSON key file, or ``None`` for the
    usual lookup (:func:`load_credentials`).
    """
    if s3 is not None:
        return s3
    if credentials is None or isinstance(credentials, str | os.PathLike):
        credentials = load_credentials(credentials)
    if not isinstance(credentials, Credentials):
        raise TypeError("credentials must be a Credentials object or a path to a JSON key file")
    return S3(endpoint, credentials)


# Files still open when the interpreter exits. HDF5 closes leftover files from its own C exit
# handler, which runs after Python has finalised; for a file read through a Python file object
# (every S3 object) that close calls back into Python and crashes the process. Closing them
# from a Python ``atexit`` handler first avoids that (a dashboard server stopping with sessions
# still holding stacks, a test run ending).
_OPEN: weakref.WeakSet[Source] = weakref.WeakSet()


@atexit.register
def _close_open_files() -> None:
    for source in list(_OPEN):
        got = source.lock.acquire(timeout=2)  # a background read may still hold it
        try:
            source.file.close()
        except Exception:
            pass
        finally:
            if got:
                source.lock.release()


class Source:
    """One open HDF5 file, local or on S3. Use :func:`open_source`."""

    def __init__(self, *, url: str, file: h5py.File, size: int, etag: str, cache_key: tuple,
                 read, stats: IOStats, s3: S3 | None = None, rangefile: RangeFile | None = None):
        self.url = url
        self.file = file
        self.size = size
        self.etag = etag
        self.cache_key = cache_key
        self.stats = stats
        self.s3 = s3
        self.lock = threading.RLock()
        self._waiters = 0
        self._waiters_changed = threading.Condition()
        self._read = read
        self._rangefile = rangefile
        self._closers: list = []
        _OPEN.add(self)

    @property
    def is_s3(self) -> bool:
        """An object store's object (S3, or the in-memory provider's), not a local file."""
        return self.s3 is not None or self._rangefile is not None

    @contextlib.contextmanager
    def h5(self):
        """Hold the lock for h5py calls, counted in :attr:`waiting` while queueing for it."""
        with self._waiters_changed:
            self._waiters += 1
        try:
            self.lock.acquire()
        finally:
            with self._waiters_changed:
                self._waiters -= 1
                self._waiters_changed.notify_all()
        try:
            yield self.file
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def metadata_budget(self, nbytes: int, *, total: int | None = None):
        """Inside the block (holding :meth:`h5`), no single metadata read of HDF5 may be over
        ``nbytes``: a larger one (a 100 MB attribute, a huge string in the global heap) fails
        before anything is fetched (h5py raises). With ``total``, HDF5 may fetch at most that
        many bytes in all (bytes in the block cache are free). Local files have no budget (the
        user's own)."""
        rangefile = self._rangefile
        if rangefile is None:
            yield
            return
        old = rangefile.max_read, rangefile.budget_left
        rangefile.max_read, rangefile.budget_left = nbytes, total
        try:
            yield
        finally:
            rangefile.max_read, rangefile.budget_left = old
            if isinstance(rangefile.error, OverBudget):
                rangefile.error = None  # said where it happened; not the next read's error

    @property
    def waiting(self) -> int:
        """Threads queueing in :meth:`h5` right now."""
        return self._waiters

    def wait_for_no_waiters(self, timeout: float | None = None) -> bool:
        with self._waiters_changed:
            return self._waiters_changed.wait_for(lambda: not self._waiters, timeout)

    @property
    def metadata_reads(self) -> int | None:
        """Read calls HDF5 made for metadata (S3 only): a measure of how much it walked."""
        return self._rangefile.reads if self._rangefile is not None else None

    def read_range(self, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``start``: one request, safe to call from many threads."""
        if start + length > self.size:
            raise TruncatedFile(
                f"{self.url} is truncated: data at bytes {start}-{start + length} lies past its end "
                f"({self.size} bytes)."
            )
        data = self._read(start, length)
        self.stats.add(len(data), metadata=False)
        return data

    def translate(self, exc: BaseException, what: str = "read") -> BaseException:
        """Best user-facing error for an h5py failure (uses the fetch error h5py swallowed)."""
        if self._rangefile is not None and self._rangefile.error is not None:
            error, self._rangefile.error = self._rangefile.error, None
            return s3_error(error, self.s3, self.url)
        return h5py_error(exc, self.url, what)

    def close(self) -> None:
        _OPEN.discard(self)
        with self.h5():
            try:
                self.file.close()
            except Exception:  # closing twice or after a failed read
                pass
            closers, self._closers = self._closers, []  # once, even when two threads close
        for closer in closers:
            closer()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Source({self.url!r}, size={self.size})"


#: What h5py raises for a damaged file: mostly ``OSError``, but ``RuntimeError`` (corrupt heaps,
#: B-trees, "Unable to get storage size") and ``KeyError`` (bad object headers, checksums) too.
H5PY_ERRORS = (OSError, RuntimeError, KeyError)


def h5py_error(exc: BaseException, url: str, what: str = "open") -> HDF5Error:
    """Turn an h5py/HDF5 error (one of :data:`H5PY_ERRORS`) into one of our exception types."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lower = text.lower()
    if "signature not found" in lower or "not an hdf5 file" in lower:
        return NotHDF5File(f"{url} is not an HDF5 file.")
    if "truncated file" in lower or "addr overflow" in lower or "eof" in lower and "truncat" in lower:
        return TruncatedFile(
            f"{url} is truncated (shorter than its HDF5 header says): re-upload the complete file."
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return HDF5Error(f"Could not {what} {url} as HDF5: {first}")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def s3_error(exc: BaseException, s3: S3, url: str) -> BaseException:
    """Our exception for a failed GET of ``url`` (412 -> :class:`ObjectChanged`, else storage's)."""
    if isinstance(exc, HDF5Error | StorageError):
        return exc
    if _error_code(exc) in {"PreconditionFailed", "412"}:
        return ObjectChanged(f"{url} was replaced on the server while open: open it again.")
    bucket, key = parse_s3_url(url)
    return s3.translate(exc, bucket=bucket, key=key, action="read")


def _open_h5(target, url: str) -> h5py.File:
    try:
        return h5py.File(target, "r")
    except H5PY_ERRORS as exc:
        raise h5py_error(exc, url) from None


def open_bytes(url: str, data: bytes, *, etag: str | None = None) -> Source:
    """A :class:`Source` over an HDF5 file held in memory (the in-memory provider of the state
    tests): the same block-cached :class:`RangeFile` and exact reads as an S3 object, no network.
    """
    import hashlib

    data = bytes(data)
    if not data:
        raise NotHDF5File(f"{url} is empty (0 bytes), not an HDF5 file.")
    etag = etag or hashlib.md5(data, usedforsecurity=False).hexdigest()
    stats = IOStats()

    def read(start: int, length: int) -> bytes:
        return data[start : start + length]

    def meta_fetch(start: int, length: int) -> bytes:
        chunk = read(start, length)
        stats.add(len(chunk), metadata=True)
        return chunk

    first = read(0, FIRST_BLOCK)
    stats.add(len(first), metadata=True)
    rangefile = RangeFile(meta_fetch, len(data), name=url, first=first)
    file = _open_h5(rangefile, url)
    return Source(url=url, file=file, size=len(data), etag=etag,
                  cache_key=("memory", url, etag), read=read, stats=stats, rangefile=rangefile)


def open_source(url_or_path, *, s3: S3 | None = None, endpoint: str | None = None,
                credentials=None) -> Source:
    """Open ``s3://bucket/key`` or a local path read-only and return its :class:`Source`.

    Raises
    ------
    NotHDF5File, TruncatedFile, HDF5Error
        The bytes are not a (complete) HDF5 file.
    dashboard.storage.s3.AccessDenied, NotFound, EndpointUnreachable
        403, 404, or no answer after retries.
    """
    stats = IOStats()
    if not is_s3_url(url_or_path):
        path = Path(url_or_path).expanduser()
        try:
            st = path.stat()
        except FileNotFoundError:
            raise HDF5Error(f"File not found: {path}") from None
        if path.is_dir():
            raise HDF5Error(f"{path} is a folder, not an HDF5 file.")
        if st.st_size == 0:
            raise NotHDF5File(f"{path} is empty, not an HDF5 file.")
        fd = os.open(path, os.O_RDONLY)

        def read(start: int, length: int) -> bytes:
            return os.pread(fd, length, start)

        file = None
        try:
            file = _open_h5(str(path), str(path))
        finally:
            if file is None:
                os.close(fd)
        source = Source(url=str(path), file=file, size=st.st_size, etag=str(st.st_mtime_ns),
                        cache_key=("file", str(path.resolve()), st.st_size, st.st_mtime_ns),
                        read=read, stats=stats)
        source._closers.append(lambda: os.close(fd))
        return source

    url = url_or_path
    s3 = make_s3(endpoint=endpoint, credentials=credentials, s3=s3)
    bucket, key = parse_s3_url(url)
    # One GET of the first block instead of HEAD + GET: its Content-Range gives the size and
    # its ETag pins every later range (If-Match), so a replaced object is never mixed in.
    try:
        response, first = s3.get_object(bucket, key, start=0, length=FIRST_BLOCK)
    except Exception as exc:
        if _error_code(exc) in {"InvalidRange", "416"}:  # nothing at byte 0: an empty object
            raise NotHDF5File(f"{url} is empty (0 bytes), not an HDF5 file.") from None
        raise s3_error(exc, s3, url) from None
    stats.add(len(first), metadata=True)
    content_range = response.get("ContentRange") or ""
    size = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else len(first)
    if size == 0:
        raise NotHDF5File(f"{url} is empty (0 bytes), not an HDF5 file.")
    etag = str(response.get("ETag", "")).strip('"')

    def get(start: int, length: int) -> bytes:
        _response, data = s3.get_object(bucket, key, start=start, length=length, if_match=etag)
        if len(data) != length:
            raise StorageError(
                f"Short read from {url}: asked for {length} bytes at {start}, got {len(data)}."
            )
        return data

    def read(start: int, length: int) -> bytes:
        try:
            return get(start, length)
        except Exception as exc:
            raise s3_error(exc, s3, url) from None

    def meta_fetch(start: int, length: int) -> bytes:
        # translated here: h5py sometimes re-raises the driver's exception as it is
        data = read(start, length)
        stats.add(len(data), metadata=True)
        return data

    rangefile = RangeFile(meta_fetch, size, name=url, first=first)
    try:
        file = h5py.File(rangefile, "r")
    except H5PY_ERRORS as exc:
        if rangefile.error is not None:
            raise s3_error(rangefile.error, s3, url) from None
        raise h5py_error(exc, url) from None
    source = Source(url=url, file=file, size=size, etag=etag,
                    cache_key=("s3", s3.endpoint, bucket, key, etag), read=read, stats=stats,
                    s3=s3, rangefile=rangefile)
    return source

