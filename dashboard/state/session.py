"""One :class:`Session` per browser session: its keys, S3 connection, open file and jobs."""

from __future__ import annotations

import logging
import threading

import param

from ..config import Settings
from ..storage.area import UserArea
from ..storage.credentials import Credentials
from ..text import shown
from . import links
from .analysis import AnalysisState
from .browser import BrowserState
from .inspect import DatasetValues, Inspector
from .links import DISPLAY, PROCESSING, Link
from .live import LiveFollow
from .processor import ProcessorState
from .provider import Provider
from .sinogram import SinogramState
from .tasks import Tasks
from .viewer import ViewerState

log = logging.getLogger(__name__)


class Session(param.Parameterized):
    """The state of one user's page: Browse → Inspect/Frames → Process.

    Nothing here is shared with other sessions: each has its own worker threads, its own
    :class:`~dashboard.storage.s3.S3` (keys), its own open :class:`FrameStack` and its own batch.

    Parameters
    ----------
    settings : Settings, optional
        Endpoint, key file and listing limit (``Settings.from_env()`` by default).
    credentials : Credentials, optional
        Ready-made keys (e.g. the demo store's); with these or with ``settings.credentials_path``
        the session connects at once.
    connect : bool, optional
        Connect at start; default: when ``credentials``, a key file or a ``provider`` is given.
    provider : Provider, optional
        Ready data access instead of S3 keys (e.g. a
        :class:`~dashboard.state.provider.MemoryProvider` in the state tests).
    user : str, optional
        The login on a shared server. With ``settings.user_root`` downloads and outputs go
        into this user's area; without it, downloads go to the browser (``deliveries``) and
        outputs to ``s3://`` only. None (no login): folders on the server, as typed.
    deliveries : Deliveries, optional
        The server's downloads to browsers (:mod:`dashboard.state.deliveries`).
    """

    browser = param.ClassSelector(class_=BrowserState, constant=True)
    viewer = param.ClassSelector(class_=ViewerState, constant=True)
    processor = param.ClassSelector(class_=ProcessorState, constant=True)
    analysis = param.ClassSelector(class_=AnalysisState, constant=True)

    restoring = param.Boolean(default=False, doc="A link is being opened (or waits for Connect).")
    link_status = param.String(default="", doc="What opening a link did, or what it waits for.")

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        credentials: Credentials | None = None,
        connect: bool | None = None,
        provider: Provider | None = None,
        user: str | None = None,
        deliveries=None,
        **params,
    ):
        settings = settings or Settings.from_env()
        self.settings = settings
        self.user = user
        area = UserArea.for_user(settings.user_root, user) if settings.user_root else None
        folders = user is None or area is not None  # a login without areas: no server folders
        self._provider = provider
        self.tasks = Tasks()
        self._restore: _Restore | None = None
        self._released = threading.Event()
        browser = BrowserState(
            tasks=self.tasks,
            endpoint=settings.endpoint if settings.endpoint_given else "",
            allowed_endpoints=list(settings.allowed_endpoints or []),
            credentials_path=str(settings.credentials_path or "") if settings.server_keys else "",
            max_objects=settings.max_objects,
            server_keys=settings.server_keys,
            area=area, deliveries=deliveries, user=user, server_folders=folders,
            max_frame_pixels=settings.max_frame_pixels,
        )
        viewer = ViewerState(tasks=self.tasks, browser=browser)
        # Alone, any scheduler may be typed; logged in, only the operator's (none: threads).
        schedulers = None if user is None else [settings.scheduler] if settings.scheduler else []
        processor = ProcessorState(tasks=self.tasks, viewer=viewer, area=area,
                                   local_outputs=folders, user=user, schedulers=schedulers,
                                   scheduler=settings.scheduler or "")
        analysis = AnalysisState(viewer)
        super().__init__(browser=browser, viewer=viewer, processor=processor,
                         analysis=analysis, **params)
        self.inspector = Inspector(browser, viewer, self.tasks)
        self.values = DatasetValues(browser, viewer, self.tasks)
        self.live = LiveFollow(browser, viewer, self.tasks)
        self.sinogram = SinogramState(analysis)
        if connect is None:
            connect = (credentials is not None or settings.credentials_path is not None
                       or provider is not None)
        if connect:
            self.start(credentials=credentials)

    def start(self, *, credentials: Credentials | None = None) -> None:
        """Connect now (in the background) if keys, a key file or a provider were given.

        The endpoint follows :func:`~dashboard.config.resolve_endpoint`: the one given on the
        command line or in the environment, else the key file's, else ECHO."""
        if self._provider is not None:
            self.browser.connect_now(provider=self._provider)
        elif credentials is not None or self.settings.credentials_path is not None:
            self.browser.connect_now(
                credentials, endpoint=self.settings.endpoint if self.settings.endpoint_given
                else None)

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the background work started so far has finished (tests, notebooks)."""
        return self.tasks.wait(timeout)

    # -- deep links --------------------------------------------------------------------------

    def owners(self) -> dict:
        """The state objects the link table (:data:`~dashboard.state.links.FIELDS`) refers to."""
        return {"browser": self.browser, "viewer": self.viewer, "processor": self.processor}

    def link(self) -> dict:
        """The shareable view, query name → value: where the file is, what is shown, the
        processing parameters. Never keys, key-file paths or server-side folders."""
        owners, browser, viewer = self.owners(), self.browser, self.viewer
        values = {}
        provider = browser.provider
        if provider is not None and provider.endpoint != self.settings.endpoint:
            values["endpoint"] = provider.endpoint  # a custom endpoint; the default goes unsaid
        opened = links.split_url(viewer.url) if viewer.stack is not None else None
        if opened:
            values["bucket"], values["key"] = opened
            values.update(links.read_view(owners, ("dataset", "frame", *PROCESSING)))
        elif browser.connected and browser.bucket:
            values["bucket"] = browser.bucket
        values.update(links.read_view(owners, DISPLAY))
        if not _manual_contrast(values.get("contrast_mode", "manual")):
            values.pop("contrast", None)  # derived from the percentiles or the stack
        return values

    def link_query(self) -> str:
        """:meth:`link` as a URL query string (without ``?``)."""
        return links.encode_query(self.link())

    def restore(self, query) -> Link:
        """Open a link: apply its display settings now, then (once connected) choose its
        bucket, list it, load its file, pick its dataset, go to its frame and apply its
        processing parameters — each step when the previous one has finished.

        Progress and problems go to :attr:`link_status`; nothing here raises for a bad link.

        Parameters
        ----------
        query : str, mapping or Link
            ``"?bucket=...&key=..."``, request arguments, or an already decoded link.
        """
        link = query if isinstance(query, Link) else links.decode_query(query, self.owners())
        if self._restore is not None:
            self._restore.stop()
            self._restore = None
            self.restoring = False
        if not link and not link.message():
            return link
        endpoint, allowed = link.values.get("endpoint"), self.settings.allowed_endpoints
        if endpoint and allowed and endpoint not in allowed:
            self.link_status = (f"This link is for the endpoint {shown(endpoint)}, which this "
                                "server does not connect to: it was not opened.")
            return link
        notes = [link.message()] if link.message() else []
        notes += _apply(self.owners(), link.values, DISPLAY)
        if "bucket" not in link.values:
            stranded = [n for n in ("key", "dataset", "frame", *PROCESSING) if n in link.values]
            if stranded:
                notes.append(f"Not applied without the link's bucket: {', '.join(stranded)}.")
            self.link_status = " ".join(notes) or "Link opened: display settings applied."
            return link
        self.restoring = True
        self._restore = _Restore(self, link, notes)
        self._restore.advance()
        return link

    def wait_restored(self, timeout: float = 60.0) -> bool:
        """Block until a link being opened is finished (tests, notebooks)."""
        import time

        deadline = time.monotonic() + timeout
        while self.restoring and time.monotonic() < deadline:
            self.tasks.wait(timeout=0.2)
            time.sleep(0.01)
        return not self.restoring

    def close(self) -> None:
        """The browser tab went away: stop everything at once, release it all soon after.

        Runs on the event loop, so it never waits and never calls HDF5: jobs are cancelled
        (batch, ROI series, queued tasks), every handle the session opened stops reading
        between chunks, playback and read-ahead stop. A short-lived thread then closes the
        files, the S3 connections' sockets and the download (:meth:`wait_released`).
        """
        if self._restore is not None:
            self._restore.stop()
        provider = self.browser.provider
        if provider is not None:
            provider.stop()
        self.live.close()
        self.processor.close()
        self.analysis.close()
        self.sinogram.close()
        self.viewer.stop()
        self.tasks.shutdown()
        threading.Thread(target=self._release, args=(provider,), name="echo-session-release",
                         daemon=True).start()

    def _release(self, provider) -> None:
        try:
            self.browser.close()
            self.viewer.close()
            if provider is not None:
                provider.shutdown()
        except Exception:  # a thread of its own: log, never raise
            log.exception("Releasing a closed session failed")
        finally:
            self._released.set()

    def wait_released(self, timeout: float | None = 60.0) -> bool:
        """Block until the session is closed and has released its files and sockets (tests)."""
        return self._released.wait(timeout)


def _endpoint(text: str) -> str:
    from ..config import normalize_endpoint
    from ..errors import EchoError

    try:
        return normalize_endpoint(text)
    except EchoError:
        return ""


def _enter(browser) -> str:
    """How the user gives an endpoint: typed, or chosen from the operator's list."""
    return "choose" if browser.allowed_endpoints else "enter"


def _manual_contrast(mode) -> bool:
    return mode == "manual"


def _apply(owners: dict, values: dict, names) -> list[str]:
    """Set the link's values of ``names`` on their owners; what could not be set, in words."""
    notes = []
    if not _manual_contrast(values.get("contrast_mode", "manual")):
        names = [n for n in names if n != "contrast"]
    for name in names:
        if name not in values:
            continue
        item = links.BY_NAME[name]
        owner = owners[item.owner]
        try:
            setattr(owner, item.param, values[name])
        except Exception:  # noqa: BLE001 - out of this stack's bounds, or refused
            notes.append(f"{name} {values[name]!s} does not fit this file and was not applied.")
    return notes


class _Restore:
    """Opens one link step by step: connect → bucket → listing → load → dataset → frame.

    Each step starts an action of the browser or viewer state and returns; watchers on
    ``connected``/``busy``/``loading``/``shown_index`` call :meth:`advance` again (deferred
    through the session's tasks, so never inside another state update), which looks at the
    state and takes the next step. Every step is taken once.
    """

    def __init__(self, session: Session, link: Link, notes: list[str]):
        self.session, self.link, self.notes = session, link, notes
        self.phase = "connect"
        self.done = False
        self._tried_dataset = False
        self._lock = threading.RLock()
        v = link.values
        self.bucket, self.key = v["bucket"], v.get("key")
        self.target = f"s3://{v['bucket']}/{v.get('key') or ''}"
        self._first_url = session.viewer.url  # another file opened meanwhile: the user moved on
        self._watchers = [
            (session.browser, session.browser.param.watch(self._defer, ["connected", "busy"])),
            (session.viewer, session.viewer.param.watch(self._defer, ["loading", "shown_index"])),
        ]

    def _defer(self, *events) -> None:
        tasks = self.session.tasks
        if not self.done:
            tasks.submit(tasks.post, self.advance)

    def say(self, text: str) -> None:
        self.session.link_status = text

    def stop(self) -> None:
        self.done = True
        for owner, watcher in self._watchers:
            owner.param.unwatch(watcher)
        self._watchers = []

    def finish(self, text: str) -> None:
        self.stop()
        notes = " ".join(n for n in self.notes if n)
        self.session.param.update(restoring=False,
                                  link_status=f"{text} {notes}".strip())

    def advance(self) -> None:
        with self._lock:
            if self.done:
                return
            try:
                self._step()
            except Exception:  # noqa: BLE001 - never a traceback for a link
                log.exception("Opening a link failed")
                self.finish("Could not open this link (details are in the server log).")

    def _step(self) -> None:
        session = self.session
        browser, viewer = session.browser, session.viewer
        values = self.link.values
        target = shown(self.target)
        if self.phase == "connect" and viewer.url != self._first_url:
            self.finish(f"The link to {target} was set aside: another file was opened.")
            return
        wanted = values.get("endpoint", session.settings.endpoint)
        if not browser.connected or browser.provider is None:
            self.phase = "connect"
            text = (f"Link to {target}: it opens once you are connected."
                    if not browser.busy else f"Link to {target}: connecting…")
            if "endpoint" in values and _endpoint(browser.endpoint) != wanted:
                text += (f" It is for the endpoint {shown(wanted)}: if you trust it, "
                         f"{_enter(browser)} it as the Endpoint.")
            self.say(text)
            return
        if browser.busy:
            return
        if browser.provider.endpoint != wanted:
            self.phase = "connect"  # wait for a connection to the link's endpoint
            self.say(f"This link is for the endpoint {shown(wanted)}, this session is connected "
                     f"to {shown(browser.provider.endpoint)}: if you trust it, "
                     f"{_enter(browser)} that endpoint and press Connect to open the link.")
            return
        if self.phase == "connect":
            if self.bucket not in browser.param.bucket.objects:
                self.finish(f"The bucket {shown(self.bucket)} of this link is not visible with "
                            "these keys.")
                return
            if browser.bucket != self.bucket:
                browser.bucket = self.bucket
            self.phase = "listing"
            self.say(f"Opening the link: listing s3://{shown(self.bucket)}/ …")
            browser.param.trigger("list_objects")
            return
        if self.phase == "listing":
            self._listed(browser, viewer)
            return
        if self.phase == "opening":
            self._opened(viewer)

    def _listed(self, browser, viewer) -> None:
        if browser.bucket != self.bucket:
            self.finish("The link was not opened: another bucket was chosen meanwhile.")
            return
        keys = {o.key for o in browser.listing}
        if not browser.listing and not browser.truncated_notice:
            self.finish(f"The link's bucket could not be listed or is empty: {browser.status}")
            return
        if self.key is None:
            self.finish(f"Link opened: s3://{shown(self.bucket)}/ listed.")
            return
        if self.key not in keys and not browser.truncated_notice:
            self.finish(f"The link's file {shown(self.key)} is not in s3://{shown(self.bucket)}/ "
                        "(deleted or renamed?).")
            return
        browser.selection = [self.key]
        self.phase = "opening"
        self.say(f"Opening the link: loading {shown(self.key)} …")
        viewer.param.trigger("load")

    def _opened(self, viewer) -> None:
        if viewer.loading:
            return
        if viewer.stack is None or viewer.url != self.target:
            self.finish(f"Could not open the link's file: {viewer.status}")
            return
        dataset = self.link.values.get("dataset")
        if dataset and viewer.stack.dataset != dataset:
            if not self._tried_dataset and dataset in viewer.param.dataset.objects:
                self._tried_dataset = True
                self.say(f"Opening the link: switching to {shown(dataset)} …")
                viewer.dataset = dataset
                return
            self.notes.append(f"{shown(dataset)} is not an image stack of this file; showing "
                              f"{shown(viewer.stack.dataset)}.")
            self.link.values.pop("dataset")
        if viewer.shown_index < 0:
            return  # the stack's first frame is on its way; go on once it is shown
        self._show(viewer)

    def _show(self, viewer) -> None:
        values = self.link.values
        last = max(0, viewer.n_frames - 1)
        frame = values.get("frame", 0)
        if frame > last:
            self.notes.append(f"Frame {frame} is beyond the last frame ({last}): showing {last}.")
            frame = last
        self.notes += _apply(self.session.owners(), values, PROCESSING)
        self.notes += _apply(self.session.owners(), values, DISPLAY)
        if viewer.index != frame:
            viewer.index = frame
        self.finish(f"Link opened: {shown(self.key)}, {shown(viewer.stack.dataset)}, "
                    f"frame {frame}.")
