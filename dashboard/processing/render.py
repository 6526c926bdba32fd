"""Turning one raw frame into output bytes, the same way on local threads and Dask workers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from .._version import __version__
from . import export
from .flats import raw_indices
from .pipeline import PERCENTILES, InterpolatedFlat, Workspace


@dataclass
class Recipe:
    """Everything needed to turn a raw frame into output bytes; picklable (no stack, no output)."""

    stem: str
    fmt: str
    png_level: int
    sigma: float
    shape: tuple[int, int]
    flat: np.ndarray  # already floored at 1e-6, the dark taken off (floor_flat)
    url: str
    dataset: str
    etag: str
    flat_range: tuple[int, int] | None  # the frames before Start, or None (another source)
    dark: np.ndarray | None = None  # normalized, or None (no dark)
    fields: dict | None = None  # where the flat and dark came from, when not before Start
    projections: tuple[int, ...] | None = None  # the stack's index of each projection number
    #: Flats before and after the scan, interpolated by each frame's position (``flat`` is
    #: then only the first frame's).
    interpolated: InterpolatedFlat | None = None

    def raw(self, indices) -> list[int]:
        """The stack's frame indices of these output numbers (projections with an image key)."""
        return raw_indices(self.projections, indices)

    def describe(self, index: int) -> str:
        record = {
            "software": f"echo-s3-viewer {__version__}", "source": self.url,
            "dataset": self.dataset, "etag": self.etag, "frame": int(index),
            "flat": list(self.flat_range) if self.flat_range else None, "sigma": self.sigma,
            "percentiles": list(PERCENTILES),
        }
        if self.fields:
            record.update(self.fields)
        return json.dumps(record, sort_keys=True)

    def render(self, workspace: Workspace, index: int, frame: np.ndarray) -> tuple[bytes, dict]:
        t0 = time.perf_counter()
        position = self.raw([index])[0] if self.interpolated is not None else None
        image = workspace.run(frame, position)
        t1 = time.perf_counter()
        data = export.encode(
            image, self.fmt, png_level=self.png_level,
            description=self.describe(index) if self.fmt == "tiff" else "",
            software=f"echo-s3-viewer {__version__}" if self.fmt == "tiff" else "",
        )
        t2 = time.perf_counter()
        return data, {"compute": t1 - t0, "encode": t2 - t1}

    def name(self, index: int) -> str:
        return export.output_name(self.stem, index, self.fmt)

    def workspace(self) -> Workspace:
        """Fresh buffers for one thread (the floored flat is shared read-only)."""
        return Workspace(self.shape, self.flat, self.sigma, dark=self.dark, floored=True,
                         interpolated=self.interpolated)


def single_threaded_opencv() -> None:
    """One OpenCV thread per pipeline thread: the batch's own threads are the parallelism.

    (OpenCV's thread count is process-wide.)
    """
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
