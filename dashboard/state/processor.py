"""Preview the pipeline on the range's last frame, then batch-process the range: Process.

The preview is what the batch writes: the last frame of the range (End on the Step grid),
flat-fielded with the batch's own flat (the 20 frames before Start), smoothed with the same σ.
Preview and batch each open their own handle on the stack from its
:class:`~dashboard.hdf5.stack.StackSpec` through the session's provider: opening another file
in the viewer closes the viewer's handle, never theirs.
"""

from __future__ import annotations

import logging
import re
import threading

import param

from ..processing.flats import BEFORE_START_LABEL, NO_DARK_LABEL
from ..processing.pipeline import DEFAULT_SIGMA, FLAT_FRAMES, SIGMA_BOUNDS
from ..processing.plan import START_MESSAGE, last_index, range_problem
from ..text import shown
from .tasks import Tasks, user_message
from .viewer import ViewerState

log = logging.getLogger(__name__)

FORMATS = ("PNG", "TIFF", "NPY")
THREADS_LABEL = "This server (threads)"
DASK_LABEL = "A Dask scheduler"
__all__ = ["FLAT_FRAMES", "FORMATS", "START_MESSAGE", "ProcessorState"]


class ProcessorState(param.Parameterized):
    """Processing parameters, the 5-stage preview and the batch job of one session."""

    viewer = param.ClassSelector(class_=ViewerState, precedence=-1)

    start = param.Integer(default=FLAT_FRAMES, bounds=(0, None), label="Start frame")
    end = param.Integer(default=FLAT_FRAMES, bounds=(0, None), label="End frame")
    step = param.Integer(default=1, bounds=(1, None), label="Step")
    sigma = param.Number(default=DEFAULT_SIGMA, bounds=SIGMA_BOUNDS, label="Gaussian σ (pixels)")
    format = param.Selector(default="PNG", objects=list(FORMATS), label="Format")
    flat = param.Selector(default="before-start", objects={BEFORE_START_LABEL: "before-start"},
                          label="Flat field",
                          doc="Where the flat comes from: the choices the open file offers.")
    dark = param.Selector(default="none", objects={NO_DARK_LABEL: "none"}, label="Dark field",
                          doc="Where the dark comes from (none: the seed's I / F).")
    flat_mode = param.Selector(default="average", objects={"Averaged": "average",
                                                           "Interpolated by position":
                                                           "interpolate"},
                               label="Flats before and after the scan",
                               doc="With an image key's flats on both sides of the scan: all "
                                   "averaged, or each frame's flat interpolated by position.")
    interpolable = param.Boolean(default=False, precedence=-1,
                                 doc="The chosen flat has flats before and after the scan.")
    output = param.String(default="", label="Output folder (local path or s3://bucket/prefix)")
    run_on = param.Selector(default="threads", objects={THREADS_LABEL: "threads"},
                            label="Run on", doc="Where the batch runs: threads of this server, "
                            "or a Dask scheduler's workers.")
    scheduler = param.String(default="", label="Dask scheduler address",
                             doc="tcp://host:8786 (DASK_SCHEDULER_ADDRESS by default).")

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
                 user: str | None = None, schedulers: list[str] | None = None, **params):
        if schedulers is not None:  # the operator's: the first, fixed
            params.setdefault("scheduler", schedulers[0] if schedulers else "")
        else:
            from ..processing.plan import resolve_scheduler

            params.setdefault("scheduler", resolve_scheduler() or "")
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
        #: A shared server's Dask schedulers (the operator's; none: threads only), or ``None``:
        #: any address, typed (one user on their own machine).
        self.schedulers = None if schedulers is None else list(schedulers)
        if self.schedulers != []:
            self.param.run_on.objects = {THREADS_LABEL: "threads", DASK_LABEL: "dask"}
        if area is not None:
            self.param.output.label = "Output folder (in your area, or s3://bucket/prefix)"
        elif not local_outputs:
            self.param.output.label = "Output (s3://bucket/prefix)"
        self.tasks = tasks or Tasks()
        self._cancel = threading.Event()
        self._preview_generation = 0
        self._projections: dict = {}  # option text -> projection count (NXtomo image keys)
        self._interpolable: frozenset = frozenset()  # flat options with flats on both sides
        self._counted = None  # the projection count the range was last set for
        self.param.watch(self._fields_changed, ["flat", "dark"])
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
        self._projections, self._counted = {}, None
        self._interpolable = frozenset()
        self.param.flat.objects = {BEFORE_START_LABEL: "before-start"}
        self.param.dark.objects = {NO_DARK_LABEL: "none"}
        self.param.start.bounds = (0, last)
        self.param.end.bounds = (0, last)
        self.param.update(flat="before-start", dark="none", flat_mode="average",
                          interpolable=False, start=min(FLAT_FRAMES, last),
                          end=last, stages=None, preview_title="", summary="",
                          previewing=False)
        if stack is not None:
            self.tasks.submit(self._offer, stack, self._preview_generation)
        if not self.local_outputs and not self.output.strip() and stack is not None:
            self.output = _s3_default(stack.url, self.user)
        problem = self.problem()
        self._say(problem or f"Ready: frames {self.start}–{self.end} of {n}.",
                  failed=bool(problem) and stack is not None)

    # -- the flat and dark the file offers ---------------------------------------------------

    def _offer(self, stack, generation: int) -> None:
        """Worker: which flats and darks the file carries (a few metadata reads through the
        viewer's handle, already open: no request of their own for the file's first block)."""
        from ..processing.flats import offered

        try:
            offer = offered(stack)
        except Exception:  # noqa: BLE001 - closed meanwhile: the seed's flat stays the choice
            log.info("no flat/dark choices for %s", stack.url, exc_info=True)
            return
        self.tasks.post(self._offered, generation, offer)

    def _offered(self, generation: int, offer) -> None:
        if generation != self._preview_generation:
            return  # another file came meanwhile
        self._projections = dict(offer.projections)
        self._interpolable = offer.interpolable
        self.interpolable = self.flat in offer.interpolable
        # New choices, the same choice (the seed's flat): the range is left as it is (a link
        # may have set it meanwhile); the Selects follow the objects by themselves.
        self.param.flat.objects = offer.flat
        self.param.dark.objects = offer.dark

    def projection_count(self) -> int | None:
        """With a field from an NXtomo image key: how many projections Start and End count."""
        for text in (self.flat, self.dark):
            if text in self._projections:
                return self._projections[text]
        return None

    def _fields_changed(self, *events) -> None:
        viewer = self.viewer
        if viewer is None or viewer.stack is None:
            return
        self.interpolable = self.flat in self._interpolable
        if not self.interpolable:
            self.flat_mode = "average"
        count = self.projection_count()
        last = max(0, (viewer.n_frames if count is None else count) - 1)
        self.param.start.bounds = (0, last)
        self.param.end.bounds = (0, last)
        if any(event.name == "flat" for event in events) or count != self._counted:
            # Another flat, or other numbering: the whole range again (from 0 unless the flat
            # is the frames before Start).
            start = min(FLAT_FRAMES, last) if self.flat == "before-start" else 0
            self.param.update(start=start, end=last)
        else:
            self.param.update(start=min(self.start, last), end=min(self.end, last))
        self._counted = count

    def fields_note(self) -> str:
        """Which flat and dark the run uses, in words ("" for the seed's own)."""
        if self.flat == "before-start" and self.dark == "none":
            return ""
        text = f"Flat: {_label(self.param.flat, self.flat)} ({self.flat[len('key:'):]})"
        if self.flat_mode == "interpolate":
            text += ", before and after the scan interpolated by position"
        if self.dark != "none":
            text += f"; dark: {_label(self.param.dark, self.dark)} ({self.dark[len('key:'):]})"
        count = self.projection_count()
        if count is not None:
            text += f"; Start and End count projections ({count})"
        return text + "."

    def problem(self, *, for_preview: bool = False) -> str:
        """Why preview/batch cannot run right now, in plain words ("" when they can)."""
        viewer = self.viewer
        if viewer is None or viewer.stack is None:
            return "Select an .h5 file in the browser first, then press Load Selected H5 File."
        if viewer.browser is not None and viewer.browser.provider is None:
            return "Connect first: give an endpoint and keys, then press Connect."
        n = viewer.n_frames
        before = FLAT_FRAMES if self.flat == "before-start" else 0
        if n == 1 and before:
            return (f"{viewer.stack.dataset} is a single 2-D image, not a stack: processing needs "
                    f"at least {FLAT_FRAMES + 1} frames (20 for the flat field, then the frames "
                    "to process).")
        count = self.projection_count()
        message = range_problem(n if count is None else count, self.start, self.end, self.step,
                                before=before, projections=count is not None)
        if message or for_preview:
            return message
        if not self.output.strip():
            return ("Give the output as s3://bucket/prefix." if not self.local_outputs
                    else "Give an output folder (a local path or s3://bucket/prefix).")
        return self._output_problem(self.output.strip()) or self._scheduler_problem()

    def _scheduler_problem(self) -> str:
        """Why the batch cannot go to the scheduler given ("" when it can, or runs on threads)."""
        if self.run_on != "dask":
            return ""
        address = self.scheduler.strip()
        if self.schedulers is not None and address not in self.schedulers:
            return ("This server runs batches only on its own threads or on the schedulers it "
                    "offers.")
        if not address:
            return "Give the Dask scheduler's address, e.g. tcp://scheduler-host:8786."
        if not _SCHEDULER_ADDRESS.fullmatch(address):
            return (f"{shown(address)} is not a Dask scheduler address: give it as "
                    "tcp://host:port (or tls://host:port).")
        return ""

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

    @param.depends("start", "end", "step", "format", "output", "flat", "dark", "flat_mode",
                   "run_on", "scheduler", "viewer.stack", "viewer.n_frames")
    def check(self) -> str:
        """The current problem with the batch parameters, or how many frames a batch would
        write (and from which flat and dark, when not the seed's)."""
        message = self.problem()
        if message:
            return message
        count = len(range(self.start, self.end + 1, self.step))
        note = self.fields_note()
        where = (f" on the Dask scheduler at {self.scheduler.strip()}" if self.run_on == "dask"
                 else "")
        return (f"{count} frame{'s' if count != 1 else ''} will be written as {self.format}"
                f"{where}." + (f" {note}" if note else ""))

    @param.depends("start", "end", "step", "flat", "dark", "viewer.stack", "viewer.n_frames",
                   "previewing")
    def preview_disabled(self) -> bool:
        """Whether Preview is greyed out (no stack long enough, a bad range, one running)."""
        return self.previewing or bool(self.problem(for_preview=True))

    @param.depends("start", "end", "step", "format", "output", "flat", "dark", "run_on",
                   "scheduler", "viewer.stack", "viewer.n_frames", "running")
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
                       index=index, start=self.start, fields=(self.flat, self.dark),
                       interpolate=self.flat_mode == "interpolate",
                       sigma=float(self.sigma), generation=self._preview_generation)
        self._say(f"Computing the preview of frame {index}…", previewing=True)
        self.tasks.submit(self._preview, **request)

    def _preview(self, *, provider, spec, index: int, start: int, fields: tuple, sigma: float,
                 generation: int, interpolate: bool = False) -> None:
        """Worker: everything comes in the request; the result is dropped if stale. The flat
        and dark are read as the batch reads them (:class:`~dashboard.processing.flats.Fields`)."""
        from ..processing.flats import Fields
        from ..processing.pipeline import process

        try:
            with provider.reopen(spec) as stack:  # this job's own handle
                run = Fields.of(stack, *fields, opener=_opener(provider),
                                interpolate=interpolate)
                shape = tuple(stack.shape[-2:])
                run.check(shape)
                flat, dark = run.read(start, shape)
                raw = run.raw([index])[0]
                if interpolate:
                    flat = flat.at(raw)  # this frame's own flat, as the batch makes it
                frame = stack.frame(raw)
                stages = process(frame, flat, sigma, dark=dark)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self._previewed, generation, None, failed=True,
                            status=user_message(exc, "compute the preview"))
            return
        before = run.flat_indices(start)
        if before is not None and run.dark.kind == "none":
            fields_text = (f"flat field from frames {before[0]}–{before[-1]} (the 20 before "
                           "Start)")
        else:
            fields_text = run.describe()
        what = "Projection" if run.projections is not None else "Frame"
        self.tasks.post(
            self._previewed, generation, dict(
                stages=stages, preview_sigma=sigma,
                preview_title=(f"{what} {index} (the last of the range), {fields_text}, "
                               f"σ = {sigma:g}: what the batch writes"),
            ),
            status=f"Preview of {what.lower()} {index} ready.",
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
                      fmt=self.format.lower(), out=self.output.strip(), flat=self.flat,
                      dark=self.dark, flat_interpolate=self.flat_mode == "interpolate")
        scheduler = self.scheduler.strip() if self.run_on == "dask" else None
        if scheduler:
            self._say(f"Connecting to the Dask scheduler at {scheduler}…")
        self.tasks.submit(self._run, self.viewer.browser.provider, self.viewer.stack.spec(),
                          params, scheduler)

    @param.depends("cancel", watch=True)
    def _on_cancel(self) -> None:
        if self.running:
            self._cancel.set()
            self._say("Cancelling after the frames in flight…")

    def _run(self, provider, spec, params: dict, scheduler: str | None = None) -> None:
        """Worker: the batch opens its own handle from ``spec``; it closes it, nobody else.
        With a ``scheduler`` it connects first (nothing is written if that fails), says where
        the frames go and how many workers take them, and disconnects at the end."""
        from ..processing import cluster
        from ..processing.batch import plan_batch, run_batch

        def progress(p) -> None:
            self.tasks.post(
                self.param.update,
                done=p.done, total=p.total,
                progress=int(100 * p.done / p.total) if p.total else 100,
                frames_per_s=float(p.frames_per_s or 0.0), eta_s=p.eta_s,
            )

        connection, where = None, ""
        try:
            with provider.reopen(spec) as stack:
                plan = plan_batch(stack, s3=provider.s3, area=self.area,
                                  local=self.local_outputs, field_opener=_opener(provider),
                                  **params)
                if scheduler is not None:
                    connection = cluster.connect(scheduler, None)
                    where = f" on {cluster.describe(connection[0])}"
                    self.tasks.post(self._say, f"Processing {len(plan.todo)} frames{where}…")
                result = run_batch(plan, progress=progress, cancel=self._cancel,
                                   scheduler=None if connection is None else connection[0])
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self._say, user_message(exc, "run the batch"), failed=True,
                            running=False)
            return
        finally:
            if connection is not None:
                try:
                    cluster.disconnect(*connection)
                except Exception:  # noqa: BLE001 - a scheduler gone: its client cannot close
                    log.info("closing the Dask client failed", exc_info=True)
        finished = {"complete": "Batch finished", "incomplete": "Batch cancelled"}
        self.tasks.post(self._say, finished.get(result.status, "Batch failed") + where + ".",
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


_SCHEDULER_ADDRESS = re.compile(r"(tcp|tls)://[A-Za-z0-9.\-\[\]:]+:\d{1,5}")


def _label(parameter, value: str) -> str:
    """The label the choices show for ``value``."""
    return next((k for k, v in parameter.names.items() if v == value), value)


def _opener(provider):
    """Fields' stacks (another dataset of the open file) through the session's provider."""
    return lambda url, dataset: provider.stack(url, dataset, prefetch=False)


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
