"""Batch runs on a Dask cluster (``scheduler="local"``, an address or a ``Client``).

The run's context (the stack's :class:`StackSpec`, the flat, the parameters, the S3 output if
any) is scattered once to every worker; tasks carry only that future and a few frame indices, with
keys ``echo-process-<run id>-<first index>``, so neither task keys nor the scheduler's task graph
hold credentials. Workers open the stack themselves (once per worker and run). Outputs are
byte-identical to the local path: the same :class:`~.render.Recipe` encodes them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
import weakref

from .export import S3Output
from .pipeline import Workspace
from .plan import BatchError
from .render import Recipe, single_threaded_opencv

FRAMES_PER_TASK = 4  # frames per task (their reads overlap inside the task)
CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 10  # a scheduler without a worker after this long is refused


class _DaskContext:
    """Scattered once per run to every worker: the recipe, the stack's spec, the S3 output.

    Unpickled once per worker; the stack is opened lazily and kept for the run's tasks, then
    closed when the run releases the context.
    """

    def __init__(self, recipe: Recipe, spec, output: tuple | None):
        self.recipe = recipe
        self.spec = spec
        self.output = output  # ("s3", endpoint, credentials, bucket, prefix) or None
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._stack = None
        self._target = None
        self._local = threading.local()

    def __getstate__(self):
        return {"recipe": self.recipe, "spec": self.spec, "output": self.output}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"_DaskContext({self.spec!r})"

    def stack(self):
        with self._lock:
            if self._stack is None:
                from ..hdf5.chunks import LRUBytes

                self._stack = self.spec.open(prefetch=False, cache=LRUBytes(0))
                weakref.finalize(self, self._stack.close)
            return self._stack

    def target(self):
        if self.output is None:
            return None
        with self._lock:
            if self._target is None:
                from ..storage.s3 import S3

                _, endpoint, credentials, bucket, prefix = self.output
                self._target = S3Output(S3(endpoint, credentials), bucket, prefix)
            return self._target

    def workspace(self) -> Workspace:
        ws = getattr(self._local, "workspace", None)
        if ws is None:
            recipe = self.recipe
            ws = self._local.workspace = recipe.workspace()
        return ws


def _dask_task(context: _DaskContext, indices: list[int]) -> list[tuple]:
    """Process a few frames on a worker: ``[(index, bytes or None, timing), ...]``.

    With an S3 output the worker uploads and returns no bytes; otherwise the bytes go back to
    the client, which writes them (workers need not share the client's disk).
    """
    single_threaded_opencv()
    recipe = context.recipe
    target = context.target()
    results = []
    for index, frame in zip(indices, context.stack().frames(recipe.raw(indices))):
        data, timing = recipe.render(context.workspace(), index, frame)
        if target is not None:
            t0 = time.perf_counter()
            target.write(recipe.name(index), data)
            timing["write"] = time.perf_counter() - t0
            data = None
        results.append((index, data, timing))
    return results


def connect(scheduler, workers):
    """``(client, cluster, owns_client)`` for "local", an address or a ``distributed.Client``.

    An address must answer within :data:`CONNECT_TIMEOUT_S` and have a worker within
    :data:`WORKERS_TIMEOUT_S`; otherwise :class:`BatchError` says so in one sentence (nothing is
    written yet). The client is never made the process's default: other sessions of a server
    keep their own.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError(
            "Running on a Dask cluster needs dask and distributed: "
            'pip install "echo-s3-viewer[cluster]"; nothing was written.') from None

    if not isinstance(scheduler, str):
        return scheduler, None, False
    if scheduler == "local":
        cluster = LocalCluster(n_workers=int(workers or 2), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.WARNING)
        return Client(cluster, set_as_default=False), cluster, True
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise BatchError(
            f"Could not connect to the Dask scheduler at {scheduler} ({type(exc).__name__}); "
            "nothing was written."
        ) from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (OSError, TimeoutError):
        client.close()
        raise BatchError(
            f"The Dask scheduler at {scheduler} has no workers (none joined within "
            f"{WORKERS_TIMEOUT_S} s): start `dask worker {scheduler}`; nothing was written."
        ) from None
    return client, None, True


def address(client) -> str:
    """The scheduler's address (what the provenance and the status name)."""
    return str(getattr(client.scheduler, "address", None) or "a Dask scheduler")


def describe(client) -> str:
    """"the Dask scheduler at tcp://…: 2 workers, 4 threads" (from the scheduler's own count)."""
    threads = client.nthreads()
    workers, total = len(threads), sum(threads.values())
    return (f"the Dask scheduler at {address(client)}: {workers} worker"
            f"{'s' if workers != 1 else ''}, {total} thread{'s' if total != 1 else ''}")


def disconnect(client, cluster, owns: bool) -> None:
    if owns:
        client.close(timeout=CONNECT_TIMEOUT_S)
    if cluster is not None:
        cluster.close()


class SchedulerLost(BatchError):
    """The scheduler stopped answering mid-run (the frames written so far are kept)."""


def _lost(client, written: int) -> SchedulerLost:
    return SchedulerLost(
        f"Lost the Dask scheduler at {address(client)} after {written} frame"
        f"{'s' if written != 1 else ''}: the frames written are kept, and running the batch "
        "again resumes from there.")


def run(plan, recipe: Recipe, todo: list[int], tracker,
        cancel: threading.Event, client) -> None:
    """Send ``todo`` to the cluster in blocks of :data:`FRAMES_PER_TASK`, at most two per
    worker thread queued; write (or count) each block as it comes back.

    A worker that dies mid-run costs only time: the scheduler runs its blocks again elsewhere,
    and nothing is written until a block is whole. A scheduler that dies raises
    :class:`SchedulerLost`.
    """
    from asyncio import CancelledError
    from concurrent.futures import CancelledError as FutureCancelled

    from distributed.comm import CommClosedError

    output = plan.output
    remote_output = None
    if isinstance(output, S3Output):
        s3 = output.s3
        remote_output = ("s3", s3.endpoint, s3.credentials, output.bucket, output.prefix)
    run_id = uuid.uuid4().hex[:12]
    pending: set = set()
    finished: queue.Queue = queue.Queue()  # futures as they finish (not distributed.wait,
    lost = False                           # which needs a default client)
    context = _DaskContext(recipe, plan.spec(), remote_output)
    # hash=False: a random key, not a hash of the context (which holds the credentials)
    [context_future] = client.scatter([context], broadcast=True, hash=False)
    try:
        blocks = [todo[k:k + FRAMES_PER_TASK] for k in range(0, len(todo), FRAMES_PER_TASK)]
        threads = sum(client.nthreads().values()) or 1
        window = 2 * threads
        next_block = 0
        while next_block < len(blocks) or pending:
            while not cancel.is_set() and next_block < len(blocks) and len(pending) < window:
                block = blocks[next_block]
                future = client.submit(_dask_task, context_future, block, pure=False,
                                       key=f"echo-process-{run_id}-{block[0]:06d}")
                pending.add(future)
                future.add_done_callback(finished.put)
                next_block += 1
            if cancel.is_set():
                break
            try:
                done = [finished.get(timeout=0.2)]
            except queue.Empty:
                if client.status not in ("running", "newly-created"):  # reconnecting or closed
                    lost = True
                    raise _lost(client, len(tracker.written)) from None
                continue
            for future in done:
                if future not in pending:
                    continue
                pending.discard(future)
                try:
                    results = future.result()  # raises the task's own error
                except (CancelledError, FutureCancelled, CommClosedError):
                    lost = True
                    raise _lost(client, len(tracker.written)) from None
                future.release()
                for index, data, timing in results:
                    if data is not None:
                        t0 = time.perf_counter()
                        output.write(recipe.name(index), data)
                        timing["write"] = time.perf_counter() - t0
                    tracker.add(index, timing)
    finally:
        # Queued tasks are dropped; a task already running finishes on its worker (an S3
        # output then still gets its complete objects, which a resume will find).
        if pending and not lost:
            client.cancel(list(pending))
        if not lost:
            context_future.release()
