"""Intensity along a line of a frame (bilinear interpolation), like scikit-image's
``profile_line`` with ``order=1`` and a one-pixel line width, reading only the pixels next to
the line."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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

    Only the pixels next to the line are read (at most four per sample): the cost follows the
    line's length, never the frame's size (nothing frame-sized is converted or copied).

    Parameters
    ----------
    image : (M, N) ndarray
        Any real dtype; not modified.
    src, dst : (row, col)
        End points, pixel centres at integer coordinates; points outside the image take the
        value of the nearest edge pixel.
    num : int, optional
        Number of samples (default: about one per pixel of length, both ends included).
    order : {0, 1}
        Interpolation: 1 is bilinear, 0 the nearest pixel.

    Returns
    -------
    distance : (num,) float64 ndarray
        Distance of each sample from ``src`` in pixels.
    values : (num,) float64 ndarray
        Interpolated intensity (a NaN pixel makes its neighbouring samples NaN).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"profile_line needs a 2-D image, not shape {image.shape}")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), not {order}")
    points = line_points(src, dst, num=num)
    rows, cols = image.shape
    r = np.clip(points[:, 0], 0, rows - 1)  # outside: the nearest edge pixel
    c = np.clip(points[:, 1], 0, cols - 1)
    if order == 0:
        values = image[np.rint(r).astype(np.intp), np.rint(c).astype(np.intp)]
        values = values.astype(np.float64)
    else:
        r0, c0 = np.floor(r).astype(np.intp), np.floor(c).astype(np.intp)
        r1, c1 = np.minimum(r0 + 1, rows - 1), np.minimum(c0 + 1, cols - 1)
        fr, fc = r - r0, c - c0
        top = (1 - fc) * image[r0, c0] + fc * image[r0, c1]
        bottom = (1 - fc) * image[r1, c0] + fc * image[r1, c1]
        values = (1 - fr) * top + fr * bottom
    length = float(np.hypot(*(np.asarray(dst, np.float64) - np.asarray(src, np.float64))))
    distance = np.linspace(0.0, length, len(points))
    return distance, np.asarray(values, np.float64)
