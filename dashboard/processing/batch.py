"""Batch runs: plan a frame range, run it on local threads or a Dask cluster, resume, cancel.

:func:`plan_batch` validates everything before any work is done (and writes nothing when it
refuses); :func:`run_batch` streams the frames through the pipeline and writes one output per
frame plus ``<stem>_processing.json``.

Locally, one reader (``FrameStack.frames``: ordered, four GETs in flight) feeds a pool of compute
threads (one per core by default); each thread owns preallocated float32 buffers, runs the
pipeline, encodes and writes atomically. At most ``workers + 2`` frames wait for a thread, so peak
memory is a few frames whatever the length of the run. numpy, OpenCV, the decoders and zlib
release the GIL, so reading, computing and encoding overlap.

On Dask (``scheduler="local"`` starts a ``LocalCluster`` of worker processes; otherwise the
address of an existing scheduler) the frames run through :mod:`.cluster`; both paths encode with
the same :class:`~.render.Recipe`, so their outputs are byte-identical.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .. import __version__
from ..errors import EchoError
from . import export
from .export import FORMATS, OutputError, open_output
from .pipeline import (
    DEFAULT_SIGMA,
    FLAT_FLOOR,
    FLAT_FRAMES,
    PERCENTILES,
    SIGMA_BOUNDS,
    TRUNCATE,
    flat_from_frames,
    floor_flat,
    gaussian_backend,
)
from .render import Recipe, single_threaded_opencv

log = logging.getLogger(__name__)

__all__ = [
    "BatchError",
    "BatchFailed",
    "BatchPlan",
    "BatchProgress",
    "BatchResult",
    "InvalidBatch",
    "plan_batch",
    "resolve_scheduler",
    "run_batch",
]

PROVENANCE_INTERVAL_S = 2.0  # the provenance file is rewritten at most this often while running
PROGRESS_INTERVAL_S = 0.1


class BatchError(EchoError):
    """A batch run cannot start or could not finish."""


class InvalidBatch(BatchError):
    """The batch parameters are invalid; nothing has been written."""


class BatchFailed(BatchError):
    """The run stopped on an error; ``.result`` tells what was written (the provenance too)."""

    def __init__(self, message: str, result: BatchResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class BatchProgress:
    """Progress of a run: ``done`` of ``total`` frames (resumed frames count as done)."""

    done: int
    total: int
    frames_per_s: float
    eta_s: float | None


@dataclass
class BatchResult:
    """What a run did."""

    status: str  # "complete" | "incomplete" (cancelled) | "failed"
    total: int
    written: list[int]
    skipped: int
    elapsed_s: float
    output: str
    provenance: str
    error: str | None = None
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    @property
    def frames_per_s(self) -> float:
        return len(self.written) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def summary(self) -> str:
        """One line for the CLI and the dashboard's status."""
        done = len(self.written) + self.skipped
        resumed = f" ({self.skipped} already there)" if self.skipped else ""
        where = f"to {self.output}"
        if self.status == "complete":
            return (f"Processed {done} of {self.total} frames{resumed} {where} in "
                    f"{self.elapsed_s:.1f} s ({self.frames_per_s:.1f} frames/s).")
        if self.status == "incomplete":
            return (f"Cancelled after {done} of {self.total} frames{resumed} {where}; "
                    "run the same command again to resume.")
        return f"Failed after {done} of {self.total} frames {where}: {self.error}"


@dataclass
class BatchPlan:
    """A validated run. Build it with :func:`plan_batch`."""

    url: str
    dataset: str
    stem: str
    shape: tuple[int, int]
    dtype: str
    n_frames: int
    etag: str
    size: int
    start: int
    end: int
    step: int
    sigma: float
    fmt: str
    png_level: int
    out: str
    resume: bool
    done: frozenset[int]  # frames whose outputs exist and are complete (resume)
    stack: object = field(repr=False)  # the open FrameStack
    output: object = field(repr=False)  # LocalOutput | S3Output
    s3: object = field(default=None, repr=False)

    @property
    def indices(self) -> range:
        return range(self.start, self.end + 1, self.step)

    @property
    def flat_indices(self) -> range:
        return range(self.start - FLAT_FRAMES, self.start)

    @property
    def todo(self) -> list[int]:
        return [i for i in self.indices if i not in self.done]

    @property
    def last(self) -> int:
        """The last index the range contains."""
        return self.indices[-1]

    @property
    def provenance_name(self) -> str:
        return export.provenance_name(self.stem)

    def name(self, index: int) -> str:
        return export.output_name(self.stem, index, self.fmt)

    def spec(self):
        return self.stack.spec()

    def close(self) -> None:
        """Close the stack if :func:`plan_batch` opened it (a stack passed in stays open)."""
        if getattr(self, "_owns_stack", False):
            self.stack.close()

    def __enter__(self) -> BatchPlan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- planning --------------------------------------------------------------------------------

def plan_batch(
    source,
    *,
    dataset: str | None = None,
    start: int = FLAT_FRAMES,
    end: int | None = None,
    step: int = 1,
    sigma: float = DEFAULT_SIGMA,
    fmt: str = "png",
    out,
    png_level: int = export.DEFAULT_PNG_LEVEL,
    resume: bool | None = None,
    s3=None,
    endpoint: str | None = None,
    credentials=None,
) -> BatchPlan:
    """Validate a batch and return its plan; raise :class:`InvalidBatch` (nothing written).

    Parameters
    ----------
    source : str, path or FrameStack
        ``s3://BUCKET/KEY``, a local HDF5 path, or an open stack.
    dataset : str, optional
        Dataset path (default: the detected stack).
    start, end, step : int
        Frames ``start … end`` inclusive, every ``step``-th; ``start >= 20`` (the flat is the
        20 frames before it); ``end`` defaults to the last frame.
    sigma : float
        Gaussian sigma in pixels, 0.01 to 100.
    fmt : {"png", "tiff", "npy"}
    out : str or path
        A folder or ``s3://BUCKET/PREFIX``.
    png_level : int
        PNG zlib level 0–9 (default 1).
    resume : bool, optional
        True: skip frames whose outputs exist and are complete (the provenance, if any, must
        describe the same run). None/False: resume only when the provenance says the previous
        run in ``out`` with the same parameters is unfinished; otherwise process everything.
    s3 : S3, optional
        Connection for an ``s3://`` source or output.
    endpoint, credentials
        Used to connect when ``s3`` is not given.
    """
    _check_parameters(start=start, end=end, step=step, sigma=sigma, fmt=fmt, png_level=png_level)
    if s3 is None and (_is_s3(source) or _is_s3(out)):
        from ..storage.s3 import S3

        s3 = S3(endpoint, _load_credentials(credentials))
    owns = not hasattr(source, "frames")
    if owns:
        from ..hdf5.stack import open_stack

        stack = open_stack(str(source), dataset, s3=s3 if _is_s3(source) else None,
                           endpoint=endpoint, credentials=credentials, prefetch=False)
    else:
        stack = source
    try:
        plan = _plan_with_stack(stack, start=start, end=end, step=step, sigma=float(sigma),
                                fmt=fmt, out=out, png_level=int(png_level), resume=resume, s3=s3)
    except BaseException:
        if owns:
            stack.close()
        raise
    plan._owns_stack = owns
    return plan


def _check_parameters(*, start, end, step, sigma, fmt, png_level) -> None:
    if fmt not in FORMATS:
        raise InvalidBatch(f"The output format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
    if not isinstance(step, int | np.integer) or step < 1:
        raise InvalidBatch(f"The step must be a whole number of at least 1 (got {step}).")
    if not isinstance(start, int | np.integer) or start < FLAT_FRAMES:
        raise InvalidBatch(
            f"The start frame must be at least {FLAT_FRAMES}, because the flat field is the mean "
            f"of the {FLAT_FRAMES} frames before it (got {start})."
        )
    if end is not None and (not isinstance(end, int | np.integer) or end < start):
        raise InvalidBatch(f"The end frame ({end}) must not be before the start frame ({start}).")
    try:
        sigma_ok = SIGMA_BOUNDS[0] <= float(sigma) <= SIGMA_BOUNDS[1]  # False for NaN
    except (TypeError, ValueError):
        sigma_ok = False
    if not sigma_ok:
        raise InvalidBatch(f"Sigma must be a number from {SIGMA_BOUNDS[0]:g} to "
                           f"{SIGMA_BOUNDS[1]:g} pixels (got {sigma}).")
    if not isinstance(png_level, int | np.integer) or not 0 <= png_level <= 9:
        raise InvalidBatch(f"The PNG compression level must be 0 to 9 (got {png_level}).")


def _plan_with_stack(stack, *, start, end, step, sigma, fmt, out, png_level, resume,
                     s3) -> BatchPlan:
    n = len(stack)
    if n < FLAT_FRAMES + 1:
        raise InvalidBatch(
            f"The stack {stack.dataset} has {n} frame{'s' if n != 1 else ''}; a batch needs at "
            f"least {FLAT_FRAMES + 1} ({FLAT_FRAMES} for the flat field and one to process)."
        )
    if end is None:
        end = n - 1
    if end >= n:
        raise InvalidBatch(
            f"The end frame ({end}) must be less than the number of frames in the stack ({n})."
        )
    if start > end:
        raise InvalidBatch(
            f"The start frame ({start}) is beyond the last frame of the stack ({n - 1})."
        )
    try:
        output = open_output(out, s3=s3)
    except EchoError as exc:
        raise InvalidBatch(str(exc)) from None
    stem = export.file_stem(stack.url)
    plan = BatchPlan(
        url=stack.url, dataset=stack.dataset, stem=stem,
        shape=tuple(int(v) for v in stack.shape[-2:]), dtype=str(stack.dtype), n_frames=n,
        etag=str(stack.etag or ""), size=int(stack.size or 0), start=int(start), end=int(end),
        step=int(step), sigma=sigma, fmt=fmt, png_level=png_level, out=output.location,
        resume=False, done=frozenset(), stack=stack, output=output, s3=s3,
    )
    try:
        output.check_writable()
    except OutputError as exc:
        raise InvalidBatch(str(exc)) from None
    previous = export.read_json(output, plan.provenance_name)
    mismatch = _mismatch(previous, plan) if previous is not None else None
    unfinished = previous is not None and previous.get("status") != "complete"
    if resume:
        if mismatch:
            raise InvalidBatch(
                f"Cannot resume: the run recorded in {plan.out} used {mismatch}; choose another "
                "output folder or drop --resume."
            )
        plan.resume = True
    else:
        plan.resume = bool(unfinished and not mismatch)
    if plan.resume:
        existing = output.existing()
        plan.done = frozenset(
            i for i in plan.indices
            if existing.get(plan.name(i)) and output.complete(plan.name(i), fmt, plan.shape)
        )
    return plan


def _mismatch(previous: dict, plan: BatchPlan) -> str | None:
    """What differs between a recorded run and this plan (None when it can be resumed)."""
    source = previous.get("source", {})
    params = previous.get("parameters", {})
    checks = [
        ("source", source.get("url"), plan.url),
        ("dataset", source.get("dataset"), plan.dataset),
        ("source ETag", source.get("etag"), plan.etag),
        ("format", previous.get("format"), plan.fmt),
        ("sigma", params.get("sigma"), plan.sigma),
        ("start frame", previous.get("frames", {}).get("start"), plan.start),
    ]
    for what, was, now in checks:
        if was != now:
            return f"{what} {was!r} (now {now!r})"
    return None


def _is_s3(value) -> bool:
    return isinstance(value, str) and value.startswith("s3://")


def _load_credentials(credentials):
    from ..storage.credentials import Credentials, load_credentials

    if credentials is None or isinstance(credentials, Credentials):
        return credentials
    return load_credentials(credentials)


def resolve_scheduler(value: str | None = None, env=None) -> str | None:
    """The Dask scheduler: ``value``, else ``$DASK_SCHEDULER_ADDRESS``, else None (threads)."""
    env = os.environ if env is None else env
    value = (value or env.get("DASK_SCHEDULER_ADDRESS") or "").strip()
    return value or None


# -- provenance ------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _provenance(plan: BatchPlan, *, status: str, started: str, finished: str | None,
                written: Sequence[int], scheduler: str, error: str | None = None) -> dict:
    record = {
        "tool": "echo-s3-viewer",
        "version": __version__,
        "status": status,
        "source": {
            "url": plan.url, "dataset": plan.dataset, "etag": plan.etag, "size": plan.size,
            "frames": plan.n_frames, "frame_shape": list(plan.shape), "dtype": plan.dtype,
        },
        "frames": {"start": plan.start, "end": plan.end, "step": plan.step,
                   "last": plan.last, "count": len(plan.indices)},
        "flat": {"start": plan.flat_indices[0], "end": plan.flat_indices[-1],
                 "count": FLAT_FRAMES, "floor": FLAT_FLOOR},
        "parameters": {
            "sigma": plan.sigma, "truncate": TRUNCATE, "percentiles": list(PERCENTILES),
            "gaussian_backend": gaussian_backend(),
            "pipeline": "normalize (dtype max) -> flat field (mean of 20 frames before start, "
                        "floor 1e-6) -> linear stretch (1st-99th percentile, clipped) -> gaussian "
                        "(scipy.ndimage.gaussian_filter equivalent, mode reflect)",
        },
        "format": plan.fmt,
        "output": {"location": plan.out, "name_pattern": f"{plan.stem}_<index:06d>.{plan.fmt}"},
        "scheduler": scheduler,
        "started": started,
        "finished": finished,
        "frames_written_count": len(written),
        "frames_written": sorted(int(i) for i in written),
    }
    if plan.fmt == "png":
        record["png"] = {"bits": 8, "compress_level": plan.png_level,
                         "encoder": export.png_encoder(),
                         "mapping": "round(clip(x, 0, 1) * 255), halves to even"}
    if plan.fmt == "tiff":
        record["tiff"] = {"dtype": "float32", "compression": "none",
                          "description": "JSON: source, dataset, frame, flat, sigma"}
    if error:
        record["error"] = error
    return record


def _recipe(plan: BatchPlan, flat: np.ndarray) -> Recipe:
    floored = floor_flat(flat)
    floored.setflags(write=False)  # shared by every thread's Workspace
    return Recipe(stem=plan.stem, fmt=plan.fmt, png_level=plan.png_level, sigma=plan.sigma,
                   shape=plan.shape, flat=floored, url=plan.url,
                   dataset=plan.dataset, etag=plan.etag,
                   flat_range=(plan.flat_indices[0], plan.flat_indices[-1]))


# -- running ---------------------------------------------------------------------------------

class _Tracker:
    """Counts results, calls the progress callback, rewrites the provenance now and then."""

    def __init__(self, plan: BatchPlan, progress, scheduler: str):
        self.plan = plan
        self.progress = progress
        self.scheduler = scheduler
        self.total = len(plan.indices)
        self.skipped = len(plan.done)
        self.previous = set(plan.done)
        self.written: list[int] = []
        self.started = _now()
        self.t0 = time.perf_counter()
        self._last_progress = 0.0
        self._last_provenance = time.perf_counter()
        self.timings = {"read_wait": 0.0, "compute": 0.0, "encode": 0.0, "write": 0.0, "flat": 0.0}

    def record(self, status: str, *, finished: bool = False, error: str | None = None) -> None:
        record = _provenance(
            self.plan, status=status, started=self.started,
            finished=_now() if finished else None,
            written=self.previous | set(self.written), scheduler=self.scheduler, error=error,
        )
        export.write_json(self.plan.output, self.plan.provenance_name, record)
        self._last_provenance = time.perf_counter()

    def add(self, index: int, timing: dict | None = None) -> None:
        self.written.append(index)
        for key, value in (timing or {}).items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        now = time.perf_counter()
        if now - self._last_provenance >= PROVENANCE_INTERVAL_S:
            self.record("incomplete")
        if now - self._last_progress >= PROGRESS_INTERVAL_S:
            self.report()

    def report(self) -> None:
        self._last_progress = time.perf_counter()
        if self.progress is None:
            return
        elapsed = self._last_progress - self.t0
        done = self.skipped + len(self.written)
        rate = len(self.written) / elapsed if elapsed > 0 and self.written else 0.0
        remaining = self.total - done
        eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
        try:
            self.progress(BatchProgress(done=done, total=self.total, frames_per_s=rate, eta_s=eta))
        except Exception:  # a broken progress display must not stop the run
            log.exception("the batch progress callback failed")

    def result(self, status: str, error: str | None = None) -> BatchResult:
        return BatchResult(
            status=status, total=self.total, written=sorted(self.written), skipped=self.skipped,
            elapsed_s=time.perf_counter() - self.t0, output=self.plan.out,
            provenance=self.plan.provenance_name, error=error, timings=dict(self.timings),
        )


def run_batch(
    plan: BatchPlan,
    *,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    scheduler=None,
    workers: int | None = None,
) -> BatchResult:
    """Run a planned batch.

    Parameters
    ----------
    plan : BatchPlan
        From :func:`plan_batch`.
    progress : callable, optional
        Called (in the calling thread, at most ~10 times a second and once at the end) with a
        :class:`BatchProgress`.
    cancel : threading.Event, optional
        Set it to stop: no new frame starts, frames in flight finish (about one frame's time),
        the provenance says ``incomplete`` and a later run resumes. Ctrl-C does the same, then
        re-raises ``KeyboardInterrupt``.
    scheduler : None, "local", str or distributed.Client
        None: local threads. ``"local"``: a ``LocalCluster`` of ``workers`` processes (default 2)
        with one thread each. An address (``tcp://host:8786``) or a ``Client``: that cluster.
    workers : int, optional
        Local threads for computing (default: the number of cores), or LocalCluster processes.

    Returns
    -------
    BatchResult
        ``status`` "complete" or "incomplete" (cancelled).

    Raises
    ------
    BatchFailed
        The run stopped on an error (S3 unreachable, disk full...); the provenance says
        ``failed`` and lists the frames written; ``.result`` has the details.
    """
    cancel = cancel if cancel is not None else threading.Event()
    if workers is not None and (not isinstance(workers, int | np.integer) or workers < 1):
        raise InvalidBatch(f"The number of workers must be at least 1 (got {workers}).")
    scheduler_name = "threads" if scheduler is None else (
        scheduler if isinstance(scheduler, str) else "dask client")
    todo = plan.todo
    # Connect before writing anything: an unreachable scheduler leaves the output untouched.
    connection = None
    if scheduler is not None and todo:
        from . import cluster

        connection = cluster.connect(scheduler, workers)
    try:
        return _run(plan, todo, progress, cancel, workers, connection, scheduler_name)
    finally:
        if connection is not None:
            cluster.disconnect(*connection)


def _run(plan, todo, progress, cancel, workers, connection, scheduler_name) -> BatchResult:
    tracker = _Tracker(plan, progress, scheduler_name)
    interrupted = False
    try:
        tracker.record("incomplete")
        t0 = time.perf_counter()
        flat = flat_from_frames(plan.stack.frames(plan.flat_indices))
        tracker.timings["flat"] = time.perf_counter() - t0
        tracker.report()
        recipe = _recipe(plan, flat)
        if todo and not cancel.is_set():
            if connection is None:
                _run_threads(plan, recipe, todo, tracker, cancel, workers)
            else:
                from . import cluster

                cluster.run(plan, recipe, todo, tracker, cancel, connection[0])
    except KeyboardInterrupt:
        cancel.set()
        interrupted = True
    except Exception as exc:
        message = str(exc) if isinstance(exc, EchoError) else f"{type(exc).__name__}: {exc}"
        credentials = getattr(plan.s3, "credentials", None)
        if credentials is not None:
            message = credentials.scrub(message)
        log.warning("batch %s failed: %s", plan.stem, message)
        result = tracker.result("failed", message)
        try:
            tracker.record("failed", finished=True, error=message)
        except EchoError as exc2:  # e.g. the disk is full: the provenance cannot be written either
            log.warning("could not record the failure: %s", exc2)
        raise BatchFailed(message, result) from None
    done = tracker.skipped + len(tracker.written)
    status = "complete" if done == tracker.total else "incomplete"
    tracker.record(status, finished=True)
    if interrupted:
        raise KeyboardInterrupt
    tracker.report()
    return tracker.result(status)


def _run_threads(plan, recipe: Recipe, todo: list[int], tracker: _Tracker,
                 cancel: threading.Event, workers: int | None) -> None:
    n_workers = int(workers or os.cpu_count() or 1)
    window = n_workers + 2
    local = threading.local()
    output = plan.output
    completions: queue.Queue = queue.Queue()

    def work(index: int, frame: np.ndarray):
        workspace = getattr(local, "workspace", None)
        if workspace is None:
            workspace = local.workspace = recipe.workspace()
        data, timing = recipe.render(workspace, index, frame)
        t0 = time.perf_counter()
        output.write(recipe.name(index), data)
        timing["write"] = time.perf_counter() - t0
        return timing

    def finished(index: int, future) -> None:
        completions.put((index, future))

    pending: dict[int, Future] = {}
    failure: BaseException | None = None

    def collect(timeout: float | None) -> bool:
        """Take one finished frame off the queue (False when none came within ``timeout``)."""
        nonlocal failure
        try:
            item = completions.get(timeout=timeout) if timeout else completions.get_nowait()
        except queue.Empty:
            return False
        index, future = item
        del pending[index]
        if future.cancelled():
            return True
        if future.exception() is not None:
            failure = failure or future.exception()
        else:
            tracker.add(index, future.result())
        return True

    single_threaded_opencv()
    frames = plan.stack.frames(todo)
    with ThreadPoolExecutor(n_workers, thread_name_prefix="echo-batch") as pool:
        try:
            for index in todo:
                while collect(None):
                    pass
                while len(pending) >= window and not cancel.is_set() and failure is None:
                    collect(0.1)
                if cancel.is_set() or failure is not None:
                    break
                t0 = time.perf_counter()
                frame = next(frames)
                tracker.timings["read_wait"] += time.perf_counter() - t0
                future = pool.submit(work, index, frame)
                pending[index] = future
                future.add_done_callback(lambda f, i=index: finished(i, f))
                del frame
        except BaseException:  # e.g. KeyboardInterrupt: stop as if cancelled
            cancel.set()
            raise
        finally:
            frames.close()  # stops the read-ahead
            if cancel.is_set() or failure is not None:
                for future in list(pending.values()):
                    future.cancel()  # queued frames never start; running ones finish
            while pending:
                if not collect(60):  # pragma: no cover - a stuck write; the pool waits anyway
                    break
    if failure is not None:
        raise failure
