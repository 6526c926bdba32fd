"""Read-ahead of a viewer's neighbouring frames: after frame ``i`` is shown, frames i±1, i±2 are
read into the frame cache in the background; prefetches the user has moved away from are
cancelled (or skipped when they start)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

#: Frames prefetched on each side of the current one.
PREFETCH_RADIUS = 2
#: Background threads prefetching neighbours (per stack).
PREFETCH_WORKERS = 2


class Counters:
    """A stack's read counters (under ``lock``): cache hits, frames read, prefetches, regions."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self.frames_read = 0
        self.direct_frames = 0
        self.h5py_frames = 0
        self.prefetched = 0
        self.prefetch_cancelled = 0
        self.last_frame: dict | None = None
        self.regions_read = 0
        self.last_region: dict | None = None



def read_ahead(order: list[int], fetch, workers: int) -> Iterator:
    """``fetch(i)`` for each ``i`` of ``order``, yielded in order, up to ``workers`` at once
    (one: one by one, on the caller's thread)."""
    if workers <= 1:
        for i in order:
            yield fetch(i)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="echo-frames") as pool:
        pending: dict[int, Future] = {}
        try:
            for k in range(min(workers, len(order))):
                pending[k] = pool.submit(fetch, order[k])
            for k in range(len(order)):
                result = pending.pop(k).result()
                if k + workers < len(order):
                    pending[k + workers] = pool.submit(fetch, order[k + workers])
                yield result
        finally:
            for future in pending.values():
                future.cancel()


class Prefetcher:
    """The neighbours of the current frame of one stack, read ahead into ``cache``.

    Parameters
    ----------
    read : callable
        ``read(j) -> (frame, cost)``: one uncached read of frame ``j``.
    cache : LRUBytes
        The decoded-frame cache; entries are ``(*key, j)``.
    key : tuple
        The stack's cache key (object identity including its ETag, and the dataset).
    n_frames : int
    counters
        The stack's counters (``lock``, ``prefetched``, ``prefetch_cancelled``).
    """

    def __init__(self, read: Callable[[int], tuple[np.ndarray, dict]], cache, key: tuple,
                 n_frames: int, counters, *, radius: int = PREFETCH_RADIUS,
                 workers: int = PREFETCH_WORKERS):
        self._read, self._cache, self._key, self._n = read, cache, key, n_frames
        self._counters = counters
        self.radius, self.workers = radius, workers
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[int, Future] = {}
        self._idle = threading.Condition()
        self._current = 0
        self._previous: int | None = None
        self._closed = False

    def _cancelled(self) -> None:
        with self._counters.lock:
            self._counters.prefetch_cancelled += 1

    def schedule(self, i: int) -> None:
        """Frame ``i`` is being shown: read ahead around it, in the direction of travel."""
        if self._closed:
            return
        step = 1 if self._previous is None or i >= self._previous else -1
        self._previous, self._current = i, i
        wanted = [i + step, i + 2 * step, i - step, i - 2 * step]
        with self._idle:
            for j, future in list(self._inflight.items()):
                if abs(j - i) > self.radius and future.cancel():
                    self._inflight.pop(j, None)  # the done-callback may have removed it already
                    self._cancelled()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="echo-prefetch")
            for j in wanted:
                if 0 <= j < self._n and j not in self._inflight and (*self._key, j) not in self._cache:
                    future = self._pool.submit(self.fetch, j)
                    self._inflight[j] = future
                    future.add_done_callback(lambda f, j=j: self._done(j, f))
            self._idle.notify_all()

    def fetch(self, j: int) -> np.ndarray | None:
        """Worker: read frame ``j`` into the cache, unless the user has moved on (``None``)."""
        if self._closed or abs(j - self._current) > self.radius:
            self._cancelled()
            return None  # stale: the user moved on
        key = (*self._key, j)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        frame, _cost = self._read(j)
        self._cache.put(key, frame)
        with self._counters.lock:
            self._counters.prefetched += 1
        return frame

    def inflight(self, i: int) -> Future | None:
        """The prefetch of frame ``i`` queued or running, if any (a foreground read waits on it)."""
        return self._inflight.get(i)

    def _done(self, j: int, future: Future) -> None:
        with self._idle:
            if self._inflight.get(j) is future:
                del self._inflight[j]
            self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no prefetch is queued or running; ``False`` on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    def stop(self) -> None:
        """Cancel what is queued and run nothing more; never waits."""
        self._closed = True
        with self._idle:
            futures = list(self._inflight.values())
        for future in futures:
            future.cancel()

    def close(self) -> None:
        """Cancel what is queued, wait for what runs."""
        self._closed = True
        with self._idle:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
