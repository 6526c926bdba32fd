"""The Frames step's sinogram (kymograph): a row or column of the frame, across the frames of
the analysis range (:class:`~dashboard.state.analysis.AnalysisState`'s First/Last/Step).

Choosing the line says at once, in the background, what building it will read (the chunk
index only); **Compute sinogram** builds it on the session's worker threads with progress and
Cancel, on a handle of its own; :meth:`SinogramState.go_to` (a click on the image) shows that
frame.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import param

from ..analysis.roi import Cancelled
from ..analysis.sinogram import Line, check, forecast, sinogram
from ..storage.listing import human_size
from .analysis import PROGRESS_INTERVAL, AnalysisState
from .tasks import LatestOnly, user_message


class SinogramState(param.Parameterized):
    """Which line, what it will cost, the image once built."""

    axis = param.Selector(default="row", objects={"Row": "row", "Column": "column"},
                          label="Sinogram of a")
    index = param.Integer(default=0, bounds=(0, None), label="Row / column number")
    compute = param.Event(label="Compute sinogram")
    cancel = param.Event(label="Cancel")
    running = param.Boolean(default=False)
    progress = param.Integer(default=0, bounds=(0, 100))
    status = param.String(default="Open a stack first.")
    failed = param.Boolean(default=False, precedence=-1)
    image = param.Array(default=None, allow_None=True, precedence=-1,
                        doc="frames × line length, as read (the stack's dtype).")
    frames = param.Parameter(default=None, precedence=-1, doc="The frames of the image's rows.")

    def __init__(self, analysis: AnalysisState, **params):
        super().__init__(**params)
        self.analysis, self.viewer, self.tasks = analysis, analysis.viewer, analysis.tasks
        self._lock = threading.Lock()
        self._job: threading.Event | None = None
        self._generation = 0
        self._forecaster = LatestOnly(self.tasks, self._forecast)
        self.viewer.param.watch(self._on_stack, "stack")
        self.viewer.param.watch(self._first_frame, "shown_index")
        analysis.param.watch(self._say_cost, ["first", "last", "step"])
        self._on_stack()

    def line(self) -> Line:
        return Line(self.axis, int(self.index))

    def indices(self) -> range:
        return self.analysis.indices()

    def _on_stack(self, *_event) -> None:
        self._stop()
        stack = self.viewer.stack
        if stack is None:
            self.param.update(image=None, frames=None, running=False, status="Open a stack first.")
            return
        rows, _cols = self.viewer.frame_shape
        self.param.index.bounds = (0, max(0, max(self.viewer.frame_shape) - 1))
        self.param.update(axis="row", index=rows // 2, image=None, frames=None, running=False,
                          progress=0)
        self._say_cost()

    @param.depends("axis", "index", watch=True)
    def _say_cost(self, *_events) -> None:
        stack = self.viewer.stack
        if stack is None:
            return
        problem = check(self.line(), tuple(self.viewer.frame_shape), len(self.indices()))
        if problem:
            self.param.update(status=problem, failed=True)
            return
        if self.viewer.shown_index < 0:
            # The file's first frame comes first; the forecast (the chunk index) follows it.
            self.param.update(status="What a sinogram costs is said once the first frame is "
                                     "shown.", failed=False)
            return
        self.param.update(status=f"Forecasting what {self.line().label()} costs…", failed=False)
        self._forecaster.request((stack, self.line(), self.indices()))

    def _first_frame(self, event) -> None:
        if event.old < 0 <= event.new:
            self._say_cost()

    def _forecast(self, request) -> None:
        stack, line, indices = request
        try:
            stack.wait_index(120)  # the stack's own chunk-index build, if it began: not a second
            text = forecast(stack, line, indices)
        except Exception as exc:  # noqa: BLE001 - the forecast is a courtesy; say why not
            text = user_message(exc, "forecast the sinogram's cost")
        self.tasks.post(self._forecasted, stack, line, indices, text)

    def _forecasted(self, stack, line, indices, text: str) -> None:
        if (stack, line, indices) == (self.viewer.stack, self.line(), self.indices()) \
                and not self.running:
            self.param.update(status=text + " Press Compute sinogram.", failed=False)

    # -- building it ------------------------------------------------------------------------

    @param.depends("compute", watch=True)
    def _on_compute(self) -> None:
        stack, line, indices = self.viewer.stack, self.line(), self.indices()
        if stack is None:
            return
        problem = check(line, tuple(self.viewer.frame_shape), len(indices))
        if problem:
            self.param.update(status=problem, failed=True)
            return
        self._stop()
        cancel = threading.Event()
        with self._lock:
            self._generation += 1
            generation, self._job = self._generation, cancel
        self.param.update(running=True, progress=0, failed=False,
                          status=f"Reading {line.label()}: 0 of {len(indices)} frames…")
        self.tasks.submit(self._build, self.analysis._opener(stack), line, indices, cancel,
                          generation)

    @param.depends("cancel", watch=True)
    def _on_cancel(self) -> None:
        if self._stop():
            self.status = "Cancelling…"

    def _stop(self) -> bool:
        with self._lock:
            job, self._job = self._job, None
            self._generation += 1
        if job is None:
            return False
        job.set()
        return True

    def _build(self, opener, line: Line, indices: range, cancel: threading.Event,
               generation: int) -> None:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.tasks.post(self._progress, generation, line, done, total)

        t0 = time.perf_counter()
        try:
            with opener() as stack:  # a handle of its own: the viewer may move on
                image = sinogram(stack, line, indices, progress=progress,
                                 cancelled=cancel.is_set)
                fetched = stack.stats["data_bytes"]
        except Cancelled as exc:
            self.tasks.post(self._ended, generation, None, f"Cancelled: {exc}.", False)
            return
        except Exception as exc:  # noqa: BLE001 - action boundary
            message = "Cancelled." if cancel.is_set() else user_message(
                exc, "compute the sinogram")
            self.tasks.post(self._ended, generation, None, message, not cancel.is_set())
            return
        seconds = time.perf_counter() - t0
        text = (f"{line.label().capitalize()} of {len(indices)} frames: "
                f"{human_size(fetched)} read in {seconds:.1f} s. Click it to show a frame.")
        self.tasks.post(self._ended, generation, (image, indices), text, False)

    def _progress(self, generation: int, line: Line, done: int, total: int) -> None:
        if generation == self._generation:
            self.param.update(progress=int(100 * done / max(1, total)),
                              status=f"Reading {line.label()}: {done} of {total} frames…")

    def _ended(self, generation: int, result, message: str, failed: bool) -> None:
        if generation != self._generation:
            return
        with self._lock:
            self._job = None
        update = dict(running=False, status=message, failed=failed)
        if result is not None:
            image, indices = result
            update.update(image=image, frames=indices, progress=100)
        self.param.update(**update)

    def go_to(self, frame: float) -> None:
        """A click on the image at ``frame`` (its frame axis): show the nearest frame of it."""
        frames = self.frames
        if frames is None or not len(frames) or self.viewer.stack is None:
            return
        k = int(np.clip(round((frame - frames[0]) / frames.step), 0, len(frames) - 1))
        self.viewer.index = int(frames[k])

    def close(self) -> None:
        self._stop()
