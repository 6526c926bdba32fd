"""Closed sessions are freed (issue 6: memory bounded by the configured caches).

A served session that closes must leave nothing reachable: its page, plots and state. (Hooks
kept in HoloViews' process-wide ``Store`` of custom options once kept every closed tab, ~18 MB
each; the frame view and histogram are plain Bokeh now, and ``test_display.py`` checks that
the frame view is freed with its owner.) ``test_load_sessions.py`` checks 16 sessions under
load and the server's memory.
"""

from __future__ import annotations

import gc

import pytest
from served_sessions import LiveClient, record_sessions, until

from dashboard.app import RunningServer
from dashboard.config import Settings


@pytest.mark.slow
def test_closed_served_session_is_freed(monkeypatch):
    by_id, closed_ids = record_sessions(monkeypatch)
    # Nothing listens on port 9: the session is built (page, plots, hooks) but never connects.
    with RunningServer(Settings(endpoint="http://127.0.0.1:9"),
                       unused_session_lifetime_milliseconds=300,
                       check_unused_sessions_milliseconds=200) as server:
        client = LiveClient(server.url)
        until(lambda: client.id in by_id, what="session built")
        assert client.close()
        until(lambda: client.id in closed_ids, timeout=60, what="session destroyed")
        until(lambda: gc.collect() >= 0 and client.id not in by_id, timeout=60,
              what="closed session freed")
