"""One :class:`Session` per browser session: its keys, S3 connection, open file and jobs."""

from __future__ import annotations

import logging

import param

from ..config import Settings
from ..storage.credentials import Credentials
from .browser import BrowserState
from .processor import ProcessorState
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
        Connect at start; default: when ``credentials`` or a key file is given.
    """

    browser = param.ClassSelector(class_=BrowserState, constant=True)
    viewer = param.ClassSelector(class_=ViewerState, constant=True)
    processor = param.ClassSelector(class_=ProcessorState, constant=True)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        credentials: Credentials | None = None,
        connect: bool | None = None,
        **params,
    ):
        settings = settings or Settings.from_env()
        self.settings = settings
        self.tasks = Tasks()
        browser = BrowserState(
            tasks=self.tasks,
            endpoint=settings.endpoint,
            credentials_path=str(settings.credentials_path or ""),
            max_objects=settings.max_objects,
        )
        viewer = ViewerState(tasks=self.tasks, browser=browser)
        processor = ProcessorState(tasks=self.tasks, viewer=viewer)
        super().__init__(browser=browser, viewer=viewer, processor=processor, **params)
        if connect is None:
            connect = credentials is not None or settings.credentials_path is not None
        if connect:
            self.start(credentials=credentials)

    def start(self, *, credentials: Credentials | None = None) -> None:
        """Connect now (in the background) if keys were given or a key file is configured."""
        if credentials is not None or self.settings.credentials_path is not None:
            self.browser.connect_now(credentials, endpoint=self.settings.endpoint)

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the background work started so far has finished (tests, notebooks)."""
        return self.tasks.wait(timeout)

    def close(self) -> None:
        """Cancel jobs, close files, stop the worker threads (the browser tab went away)."""
        self.processor.close()
        self.browser.close()
        self.viewer.close()
        self.tasks.shutdown()
