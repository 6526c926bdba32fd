"""The direct read path: a frame's chunks located in the chunk index, fetched with exact ranged
GETs (in parallel, outside HDF5's global lock) and decoded in Python.

Applies to contiguous datasets and to chunked datasets whose filters :mod:`.decode` handles;
:func:`direct_reader` returns ``None`` for everything else (virtual, compact, external storage,
other filters) and :class:`~dashboard.hdf5.stack.FrameStack` reads those through h5py.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import h5py
import numpy as np

from .decode import decode_chunk, pipeline, supported
from .errors import HDF5Error

log = logging.getLogger(__name__)

#: Separate byte ranges closer than this are fetched with one GET (multi-chunk frames only).
MERGE_GAP = 64 * 1024
#: Decoded chunks that hold several frames are kept (per dataset) up to this many bytes.
CHUNK_CACHE_BYTES = 64 * 1024**2
#: Parallel GETs for one frame made of several separate byte ranges.
RANGE_WORKERS = 4


@dataclass
class FrameCost:
    """What one frame cost on the direct path."""

    requests: int = 0
    bytes: int = 0
    stored_bytes: int = 0  # the stored (compressed) bytes of the chunks the frame needs


class LRUBytes:
    """A thread-safe LRU mapping bounded by the total ``nbytes`` of its values."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key, value: np.ndarray) -> None:
        size = int(value.nbytes)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _key, dropped = self._items.popitem(last=False)
                self._bytes -= int(dropped.nbytes)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _layout(dset: h5py.Dataset) -> str | None:
    if dset.is_virtual:
        return None
    plist = dset.id.get_create_plist()
    if plist.get_external_count() > 0:
        return None
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        return "contiguous"
    if layout == h5py.h5d.CHUNKED:
        return "chunked"
    return None  # compact


class DirectReader:
    """Reads frames of one dataset straight from the file's bytes. Build with :func:`direct_reader`.

    ``source.h5()`` is taken only for h5py calls (chunk-index lookups); GETs and decoding run
    in the calling thread, so many frames can be read at once.
    """

    def __init__(self, source, dset: h5py.Dataset, layout: str):
        self.source = source
        self.dset = dset
        self.name = dset.name
        self.layout = layout
        self.shape = tuple(dset.shape)
        self.dtype = dset.dtype
        self.frame_shape = self.shape[-2:]
        self.lead_shape = self.shape[:-2]
        self.fillvalue = dset.fillvalue
        self.chunks = tuple(dset.chunks) if dset.chunks else None
        self.filters = pipeline(dset) if layout == "chunked" else ()
        self.offset = dset.id.get_offset() if layout == "contiguous" else None
        self._index: dict[tuple, tuple | None] = {}
        self._index_complete = threading.Event()
        self._index_lock = threading.Lock()
        self._chunk_cache = LRUBytes(CHUNK_CACHE_BYTES)
        # Chunks holding several frames, being fetched: frames read ahead in parallel wait
        # for the one fetch instead of each fetching the same chunk.
        self._inflight: dict[tuple, Future] = {}
        self._inflight_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- chunk index --------------------------------------------------------------------

    @property
    def index_complete(self) -> bool:
        return self._index_complete.is_set()

    def build_index(self, stop: threading.Event | None = None) -> None:
        """Read the whole chunk index (run in the background after the first frame).

        HDF5 walks the index holding its global lock, fetching index nodes over the network
        one by one; so that a frame asked for meanwhile does not wait for the whole walk, the
        walk stops as soon as another h5py call is waiting, lets it through, and starts again (nodes
        already read are in the block cache, so a restart costs no request).
        """
        if self.layout != "chunked" or self.index_complete:
            return
        while stop is None or not stop.is_set():
            entries: dict[tuple, tuple] = {}

            def visit(info):
                entries[tuple(info.chunk_offset)] = (info.byte_offset, info.size, info.filter_mask)
                return True if self.source.waiting or (stop is not None and stop.is_set()) else None

            with self.source.lock:
                interrupted = self.dset.id.chunk_iter(visit)
            with self._index_lock:
                self._index.update(entries)
            if interrupted is None:
                self._index_complete.set()
                return
            self.source.wait_for_no_waiters(timeout=5)

    def lookup(self, coord: tuple) -> tuple | None:
        """``(byte_offset, size, filter_mask)`` of the chunk at ``coord``, ``None`` if unwritten."""
        with self._index_lock:
            if coord in self._index:
                return self._index[coord]
        if self.index_complete:
            return None
        with self.source.h5():
            info = self.dset.id.get_chunk_info_by_coord(coord)
        entry = None
        if info.byte_offset is not None and info.size:
            entry = (info.byte_offset, info.size, info.filter_mask)
        with self._index_lock:
            self._index[coord] = entry
        return entry

    def region_cost(self, coords_list, rows: tuple[int, int] | None = None,
                    cols: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(bytes, pieces)`` that reading the region of each frame at ``coords_list`` fetches
        (nothing cached): the ranged GETs of every distinct chunk the region intersects, merged
        as the reads merge them (a chunk holding several frames counts once; a gap fetched
        between merged chunks counts), or a contiguous dataset's ranged reads. Builds the
        chunk index first (its metadata reads, no chunk data)."""
        (height, width), itemsize = self.frame_shape, self.dtype.itemsize
        (r0, r1), (c0, c1) = rows or (0, height), cols or (0, width)
        coords_list = list(coords_list)
        if self.layout == "contiguous":
            if self.offset is None:
                return 0, 0
            whole = (r0, r1, c0, c1) == (0, height, 0, width)
            per_frame = (height * width if whole else (r1 - 1) * width + c1 - r0 * width - c0)
            return per_frame * itemsize * len(coords_list), len(coords_list)
        self.build_index()
        chunks = self.chunks
        (ch, cw), lead_chunks = chunks[-2:], chunks[:-2]
        tiles = [(y, x) for y in range((r0 // ch) * ch, r1, ch)
                 for x in range((c0 // cw) * cw, c1, cw)]
        # Replay the reads: each frame fetches the chunks it needs that no earlier frame of
        # the run fetched (shared chunks once), in merged GETs as _fetch makes them.
        seen: set[tuple] = set()
        nbytes = pieces = 0
        for coords in coords_list:
            lead = tuple((c // n) * n for c, n in zip(coords, lead_chunks))
            wanted = []
            for tile in tiles:
                coord = lead + tile
                if coord in seen:
                    continue
                seen.add(coord)
                entry = self.lookup(coord)
                if entry is not None:
                    wanted.append((coord, *entry))
            pieces += len(wanted)
            for group in _merged(wanted) if wanted else []:
                nbytes += max(o + n for _c, o, n, _m in group) - group[0][1]
        return nbytes, pieces

    # -- frames -------------------------------------------------------------------------

    def _fill(self, shape) -> np.ndarray:
        return np.full(shape, self.fillvalue if self.fillvalue is not None else 0, self.dtype)

    def read(self, coords: tuple, rows: tuple[int, int] | None = None,
             cols: tuple[int, int] | None = None, *,
             stop: threading.Event | None = None) -> tuple[np.ndarray, FrameCost]:
        """The frame at leading coordinates ``coords`` (a tuple, one int per leading axis).

        ``rows``/``cols`` (half-open ``(start, stop)``, inside the frame) ask for a region
        only: then only the chunks that intersect it are fetched and decoded (for a contiguous
        dataset, one GET from the region's first to its last pixel). Once ``stop`` is set (the
        stack closed: its session ended) a frame of many chunks stops between them.
        """
        if self.layout == "contiguous":
            return self._read_contiguous(coords, rows, cols)
        return self._read_chunked(coords, rows, cols, stop)

    def _read_contiguous(self, coords, rows=None, cols=None):
        cost = FrameCost()
        (height, width), itemsize = self.frame_shape, self.dtype.itemsize
        (r0, r1), (c0, c1) = rows or (0, height), cols or (0, width)
        if self.offset is None:  # never written: HDF5 returns the fill value
            return self._fill((r1 - r0, c1 - c0)), cost
        nbytes = math.prod(self.frame_shape) * itemsize
        k = int(np.ravel_multi_index(coords, self.lead_shape)) if coords else 0
        if (r0, r1, c0, c1) == (0, height, 0, width):
            data = self.source.read_range(self.offset + k * nbytes, nbytes)
            cost.requests, cost.bytes, cost.stored_bytes = 1, nbytes, nbytes
            return np.frombuffer(data, self.dtype).reshape(self.frame_shape), cost
        # One GET from the region's first pixel to its last (rows are stored one after another).
        first, last = r0 * width + c0, (r1 - 1) * width + c1
        length = (last - first) * itemsize
        data = self.source.read_range(self.offset + k * nbytes + first * itemsize, length)
        cost.requests, cost.bytes, cost.stored_bytes = 1, length, length
        flat = np.frombuffer(data, self.dtype)
        rows_view = np.lib.stride_tricks.as_strided(
            flat, shape=(r1 - r0, c1 - c0), strides=(width * itemsize, itemsize), writeable=False)
        return rows_view.copy(), cost

    def _read_chunked(self, coords, rows=None, cols=None, stop=None):
        chunks = self.chunks
        lead_chunks = chunks[:-2]
        lead_start = tuple((c // n) * n for c, n in zip(coords, lead_chunks))
        within = tuple(c - s for c, s in zip(coords, lead_start))
        spans_frames = math.prod(lead_chunks) > 1
        (height, width), (ch, cw) = self.frame_shape, chunks[-2:]
        (r0, r1), (c0, c1) = rows or (0, height), cols or (0, width)
        region = (r0, r1, c0, c1) != (0, height, 0, width)
        # Only the chunks (tiles) that intersect the rows and columns asked for.
        tiles = [(y, x) for y in range((r0 // ch) * ch, r1, ch)
                 for x in range((c0 // cw) * cw, c1, cw)]
        cost = FrameCost()
        decoded: dict[tuple, np.ndarray | None] = {}
        wanted: list[tuple] = []  # (coord, offset, size, mask)
        waiting: dict[tuple, Future] = {}  # chunks another frame's read is fetching
        mine: dict[tuple, Future] = {}  # chunks this read fetches for others too
        try:
            for y, x in tiles:
                if stop is not None and stop.is_set():
                    raise HDF5Error(f"{self.name} was closed while a frame was being read.")
                coord = lead_start + (y, x)
                if spans_frames:
                    cached = self._chunk_cache.get(coord)
                    if cached is not None:
                        decoded[coord] = cached
                        continue
                    with self._inflight_lock:
                        future = self._inflight.get(coord)
                        if future is None:
                            mine[coord] = self._inflight[coord] = Future()
                    if future is not None:
                        waiting[coord] = future
                        continue
                entry = self.lookup(coord)
                if entry is None:
                    decoded[coord] = None
                    if coord in mine:
                        self._settle(coord, mine.pop(coord), None)
                else:
                    wanted.append((coord, *entry))
                    cost.stored_bytes += entry[1]
            for coord, raw, mask in self._fetch(wanted, cost, stop):
                array = decode_chunk(raw, self.filters, mask, self.dtype, chunks)
                decoded[coord] = array
                if spans_frames:
                    self._chunk_cache.put(coord, array)
                    self._settle(coord, mine.pop(coord), array)
        except BaseException as exc:
            # Whatever failed (a lookup, a GET, a decode, the stack closing): the frames
            # waiting for this read's chunks get the error, never a wait without end.
            for coord, future in mine.items():
                self._settle(coord, future, exc)
            raise
        for coord, future in waiting.items():
            decoded[coord] = self._wait(future, stop)
        if not region and len(tiles) == 1 and (ch, cw) == (height, width):
            array = decoded[lead_start + (0, 0)]
            if array is None:
                return self._fill(self.frame_shape), cost
            return (array[within].copy() if spans_frames else array[within]), cost
        out = np.empty((r1 - r0, c1 - c0), self.dtype)
        for y, x in tiles:
            # the part of this tile inside the region, in frame coordinates
            ys, ye = max(y, r0), min(y + ch, r1)
            xs, xe = max(x, c0), min(x + cw, c1)
            target = out[ys - r0 : ye - r0, xs - c0 : xe - c0]
            array = decoded[lead_start + (y, x)]
            if array is None:
                target[...] = self.fillvalue if self.fillvalue is not None else 0
            else:
                target[...] = array[within][ys - y : ye - y, xs - x : xe - x]
        return out, cost

    def _wait(self, future: Future, stop: threading.Event | None):
        """Another read's chunk; a closed stack stops the wait."""
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if stop is not None and stop.is_set():
                    closed = f"{self.name} was closed while a frame was being read."
                    raise HDF5Error(closed) from None

    def _settle(self, coord: tuple, future: Future, result) -> None:
        """A shared chunk's fetch ended: hand ``result`` (an array, None or the error) to the
        frames waiting for it."""
        with self._inflight_lock:
            self._inflight.pop(coord, None)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def _fetch(self, wanted: list[tuple], cost: FrameCost, stop=None):
        """Yield ``(coord, raw_bytes, filter_mask)``: nearby chunks merged into one ranged GET."""
        if not wanted:
            return
        groups = _merged(wanted)

        def get(group):
            if stop is not None and stop.is_set():
                raise HDF5Error(f"{self.name} was closed while a frame was being read.")
            start = group[0][1]
            end = max(offset + size for _c, offset, size, _m in group)
            return start, self.source.read_range(start, end - start)

        if len(groups) == 1:
            results = [get(groups[0])]
        else:
            results = list(self._executor().map(get, groups))
        for group, (start, data) in zip(groups, results):
            cost.requests += 1
            cost.bytes += len(data)
            for coord, offset, size, mask in group:
                yield coord, data[offset - start : offset - start + size], mask

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(RANGE_WORKERS, thread_name_prefix="echo-range")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        self._chunk_cache.clear()


def _merged(wanted: list[tuple]) -> list[list[tuple]]:
    """``(coord, offset, size, mask)`` items grouped into ranged GETs: by offset, a neighbour
    at most :data:`MERGE_GAP` bytes further on joins the group (the gap is fetched too)."""
    wanted = sorted(wanted, key=lambda item: item[1])
    groups: list[list[tuple]] = [[wanted[0]]]
    for item in wanted[1:]:
        last = groups[-1][-1]
        if item[1] - (last[1] + last[2]) <= MERGE_GAP and item[1] >= last[1] + last[2]:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def direct_reader(source, dset: h5py.Dataset) -> DirectReader | None:
    """A :class:`DirectReader` if the direct path applies to ``dset``, else ``None``.

    Call inside ``source.h5()``.
    """
    layout = _layout(dset)
    if layout is None:
        return None
    if layout == "chunked" and not supported(pipeline(dset)):
        return None
    return DirectReader(source, dset, layout)
