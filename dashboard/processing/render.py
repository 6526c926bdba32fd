"""Turning one raw frame into output bytes, the same way on local threads and Dask workers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from .._version import __version__
from . import export
from .pipeline import PERCENTILES, Workspace


@dataclass
class Recipe:
    """Everything needed to turn a raw frame into output bytes; picklable (no stack, no output)."""

    stem: str
    fmt: str
    png_level: int
    sigma: float
    shape: tuple[int, int]
    flat: np.ndarray  # already floored at 1e-6 (floor_flat)
    url: str
    dataset: str
    etag: str
    flat_range: tuple[int, int]

    def describe(self, index: int) -> str:
        return json.dumps({
            "software": f"echo-s3-viewer {__version__}", "source": self.url,
            "dataset": self.dataset, "etag": self.etag, "frame": int(index),
            "flat": list(self.flat_range), "sigma": self.sigma, "percentiles": list(PERCENTILES),
        }, sort_keys=True)

    def render(self, workspace: Workspace, index: int, frame: np.ndarray) -> tuple[bytes, dict]:
        t0 = time.perf_counter()
        image = workspace.run(frame)
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
        return Workspace(self.shape, self.flat, self.sigma, floored=True)


def single_threaded_opencv() -> None:
    """One OpenCV thread per pipeline thread: the batch's own threads are the parallelism.

    (OpenCV's thread count is process-wide.)
    """
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
