"""Preview the pipeline on the range's last frame, then batch-process the range: Process.

The preview is what the batch writes: the last frame of the range (End on the Step grid),
flat-fielded with the batch's own flat (the 20 frames before Start), smoothed with the same σ.
Preview and batch each open their own handle on the stack from its
:class:`~dashboard.hdf5.stack.StackSpec` through the session's provider: opening another file
in the viewer closes the viewer's handle, never theirs.
"""

from __future__ import annotations

import logging
import threading

import param

from ..processing.pipeline import DEFAULT_SIGMA, FLAT_FRAMES, SIGMA_BOUNDS, flat_range
from ..processing.plan import START_MESSAGE, last_index, range_problem
from .tasks import Tasks, user_message
from .viewer import ViewerState

log = logging.getLogger(__name__)

FORMATS = ("PNG", "TIFF", "NPY")
__all__ = ["FLAT_FRAMES", "FORMATS", "START_MESSAGE", "ProcessorState"]


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
    failed = param.Boolean(default=False, precedence=-1,
                           doc="`status` reports an error (views style it so).")

    def __init__(self, *, tasks: Tasks | None = None, area=None, local_outputs: bool = True,
                 user: str | None = None, **params):
        if area is not None:
            params.setdefault("output", "processed")
        elif not local_outputs:
            params.setdefault("output", "")
        params.setdefault("output", _default_output())
        super().__init__(**params)
        #: A shared server's rules for outputs: folders relative to the user's ``area``
        #: (:class:`~dashboard.storage.area.UserArea`), or, without one, ``s3://`` only
        #: (``local_outputs`` False; the default output is then ``s3://<bucket>/processed/<user>/``).
        self.area, self.local_outputs, self.user = area, local_outputs, user
        if area is not None:
            self.param.output.label = "Output folder (in your area, or s3://bucket/prefix)"
        elif not local_outputs:
            self.param.output.label = "Output (s3://bucket/prefix)"
        self.tasks = tasks or Tasks()
        self._cancel = threading.Event()
        self._preview_generation = 0
        if self.viewer is not None:
            self.viewer.param.watch(self._on_stack, "stack")

    def _say(self, status: str, *, failed: bool = False, **more) -> None:
        """Replace the status line (an error stays marked as one until the next message)."""
        self.param.update(status=status, failed=failed, **more)

    # -- bounds follow the open stack -------------------------------------------------------

    def _on_stack(self, event) -> None:
        stack = event.new
        n = len(stack) if stack is not None else 0
        last = max(0, n - 1)
        self._preview_generation += 1  # a preview of the previous file is dropped
        self.param.start.bounds = (0, last)
        self.param.end.bounds = (0, last)
        self.param.update(start=min(FLAT_FRAMES, last), end=last, stages=None, preview_title="",
                          summary="", previewing=False)
        if not self.local_outputs and not self.output.strip() and stack is not None:
            self.output = _s3_default(stack.url, self.user)
        problem = self.problem()
        self._say(problem or f"Ready: frames {self.start}–{self.end} of {n}.",
                  failed=bool(problem) and stack is not None)

    def problem(self, *, for_preview: bool = False) -> str:
        """Why preview/batch cannot run right now, in plain words ("" when they can)."""
        viewer = self.viewer
        if viewer is None or viewer.stack is None:
            return "Select an .h5 file in the browser first, then press Load Selected H5 File."
        if viewer.browser is not None and viewer.browser.provider is None:
            return "Connect first: give an endpoint and keys, then press Connect."
        n = viewer.n_frames
        if n == 1:
            return (f"{viewer.stack.dataset} is a single 2-D image, not a stack: processing needs "
                    f"at least {FLAT_FRAMES + 1} frames (20 for the flat field, then the frames "
                    "to process).")
        message = range_problem(n, self.start, self.end, self.step)
        if message or for_preview:
            return message
        if not self.output.strip():
            return ("Give the output as s3://bucket/prefix." if not self.local_outputs
                    else "Give an output folder (a local path or s3://bucket/prefix).")
        return self._output_problem(self.output.strip())

    def _output_problem(self, text: str) -> str:
        """Why a shared server refuses this output ("" when it takes it); writes nothing."""
        from ..processing.export import S3_ONLY
        from ..storage.paths import UnusablePath

        if text.startswith("s3://"):
            return ""
        if not self.local_outputs:
            return S3_ONLY
        if self.area is not None:
            try:
                self.area.resolve(text, what="output folder", example="processed")
            except UnusablePath as exc:
                return str(exc)
        return ""

    @param.depends("start", "end", "step", "format", "output", "viewer.stack", "viewer.n_frames")
    def check(self) -> str:
        """The current problem with the batch parameters, or how many frames a batch would write."""
        message = self.problem()
        if message:
            return message
        count = len(range(self.start, self.end + 1, self.step))
        return f"{count} frame{'s' if count != 1 else ''} will be written as {self.format}."

    @param.depends("start", "end", "step", "viewer.stack", "viewer.n_frames", "previewing")
    def preview_disabled(self) -> bool:
        """Whether Preview is greyed out (no stack long enough, a bad range, one running)."""
        return self.previewing or bool(self.problem(for_preview=True))

    @param.depends("start", "end", "step", "format", "output", "viewer.stack", "viewer.n_frames",
                   "running")
    def batch_disabled(self) -> bool:
        """Whether Batch is greyed out (a problem with the parameters, or a batch running)."""
        return self.running or bool(self.problem())

    # -- preview -----------------------------------------------------------------------------

    @param.depends("preview", watch=True)
    def _on_preview(self) -> None:
        message = self.problem(for_preview=True)
        if message:
            self._say(message, failed=True)
            return
        index = last_index(self.start, self.end, self.step)
        self._preview_generation += 1
        request = dict(provider=self.viewer.browser.provider, spec=self.viewer.stack.spec(),
                       index=index, flat=flat_range(self.start), sigma=float(self.sigma),
                       generation=self._preview_generation)
        self._say(f"Computing the preview of frame {index}…", previewing=True)
        self.tasks.submit(self._preview, **request)

    def _preview(self, *, provider, spec, index: int, flat: range, sigma: float,
                 generation: int) -> None:
        """Worker: everything comes in the request; the result is dropped if stale."""
        from ..processing.pipeline import flat_from_frames, process

        try:
            with provider.reopen(spec) as stack:  # this job's own handle
                frame = stack.frame(index)
                stages = process(frame, flat_from_frames(stack.frames(flat)), sigma)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self._previewed, generation, None, failed=True,
                            status=user_message(exc, "compute the preview"))
            return
        self.tasks.post(
            self._previewed, generation, dict(
                stages=stages, preview_sigma=sigma,
                preview_title=(f"Frame {index} (the last of the range), flat field from frames "
                               f"{flat[0]}–{flat[-1]} (the 20 before Start), σ = {sigma:g}: "
                               "what the batch writes"),
            ),
            status=f"Preview of frame {index} ready.",
        )

    def _previewed(self, generation: int, result: dict | None, *, status: str,
                   failed: bool = False) -> None:
        if generation != self._preview_generation:
            return  # another file or another preview came meanwhile
        self._say(status, failed=failed, previewing=False, **(result or {}))

    # -- batch -------------------------------------------------------------------------------

    @param.depends("batch", watch=True)
    def _on_batch(self) -> None:
        if self.running:
            self._say("A batch is already running; cancel it first.", failed=True)
            return
        message = self.problem()
        if message:
            self._say(message, failed=True)
            return
        self._cancel.clear()
        total = len(range(self.start, self.end + 1, self.step))
        self._say(f"Processing {total} frames…", running=True, done=0, total=total, progress=0,
                  frames_per_s=0.0, eta_s=None, summary="")
        params = dict(start=self.start, end=self.end, step=self.step, sigma=float(self.sigma),
                      fmt=self.format.lower(), out=self.output.strip())
        self.tasks.submit(self._run, self.viewer.browser.provider, self.viewer.stack.spec(),
                          params)

    @param.depends("cancel", watch=True)
    def _on_cancel(self) -> None:
        if self.running:
            self._cancel.set()
            self._say("Cancelling after the frames in flight…")

    def _run(self, provider, spec, params: dict) -> None:
        """Worker: the batch opens its own handle from ``spec``; it closes it, nobody else."""
        from ..processing.batch import plan_batch, run_batch

        def progress(p) -> None:
            self.tasks.post(
                self.param.update,
                done=p.done, total=p.total,
                progress=int(100 * p.done / p.total) if p.total else 100,
                frames_per_s=float(p.frames_per_s or 0.0), eta_s=p.eta_s,
            )

        try:
            with provider.reopen(spec) as stack:
                plan = plan_batch(stack, s3=provider.s3, area=self.area,
                                  local=self.local_outputs, **params)
                result = run_batch(plan, progress=progress, cancel=self._cancel)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self._say, user_message(exc, "run the batch"), failed=True,
                            running=False)
            return
        finished = {"complete": "Batch finished.", "incomplete": "Batch cancelled."}
        self.tasks.post(self._say, finished.get(result.status, "Batch failed."),
                        failed=result.status not in finished, running=False,
                        summary=result.summary)

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


def _s3_default(url: str, user: str | None) -> str:
    """``s3://<the stack's bucket>/processed/<user>/``: each user's own prefix."""
    from ..storage.area import area_name

    bucket = url[len("s3://"):].split("/", 1)[0] if url.startswith("s3://") else ""
    if not bucket:
        return ""
    return f"s3://{bucket}/processed/{area_name(user) if user else 'shared'}/"
