"""Follow a prefix while an experiment writes to it: the Browse step's live mode.

While :attr:`LiveFollow.follow` is on, one thread of the session lists the bucket's prefix (the
Browse step's Directory) every :attr:`~LiveFollow.interval` seconds, backing off to
:data:`MAX_BACKOFF` times that while nothing changes and back at once when something does
(:class:`PollSchedule`). Each listing is one ``ListObjectsV2`` request per 1000 objects: a poll
never costs more. What appeared or changed (:func:`~dashboard.storage.listing.changes`) is
marked in :attr:`~LiveFollow.fresh` and the listing is sorted newest first. The open file,
replaced on the server, is offered for Reload; with :attr:`~LiveFollow.open_newest` the
newest HDF5 file is opened on its last frame (and reopened as it grows). Polling pauses
while the page is hidden (:attr:`~LiveFollow.hidden`, set by the page) and stops on its own
after :data:`IDLE_STOP_S` seconds without a change.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import param

from ..storage.listing import changes
from ..storage.s3 import parse_s3_url
from ..text import shown
from .browser import BrowserState
from .tasks import Tasks, user_message
from .viewer import ViewerState

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 2.0
DEFAULT_INTERVAL_S = 10.0
MAX_INTERVAL_S = 600.0
MAX_BACKOFF = 8  # while nothing changes, polls slow down to this many intervals apart
IDLE_STOP_S = 3600.0  # following stops after this long without a change


@dataclass
class PollSchedule:
    """When to poll next: every ``interval`` seconds after a change, twice as long after each
    poll without one (at most ``backoff`` × ``interval``); ``None`` once ``idle_stop`` seconds
    have passed without a change.

    >>> schedule = PollSchedule(2.0)
    >>> [schedule.after(False, 2.0) for _ in range(4)], schedule.after(True, 16.0)
    ([4.0, 8.0, 16.0, 16.0], 2.0)
    """

    interval: float
    backoff: int = MAX_BACKOFF
    idle_stop: float = IDLE_STOP_S
    wait: float = field(init=False)
    quiet: float = field(init=False, default=0.0)

    def __post_init__(self):
        self.wait = self.interval

    def after(self, changed: bool, elapsed: float) -> float | None:
        """The wait before the next poll, after one that found ``changed``, ``elapsed``
        seconds after the previous one."""
        if changed:
            self.quiet, self.wait = 0.0, self.interval
            return self.wait
        self.quiet += elapsed
        if self.quiet >= self.idle_stop:
            return None
        self.wait = min(self.wait * 2, self.interval * self.backoff)
        return self.wait


@dataclass
class _Run:
    """One period of following: what the thread reads, set on the event loop."""

    provider: object
    bucket: str
    prefix: str
    limit: int
    interval: float
    hidden: bool
    known: dict | None  # key -> ObjectInfo; None: the first poll is the baseline
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    reset: bool = False
    polls: int = 0
    opened: str | None = None  # the key opened by open_newest, and its ETag
    opened_etag: str = ""


class LiveFollow(param.Parameterized):
    """Follow the Browse step's bucket and Directory: new objects as they land."""

    follow = param.Boolean(default=False, label="Follow",
                           doc="List the Directory again and again, showing what is new.")
    interval = param.Number(default=DEFAULT_INTERVAL_S, bounds=(MIN_INTERVAL_S, MAX_INTERVAL_S),
                            label="Check every (s)",
                            doc="Seconds between listings (slower while nothing changes).")
    open_newest = param.Boolean(default=False, label="Open the newest HDF5 file",
                                doc="Open the newest HDF5 file on its last frame, and again "
                                    "whenever a newer one lands or it grows.")
    hidden = param.Boolean(default=False, precedence=-1,
                           doc="The page is hidden (a background tab): polling pauses.")
    fresh = param.Dict(default={}, precedence=-1,
                       doc="key -> 'new' or 'changed': what landed while following.")
    polls = param.Integer(default=0, precedence=-1, doc="Listings made while following.")
    status = param.String(default="")
    failed = param.Boolean(default=False, precedence=-1)

    def __init__(self, browser: BrowserState, viewer: ViewerState, tasks: Tasks, *,
                 clock=time.monotonic, **params):
        super().__init__(**params)
        self.browser, self.viewer, self.tasks, self._clock = browser, viewer, tasks, clock
        self._run: _Run | None = None
        # Every listing of the session, whatever woke it (the page's visibility, a new
        # interval, Follow ticked off and on) and whichever thread makes it: at least
        # MIN_INTERVAL_S apart.
        self._listing = threading.Lock()
        self._listed_at = -MIN_INTERVAL_S
        browser.param.watch(self._place_changed, ["bucket", "directory", "connected"])

    # -- on the event loop ----------------------------------------------------------------

    @param.depends("follow", watch=True)
    def _on_follow(self) -> None:
        if not self.follow:
            self._stop("Stopped following.")
            return
        browser = self.browser
        if browser.provider is None or not browser.bucket:
            self.param.update(follow=False, failed=True,
                              status="Connect and choose a bucket first, then Follow.")
            return
        prefix = browser.directory or ""
        listed = [o for o in browser.listing if o.key.startswith(prefix)]
        run = _Run(provider=browser.provider, bucket=browser.bucket, prefix=prefix,
                   limit=browser.max_objects, interval=float(self.interval),
                   hidden=self.hidden,
                   known={o.key: o for o in listed} if browser.listing else None)
        self._run = run
        browser.param.update(sort_by="date", descending=True)
        self.param.update(fresh={}, polls=0, failed=False)
        self._on_hidden()
        threading.Thread(target=self._loop, args=(run,), name="echo-follow",
                         daemon=True).start()

    @param.depends("interval", watch=True)
    def _on_interval(self) -> None:
        run = self._run
        if run is not None:
            run.interval, run.reset = float(self.interval), True
            run.wake.set()

    @param.depends("hidden", watch=True)
    def _on_hidden(self) -> None:
        run = self._run
        if run is None:
            return
        run.hidden = self.hidden
        run.wake.set()
        self.status = (f"Paused while this page is hidden; following {self._where(run)} "
                       "resumes when it is shown." if self.hidden
                       else f"Following {self._where(run)}: checking now…")

    @param.depends("open_newest", watch=True)
    def _on_open_newest(self) -> None:
        run = self._run
        if run is not None and self.open_newest:
            run.wake.set()  # open it now, not at the next poll

    def _place_changed(self, *events) -> None:
        if self._run is not None:
            self.param.update(follow=False)  # another bucket, folder or connection

    def _stop(self, message: str) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.stop.set()
            run.wake.set()
            self.param.update(status=message, failed=False)

    def close(self) -> None:
        """The session ends: the thread stops at once (it is waiting, or finishing a list)."""
        run, self._run = self._run, None
        if run is not None:
            run.stop.set()
            run.wake.set()

    @staticmethod
    def _where(run: _Run) -> str:
        return shown(f"s3://{run.bucket}/{run.prefix}")

    # -- the thread -----------------------------------------------------------------------

    def _loop(self, run: _Run) -> None:
        schedule, wait, last = PollSchedule(run.interval), 0.0, self._clock()
        while not run.stop.is_set():
            if wait:
                run.wake.wait(wait)
            run.wake.clear()
            while run.hidden and not run.stop.is_set():
                run.wake.wait()
                run.wake.clear()
            if run.stop.is_set():
                return
            if run.reset:
                run.reset = False  # before reading the interval: a newer one sets it again
                schedule = PollSchedule(run.interval)
            try:
                listing = self._list(run)
                if listing is None:
                    return  # stopped while waiting for its turn
            except Exception as exc:  # noqa: BLE001 - said, and tried again later
                message = user_message(exc, f"list {self._where(run)}")
                run.polls += 1
                now = self._clock()
                wait, last = schedule.after(False, now - last), now
                self.tasks.post(self._poll_failed, run, message, wait)
                if wait is None:
                    return
                continue
            run.polls += 1
            found = changes(run.known, listing.objects) if run.known is not None else {}
            run.known = {o.key: o for o in listing.objects}
            now = self._clock()
            wait, last = schedule.after(bool(found), now - last), now
            self.tasks.post(self._polled, run, listing, found, wait)
            if wait is None:
                return

    def _list(self, run: _Run):
        """One listing, at least :data:`MIN_INTERVAL_S` after the session's previous one."""
        with self._listing:
            due = self._listed_at + MIN_INTERVAL_S - time.monotonic()
            if due > 0 and run.stop.wait(due):
                return None
            try:
                return run.provider.list_objects(run.bucket, prefix=run.prefix, limit=run.limit)
            finally:
                self._listed_at = time.monotonic()

    # -- results, on the event loop ---------------------------------------------------------

    def _poll_failed(self, run: _Run, message: str, wait: float | None) -> None:
        if run is not self._run:
            return
        self.param.update(polls=run.polls, failed=True,
                          status=f"{message} Trying again in {_seconds(wait)}."
                          if wait is not None else message)
        if wait is None:
            self._idle_stop()

    def _polled(self, run: _Run, listing, found: dict, wait: float | None) -> None:
        if run is not self._run:
            return
        browser = self.browser
        others = [o for o in browser.listing if not o.key.startswith(run.prefix)]
        browser.param.update(listing=others + list(listing.objects))
        fresh = {**self.fresh, **found}
        if wait is None:
            self.param.update(polls=run.polls, fresh=fresh, failed=False)
            self._idle_stop()
            return
        self._follow_open_file(run, listing.objects)
        counts = [f"{sum(1 for v in fresh.values() if v == kind)} {kind}"
                  for kind in ("new", "changed") if kind in fresh.values()]
        # Last, in one update: whoever watches the count sees the listing and status with it.
        self.param.update(polls=run.polls, fresh=fresh, failed=False, status=(
            f"Following {self._where(run)}: " + (", ".join(counts) if counts else "nothing new")
            + f"; next check in {_seconds(wait)}."))

    def _idle_stop(self) -> None:
        self._stop("Stopped following: nothing changed for an hour. Tick Follow to go on.")
        self.param.update(follow=False)

    def _follow_open_file(self, run: _Run, objects) -> None:
        """The open file replaced: offer Reload, or (open newest) reload it on its last
        frame. A newer HDF5 file landed (open newest): open it on its last frame."""
        viewer = self.viewer
        by_key = {o.key: o for o in objects}
        open_key = None
        if viewer.stack is not None and viewer.url.startswith("s3://"):
            bucket, key = parse_s3_url(viewer.url)
            open_key = key if bucket == run.bucket else None
        if not self.open_newest:
            if open_key in by_key:
                viewer.mark_newer(by_key[open_key].etag)
            return
        hdf5 = [o for o in objects if o.is_hdf5]
        if not hdf5:
            return
        newest = max(hdf5, key=lambda o: (o.last_modified, o.key))
        if (newest.key, newest.etag) == (run.opened, run.opened_etag) or viewer.loading:
            return
        run.opened, run.opened_etag = newest.key, newest.etag
        self.browser.selection = [newest.key]
        viewer.open(f"s3://{run.bucket}/{newest.key}", index=None)


def _seconds(wait: float | None) -> str:
    return "—" if wait is None else f"{wait:g} s" if wait < 120 else f"{wait / 60:g} min"
