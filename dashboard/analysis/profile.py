"""Intensity along a line of a frame (bilinear interpolation), like scikit-image's
``profile_line`` with ``order=1`` and a one-pixel line width."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def line_points(src: Sequence[float], dst: Sequence[float], *,
                num: int | None = None) -> np.ndarray:
    """Evenly spaced points from ``src`` to ``dst`` (both included).

    Parameters
    ----------
    src, dst : (row, col)
        End points in pixel coordinates (pixel centres are integers).
    num : int, optional
        Number of points; default ``ceil(length) + 1``, i.e. about one sample per pixel.

    Returns
    -------
    (num, 2) float64 ndarray
        ``(row, col)`` of each point.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if num is None:
        num = int(math.ceil(float(np.hypot(*(dst - src))))) + 1
    if num < 1:
        raise ValueError(f"a line needs at least one point, not {num}")
    t = np.linspace(0.0, 1.0, num)[:, None] if num > 1 else np.zeros((1, 1))
    return src + t * (dst - src)


def profile_line(image: np.ndarray, src: Sequence[float], dst: Sequence[float], *,
                 num: int | None = None, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Intensity of ``image`` along the segment ``src`` → ``dst``.

    Parameters
    ----------
    image : (M, N) ndarray
        Any real dtype; not modified.
    src, dst : (row, col)
        End points, pixel centres at integer coordinates; points outside the image take the
        value of the nearest edge pixel.
    num : int, optional
        Number of samples (default: about one per pixel of length, both ends included).
    order : int
        Spline order of the interpolation: 1 is bilinear, 0 nearest pixel.

    Returns
    -------
    distance : (num,) float64 ndarray
        Distance of each sample from ``src`` in pixels.
    values : (num,) float64 ndarray
        Interpolated intensity (NaN pixels propagate to their neighbourhood).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"profile_line needs a 2-D image, not shape {image.shape}")
    points = line_points(src, dst, num=num)
    values = ndimage.map_coordinates(image.astype(np.float64, copy=False), points.T,
                                     order=order, mode="nearest")
    length = float(np.hypot(*(np.asarray(dst, np.float64) - np.asarray(src, np.float64))))
    distance = np.linspace(0.0, length, len(points))
    return distance, values
