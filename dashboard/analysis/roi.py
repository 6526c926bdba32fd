"""Region-of-interest time series: mean, min and max inside a box for every frame of a range.

A box is half-open in pixel indices, like numpy slicing: columns ``x0 <= x < x1`` and rows
``y0 <= y < y1`` (x = column, y = row, row 0 at the top, as the frame view shows them). Frames
are read through :meth:`~dashboard.hdf5.stack.FrameStack.regions`, so only the chunks that
intersect the box cross the network.

Examples
--------
>>> box = clamp_box(Box(10, 20, 5, 8), (64, 96))
>>> box.shape
(3, 10)
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


class Cancelled(Exception):
    """A series was cancelled before it finished (a newer request, the Cancel button, close)."""


@dataclass(frozen=True)
class Box:
    """Columns ``x0:x1`` and rows ``y0:y1`` of a frame (half-open pixel indices)."""

    x0: int
    x1: int
    y0: int
    y1: int

    @property
    def rows(self) -> slice:
        return slice(self.y0, self.y1)

    @property
    def cols(self) -> slice:
        return slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the box."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def label(self) -> str:
        """``x 10–19, y 5–7`` (inclusive pixel numbers, as a scientist would say them)."""
        return f"x {self.x0}–{self.x1 - 1}, y {self.y0}–{self.y1 - 1}"


def clamp_box(box: Box, shape: tuple[int, int]) -> Box:
    """``box`` ordered and clipped to a frame of ``shape`` (rows, columns); at least one pixel.

    Parameters
    ----------
    box : Box
        Any integers (swapped ends and boxes outside the frame are allowed).
    shape : (rows, columns)
        Frame shape, both at least 1.
    """
    rows, cols = (int(n) for n in shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"a frame of shape {shape} has no pixels")

    def span(a: int, b: int, size: int) -> tuple[int, int]:
        lo, hi = sorted((int(a), int(b)))
        lo = min(max(lo, 0), size - 1)
        hi = min(max(hi, lo + 1), size)
        return lo, hi

    x0, x1 = span(box.x0, box.x1, cols)
    y0, y1 = span(box.y0, box.y1, rows)
    return Box(x0, x1, y0, y1)


def box_from_bounds(bounds: Sequence[float], shape: tuple[int, int]) -> Box:
    """The pixels whose centres lie inside drawn ``bounds`` (data coordinates), clamped.

    Pixel ``k`` covers ``[k - 0.5, k + 0.5]`` in the frame view (x = column, y = row), so a
    drawn rectangle from ``left`` to ``right`` holds columns ``ceil(left) .. floor(right)``. A
    rectangle thinner than a pixel still selects the pixel it touches.

    Parameters
    ----------
    bounds : (left, bottom, right, top)
        As HoloViews' ``BoundsXY`` stream reports them (bottom/top may be swapped).
    shape : (rows, columns)
    """
    left, bottom, right, top = (float(v) for v in bounds)
    left, right = sorted((left, right))
    bottom, top = sorted((bottom, top))
    x0, x1 = math.ceil(left), math.floor(right) + 1
    y0, y1 = math.ceil(bottom), math.floor(top) + 1
    if x1 <= x0:
        x0 = x1 = round((left + right) / 2)
        x1 += 1
    if y1 <= y0:
        y0 = y1 = round((bottom + top) / 2)
        y1 += 1
    return clamp_box(Box(x0, x1, y0, y1), shape)


def frame_range(first: int, last: int, step: int, n_frames: int) -> range:
    """Frames ``first, first + step, …`` up to ``last`` inclusive, clipped to ``0..n_frames-1``."""
    if n_frames < 1:
        return range(0)
    step = max(1, int(step))
    first = min(max(int(first), 0), n_frames - 1)
    last = min(max(int(last), 0), n_frames - 1)
    if last < first:
        first, last = last, first
    return range(first, last + 1, step)


def region_stats(region: np.ndarray) -> tuple[float, float, float]:
    """``(mean, min, max)`` of a region as floats; NaN pixels are ignored (all-NaN → NaN).

    The mean is accumulated in float64 whatever the input dtype.
    """
    values = np.asarray(region)
    if values.size == 0:
        raise ValueError("an empty region has no statistics")
    if values.dtype.kind == "f":
        finite = values[~np.isnan(values)]
        if finite.size == 0:
            return math.nan, math.nan, math.nan
        values = finite
    return (float(np.mean(values, dtype=np.float64)), float(values.min()), float(values.max()))


@dataclass(frozen=True)
class RoiSeries:
    """Statistics of one box for frames ``frames`` (parallel float64 arrays)."""

    box: Box
    frames: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def roi_series(stack, box: Box, indices: Sequence[int], *,
               progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> RoiSeries:
    """Mean, min and max inside ``box`` for each frame of ``indices``.

    Parameters
    ----------
    stack : FrameStack
        Anything with ``regions(indices, rows, cols)`` yielding 2-D arrays.
    box : Box
        Must lie inside the frame (see :func:`clamp_box`).
    indices : sequence of int
        Frame numbers, in the order wanted.
    progress : callable, optional
        ``progress(done, total)`` after each frame.
    cancelled : callable, optional
        Polled after each frame; when it returns true, :class:`Cancelled` is raised.

    Returns
    -------
    RoiSeries
        ``frames`` as int64, ``mean``/``min``/``max`` as float64.
    """
    indices = [int(i) for i in indices]
    stats = np.empty((len(indices), 3), np.float64)
    for k, region in each_region(stack, indices, box.rows, box.cols, progress=progress,
                                 cancelled=cancelled):
        stats[k] = region_stats(region)
    return RoiSeries(box=box, frames=np.asarray(indices, np.int64), mean=stats[:, 0],
                     min=stats[:, 1], max=stats[:, 2])


def each_region(stack, indices: Sequence[int], rows, cols, *,
                progress: Callable[[int, int], None] | None = None,
                cancelled: Callable[[], bool] | None = None):
    """``(k, region)`` of each frame of ``indices`` (read ahead by ``stack.regions``), then
    ``progress(k + 1, total)``; :class:`Cancelled` once ``cancelled()`` says so. The read-ahead
    stops however the loop ends."""
    total = len(indices)
    regions = stack.regions(indices, rows, cols)
    try:
        for k, region in enumerate(regions):
            yield k, region
            if progress is not None:
                progress(k + 1, total)
            if cancelled is not None and cancelled():
                raise Cancelled(f"cancelled after {k + 1} of {total} frames")
    finally:
        close = getattr(regions, "close", None)
        if close is not None:
            close()  # stops the read-ahead of a cancelled run


def series_csv(series: RoiSeries) -> str:
    """The series as CSV text: a header row ``frame,mean,min,max`` then one row per frame.

    Values are written with ``repr`` precision (float64 round-trips exactly).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["frame", "mean", "min", "max"])
    for row in zip(series.frames, series.mean, series.min, series.max):
        writer.writerow([int(row[0]), *(repr(float(v)) for v in row[1:])])
    return out.getvalue()
