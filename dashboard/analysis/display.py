"""The display mapping of a frame: viewport sampling, contrast limits, histogram equalization.

Pure functions (numpy only). The frame view maps every frame on the server: the part of the
frame in view is sampled to about the plot's screen pixels (:func:`viewport_grid`), then mapped
through the colour limits, linearly or histogram-equalized *within* the limits, to 8-bit
indices into a 256-colour palette (:func:`display_lut`, :func:`to_indices`). The browser only
draws those indices through a fixed 256-entry palette, so what crosses the websocket is one byte
per displayed pixel (fewer while playing: see ``scale``), and the browser does no scan of the
pixels.

Examples
--------
>>> import numpy as np
>>> frame = np.arange(16, dtype=np.uint16).reshape(4, 4)
>>> lut = display_lut(frame, (0, 15), equalize=False)
>>> to_indices(frame, (0, 15), lut)[0]
array([ 0, 17, 34, 51], dtype=uint8)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Palette entries (the browser's colour mapper has exactly this many colours).
LEVELS = 256
#: Bins of the value axis between the limits; the lookup table maps a bin to a palette index.
BINS = 4096


@dataclass(frozen=True)
class Viewport:
    """Which pixels of a frame are drawn: ``rows`` and ``cols`` (index arrays or slices) of the
    frame, and the drawn rectangle ``(x0, y0, width, height)`` in frame pixels."""

    rows: np.ndarray | slice
    cols: np.ndarray | slice
    x0: int
    y0: int
    width: int
    height: int


def _span(ends, n: int) -> tuple[int, int]:
    """Frame pixels ``first .. last + 1`` whose squares ``[k - 0.5, k + 0.5]`` meet ``ends``."""
    if ends is None or any(v is None or not np.isfinite(v) for v in ends):
        return 0, n
    low, high = sorted(float(v) for v in ends)
    first = int(np.clip(np.floor(low + 0.5), 0, n - 1))
    return first, int(np.clip(np.ceil(high + 0.5), first + 1, n))


def viewport_grid(shape: tuple[int, int], x_range=None, y_range=None, *,
                  box: tuple[int, int], scale: float = 1.0) -> Viewport:
    """The frame pixels to draw for a plot of ``box`` screen pixels showing the given ranges.

    Parameters
    ----------
    shape : (rows, columns)
        The frame's shape.
    x_range, y_range : (start, end) or None
        The plot's ranges in frame pixel coordinates (x = column, y = row; either order);
        ``None`` for the whole frame.
    box : (width, height)
        The plot's data area in screen pixels.
    scale : float
        Fraction of the screen resolution to sample at (``0.7`` sends about half the pixels:
        used while playing or dragging).

    Returns
    -------
    Viewport
        Nearest-neighbour sample of the visible part: at most ``scale * box`` pixels per axis
        (a slice when the part in view has fewer pixels than that).
    """
    rows, cols = (int(n) for n in shape)
    c0, c1 = _span(x_range, cols)
    r0, r1 = _span(y_range, rows)
    box_w = max(1, int(round(box[0] * scale)))
    box_h = max(1, int(round(box[1] * scale)))

    def pick(first, last, wanted):
        if last - first <= wanted:
            return slice(first, last)
        # the centre of each of ``wanted`` equal parts of [first, last)
        return (first + (np.arange(wanted) + 0.5) * ((last - first) / wanted)).astype(np.intp)

    return Viewport(pick(r0, r1, box_h), pick(c0, c1, box_w), c0, r0, c1 - c0, r1 - r0)


def sample(frame: np.ndarray, viewport: Viewport) -> np.ndarray:
    """The pixels of ``viewport`` (C-contiguous; a new array, ``frame`` is not modified)."""
    rows, cols = viewport.rows, viewport.cols
    if isinstance(rows, slice) and isinstance(cols, slice):
        return np.array(frame[rows, cols], copy=True, order="C")
    picked = frame[rows] if not isinstance(rows, slice) else frame[rows]
    return np.ascontiguousarray(picked[:, cols])


def _value_bins(dtype: np.dtype, low: float, high: float, bins: int) -> np.ndarray:
    """The bin of every value a small unsigned integer dtype can hold."""
    every = np.arange(1 << (8 * dtype.itemsize), dtype=np.float64)
    return np.clip((every - low) * (bins / (high - low)), 0, bins - 1).astype(np.intp)


def _bins(values: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """The bin (0 .. bins - 1) of each value between ``low`` and ``high`` (clipped; NaN -> 0)."""
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        return _value_bins(values.dtype, low, high, bins)[values]
    scale = bins / (high - low)
    with np.errstate(invalid="ignore"):
        position = (values.astype(np.float32, copy=False) - np.float32(low)) * np.float32(scale)
        np.clip(position, 0, bins - 1, out=position)
    position[np.isnan(position)] = 0
    return position.astype(np.intp)


def display_lut(values: np.ndarray, limits, *, equalize: bool,
                bins: int = BINS) -> np.ndarray:
    """The lookup table from value bins to palette indices for this display.

    Parameters
    ----------
    values : ndarray
        The pixels on display (any shape, any real dtype); used only when ``equalize``.
    limits : (low, high)
        Colour limits (``high > low``); values outside take the end colours.
    equalize : bool
        ``False``: linear between the limits (as Bokeh's ``LinearColorMapper``). ``True``:
        histogram equalization *within* the limits (as Bokeh's ``EqHistColorMapper`` and
        Datashader's ``eq_hist``): each palette colour covers about the same number of the
        displayed pixels that lie between the limits.
    bins : int
        Resolution of the value axis between the limits.

    Returns
    -------
    (bins,) uint8 ndarray
    """
    if not equalize:
        return np.minimum((np.arange(bins) * LEVELS) // bins, LEVELS - 1).astype(np.uint8)
    low, high = (float(v) for v in limits)
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        # Count each value once, then gather the counts into bins (no per-pixel arithmetic).
        per_value = np.bincount(values.ravel(), minlength=1 << (8 * values.dtype.itemsize))
        every = np.arange(per_value.size)
        per_value[(every < low) | (every > high)] = 0
        counts = np.bincount(_value_bins(values.dtype, low, high, bins), weights=per_value,
                             minlength=bins)
    else:
        inside = values[(values >= low) & (values <= high)]
        counts = np.bincount(_bins(inside.ravel(), low, high, bins), minlength=bins)
    if counts.sum() == 0:
        return display_lut(values, limits, equalize=False, bins=bins)
    cdf = np.cumsum(counts, dtype=np.float64)
    # The first occupied bin starts the ramp (as eq_hist does), the last ends it.
    first = cdf[np.flatnonzero(counts)[0]]
    span = cdf[-1] - first
    if span <= 0:
        return display_lut(values, limits, equalize=False, bins=bins)
    ramp = (cdf - first) / span
    return np.clip(np.floor(ramp * LEVELS), 0, LEVELS - 1).astype(np.uint8)


def to_indices(values: np.ndarray, limits, lut: np.ndarray) -> np.ndarray:
    """Palette indices (uint8, same shape) of ``values`` through ``lut`` (see
    :func:`display_lut`); NaN takes index 0."""
    low, high = (float(v) for v in limits)
    values = np.asarray(values)
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        return lut[_value_bins(values.dtype, low, high, len(lut))][values]
    return lut[_bins(values, low, high, len(lut))]


def colorbar_ticks(limits, lut: np.ndarray, *, n: int = 5) -> dict[int, float]:
    """Where ``n`` evenly spaced palette positions fall in data values: ``{index: value}``.

    For the colour bar of an index image: its axis runs over the palette (0-255) and each tick
    is labelled with the data value that gets that colour (linear: evenly spaced values;
    equalized: the values at those quantiles of the displayed pixels).
    """
    low, high = (float(v) for v in limits)
    bins = len(lut)
    edges = low + (high - low) * np.arange(bins + 1) / bins
    ticks = {}
    for index in np.linspace(0, LEVELS - 1, n):
        wanted = int(round(index))
        first = int(np.searchsorted(lut, wanted, side="left"))
        if first >= bins:
            first = bins - 1
        # the ends are the limits themselves; between, where that colour starts
        ticks[wanted] = low if wanted == 0 else high if wanted == LEVELS - 1 else float(
            edges[first])
    return ticks


def frame_range(values: np.ndarray) -> tuple[float, float]:
    """The finite range of ``values`` with ``high > low`` (``(0, 1)`` when there is none)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def raw_copy(values: np.ndarray) -> np.ndarray:
    """``values`` in a dtype the browser can hold (at most 4 bytes: float64/int64 narrowed)."""
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=False)
    if values.dtype.kind in "ui" and values.dtype.itemsize > 4:
        return values.astype(np.float64).astype(np.float32)
    if values.dtype.kind == "b":
        return values.astype(np.uint8)
    return values
