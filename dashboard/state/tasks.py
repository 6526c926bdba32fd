"""Background work of one dashboard session: a small thread pool, latest-only requests, messages.

Long actions (listing, downloads, opening files, frame reads, batches) run here, off the Bokeh
event loop. They report by setting parameters of the state objects; Panel forwards parameter
changes made on a worker thread to the browser on the next tick of the session's document.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial

from ..errors import EchoError

log = logging.getLogger(__name__)


def user_message(exc: BaseException, action: str) -> str:
    """One sentence for the status line: our own errors verbatim, anything else generically.

    Unexpected exceptions are logged with their traceback (server side only); the page never
    shows one.
    """
    if isinstance(exc, EchoError):
        return str(exc)
    log.error("Unexpected error while trying to %s", action, exc_info=exc)
    return f"Could not {action}: unexpected {type(exc).__name__} (details are in the server log)."


def _logged(fn: Callable, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except Exception:  # a failing view must not take the session down
        log.exception("Applying a background result failed")


class Tasks:
    """The worker threads of one session.

    Parameters
    ----------
    max_workers : int
        Threads of this session; listing, a download and a batch can run side by side.
    """

    def __init__(self, max_workers: int = 4, name: str = "echo-session",
                 dispatch: Callable[[Callable[[], None]], None] | None = None):
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        #: How results reach the state: ``None`` applies them on the worker thread (tests);
        #: the served app sets a function that schedules them on the session's event loop, and
        #: the notebook viewer one that runs them on the kernel's main thread: where Panel
        #: and HoloViews may touch the page's models.
        self.dispatch = dispatch
        self._futures: set[Future] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable, *args, **kwargs) -> Future | None:
        """Run ``fn(*args, **kwargs)`` on a worker thread (nothing once the session is closed).

        ``fn`` must catch its own errors (see :meth:`action`); anything that escapes is logged.
        """
        with self._lock:
            if self._closed:
                return None
            future = self._pool.submit(fn, *args, **kwargs)
            self._futures.add(future)
        future.add_done_callback(self._done)
        return future

    def post(self, fn: Callable, *args, **kwargs) -> None:
        """Apply ``fn(*args, **kwargs)`` (a state update) through :attr:`dispatch`."""
        if self.dispatch is None:
            fn(*args, **kwargs)
        else:
            self.dispatch(partial(_logged, fn, *args, **kwargs))

    def _done(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("Background task failed", exc_info=future.exception())

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until every task submitted so far (and the ones they start) has finished."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = set(self._futures)
            if not pending:
                return True
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait(pending, timeout=remaining)
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    return not self._futures

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._futures)

    @property
    def closed(self) -> bool:
        """Whether the session has ended (no new work starts; long loops should stop)."""
        return self._closed

    def shutdown(self) -> None:
        """Stop accepting work and drop what is queued, without waiting (safe on the event
        loop); running tasks end on their own (they watch cancel flags and closed handles),
        then the worker threads exit."""
        with self._lock:
            self._closed = True
            pending = list(self._futures)
        for future in pending:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


class LatestOnly:
    """Run ``fn(request)`` for the newest request only.

    While ``fn`` runs, further requests overwrite each other; when it returns, the newest one (if
    any) runs next. Dragging a slider across 200 frames therefore reads a handful of frames, never
    a queue of stale ones.
    """

    def __init__(self, tasks: Tasks, fn: Callable[[object], None]):
        self._tasks = tasks
        self._fn = fn
        self._lock = threading.Lock()
        self._pending: list = []  # at most one element: the newest request
        self._running = False

    def request(self, value) -> None:
        with self._lock:
            self._pending[:] = [value]
            if self._running:
                return
            self._running = True
        if self._tasks.submit(self._drain) is None:
            with self._lock:
                self._running = False

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self._tasks.closed:
                    self._pending.clear()
                    self._running = False
                    return
                value = self._pending.pop()
            try:
                self._fn(value)
            except Exception:  # fn reports its own errors; never let the drain loop die
                log.exception("Latest-only task failed")
