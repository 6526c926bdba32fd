"""``FrameStack``, the one reader of frames (open one with :func:`~dashboard.hdf5.stack.open_stack`).

A frame is read by the direct path where it applies (:mod:`.chunks`: the chunk's exact byte
range in one GET, decoded in Python, outside HDF5's global lock) and by h5py otherwise. Decoded
frames live in a process-wide LRU cache bounded by bytes, keyed by (endpoint, bucket, key,
ETag, dataset, index); after each frame the neighbours i±1, i±2 are prefetched in the
background (direct path only; stale prefetches are cancelled).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError

import h5py
import numpy as np

from ..config import frame_budget
from .arrays import ArrayAccess
from .chunks import DirectReader, LRUBytes, direct_reader
from .decode import DecodeError
from .errors import HDF5Error
from .prefetch import Counters, Prefetcher, read_ahead
from .readable import (
    check_budget,
    check_contained,
    check_filters,
    read_error,
    resolve_dataset,
)
from .regions import RegionReads
from .source import H5PY_ERRORS, Source
from .stacks import Candidate, stack_candidates
from .tree import check_stack, filters_of

log = logging.getLogger(__name__)

#: Bytes of decoded frames kept process-wide (override with $ECHO_S3_FRAME_CACHE_MB).
FRAME_CACHE_BYTES = int(os.environ.get("ECHO_S3_FRAME_CACHE_MB", "512")) * 1024**2
#: Frames read ahead in parallel by :meth:`FrameStack.frames` on the direct path.
READ_AHEAD = 4

#: Process-wide cache of decoded frames; keys start with the object's identity incl. ETag.
FRAME_CACHE = LRUBytes(FRAME_CACHE_BYTES)


class FrameStack(RegionReads, ArrayAccess):
    """Frames of one dataset: ``len``, ``shape``, ``dtype``, ``frame(i)``, ``frames``, ``mean``;
    as an array, ``stack[frames, rows, columns]``, ``to_dask()``, ``to_xarray()`` (:mod:`.arrays`).

    Axis 0 holds the frames of a 3-D dataset; a 2-D dataset is a one-frame stack; for ndim > 3
    the leading axes are flattened in C order (frame ``i`` is ``dset[np.unravel_index(i,
    shape[:-2])]``). Thread-safe. Frames returned are read-only arrays (they may be shared with
    the cache): copy before modifying.
    """

    def __init__(self, source: Source, dataset: str, *, spec,
                 prefetch: bool = True, cache: LRUBytes | None = None):
        self.source = source
        self.url = source.url
        self._cache = cache if cache is not None else FRAME_CACHE
        self._counters = Counters()
        self._closed = False
        self._index_lock = threading.Lock()
        self._candidates: list[Candidate] | None = None
        self._index_thread: threading.Thread | None = None
        self._stop = threading.Event()
        with source.h5():
            try:
                self._dset = resolve_dataset(source, dataset)
                self.dataset = self._dset.name
                check_stack(self._dset, self.url)
                check_contained(source, self._dset)
                check_budget(self._dset, max_pixels=spec.max_frame_pixels or frame_budget(),
                             max_chunks=spec.max_frame_chunks)
                check_filters(self._dset, self.url)
                self._direct: DirectReader | None = direct_reader(source, self._dset)
            except H5PY_ERRORS as exc:
                raise source.translate(exc, "open") from None
        self.shape = tuple(int(n) for n in self._dset.shape)
        self.dtype = self._dset.dtype
        self.frame_shape = self.shape[-2:]
        self._lead = self.shape[:-2]
        self._n = math.prod(self._lead)
        self._spec = spec
        self._key = (*source.cache_key, self.dataset)
        # Neighbours are read ahead on the direct path only (h5py reads hold HDF5's lock).
        self._prefetcher = (Prefetcher(self._read, self._cache, self._key, self._n,
                                       self._counters)
                            if prefetch and self._direct is not None else None)

    # -- basic properties -----------------------------------------------------------------

    @property
    def etag(self) -> str:
        return self.source.etag

    @property
    def size(self) -> int:
        """Size of the whole object/file in bytes."""
        return self.source.size

    @property
    def n_frames(self) -> int:
        return self._n

    def __len__(self) -> int:
        return self._n

    @property
    def direct(self) -> bool:
        """Whether frames are read by the direct path (else through h5py)."""
        return self._direct is not None

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The dataset's chunk shape (``None`` when it is not chunked)."""
        return tuple(int(n) for n in self._dset.chunks) if self._dset.chunks else None

    @property
    def layout(self) -> str:
        """How the dataset is stored: ``chunked``, ``contiguous``, ``compact`` or ``virtual``."""
        if self._direct is not None:
            return self._direct.layout
        with self.source.h5():
            if self._dset.is_virtual:
                return "virtual"
            layout = self._dset.id.get_create_plist().get_layout()
        return {h5py.h5d.CHUNKED: "chunked", h5py.h5d.CONTIGUOUS: "contiguous",
                h5py.h5d.COMPACT: "compact"}.get(layout, "other")

    @property
    def filters(self) -> list[dict]:
        """The filter pipeline in write order: ``[{"id": 32008, "name": "Bitshuffle"}, ...]``."""
        with self.source.h5():
            return filters_of(self._dset)

    @property
    def candidates(self) -> list[Candidate]:
        """Every stack candidate of the file (bounded breadth-first search, computed once; none
        when the search fails: the choice of stacks is optional)."""
        if self._candidates is None:
            try:
                self._candidates = stack_candidates(self.source)
            except Exception:  # a damaged or closed file
                log.info("searching %s for image stacks failed", self.url, exc_info=True)
                self._candidates = []
        return self._candidates

    def spec(self):
        """A picklable :class:`~dashboard.hdf5.stack.StackSpec` that reopens this stack (e.g.
        on a Dask worker)."""
        return self._spec

    def __repr__(self) -> str:
        return f"FrameStack({self.url!r}, {self.dataset!r}, shape={self.shape}, dtype={self.dtype})"

    # -- reading ------------------------------------------------------------------------

    def _normalize(self, i) -> int:
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"frame {i} is out of range: the stack has {self._n} frames")
        return i

    def _coords(self, i: int) -> tuple:
        return tuple(int(c) for c in np.unravel_index(i, self._lead)) if self._lead else ()

    def _read(self, i: int, rows: tuple[int, int] | None = None,
              cols: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
        """Read frame ``i`` (no cache): direct path, else h5py. With ``rows`` and ``cols``
        (half-open, inside the frame) only that region, and only the chunks it intersects."""
        if self._closed or self._stop.is_set():
            raise HDF5Error(f"{self.url} is closed.")
        t0 = time.perf_counter()
        coords = self._coords(i)
        if self._direct is not None:
            try:
                frame, cost = self._direct.read(coords, rows, cols, stop=self._stop)
                frame = _readonly(frame)
                return frame, {"index": i, "path": "direct", "requests": cost.requests,
                               "bytes": cost.bytes, "stored_bytes": cost.stored_bytes,
                               "seconds": time.perf_counter() - t0}
            except DecodeError as exc:
                log.warning("direct read of %s[%d] failed (%s); using h5py", self.dataset, i, exc)
            except H5PY_ERRORS as exc:  # a damaged chunk index
                raise self._read_error(exc) from None
        # h5py's hyperslab read of a region also reads only the chunks it intersects
        box = (slice(*rows), slice(*cols)) if rows is not None and cols is not None else ()
        with self.source.h5():
            before = self.source.stats.snapshot()
            try:
                frame = self._dset[coords + box] if coords or box else self._dset[()]
            except H5PY_ERRORS as exc:
                raise self._read_error(exc) from None
            after = self.source.stats.snapshot()
        # h5py's reads all pass through the metadata file object, under the lock held above
        return _readonly(np.asarray(frame)), {
            "index": i, "path": "h5py",
            "requests": after["metadata_requests"] - before["metadata_requests"],
            "bytes": after["metadata_bytes"] - before["metadata_bytes"], "stored_bytes": None,
            "seconds": time.perf_counter() - t0,
        }

    def _read_error(self, exc: OSError) -> Exception:
        return read_error(self.source, self._dset, exc)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as a read-only 2-D array equal to h5py's ``dset[i]`` (negative i allowed)."""
        cached = self.cached_frame(i)
        if cached is not None:
            return cached
        i = self._normalize(i)
        key = (*self._key, i)
        t0 = time.perf_counter()
        future = self._prefetcher.inflight(i) if self._prefetcher is not None else None
        frame = cost = None
        if future is not None:
            try:
                frame = future.result()
            except CancelledError:
                frame = None
            except Exception:  # a prefetch failure is re-raised by the foreground read below
                frame = None
            if frame is not None:
                cost = {"index": i, "path": "prefetch", "requests": 0, "bytes": 0,
                        "stored_bytes": None, "seconds": time.perf_counter() - t0}
        if frame is None:
            frame, cost = self._read(i)
            self._cache.put(key, frame)
        with self._counters.lock:
            self._counters.cache_misses += 1
            self._counters.frames_read += 1
            if cost["path"] == "direct":
                self._counters.direct_frames += 1
            elif cost["path"] == "h5py":
                self._counters.h5py_frames += 1
            self._counters.last_frame = cost
        self._schedule_prefetch(i)
        self._start_index_build()
        return frame

    def last_frame(self) -> np.ndarray:
        """The last frame (the thumbnail of a scan)."""
        return self.frame(self._n - 1)

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
        """Frames in the order of ``indices`` (default: all), read ahead in parallel.

        Frames found in the cache are used, but frames read here are not added to it, so a long
        batch does not evict what the viewer is showing.
        """
        order = [self._normalize(i) for i in (range(self._n) if indices is None else indices)]
        if len(order) > 1:
            self._start_index_build()

        def fetch(i: int) -> tuple[np.ndarray, dict | None]:
            cached = self._cache.get((*self._key, i))
            return (cached, None) if cached is not None else self._read(i)

        for frame, cost in self._read_ahead(order, fetch):
            if cost is not None:
                with self._counters.lock:
                    self._counters.frames_read += 1
                    self._counters.direct_frames += cost["path"] == "direct"
                    self._counters.h5py_frames += cost["path"] == "h5py"
            yield frame

    def _read_ahead(self, order: list[int], fetch) -> Iterator[tuple[np.ndarray, dict | None]]:
        """``fetch(i)`` for each ``i`` of ``order``, in order; in parallel on the direct path
        (h5py reads hold HDF5's global lock, so there they run one by one)."""
        return read_ahead(order, fetch, READ_AHEAD if self._direct is not None else 1)

    def mean(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Mean of the given frames (default: all) as float64, streaming (frames never stacked)."""
        total = np.zeros(self.frame_shape, np.float64)
        count = 0
        for frame in self.frames(indices):
            total += frame
            count += 1
        if count == 0:
            raise ValueError("mean() needs at least one frame index")
        total /= count
        return total

    # -- prefetch -----------------------------------------------------------------------

    def _schedule_prefetch(self, i: int) -> None:
        if self._prefetcher is not None and not self._closed:
            self._prefetcher.schedule(i)

    def _prefetch(self, j: int) -> np.ndarray | None:
        """Read frame ``j`` as a prefetch would (``None`` when it is stale or disabled)."""
        return self._prefetcher.fetch(j) if self._prefetcher is not None else None

    def wait_prefetch(self, timeout: float | None = None) -> bool:
        """Block until no prefetch is queued or running; ``False`` on timeout."""
        return self._prefetcher.wait(timeout) if self._prefetcher is not None else True

    def is_cached(self, i: int) -> bool:
        """Whether frame ``i`` is in the decoded-frame cache."""
        return (*self._key, self._normalize(i)) in self._cache

    def cached_frame(self, i: int) -> np.ndarray | None:
        """Frame ``i`` from the decoded-frame cache, or ``None``: never a request (safe on an
        event loop; the cache is process-wide, so a frame may leave it at any moment)."""
        i = self._normalize(i)
        t0 = time.perf_counter()
        cached = self._cache.get((*self._key, i))
        if cached is None:
            return None
        with self._counters.lock:
            self._counters.cache_hits += 1
            self._counters.last_frame = {"index": i, "path": "cache", "requests": 0,
                                         "bytes": 0, "stored_bytes": None,
                                         "seconds": time.perf_counter() - t0}
        self._schedule_prefetch(i)
        return cached

    def _start_index_build(self) -> None:
        direct = self._direct
        if direct is None or direct.layout != "chunked" or self._index_thread is not None:
            return
        with self._index_lock:
            if self._index_thread is not None or self._closed or self._stop.is_set():
                return

            def build() -> None:
                try:
                    direct.build_index(self._stop)
                except Exception as exc:  # lookups stay lazy; the next frame shows any error
                    log.info("chunk index of %s not built in the background: %s", self.dataset, exc)

            self._index_thread = threading.Thread(target=build, name="echo-chunk-index", daemon=True)
            self._index_thread.start()

    def wait_index(self, timeout: float | None = None) -> bool:
        """Wait for the background chunk-index build (``True`` when the index is complete)."""
        if self._index_thread is not None:
            self._index_thread.join(timeout)
        return self._direct is not None and self._direct.index_complete

    # -- statistics ---------------------------------------------------------------------

    @property
    def stats(self) -> dict:
        """Requests and bytes (metadata / data), cache hits, frames read, the last frame's cost."""
        out = self.source.stats.snapshot()
        with self._counters.lock:
            c = self._counters
            out.update(
                cache_hits=c.cache_hits, cache_misses=c.cache_misses, frames_read=c.frames_read,
                direct_frames=c.direct_frames, h5py_frames=c.h5py_frames,
                prefetched=c.prefetched, prefetch_cancelled=c.prefetch_cancelled,
                last_frame=dict(c.last_frame) if c.last_frame else None,
                regions_read=c.regions_read,
                last_region=dict(c.last_region) if c.last_region else None,
            )
        out["read_path"] = "direct" if self._direct is not None else "h5py"
        return out

    # -- lifetime -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading, at once and without waiting (safe on an event loop): a frame being
        read stops between its chunks, queued read-ahead is dropped, later reads are refused.
        :meth:`close` still releases the file (it waits for reads in flight)."""
        self._stop.set()
        if self._prefetcher is not None:
            self._prefetcher.stop()

    def close(self) -> None:
        """Stop prefetching and close the file (cached frames stay for the next opener)."""
        with self._index_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._prefetcher is not None:
            self._prefetcher.close()
        if self._index_thread is not None:
            self._index_thread.join()
        if self._direct is not None:
            self._direct.close()
        self.source.close()

    def __enter__(self) -> FrameStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("FrameStack is not picklable: send stack.spec() and call .open() there")


def _readonly(frame: np.ndarray) -> np.ndarray:
    if frame.flags.writeable:
        frame.flags.writeable = False
    return frame
