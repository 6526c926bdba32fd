"""Closed sessions are freed (issue 6: memory bounded by the configured caches).

HoloViews keeps plot ``hooks`` in its process-wide ``Store`` of custom options for as long as
an element carrying them lives. A hook that owns (through a bound method or a closure) the
view that draws those elements keeps them, the page and the session's state alive for ever:
every closed browser tab used to stay in memory (~18 MB each). These tests pin the hooks down
and check a whole served session end to end; ``test_load_sessions.py`` checks 16 sessions
under load and the server's memory.
"""

from __future__ import annotations

import gc
import weakref

import holoviews as hv
import numpy as np
import pytest
from served_sessions import LiveClient, record_sessions, until

from dashboard.app import RunningServer
from dashboard.config import Settings
from dashboard.ui import plots

hv.extension("bokeh", logo=False)


class Owner:
    """Stands for a view: its bound method is what the hooks are given."""

    def __init__(self):
        self.dragged = []

    def on_drag(self, low, high):
        self.dragged.append((low, high))


def test_direct_frames_hook_does_not_keep_its_owner():
    direct = plots.DirectFrames()
    element = hv.Image(np.zeros((4, 4))).opts(hooks=[direct.hook])
    hv.render(element, backend="bokeh")
    assert direct.plot is not None  # the hook ran and remembered the plot
    ref = weakref.ref(direct)
    del direct
    gc.collect()
    assert ref() is None
    hv.render(element, backend="bokeh")  # a hook whose owner is gone does nothing


def test_limits_hook_does_not_keep_the_drag_callback_owner():
    owner = Owner()
    hist = plots.histogram(np.arange(100, dtype=np.uint16).reshape(10, 10))
    element = plots.limits_histogram(hist, (10.0, 60.0), owner.on_drag)
    plot = hv.renderer("bokeh").get_plot(element)
    box = plot.handles["echo_limits"]
    box.left = 20.0  # a drag in the browser reaches the owner while it lives
    assert owner.dragged and owner.dragged[-1][0] == 20.0
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None
    box.left = 30.0  # and is ignored once it is gone


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
