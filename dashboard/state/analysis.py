"""Analysis of the open stack: ROI time series, line profile, cost inspector (issue 7, 4–6).

:class:`AnalysisState` follows a :class:`~dashboard.state.viewer.ViewerState`: a new stack
resets the box, the line and the frame range; the line profile and the cost report follow the
frame on screen; the ROI series runs on the session's worker threads, newest request only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from pathlib import PurePosixPath

import numpy as np
import param

from ..analysis.cost import cost_report
from ..analysis.profile import profile_line
from ..analysis.roi import (
    Box,
    Cancelled,
    RoiSeries,
    box_from_bounds,
    clamp_box,
    frame_range,
    roi_series,
    series_csv,
)
from .tasks import Tasks, user_message
from .viewer import FiniteNumber, ViewerState

log = logging.getLogger(__name__)

#: Progress reaches the page at most this often (seconds) while a series runs.
PROGRESS_INTERVAL = 0.1


class AnalysisState(param.Parameterized):
    """ROI box and its time series, the profile line, the cost report of the open stack.

    The box is half-open in pixels, like numpy: columns ``x0:x1``, rows ``y0:y1`` (x = column,
    y = row, row 0 at the top). The line runs from ``(line_x0, line_y0)`` to
    ``(line_x1, line_y1)`` in the same coordinates (pixel centres are integers).
    """

    viewer = param.ClassSelector(class_=ViewerState, constant=True, precedence=-1)

    x0 = param.Integer(default=0, label="x0 (first column)")
    x1 = param.Integer(default=1, label="x1 (end column, excl.)")
    y0 = param.Integer(default=0, label="y0 (first row)")
    y1 = param.Integer(default=1, label="y1 (end row, excl.)")
    first = param.Integer(default=0, bounds=(0, None), label="First frame")
    last = param.Integer(default=0, bounds=(0, None), label="Last frame")
    step = param.Integer(default=1, bounds=(1, None), label="Step")
    run = param.Event(label="Compute ROI series")
    cancel = param.Event(label="Cancel")
    running = param.Boolean(default=False)
    progress = param.Integer(default=0, bounds=(0, 100), doc="Percent of the series done.")
    roi_status = param.String(default="Open a stack, then draw a box (or type its edges).")
    series = param.ClassSelector(class_=RoiSeries, default=None, allow_None=True, precedence=-1)

    line_x0 = FiniteNumber(default=0.0, label="Line start x")
    line_y0 = FiniteNumber(default=0.0, label="Line start y")
    line_x1 = FiniteNumber(default=1.0, label="Line end x")
    line_y1 = FiniteNumber(default=0.0, label="Line end y")
    line_status = param.String(default="", doc="Why a typed line end was not used.")
    click_line = param.Boolean(default=True, label="Clicks on the frame set the line ends")
    line_pending = param.Boolean(default=False, precedence=-1,
                                 doc="The start was clicked; the next click sets the end.")

    def __init__(self, viewer: ViewerState, *, tasks: Tasks | None = None, **params):
        super().__init__(viewer=viewer, **params)
        self.tasks = tasks or viewer.tasks
        self._lock = threading.Lock()
        self._job: threading.Event | None = None  # the running series' cancel flag
        self._generation = 0
        self._closed = False
        #: Requests and bytes of each series' own handle, summed (``regions_read``, ...).
        self.series_reads: dict[str, int] = {}
        self._clamping = False
        viewer.param.watch(self._on_stack, "stack")
        self._on_stack()

    # -- following the viewer -------------------------------------------------------------

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.viewer.frame_shape)

    def _on_stack(self, *_event) -> None:
        """A new stack: cancel the series, a default box and line, the whole frame range."""
        self._stop_job()
        with self._lock:
            self._generation += 1  # whatever a running series still posts is now stale
        stack = self.viewer.stack
        if stack is None:
            self.param.update(series=None, running=False, progress=0, line_status="",
                              roi_status="Open a stack, then draw a box (or type its edges).")
            return
        rows, cols = self.frame_shape
        n = len(stack)
        self.param.first.bounds = self.param.last.bounds = (0, max(0, n - 1))
        # The line's ends stay on the frame (pixel centres 0..cols-1, 0..rows-1).
        for name, size in (("line_x0", cols), ("line_x1", cols), ("line_y0", rows),
                           ("line_y1", rows)):
            self.param[name].bounds = (0.0, float(max(0, size - 1)))
        box = clamp_box(Box(cols // 4, cols - cols // 4, rows // 4, rows - rows // 4),
                        (rows, cols))
        self._clamping = True
        try:
            self.param.update(
                x0=box.x0, x1=box.x1, y0=box.y0, y1=box.y1, first=0, last=max(0, n - 1), step=1,
                series=None, running=False, progress=0, line_pending=False, line_status="",
                line_x0=float(cols // 4), line_y0=float(rows // 2),
                line_x1=float(max(0, cols - 1 - cols // 4)), line_y1=float(rows // 2),
                roi_status=f"Box {box.label()} ({box.size} pixels): press Compute ROI series.",
            )
        finally:
            self._clamping = False

    # -- the box --------------------------------------------------------------------------

    def box(self) -> Box:
        """The current box (always inside the frame)."""
        return clamp_box(Box(self.x0, self.x1, self.y0, self.y1), self._shape_or_one())

    def _shape_or_one(self) -> tuple[int, int]:
        rows, cols = self.frame_shape
        return max(1, rows), max(1, cols)

    def set_box(self, box: Box) -> None:
        """Set the box (clamped to the frame)."""
        box = clamp_box(box, self._shape_or_one())
        self.param.update(x0=box.x0, x1=box.x1, y0=box.y0, y1=box.y1)

    def set_bounds(self, bounds) -> None:
        """Set the box from a rectangle drawn in data coordinates ``(left, bottom, right, top)``."""
        if bounds is None:
            return
        self.set_box(box_from_bounds(bounds, self._shape_or_one()))

    @param.depends("x0", "x1", "y0", "y1", watch=True)
    def _clamp(self) -> None:
        if self._clamping:
            return
        box = self.box()
        self._clamping = True
        try:
            self.param.update(x0=box.x0, x1=box.x1, y0=box.y0, y1=box.y1)
        finally:
            self._clamping = False
        if not self.running and self.viewer.stack is not None:
            self.roi_status = f"Box {box.label()} ({box.size} pixels): press Compute ROI series."

    def indices(self) -> range:
        """The frames of the series: ``first..last`` (inclusive) every ``step``."""
        return frame_range(self.first, self.last, self.step, self.viewer.n_frames)

    # -- the series -----------------------------------------------------------------------

    @param.depends("run", watch=True)
    def _on_run(self) -> None:
        self.start_series()

    @param.depends("cancel", watch=True)
    def _on_cancel(self) -> None:
        if self._stop_job():
            self.roi_status = "Cancelling…"

    def start_series(self) -> bool:
        """Compute the series of the current box and range in the background (cancels any
        running one). ``False`` when there is nothing to compute."""
        stack = self.viewer.stack
        if stack is None or self._closed:
            self.roi_status = "Open a stack first."
            return False
        box, indices = self.box(), self.indices()
        if len(indices) == 0:
            self.roi_status = "The frame range is empty."
            return False
        self._stop_job()
        cancel = threading.Event()
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._job = cancel
        self.param.update(running=True, progress=0,
                          roi_status=f"Computing {box.label()}: 0 of {len(indices)} frames…")
        if self.tasks.submit(self._compute, self._opener(stack), box, indices, cancel,
                             generation) is None:
            self.param.update(running=False, roi_status="The session is closed.")
            return False
        return True

    def _opener(self, stack):
        """How the series gets its own handle: reopened from the stack's spec through the
        session's provider (the viewer may close its handle meanwhile)."""
        browser = self.viewer.browser
        provider = browser.provider if browser is not None else None
        if provider is None:  # a viewer without a session (notebooks): borrow its stack
            return lambda: contextlib.nullcontext(stack)
        spec = stack.spec()
        return lambda: provider.reopen(spec)

    def _count(self, stack) -> None:
        stats = stack.stats
        with self._lock:
            for name in ("regions_read", "data_requests", "data_bytes"):
                self.series_reads[name] = self.series_reads.get(name, 0) + int(stats[name])

    def _stop_job(self) -> bool:
        with self._lock:
            job, self._job = self._job, None
        if job is None:
            return False
        job.set()
        return True

    def _current(self, generation: int) -> bool:
        """Whether ``generation`` is the newest series (and the session is open)."""
        with self._lock:
            return generation == self._generation and not self._closed

    def _compute(self, opener, box: Box, indices: range, cancel: threading.Event,
                 generation: int) -> None:
        last_post = [0.0]
        total = len(indices)

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last_post[0] < PROGRESS_INTERVAL:
                return
            last_post[0] = now
            self.tasks.post(self._progress, generation, done, total, box)

        t0 = time.perf_counter()
        try:
            with opener() as stack:  # this series' own handle
                try:
                    series = roi_series(stack, box, indices, progress=progress,
                                        cancelled=cancel.is_set)
                finally:
                    self._count(stack)
        except Cancelled as exc:
            self.tasks.post(self._ended, generation, f"Cancelled: {exc}.")
            return
        except Exception as exc:  # noqa: BLE001 - action boundary
            if cancel.is_set():  # the stack was closed under a cancelled series
                self.tasks.post(self._ended, generation, "Cancelled.")
                return
            self.tasks.post(self._ended, generation,
                            user_message(exc, "compute the ROI series"))
            return
        seconds = time.perf_counter() - t0
        self.tasks.post(self._finished, generation, series,
                        f"{box.label()}: {total} frames in {seconds:.1f} s.")

    def _progress(self, generation: int, done: int, total: int, box: Box) -> None:
        if self._current(generation):
            self.param.update(progress=int(100 * done / max(1, total)),
                              roi_status=f"Computing {box.label()}: {done} of {total} frames…")

    def _ended(self, generation: int, message: str) -> None:
        if self._current(generation):  # else a newer series (or stack) owns the status line
            with self._lock:
                self._job = None
            self.param.update(running=False, roi_status=message)

    def _finished(self, generation: int, series: RoiSeries, message: str) -> None:
        if self._current(generation):
            with self._lock:
                self._job = None
            self.param.update(series=series, running=False, progress=100, roi_status=message)

    def csv_text(self) -> str:
        """The last series as CSV (header ``frame,mean,min,max``); header only when none."""
        if self.series is None:
            return "frame,mean,min,max\n"
        return series_csv(self.series)

    def csv_file(self) -> io.BytesIO:
        """:meth:`csv_text` as a file object (for a download button)."""
        return io.BytesIO(self.csv_text().encode("utf-8"))

    def csv_filename(self) -> str:
        """``roi_<file>_x0-x1_y0-y1.csv`` for the last series (names only, nothing secret)."""
        series = self.series
        stem = PurePosixPath(self.viewer.url or "stack").stem or "stack"
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60]
        if series is None:
            return f"roi_{stem}.csv"
        b = series.box
        return f"roi_{stem}_x{b.x0}-{b.x1}_y{b.y0}-{b.y1}.csv"

    # -- the line -------------------------------------------------------------------------

    def set_line(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Set the line's ends (clamped into the frame)."""
        rows, cols = self._shape_or_one()
        clip_x = lambda v: float(min(max(float(v), 0.0), cols - 1))  # noqa: E731
        clip_y = lambda v: float(min(max(float(v), 0.0), rows - 1))  # noqa: E731
        self.param.update(line_x0=clip_x(x0), line_y0=clip_y(y0), line_x1=clip_x(x1),
                          line_y1=clip_y(y1), line_pending=False)

    @param.depends("line_x0", "line_y0", "line_x1", "line_y1", watch=True)
    def _line_moved(self) -> None:
        self.line_status = ""  # a refused value's message is stale once the line moves

    def click(self, x: float | None, y: float | None) -> None:
        """A click on the frame at ``(x, y)``: the first sets the line's start, the next its end."""
        if x is None or y is None or not self.click_line or self.viewer.stack is None:
            return
        if not self.line_pending:
            self.set_line(x, y, x, y)
            self.line_pending = True
        else:
            self.set_line(self.line_x0, self.line_y0, x, y)

    def profile(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(distance, values)`` along the line on the frame on screen, ``None`` without one."""
        frame = self.viewer.frame
        if frame is None or frame.ndim != 2:
            return None
        return profile_line(frame, (self.line_y0, self.line_x0), (self.line_y1, self.line_x1))

    # -- cost -----------------------------------------------------------------------------

    def cost(self) -> dict | None:
        """:func:`~dashboard.analysis.cost.cost_report` of the open stack (``None`` without one)."""
        stack = self.viewer.stack
        if stack is None:
            return None
        try:
            return cost_report(stack)
        except Exception:  # noqa: BLE001 - e.g. the stack was closed under us
            log.debug("cost report failed", exc_info=True)
            return None

    # -- lifetime -------------------------------------------------------------------------

    def wait_series(self, timeout: float = 60.0) -> bool:
        """Block until no series is running (tests, notebooks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return True
            self.tasks.wait(timeout=0.2)
            if not self.tasks.busy:
                time.sleep(0.005)
        return not self.running

    def close(self) -> None:
        """Cancel a running series; later results are dropped (the session is closing)."""
        self._stop_job()
        with self._lock:
            self._closed = True

