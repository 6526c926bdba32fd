"""The processing pipeline, as pure functions in the scikit-image manner.

normalize → flat field → linear 1 %/99 % stretch → Gaussian smoothing (the display mapping,
equalization included, belongs to the viewer, not here). Every function takes an image, returns
a new array and never modifies its input. The same code runs the dashboard preview, the batch,
the CLI and the Dask workers.

The numbers are fixed (scientists compare them with their MATLAB/Python references):

1. :func:`normalize`: integer frames become float32 divided by the dtype's maximum (uint16 /
   65535); float frames become float32 unchanged.
2. :func:`flat_from_frames`: the flat is the mean of the 20 normalized frames ``start-20 …
   start-1`` (float64 accumulation, float32 result); :func:`flat_field` divides by
   ``max(flat, 1e-6)``. A run may take its flat, and a dark, from the file instead
   (:mod:`~dashboard.processing.flats`); with a dark ``D`` the correction is
   ``(I - D) / max(F - D, 1e-6)``.
3. :func:`linear_stretch`: ``lo, hi`` are the 1st and 99th percentiles (numpy's default linear
   interpolation, computed exactly by :func:`percentiles`); ``clip((x - lo) / (hi - lo), 0, 1)``;
   all zeros when ``hi <= lo``.
4. :func:`gaussian`: ``scipy.ndimage.gaussian_filter(x, sigma)`` (mode ``reflect``, truncate 4.0).
   OpenCV's separable filter with scipy's own kernel and ``BORDER_REFLECT`` computes the same
   (measured max difference 4e-7 on [0, 1] data, 2048² ~10× faster); scipy is the fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_SIGMA",
    "FLAT_FLOOR",
    "FLAT_FRAMES",
    "PERCENTILES",
    "Stages",
    "flat_field",
    "flat_from_frames",
    "gaussian",
    "gaussian_kernel",
    "linear_stretch",
    "normalize",
    "percentiles",
    "process",
    "to_uint8",
]

DEFAULT_SIGMA = 4.0
SIGMA_BOUNDS = (0.01, 100.0)  # pixels: below, the kernel is [1]; above, it outgrows any frame
FLAT_FRAMES = 20  # frames start-20 … start-1 make the flat
FLAT_FLOOR = 1e-6  # the flat is floored here before dividing
PERCENTILES = (1.0, 99.0)
TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default

try:  # OpenCV is optional: the filter falls back to scipy when it is missing
    import cv2 as _cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is not installed
    _cv2 = None

# |x| up to this bound keeps OpenCV's float32 separable filter within 1e-5 of scipy.
_CV2_MAX_ABS = 16.0


# -- 1. normalize ----------------------------------------------------------------------------

def normalize(image: np.ndarray) -> np.ndarray:
    """Scale a frame to float32 in [0, 1] by its dtype's maximum.

    Parameters
    ----------
    image : (M, N) ndarray
        Integer frames (e.g. uint16) are divided by ``np.iinfo(dtype).max`` (uint16: 65535);
        float frames are converted to float32 unchanged; booleans become 0/1.

    Returns
    -------
    (M, N) float32 ndarray
        A new array.
    """
    return _normalize(np.asarray(image))


def _normalize(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    kind = image.dtype.kind
    if kind in "ui":
        maxval = np.iinfo(image.dtype).max
        if image.dtype.itemsize <= 2:
            # Exact in float32: the float32 quotient equals the float64 one rounded to float32.
            return np.divide(image, np.float32(maxval), out=out, dtype=np.float32)
        result = np.divide(image, np.float64(maxval), dtype=np.float64)
    elif kind in "fb":
        result = image
    else:
        raise TypeError(f"cannot normalize an image of dtype {image.dtype}")
    if out is None:
        return result.astype(np.float32, copy=True)
    np.copyto(out, result, casting="unsafe")
    return out


# -- 2. flat field ---------------------------------------------------------------------------

def flat_from_frames(frames) -> np.ndarray:
    """The flat: the mean of normalized frames, accumulated in float64, returned as float32.

    Streams: one frame at a time is held, never a stack.

    Parameters
    ----------
    frames : iterable of (M, N) ndarray
        Raw frames (any dtype :func:`normalize` accepts), usually the 20 frames before the
        first frame processed.

    Returns
    -------
    (M, N) float32 ndarray

    Raises
    ------
    ValueError
        If ``frames`` is empty or the frames differ in shape.
    """
    total = None
    count = 0
    for frame in frames:
        norm = normalize(frame)
        if total is None:
            total = norm.astype(np.float64)
        elif norm.shape != total.shape:
            raise ValueError(f"frame shapes differ: {norm.shape} and {total.shape}")
        else:
            total += norm
        count += 1
    if total is None:
        raise ValueError("no frames to average for the flat")
    total /= count
    return total.astype(np.float32)


def flat_range(start: int) -> range:
    """The frames whose mean is the flat of a run starting at ``start``: the
    :data:`FLAT_FRAMES` frames just before it."""
    return range(start - FLAT_FRAMES, start)


def flat_field(image: np.ndarray, flat: np.ndarray, dark: np.ndarray | None = None
               ) -> np.ndarray:
    """Divide a normalized frame by the flat, floored at 1e-6 (dark-corrected when given).

    Parameters
    ----------
    image : (M, N) float ndarray
        A normalized frame.
    flat : (M, N) float ndarray
        The flat (see :func:`flat_from_frames`).
    dark : (M, N) float ndarray, optional
        The dark, normalized the same way (the mean of the dark frames).

    Returns
    -------
    (M, N) float32 ndarray
        ``image / max(flat, 1e-6)``, or ``(image - dark) / max(flat - dark, 1e-6)``.
    """
    image = np.asarray(image, dtype=np.float32)
    dark = None if dark is None else np.asarray(dark, dtype=np.float32)
    return _flat_field(image, floor_flat(flat, dark), dark=dark)


@dataclass(frozen=True)
class InterpolatedFlat:
    """Flats taken before and after a scan, interpolated by position: the flat of the frame at
    stack index ``p`` is ``(1 - w) * before + w * after`` with ``w = (p - first) / (last -
    first)`` clipped to [0, 1], ``first`` and ``last`` the mean stack index of each group.

    >>> flat = InterpolatedFlat(np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32),
    ...                         first=1.0, last=11.0)
    >>> [flat.weight(p) for p in (0, 1, 6, 11, 20)]
    [0.0, 0.0, 0.5, 1.0, 1.0]
    >>> float(flat.at(6)[0, 0])
    0.5
    """

    before: np.ndarray  # the mean of the normalized flats before the projections (float32)
    after: np.ndarray  # ... and after them
    first: float  # the mean stack index of the flats before
    last: float  # ... and after

    def weight(self, position: float) -> float:
        return float(min(1.0, max(0.0, (position - self.first) / (self.last - self.first))))

    def at(self, position: float, out: np.ndarray | None = None,
           delta: np.ndarray | None = None) -> np.ndarray:
        """The flat of the frame at stack index ``position`` (float32, not floored);
        ``delta`` (``after - before``) and ``out`` spare a batch's allocations."""
        delta = np.subtract(self.after, self.before) if delta is None else delta
        flat = np.multiply(delta, np.float32(self.weight(position)), out=out)
        return np.add(flat, self.before, out=flat)


def floor_flat(flat: np.ndarray, dark: np.ndarray | None = None) -> np.ndarray:
    """``max(flat, 1e-6)`` (or ``max(flat - dark, 1e-6)``) as float32: the divisor of
    :func:`flat_field`, computed once per run."""
    flat = np.asarray(flat, dtype=np.float32)
    if dark is not None:
        dark = np.asarray(dark, dtype=np.float32)
        if dark.shape != flat.shape:
            raise ValueError(f"the dark's shape {dark.shape} does not match the flat's "
                             f"{flat.shape}")
        flat = flat - dark
    return np.maximum(flat, np.float32(FLAT_FLOOR))


def _flat_field(image: np.ndarray, floored: np.ndarray, out: np.ndarray | None = None, *,
                dark: np.ndarray | None = None) -> np.ndarray:
    if image.shape != floored.shape:
        raise ValueError(f"frame shape {image.shape} does not match the flat's {floored.shape}")
    if dark is not None:
        image = np.subtract(image, dark, out=out, dtype=np.float32)
    return np.divide(image, floored, out=out, dtype=np.float32)


# -- 3. linear stretch -----------------------------------------------------------------------

def percentiles(image: np.ndarray, q=PERCENTILES) -> tuple[float, ...]:
    """Percentiles exactly as ``np.percentile(image, q)`` (linear interpolation), but faster.

    Only the order statistics that the interpolation needs are selected: a strided sample
    brackets them, the few pixels beyond each bracket are partitioned exactly. Falls back to
    ``np.percentile`` for small images, NaNs, or when a bracket misses.

    Parameters
    ----------
    image : ndarray
        Any shape; all values count.
    q : sequence of float
        Percentiles in [0, 100].

    Returns
    -------
    tuple of float
    """
    flat = np.asarray(image).reshape(-1)
    n = flat.size
    if n == 0:
        raise ValueError("percentiles of an empty image")
    qs = [float(v) for v in q]
    if any(not 0.0 <= v <= 100.0 for v in qs):
        raise ValueError(f"percentiles must lie in [0, 100], got {qs}")
    if n < 4096 or (flat.dtype.kind == "f" and np.isnan(flat).any()):
        return tuple(float(v) for v in np.percentile(flat, qs))
    step = max(1, n // 16384)
    sample = np.sort(flat[::step])
    m = sample.size
    result = []
    for p in qs:
        position = p / 100.0 * (n - 1)
        below = math.floor(position)
        above = min(below + 1, n - 1)
        t = position - below
        fraction = p / 100.0
        if fraction <= 0.5:
            # All pixels <= a threshold safely above the target rank: the smallest values.
            threshold = sample[min(m - 1, int(fraction * m) + max(8, m // 100))]
            subset = flat[flat <= threshold]
            offset = 0
        else:
            threshold = sample[max(0, int(fraction * m) - max(8, m // 100))]
            subset = flat[flat >= threshold]
            offset = n - subset.size
        lo_rank, hi_rank = below - offset, above - offset
        if lo_rank < 0 or hi_rank >= subset.size:
            return tuple(float(v) for v in np.percentile(flat, qs))
        part = np.partition(subset, sorted({lo_rank, hi_rank}))
        result.append(_lerp(part[lo_rank], part[hi_rank], t))
    return tuple(result)


def _lerp(a, b, t: float) -> float:
    """numpy's percentile interpolation (``numpy.lib._function_base_impl._lerp``)."""
    if np.asarray(a).dtype.kind != "f":
        a, b = np.float64(a), np.float64(b)
    diff = b - a
    if t >= 0.5:
        return float(b - np.float64(diff) * (1.0 - t))
    return float(a + np.float64(diff) * t)


def linear_stretch(image: np.ndarray, *, low: float = PERCENTILES[0],
                   high: float = PERCENTILES[1]) -> np.ndarray:
    """Stretch linearly between two percentiles and clip to [0, 1].

    Parameters
    ----------
    image : (M, N) float ndarray
        Usually the flat-corrected frame.
    low, high : float
        Percentiles (numpy's linear interpolation) mapped to 0 and 1; default 1 and 99.

    Returns
    -------
    (M, N) float32 ndarray
        ``clip((x - lo) / (hi - lo), 0, 1)``; all zeros when ``hi <= lo``.
    """
    image = np.asarray(image)
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    return _linear_stretch(image, low, high)


def _linear_stretch(image: np.ndarray, low: float, high: float,
                    out: np.ndarray | None = None) -> np.ndarray:
    lo, hi = percentiles(image, (low, high))
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    if not hi > lo:  # also catches NaN percentiles
        out.fill(0.0 if hi <= lo else np.nan)
        return out
    span = hi - lo
    if span >= max(abs(lo), abs(hi)) / 8:
        # float32 arithmetic is within ~5e-7 of the float64 formula here (lo's rounding to
        # float32, divided by a span not much smaller than lo, is the largest term).
        np.subtract(image, np.float32(lo), out=out)
        np.divide(out, np.float32(span), out=out)
    else:
        # Low contrast: float64, a block of rows at a time, so memory stays one frame.
        rows = max(1, (1 << 18) // max(1, image.shape[-1])) if image.ndim > 1 else image.size
        for r in range(0, image.shape[0], rows):
            block = image[r:r + rows].astype(np.float64)
            block -= lo
            block /= span
            out[r:r + rows] = block
    np.clip(out, 0.0, 1.0, out=out)
    return out


# -- 4. gaussian -----------------------------------------------------------------------------

def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (float(sigma) * float(sigma)) * x * x)
    return weights / weights.sum()


def gaussian(image: np.ndarray, *, sigma: float = DEFAULT_SIGMA,
             backend: str = "auto") -> np.ndarray:
    """Gaussian smoothing equal to ``scipy.ndimage.gaussian_filter(image, sigma)``.

    Mode ``reflect`` (OpenCV's ``BORDER_REFLECT``: the edge pixel repeated), truncate 4.0.

    Parameters
    ----------
    image : (M, N) ndarray
        Converted to float32.
    sigma : float
        Standard deviation in pixels, within :data:`SIGMA_BOUNDS` (0.01 to 100).
    backend : {"auto", "opencv", "scipy"}
        ``auto`` uses OpenCV for 2-D images with ``|x| <= 16`` (where it agrees with scipy within
        1e-5; in practice within 5e-7) and scipy otherwise.

    Returns
    -------
    (M, N) float32 ndarray
    """
    image = np.asarray(image, dtype=np.float32)
    if not SIGMA_BOUNDS[0] <= sigma <= SIGMA_BOUNDS[1]:
        raise ValueError(f"sigma must be {SIGMA_BOUNDS[0]:g} to {SIGMA_BOUNDS[1]:g}, got {sigma}")
    if backend not in ("auto", "opencv", "scipy"):
        raise ValueError(f"unknown backend {backend!r}")
    if backend == "auto":
        bounded = image.size == 0 or (
            image.ndim == 2 and float(np.max(np.abs(image))) <= _CV2_MAX_ABS
        )
        backend = "opencv" if bounded and _cv2 is not None else "scipy"
    return _gaussian(image, sigma, backend)


def _gaussian(image: np.ndarray, sigma: float, backend: str = "opencv",
              out: np.ndarray | None = None) -> np.ndarray:
    if backend == "opencv" and _cv2 is not None and image.ndim == 2 and image.size:
        kernel = gaussian_kernel(sigma)
        src = np.ascontiguousarray(image, dtype=np.float32)
        return _cv2.sepFilter2D(src, _cv2.CV_32F, kernel, kernel, dst=out,
                                borderType=_cv2.BORDER_REFLECT)
    from scipy import ndimage

    result = ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=TRUNCATE)
    if out is None:
        return result
    out[...] = result
    return out


def gaussian_backend() -> str:
    """The backend the batch uses: ``"opencv"`` when OpenCV is importable, else ``"scipy"``."""
    return "opencv" if _cv2 is not None else "scipy"


# -- the whole pipeline ----------------------------------------------------------------------

@dataclass(frozen=True)
class Stages:
    """Every stage of the pipeline for one frame (the dashboard's preview)."""

    original: np.ndarray
    normalized: np.ndarray
    flat_corrected: np.ndarray
    stretched: np.ndarray
    smoothed: np.ndarray

    NAMES = ("original", "normalized", "flat_corrected", "stretched", "smoothed")

    def items(self):
        """``(name, array)`` pairs in pipeline order."""
        return [(name, getattr(self, name)) for name in self.NAMES]


def process(frame: np.ndarray, flat: np.ndarray, sigma: float = DEFAULT_SIGMA, *,
            dark: np.ndarray | None = None, all_stages: bool = True):
    """Run the pipeline on one frame.

    Parameters
    ----------
    frame : (M, N) ndarray
        The raw frame (e.g. uint16).
    flat : (M, N) float ndarray
        The flat of the run (:func:`flat_from_frames`), not yet floored.
    sigma : float
        Gaussian sigma in pixels, > 0.
    dark : (M, N) float ndarray, optional
        The run's dark (normalized): the flat field becomes ``(I - D) / max(F - D, 1e-6)``.
    all_stages : bool
        Return every stage (:class:`Stages`) or only the smoothed float32 image.

    Returns
    -------
    Stages or (M, N) float32 ndarray
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"a frame must be 2-D, got shape {frame.shape}")
    workspace = Workspace(frame.shape, flat, sigma, dark=dark)
    if not all_stages:
        return workspace.run(frame).copy()
    normalized = _normalize(frame)
    corrected = _flat_field(normalized, workspace.floored, dark=workspace.dark)
    stretched = _linear_stretch(corrected, *PERCENTILES)
    smoothed = _gaussian(stretched, sigma, workspace.backend)
    return Stages(frame, normalized, corrected, stretched, smoothed)


class Workspace:
    """Preallocated float32 buffers for running the pipeline on many frames of one shape.

    Used by the batch (one per thread): :meth:`run` returns a view of an internal buffer that
    the next call overwrites. The arithmetic is exactly that of :func:`process`.
    """

    def __init__(self, shape, flat: np.ndarray, sigma: float, backend: str | None = None, *,
                 dark: np.ndarray | None = None, floored: bool = False,
                 interpolated: InterpolatedFlat | None = None):
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.shape = tuple(shape)
        self.sigma = float(sigma)
        self.dark = None if dark is None else np.asarray(dark, dtype=np.float32)
        # With flats before and after, each frame's flat is made (and floored) in its own
        # buffer: the same arithmetic as InterpolatedFlat.at, then floor_flat.
        self.interpolated = interpolated
        if interpolated is not None:
            self._delta = np.subtract(interpolated.after, interpolated.before)
            self._flat = np.empty(self.shape, dtype=np.float32)
        # floored=True: ``flat`` is already floor_flat()'s float32 result (the dark taken off),
        # shared read-only.
        self.floored = flat if floored else floor_flat(flat, self.dark)
        if self.floored.shape != self.shape:
            raise ValueError(
                f"frame shape {self.shape} does not match the flat's {self.floored.shape}")
        # Stretched values lie in [0, 1]: OpenCV is exact enough there whenever it is present.
        self.backend = backend or gaussian_backend()
        self._a = np.empty(self.shape, dtype=np.float32)
        self._b = np.empty(self.shape, dtype=np.float32)

    def run(self, frame: np.ndarray, position: int | None = None) -> np.ndarray:
        """The smoothed image of one raw frame (a buffer reused by the next call);
        ``position``: its index in the stack (needed with flats interpolated by position)."""
        frame = np.asarray(frame)
        if frame.shape != self.shape:
            raise ValueError(f"frame shape {frame.shape} does not match {self.shape}")
        a, b = self._a, self._b
        floored = self.floored
        if self.interpolated is not None:
            floored = self.interpolated.at(position, out=self._flat, delta=self._delta)
            if self.dark is not None:
                np.subtract(floored, self.dark, out=floored)
            np.maximum(floored, np.float32(FLAT_FLOOR), out=floored)
        _normalize(frame, out=a)
        _flat_field(a, floored, out=a, dark=self.dark)
        _linear_stretch(a, *PERCENTILES, out=b)
        return _gaussian(b, self.sigma, self.backend, out=a)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``round(clip(x, 0, 1) * 255)`` as uint8 (numpy rounding: halves to even; NaN → 0).

    Parameters
    ----------
    image : (M, N) float ndarray

    Returns
    -------
    (M, N) uint8 ndarray
    """
    x = np.asarray(image, dtype=np.float32)
    # clip(x, 0, 1) * 255 == clip(x * 255, 0, 255) exactly in float32 (rounding is monotone).
    scaled = np.multiply(x, np.float32(255))
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    if np.isnan(np.min(scaled)):  # one pass, no mask, in the usual NaN-free case
        np.nan_to_num(scaled, copy=False, nan=0.0)
    return scaled.astype(np.uint8)
