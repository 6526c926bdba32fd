"""Preview the pipeline on the last frame, then batch-process a frame range: the Process step."""

from __future__ import annotations

import logging
import threading

import param

from ..processing.pipeline import DEFAULT_SIGMA, SIGMA_BOUNDS
from .tasks import Tasks, user_message
from .viewer import ViewerState

log = logging.getLogger(__name__)

FLAT_FRAMES = 20
FORMATS = ("PNG", "TIFF", "NPY")
START_MESSAGE = "Start frame must be at least 20: the flat field uses the 20 frames before it."


class ProcessorState(param.Parameterized):
    """Processing parameters, the 5-stage preview and the batch job of one session."""

    viewer = param.ClassSelector(class_=ViewerState, precedence=-1)

    start = param.Integer(default=FLAT_FRAMES, bounds=(0, None), label="Start frame")
    end = param.Integer(default=FLAT_FRAMES, bounds=(0, None), label="End frame")
    step = param.Integer(default=1, bounds=(1, None), label="Step")
    sigma = param.Number(default=DEFAULT_SIGMA, bounds=SIGMA_BOUNDS, label="Gaussian σ (pixels)")
    format = param.Selector(default="PNG", objects=list(FORMATS), label="Format")
    output = param.String(default="", label="Output folder (local path or s3://bucket/prefix)")

    preview = param.Event(label="Preview Last Frame")
    stages = param.Parameter(default=None, precedence=-1, doc="Stages of the last preview.")
    preview_title = param.String(default="")
    preview_sigma = param.Number(default=4.0, precedence=-1, doc="σ of the shown preview.")
    previewing = param.Boolean(default=False)

    batch = param.Event(label="Batch Process & Save")
    cancel = param.Event(label="Cancel")
    running = param.Boolean(default=False)
    done = param.Integer(default=0, bounds=(0, None))
    total = param.Integer(default=0, bounds=(0, None))
    progress = param.Integer(default=0, bounds=(0, 100), doc="Percent done.")
    frames_per_s = param.Number(default=0.0, bounds=(0.0, None))
    eta_s = param.Number(default=None, allow_None=True)
    summary = param.String(default="")
    status = param.String(default="Load an HDF5 file in Frames first.")

    def __init__(self, *, tasks: Tasks | None = None, **params):
        params.setdefault("output", _default_output())
        super().__init__(**params)
        self.tasks = tasks or Tasks()
        self._cancel = threading.Event()
        if self.viewer is not None:
            self.viewer.param.watch(self._on_stack, "stack")

    # -- bounds follow the open stack -------------------------------------------------------

    def _on_stack(self, event) -> None:
        stack = event.new
        n = len(stack) if stack is not None else 0
        last = max(0, n - 1)
        self.param.start.bounds = (0, last)
        self.param.end.bounds = (0, last)
        self.param.update(start=min(FLAT_FRAMES, last), end=last, stages=None, preview_title="",
                          summary="")
        self.status = self.problem() or f"Ready: frames {self.start}–{self.end} of {n}."

    def problem(self, *, for_preview: bool = False) -> str:
        """Why preview/batch cannot run right now, in plain words ("" when they can)."""
        viewer = self.viewer
        if viewer is None or viewer.stack is None:
            return "Select an .h5 file in the browser first, then press Load Selected H5 File."
        n = viewer.n_frames
        if n == 1:
            return (f"{viewer.stack.dataset} is a single 2-D image, not a stack: processing needs "
                    f"at least {FLAT_FRAMES + 1} frames (20 for the flat field, then the frames "
                    "to process).")
        if n <= FLAT_FRAMES:
            return (f"This stack has only {n} frames: processing needs at least "
                    f"{FLAT_FRAMES + 1} (20 for the flat field, then the frames to process).")
        if for_preview:
            return ""
        if self.start < FLAT_FRAMES:
            return START_MESSAGE
        if self.end < self.start:
            return f"End frame ({self.end}) must not be before the start frame ({self.start})."
        if self.end > n - 1:
            return f"End frame must be at most {n - 1}, the last frame of this stack."
        if not self.output.strip():
            return "Give an output folder (a local path or s3://bucket/prefix)."
        return ""

    @param.depends("start", "end", "step", "format", "output", "viewer.stack", "viewer.n_frames")
    def check(self) -> str:
        """The current problem with the batch parameters, or how many frames a batch would write."""
        message = self.problem()
        if message:
            return message
        count = len(range(self.start, self.end + 1, self.step))
        return f"{count} frame{'s' if count != 1 else ''} will be written as {self.format}."

    # -- preview -----------------------------------------------------------------------------

    @param.depends("preview", watch=True)
    def _on_preview(self) -> None:
        message = self.problem(for_preview=True)
        if message:
            self.status = message
            return
        stack = self.viewer.stack
        self.param.update(previewing=True, status="Computing the preview of the last frame…")
        self.tasks.submit(self._preview, stack, float(self.sigma))

    def _preview(self, stack, sigma: float) -> None:
        from ..processing.pipeline import flat_from_frames, process

        index = len(stack) - 1
        try:
            frame = stack.frame(index)
            flat = flat_from_frames(stack.frames(range(index - FLAT_FRAMES, index)))
            stages = process(frame, flat, sigma)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self.param.update, previewing=False,
                            status=user_message(exc, "compute the preview"))
            return
        self.tasks.post(
            self.param.update,
            stages=stages, previewing=False, preview_sigma=sigma,
            preview_title=(f"Frame {index}, flat field from frames {index - FLAT_FRAMES}–"
                           f"{index - 1}, σ = {sigma:g}"),
            status=f"Preview of frame {index} ready.",
        )

    # -- batch -------------------------------------------------------------------------------

    @param.depends("batch", watch=True)
    def _on_batch(self) -> None:
        if self.running:
            self.status = "A batch is already running; cancel it first."
            return
        message = self.problem()
        if message:
            self.status = message
            return
        self._cancel.clear()
        total = len(range(self.start, self.end + 1, self.step))
        self.param.update(running=True, done=0, total=total, progress=0, frames_per_s=0.0,
                          eta_s=None, summary="", status=f"Processing {total} frames…")
        params = dict(start=self.start, end=self.end, step=self.step, sigma=float(self.sigma),
                      fmt=self.format.lower(), out=self.output.strip())
        self.tasks.submit(self._run, self.viewer.stack, self.viewer.browser.s3, params)

    @param.depends("cancel", watch=True)
    def _on_cancel(self) -> None:
        if self.running:
            self._cancel.set()
            self.status = "Cancelling after the frames in flight…"

    def _run(self, stack, s3, params: dict) -> None:
        from ..processing.batch import plan_batch, run_batch

        def progress(p) -> None:
            self.tasks.post(
                self.param.update,
                done=p.done, total=p.total,
                progress=int(100 * p.done / p.total) if p.total else 100,
                frames_per_s=float(p.frames_per_s or 0.0), eta_s=p.eta_s,
            )

        try:
            plan = plan_batch(stack, s3=s3, **params)
            result = run_batch(plan, progress=progress, cancel=self._cancel)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self.param.update, running=False,
                            status=user_message(exc, "run the batch"))
            return
        finished = {"complete": "Batch finished.", "incomplete": "Batch cancelled."}
        self.tasks.post(self.param.update, running=False, summary=result.summary,
                        status=finished.get(result.status, "Batch failed."))

    @param.depends("done", "total", "frames_per_s", "eta_s", "running")
    def progress_text(self) -> str:
        if not self.total:
            return ""
        text = f"{self.done}/{self.total} frames"
        if self.frames_per_s:
            text += f" · {self.frames_per_s:.1f} frames/s"
        if self.running and self.eta_s is not None:
            text += f" · ETA {_duration(self.eta_s)}"
        return text

    def close(self) -> None:
        self._cancel.set()


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _default_output() -> str:
    from pathlib import Path

    from platformdirs import user_documents_dir

    return str(Path(user_documents_dir()) / "echo-s3-processed")
