"""Reading a rectangle of frames (an ROI, a line's bounding box) without the rest of the frame.

:class:`RegionReads` is the region half of :class:`~dashboard.hdf5.stack.FrameStack`: only the
chunks a region intersects are fetched (tile-chunked datasets: the overlapping tiles;
frame-aligned chunks: the frame chunk; contiguous datasets: one ranged GET).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


class RegionReads:
    """Mixed into :class:`~dashboard.hdf5.stack.FrameStack`, whose frame cache (``_cache``,
    ``_key``), reader (``_read``, ``_read_ahead``, ``_normalize``), chunk index
    (``_start_index_build``) and ``_counters`` it uses."""

    def _region_bounds(self, rows, cols) -> tuple[tuple[int, int], tuple[int, int]]:
        out = []
        for name, value, size in (("rows", rows, self.frame_shape[0]),
                                  ("cols", cols, self.frame_shape[1])):
            if value is None:
                value = slice(None)
            elif not isinstance(value, slice):
                value = slice(*value)
            start, stop, step = value.indices(size)
            if step != 1 or stop <= start:
                raise ValueError(f"{name} must be a non-empty slice with step 1 inside the frame "
                                 f"(0..{size}), not {value}")
            out.append((start, stop))
        return out[0], out[1]

    def _region(self, i: int, rows: tuple[int, int], cols: tuple[int, int]):
        cached = self._cache.get((*self._key, i))
        if cached is not None:
            return cached[rows[0] : rows[1], cols[0] : cols[1]], {
                "index": i, "path": "cache", "requests": 0, "bytes": 0, "stored_bytes": None,
                "seconds": 0.0}
        return self._read(i, rows, cols)

    def _count_region(self, cost: dict) -> None:
        with self._counters.lock:
            self._counters.regions_read += 1
            self._counters.last_region = cost

    def region(self, i: int, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        """``frame(i)[rows, cols]``, reading only the chunks that intersect the region.

        Parameters
        ----------
        i : int
            Frame index (negative allowed).
        rows, cols : slice or (start, stop), optional
            Half-open pixel ranges with step 1 (default: all); clipped to the frame like numpy.

        Returns
        -------
        (len(rows), len(cols)) ndarray
            Read-only, equal to h5py's ``dset[i, rows, cols]``. A frame already in the cache is
            sliced (no request); otherwise tile-chunked datasets fetch only the overlapping
            tiles, frame-aligned chunks the one frame chunk, contiguous datasets one ranged GET.
            The cost lands in ``stats["last_region"]``; region reads do not fill the cache.
        """
        i = self._normalize(i)
        bounds = self._region_bounds(rows, cols)
        region, cost = self._region(i, *bounds)
        self._count_region(cost)
        return region

    def region_cost(self, indices: Iterable[int], rows: slice | None = None,
                    cols: slice | None = None) -> dict:
        """What :meth:`regions` of the same arguments will fetch, said before reading:
        ``{"bytes", "pieces", "exact"}`` (chunks, or ranged reads of a contiguous dataset).
        Exact on the direct path (cached frames then cost less); through h5py the bytes are
        unknown (``None``). Reads only the chunk index."""
        order = [self._normalize(i) for i in indices]
        bounds = self._region_bounds(rows, cols)
        if self._direct is None:
            return {"bytes": None, "pieces": None, "exact": False}
        nbytes, pieces = self._direct.region_cost([self._coords(i) for i in order], *bounds)
        return {"bytes": nbytes, "pieces": pieces, "exact": True}

    def regions(self, indices: Iterable[int], rows: slice | None = None,
                cols: slice | None = None) -> Iterator[np.ndarray]:
        """:meth:`region` of each frame of ``indices`` in order, read ahead in parallel."""
        order = [self._normalize(i) for i in indices]
        bounds = self._region_bounds(rows, cols)
        if len(order) > 1:
            self._start_index_build()
        for region, cost in self._read_ahead(order, lambda i: self._region(i, *bounds)):
            self._count_region(cost)
            yield region
