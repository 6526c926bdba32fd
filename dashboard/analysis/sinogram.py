"""A sinogram (or kymograph): one row, or one column, of every frame of a range, stacked.

Frames are read through :meth:`~dashboard.hdf5.stack.FrameStack.regions`, so only the chunks
that hold the line cross the network (the tiles on that row of a tiled file; the whole chunk
of each frame otherwise), streamed: the stack is never held, only the image being built.
:func:`forecast` says beforehand what that costs.

Examples
--------
>>> Line("row", 3).bounds((8, 10))
((3, 4), (0, 10))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..storage.listing import human_size
from .roi import each_region

#: Pixels a sinogram may hold at most (frames × the line's length): 64 Mi.
MAX_PIXELS = 64 * 1024**2


@dataclass(frozen=True)
class Line:
    """A row (``axis="row"``) or a column (``"column"``) of the frame, by its index."""

    axis: str
    index: int

    def bounds(self, shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(rows, cols)`` of the line in a frame of ``shape``, half-open."""
        rows, cols = shape
        if self.axis == "row":
            return (self.index, self.index + 1), (0, cols)
        return (0, rows), (self.index, self.index + 1)

    def length(self, shape: tuple[int, int]) -> int:
        return shape[1] if self.axis == "row" else shape[0]

    def label(self) -> str:
        return f"{self.axis} {self.index}"


def check(line: Line, shape: tuple[int, int], frames: int) -> str:
    """Why this sinogram cannot be built ("" when it can)."""
    size = shape[0] if line.axis == "row" else shape[1]
    if line.axis not in ("row", "column"):
        return f"A sinogram follows a row or a column, not {line.axis!r}."
    if not 0 <= line.index < size:
        return f"The frame has {size} {line.axis}s (0 to {size - 1}); {line.index} is outside."
    if frames < 1:
        return "The frame range is empty."
    if frames * line.length(shape) > MAX_PIXELS:
        return (f"{frames} frames × {line.length(shape)} pixels is more than this view holds "
                f"({MAX_PIXELS // 1024**2} Mi pixels): choose a shorter range or a larger step.")
    return ""


def forecast(stack, line: Line, indices: Sequence[int]) -> str:
    """What building the sinogram will read, in words (reads only the chunk index)."""
    rows, cols = line.bounds(tuple(stack.frame_shape))
    cost = stack.region_cost(indices, rows, cols)
    n = len(indices)
    if cost["bytes"] is None:
        return (f"{line.label().capitalize()} of {n} frames: read through h5py, so its cost is "
                "not known beforehand.")
    frame_bytes = int(np.prod(stack.frame_shape)) * stack.dtype.itemsize * n
    pieces = cost["pieces"]
    layout = "ranged reads" if stack.layout == "contiguous" else "chunks"
    share = f"{100 * cost['bytes'] / frame_bytes:.0f} %" if frame_bytes else "—"
    return (f"{line.label().capitalize()} of {n} frames will read {human_size(cost['bytes'])} "
            f"({pieces} {layout}; {share} of those frames' decoded size).")


def sinogram(stack, line: Line, indices: Sequence[int], *,
             progress: Callable[[int, int], None] | None = None,
             cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """The line of each frame of ``indices``, one per row of the result
    (``len(indices) × length``, the stack's dtype)."""
    indices = [int(i) for i in indices]
    shape = tuple(stack.frame_shape)
    problem = check(line, shape, len(indices))
    if problem:
        raise ValueError(problem)
    out = np.empty((len(indices), line.length(shape)), dtype=stack.dtype)
    for k, region in each_region(stack, indices, *line.bounds(shape), progress=progress,
                                 cancelled=cancelled):
        out[k] = region[0] if line.axis == "row" else region[:, 0]
    return out
