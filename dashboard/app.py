"""Serve the dashboard: ``panel serve dashboard/app.py`` or ``echo-s3-viewer serve``.

Under ``panel serve`` this module runs once per browser session: it builds a new
:class:`~dashboard.state.session.Session` (own keys, own S3 connection, own files and jobs)
and marks its template servable. Settings come from the environment
(``ECHO_S3_ENDPOINT``, ``ECHO_S3_CREDENTIALS``, ``ECHO_S3_MAX_OBJECTS``).
"""

from __future__ import annotations

import logging
import threading

import panel as pn

from dashboard.config import Settings
from dashboard.errors import EchoError
from dashboard.state.session import Session
from dashboard.ui.app import TITLE, EchoS3Viewer, extension

log = logging.getLogger("dashboard.app")


def create_app(settings: Settings | None = None, *, credentials=None):
    """A new session and its page (a ``FastListTemplate``).

    Parameters
    ----------
    settings : Settings, optional
        ``Settings.from_env()`` by default.
    credentials : Credentials, optional
        Keys every new session connects with at once (the demo store's).
    """
    extension()
    try:
        settings = settings or Settings.from_env()
    except EchoError as exc:  # e.g. a bad ECHO_S3_ENDPOINT: say so instead of a traceback
        return _error_page(str(exc))
    session = Session(settings, connect=False)
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        session.tasks.dispatch = _scheduler(doc)
        pn.state.on_session_destroyed(lambda context: session.close())
    page = EchoS3Viewer(session=session).template()
    session.start(credentials=credentials)
    return page


def _error_page(message: str):
    return pn.template.FastListTemplate(
        title=TITLE, main=[pn.pane.Alert(f"The dashboard cannot start: {message}",
                                         alert_type="danger")])


def _scheduler(doc):
    """Apply background results on the session's event loop, holding its document lock."""
    from panel.io.state import set_curdoc

    def dispatch(fn) -> None:
        with set_curdoc(doc):
            pn.state.execute(fn, schedule=True)

    return dispatch


def _apps(settings: Settings, credentials) -> dict:
    def app():  # Panel calls plain functions once per session (a partial would be rendered)
        return create_app(settings, credentials=credentials)

    return {"": app}


def _origins(address: str, port: int, allow_websocket_origin) -> list[str] | None:
    origins = list(allow_websocket_origin or [])
    return origins or None  # None: Bokeh accepts only the address it serves (localhost)


class RunningServer:
    """A dashboard server running on its own thread (tests, embedding): ``.url``, ``.stop()``.

    Extra keyword arguments go to Panel's ``get_server`` (and Bokeh's ``Server``), e.g.
    ``unused_session_lifetime_milliseconds`` to end closed sessions sooner.
    """

    def __init__(self, settings: Settings, *, credentials=None, port: int = 0,
                 address: str = "127.0.0.1", allow_websocket_origin=None,
                 prefix: str | None = None, **server_kwargs):
        import asyncio

        from panel.io.server import get_server
        from tornado.ioloop import IOLoop

        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server = None

        def run() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            loop = IOLoop.current()
            try:
                self.server = get_server(
                    _apps(settings, credentials), port=port, address=address,
                    websocket_origin=_origins(address, port, allow_websocket_origin),
                    prefix=prefix or "", title=TITLE, loop=loop, start=False, show=False,
                    **server_kwargs,
                )
                self.server.start()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                self._error = exc
                self._ready.set()
                return
            self._loop = loop
            self._ready.set()
            loop.start()

        self._thread = threading.Thread(target=run, name="echo-dashboard-server", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        self.port = self.server.port
        self.url = f"http://{address}:{self.port}/{(prefix or '').strip('/')}".rstrip("/") + "/"

    def stop(self) -> None:
        if self.server is not None:
            loop = self._loop
            loop.add_callback(self.server.stop)
            loop.add_callback(loop.stop)
            self._thread.join(10)
            self.server = None

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(
    *,
    settings: Settings,
    demo: bool = False,
    port: int = 0,
    address: str = "127.0.0.1",
    show: bool = False,
    allow_websocket_origin=None,
    prefix: str | None = None,
) -> None:
    """Serve until interrupted (``echo-s3-viewer serve``).

    With ``demo=True`` the embedded demo S3 store starts first and every new session connects
    to it. With a key file in ``settings`` every session connects at start. Websocket
    connections are accepted only from the served address unless ``allow_websocket_origin``
    names more (never ``*`` by default).
    """
    store = None
    credentials = None
    if demo:
        from dashboard.demo.store import start_demo_store

        store = start_demo_store(scale="full")
        settings = settings.with_overrides(endpoint=store.endpoint)
        credentials = store.credentials
    try:
        pn.serve(
            _apps(settings, credentials), port=port, address=address, show=show,
            websocket_origin=_origins(address, port, allow_websocket_origin),
            prefix=prefix or "", title=TITLE,
        )
    finally:
        if store is not None:
            store.stop()


if __name__.startswith("bokeh_app"):  # panel serve dashboard/app.py
    create_app().servable(title=TITLE)
