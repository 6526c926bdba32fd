"""Batch runs: run a planned frame range on local threads or a Dask cluster, resume, cancel.

:func:`~.plan.plan_batch` (in :mod:`.plan`) validates everything before any work is done (and
writes nothing when it refuses); :func:`run_batch` streams the frames through the pipeline and writes one output per
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

from .._version import __version__
from ..errors import EchoError
from . import export, flats
from .export import OutputError  # noqa: F401  (re-exported: tests raise it through here)
from .pipeline import (
    FLAT_FLOOR,
    FLAT_FRAMES,
    InterpolatedFlat,
    PERCENTILES,
    TRUNCATE,
    floor_flat,
    gaussian_backend,
)
from .plan import (  # noqa: F401  (the planning half, re-exported for callers of batch)
    BatchError,
    BatchFailed,
    BatchPlan,
    InvalidBatch,
    plan_batch,
    range_problem,
    resolve_scheduler,
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
                   "last": plan.last, "count": len(plan.indices),
                   "numbering": plan.fields.numbering},
        "flat": _flat_record(plan),
        "dark": plan.dark_source.to_json() if plan.dark_source.kind != "none" else None,
        "parameters": {
            "sigma": plan.sigma, "truncate": TRUNCATE, "percentiles": list(PERCENTILES),
            "gaussian_backend": gaussian_backend(),
            "pipeline": _pipeline_text(plan),
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


def _flat_record(plan: BatchPlan) -> dict:
    if plan.flat_indices is not None:
        return {"source": "before-start", "start": plan.flat_indices[0],
                "end": plan.flat_indices[-1], "count": FLAT_FRAMES, "floor": FLAT_FLOOR}
    record = {**plan.flat_source.to_json(), "floor": FLAT_FLOOR}
    if plan.fields.interpolate:
        before, after = flats.flat_groups(plan.fields.image_key)
        record["interpolated"] = {"before": before.tolist(), "after": after.tolist(),
                                  "by": "stack index (linear, clipped)"}
    return record


def _pipeline_text(plan: BatchPlan) -> str:
    if plan.flat_indices is not None:
        flat = "mean of 20 frames before start"
    elif plan.fields.interpolate:
        flat = (f"the flats of {plan.flat_source.describe()} before and after the scan, "
                "each group averaged, interpolated linearly by stack index")
    else:
        flat = f"mean of the flat frames of {plan.flat_source.describe()}"
    if plan.dark_source.kind == "none":
        field = f"flat field ({flat}, floor 1e-6)"
    else:
        field = (f"dark and flat field ((I - D) / max(F - D, 1e-6); F: {flat}; D: mean of the "
                 f"dark frames of {plan.dark_source.describe()})")
    return (f"normalize (dtype max) -> {field} -> linear stretch (1st-99th percentile, "
            "clipped) -> gaussian (scipy.ndimage.gaussian_filter equivalent, mode reflect)")


def _recipe(plan: BatchPlan, flat, dark: np.ndarray | None = None) -> Recipe:
    interpolated = flat if isinstance(flat, InterpolatedFlat) else None
    if interpolated is not None:
        flat = interpolated.before
    floored = floor_flat(flat, dark)
    floored.setflags(write=False)  # shared by every thread's Workspace
    if dark is not None:
        dark = np.asarray(dark, dtype=np.float32)
        dark.setflags(write=False)
    fields = None
    if plan.flat_indices is None or dark is not None:
        fields = {"flat_source": plan.flat_source.to_json(),
                  "dark_source": plan.dark_source.to_json()}
    indices = plan.flat_indices
    return Recipe(stem=plan.stem, fmt=plan.fmt, png_level=plan.png_level, sigma=plan.sigma,
                  shape=plan.shape, flat=floored, url=plan.url,
                  dataset=plan.dataset, etag=plan.etag,
                  flat_range=(indices[0], indices[-1]) if indices is not None else None,
                  dark=dark, fields=fields, projections=plan.projections,
                  interpolated=interpolated)


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
    todo = plan.todo
    # Connect before writing anything: an unreachable scheduler leaves the output untouched.
    connection = None
    if scheduler is None:
        scheduler_name = "threads"
    else:
        from . import cluster

        scheduler_name = scheduler if isinstance(scheduler, str) else cluster.address(scheduler)
        if todo:
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
        flat, dark = plan.read_fields()
        tracker.timings["flat"] = time.perf_counter() - t0
        tracker.report()
        recipe = _recipe(plan, flat, dark)
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
    frames = plan.stack.frames(plan.raw(todo))
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
