"""Served dashboard sessions without a browser, for the load, fault and secrets tests.

:class:`LiveClient` opens a real session of a :class:`~dashboard.app.RunningServer` over its
websocket with Bokeh's Python client (``bokeh.client.pull_session``): the server runs
``create_app`` for it exactly as for a browser tab, and the client keeps reading the server's
document patches on a thread of its own, so ``client.document`` is what a browser would show.

:func:`record_sessions` remembers the :class:`~dashboard.state.session.Session` each served
session builds (by Bokeh session id, weakly), so a test can drive the state on the session's
own event loop (:func:`on_loop`, like a click arriving over the websocket) and then check both
the state and the client's copy of the page.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from concurrent.futures import Future


__all__ = ["LiveClient", "record_sessions", "on_loop", "until", "client_text", "rss_mb",
           "open_fds"]


class LiveClient:
    """A Bokeh client session that keeps applying the server's patches on its own thread."""

    def __init__(self, url: str, *, timeout: float = 120.0):
        from bokeh.client import pull_session
        from tornado.ioloop import IOLoop

        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.session = None

        def run() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self.loop = IOLoop.current()
            try:
                self.session = pull_session(url=url, io_loop=self.loop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = exc
                self._ready.set()
                return
            _handle_messages_in_a_loop(self.session._connection)
            self._ready.set()
            from bokeh.events import DocumentReady

            # BokehJS sends DocumentReady once the page has rendered; Panel treats the session
            # as connected only after it (until then HoloViews keeps re-scheduling plot
            # updates instead of sending them).
            self.loop.add_callback(
                lambda: self.session.document.callbacks.send_event(DocumentReady()))
            self.session._connection.loop_until_closed()
            self.loop.close(all_fds=True)  # its epoll and wake-up sockets: not the server's

        self.thread = threading.Thread(target=run, name="bokeh-client", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"no session from {url} within {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        self.id = self.session.id

    def call(self, fn, timeout: float = 60.0):
        """``fn(document)`` on the client's thread (the document is not thread-safe)."""
        future: Future = Future()

        def go() -> None:
            try:
                future.set_result(fn(self.session.document))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)

        self.loop.add_callback(go)
        return future.result(timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Close the websocket (the tab went away); True once the client has disconnected."""
        if self.session is not None and self.thread.is_alive():
            self.loop.add_callback(self.session.close)
            self.thread.join(timeout)
        return not self.thread.is_alive()


def _handle_messages_in_a_loop(connection) -> None:
    """Bokeh's client (3.9) handles each message by awaiting the next one recursively, a few
    Python frames per message: a session that receives more than ~300 messages (a bystander
    stepping frames for minutes) dies with ``RecursionError``. This handles them in a loop."""
    from bokeh.client.states import CONNECTED_AFTER_ACK, DISCONNECTED, ErrorReason

    async def handle_messages() -> None:
        while True:
            message = await connection._pop_message()
            if message is None:
                await connection._transition_to_disconnected(
                    DISCONNECTED(ErrorReason.HTTP_ERROR, 500, "Internal server error."))
                return
            if message.msgtype == "PATCH-DOC":
                connection._session._handle_patch(message)
            predicate = connection._until_predicate
            if predicate is not None and predicate():
                connection._until_predicate = None
                connection._loop.stop()
                return
            if not isinstance(connection._state, CONNECTED_AFTER_ACK):
                await connection._next()
                return

    connection._handle_messages = handle_messages


def record_sessions(monkeypatch):
    """Record each served session's :class:`Session`; returns ``(by_id, closed_ids)``.

    ``by_id`` maps the Bokeh session id to the Session (weakly: a destroyed session may go);
    ``closed_ids`` collects the ids whose ``Session.close`` ran (the session-destroyed hook).
    """
    import panel as pn

    import dashboard.app
    from dashboard.state.session import Session

    by_id: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    closed_ids: list[str] = []

    class RecordedSession(Session):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bokeh_id = pn.state.curdoc.session_context.id
            by_id[self.bokeh_id] = self

        def close(self) -> None:
            closed_ids.append(self.bokeh_id)
            super().close()

    monkeypatch.setattr(dashboard.app, "Session", RecordedSession)
    return by_id, closed_ids


def on_loop(session, fn) -> None:
    """Run ``fn()`` on the served session's event loop holding its document lock (a click)."""
    assert session.tasks.dispatch is not None, "not a served session"
    session.tasks.dispatch(fn)


def until(condition, timeout: float = 60.0, what: str = "condition") -> float:
    """Poll ``condition()`` until true; return the seconds it took (fail after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def rss_mb() -> float:
    """Resident memory after giving freed heap back to the OS (glibc ``malloc_trim``), so
    that what is measured is memory still in use, not the allocator's free lists."""
    import ctypes
    from pathlib import Path

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: plain RSS
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    """File descriptors this process holds (the server's sockets, files, epoll handles)."""
    import os

    return len(os.listdir("/proc/self/fd"))


def client_text(document) -> str:
    """The whole document as JSON text (every model property the browser would receive)."""
    import json

    return json.dumps(document.to_json(), default=str)
