"""Playback of a frame stack: a ticker thread that steps :class:`ViewerState` at a chosen rate.

The ticker never queues frames: on each tick it advances only when the frame asked for last has
been shown (and the previous advance has been applied on the session's event loop, and, when
the served page reports its paints (``paced_by_page``), the browser has painted that frame or
one of the :data:`FRAMES_IN_FLIGHT` before it: that many frames may be on their way while the
page paints and reports the last, which overlaps the server's work with the browser's); if not ready at the tick, it re-checks every
:data:`RECHECK_S` until the next tick is due, and only then drops the tick. A slow network or a busy page therefore lowers the achieved rate instead of
building a backlog, every frame of the loop is shown in order, and Pause takes effect at once.
Reads go through :class:`~dashboard.hdf5.stack.FrameStack`, whose prefetch of the next two
frames in the direction of travel overlaps the network with the display.

No Panel here: the advance is applied through ``Tasks.post`` (the session's event loop when
served, the ticker thread itself in tests and notebooks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)

#: Shown frames the achieved rate is measured over (a sliding window).
RATE_WINDOW = 20
#: Seconds of history the achieved rate looks back at most.
RATE_SECONDS = 3.0
#: Seconds playback waits for the page to report a paint before stepping anyway (a page that
#: stopped reporting, e.g. a hidden tab, then plays at about 1 frame/s instead of queueing).
PAINT_TIMEOUT = 1.0
#: Seconds between checks while a due tick waits for the last frame (shown / painted).
RECHECK_S = 0.005
#: Frames shown but not yet reported painted that playback lets be on their way (the server
#: prepares the next frames while the browser paints and reports the last).
FRAMES_IN_FLIGHT = 3


def next_index(index: int, loop_range: tuple[int, int], direction: str = "forward") -> int:
    """The frame after ``index`` when looping over ``loop_range`` (inclusive) in ``direction``.

    An ``index`` outside the range re-enters it at its start (forward) or end (backward).

    Examples
    --------
    >>> next_index(4, (2, 5)), next_index(5, (2, 5)), next_index(2, (2, 5), "backward")
    (5, 2, 5)
    """
    low, high = sorted(int(v) for v in loop_range)
    step = -1 if direction == "backward" else 1
    if not low <= index <= high:
        return low if step > 0 else high
    following = index + step
    if following > high:
        return low
    if following < low:
        return high
    return following


class RateMeter:
    """Frames per second over the last :data:`RATE_WINDOW` frames (at most :data:`RATE_SECONDS`)."""

    def __init__(self, window: int = RATE_WINDOW, seconds: float = RATE_SECONDS):
        self._times: deque[float] = deque(maxlen=window)
        self._seconds = seconds

    def reset(self) -> None:
        self._times.clear()

    def tick(self, now: float | None = None) -> float | None:
        """Record a shown frame; the rate so far, or ``None`` before two frames."""
        now = time.monotonic() if now is None else now
        times = self._times
        times.append(now)
        while len(times) > 2 and now - times[0] > self._seconds:
            times.popleft()
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])


class Player:
    """The ticker of one :class:`~dashboard.state.viewer.ViewerState`.

    ``start()`` runs a daemon thread until ``stop()``; each tick posts one advance at most.
    Counters (``advanced``, ``dropped``) are for tests and the log.
    """

    def __init__(self, viewer):
        self._viewer = viewer
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._pending = False
        # the frames before the last steps (may be unpainted)
        self._previous: deque[int] = deque(maxlen=FRAMES_IN_FLIGHT)
        self._thread: threading.Thread | None = None
        self.advanced = 0
        self.dropped = 0

    @property
    def running(self) -> bool:
        return self._stop is not None and not self._stop.is_set()

    def start(self) -> None:
        self.stop()
        stop = threading.Event()
        with self._lock:
            self._stop, self._pending = stop, False
            self._previous = deque(maxlen=max(1, FRAMES_IN_FLIGHT))
        self._thread = threading.Thread(target=self._run, args=(stop,), name="echo-playback",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking (returns at once; an advance already posted is ignored)."""
        with self._lock:
            stop, self._stop = self._stop, None
        if stop is not None:
            stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the ticker thread to end (after :meth:`stop`); ``True`` when it has."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self, stop: threading.Event) -> None:
        viewer = self._viewer
        deadline = time.monotonic()
        self._waiting_since = None  # when the page was first seen not to have painted in time
        while True:
            period = 1.0 / max(1, int(viewer.fps))
            deadline += period
            now = time.monotonic()
            if deadline < now - period:  # far behind: start afresh rather than catch up
                deadline = now
            if stop.wait(max(0.0, deadline - now)):
                return
            # Due: step as soon as the last frame is ready, but no later than the next tick.
            while not self._ready():
                if time.monotonic() >= deadline + period:
                    self.dropped += 1
                    break
                if stop.wait(RECHECK_S):
                    return
            else:
                deadline = max(deadline, time.monotonic() - period / 2)  # keep the rhythm
                try:
                    viewer.tasks.post(self._advance, stop)
                except Exception:  # noqa: BLE001 - e.g. the session's loop is gone
                    log.debug("posting a playback step failed", exc_info=True)
                    return

    def _ready(self) -> bool:
        """May the next step be posted? (Claims it when so.)"""
        viewer = self._viewer
        with self._lock:
            if self._pending or viewer.stack is None or viewer.shown_index != viewer.index:
                return False
            if viewer.paced_by_page and (viewer.painted_index != viewer.index
                                         and viewer.painted_index not in self._previous):
                self._waiting_since = self._waiting_since or time.monotonic()
                if time.monotonic() - self._waiting_since <= PAINT_TIMEOUT:
                    return False
            self._pending, self._waiting_since = True, None
            return True

    def _advance(self, stop: threading.Event) -> None:
        with self._lock:
            self._pending = False
        viewer = self._viewer
        if stop.is_set() or not viewer.playing or viewer.stack is None:
            return
        self.advanced += 1
        self._previous.append(viewer.index)
        viewer.index = next_index(viewer.index, viewer.loop_range, viewer.direction)
