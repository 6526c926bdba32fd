"""Playback: the ticker steps ViewerState in order, loops, drops ticks rather than queueing, and
stops when paused, when another stack is opened and when the session closes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_state_viewer import load, local, session  # noqa: F401 - the session fixture

from dashboard.demo.store import IMAGE2D_KEY, NEXUS_KEY, SHORT_KEY
from dashboard.state.playback import RATE_SECONDS, RATE_WINDOW, RateMeter, next_index


@pytest.mark.parametrize(
    ("index", "loop", "direction", "expected"),
    [(4, (2, 5), "forward", 5), (5, (2, 5), "forward", 2), (2, (2, 5), "backward", 5),
     (3, (2, 5), "backward", 2), (9, (2, 5), "forward", 2), (0, (2, 5), "backward", 5),
     (3, (5, 2), "forward", 4), (7, (7, 7), "forward", 7)],
)
def test_next_index_loops_both_ways(index, loop, direction, expected):
    assert next_index(index, loop, direction) == expected


def test_rate_meter_counts_frames_per_second_over_a_window():
    meter = RateMeter(window=5, seconds=10)
    assert meter.tick(0.0) is None
    rates = [meter.tick(0.1 * k) for k in range(1, 10)]
    assert rates[-1] == pytest.approx(10.0)
    meter.reset()
    assert meter.tick(5.0) is None
    assert meter.tick(5.5) == pytest.approx(2.0)


class Recorder:
    """The frames shown (index, time) while watching ``shown_index``."""

    def __init__(self, viewer):
        self.shown: list[tuple[int, float]] = []
        self.event = threading.Event()
        self.want = 0
        viewer.param.watch(self._seen, "shown_index")

    def _seen(self, event) -> None:
        self.shown.append((event.new, time.monotonic()))
        if len(self.shown) >= self.want:
            self.event.set()

    def wait(self, count: int, timeout: float = 60) -> list[int]:
        self.want = len(self.shown) + count
        self.event.clear()
        assert self.event.wait(timeout), f"only {len(self.shown)} frames shown"
        return [i for i, _ in self.shown]


def play(session, *, index: int = 0, **params):
    """Load the demo stack, show ``index``, set ``params``, start playing; (viewer, recorder)."""
    v = load(session, NEXUS_KEY)
    v.param.update(index=index, **params)
    assert v.wait_for_frame(index)
    seen = Recorder(v)
    v.playing = True
    return v, seen


def stop(viewer, session) -> None:
    viewer.playing = False
    assert viewer.player.join(10)
    assert session.wait(30)


def test_plays_forward_in_order_and_loops_over_the_range(session, demo):
    v = load(session, NEXUS_KEY)
    assert v.wait_for_frame(0)
    assert (v.fps, v.direction, v.loop_range) == (10, "forward", (0, v.n_frames - 1))
    v.param.update(loop_range=(5, 9), fps=30)
    seen = Recorder(v)
    v.toggle_play = True  # the keyboard/button action
    assert v.playing and v.index == 5  # outside the loop: starts at its first frame
    shown = seen.wait(14)
    stop(v, session)
    assert not v.playing and not v.player.running
    assert shown[0] == 5 and 9 in shown
    for before, after in zip(shown, shown[1:]):
        assert after == next_index(before, (5, 9)), shown  # in order, never a skipped frame
    assert shown.index(9) + 1 < len(shown) and shown[shown.index(9) + 1] == 5  # looped
    # Pause is final: no frame is shown after the ticker thread has ended.
    count = len(seen.shown)
    assert session.wait(30) and len(seen.shown) == count and v.index == shown[-1]
    np.testing.assert_array_equal(v.frame, local(demo, NEXUS_KEY)[v.shown_index])


def test_achieved_rate_is_measured_from_the_frames_shown(session):
    v, seen = play(session, fps=20)
    seen.wait(RATE_WINDOW + 5)
    rate, times = v.achieved_fps, [t for _, t in seen.shown]
    stop(v, session)
    # The same rule on our own timestamps: the last RATE_WINDOW frames within RATE_SECONDS.
    # (The playing frames are the ones after the first; the window may end one frame earlier.)
    candidates = []
    for end in (len(times), len(times) - 1):
        window = times[max(1, end - RATE_WINDOW):end]
        while len(window) > 2 and window[-1] - window[0] > RATE_SECONDS:
            window = window[1:]
        candidates.append((len(window) - 1) / (window[-1] - window[0]))
    assert rate > 0
    assert any(rate == pytest.approx(c, rel=0.06, abs=0.1) for c in candidates), (rate, candidates)
    assert 1 <= rate <= 30 * 1.2  # never faster than asked (plus measurement jitter)


def test_plays_backward_and_wraps_to_the_end(session):
    v, seen = play(session, index=11, loop_range=(10, 13), direction="backward", fps=30)
    shown = seen.wait(7)
    stop(v, session)
    assert shown[:6] == [10, 13, 12, 11, 10, 13]


def test_ticks_are_dropped_while_the_page_has_not_shown_the_frame(session):
    """The event loop is busy: one advance is pending, the ticker drops further ticks."""
    v = load(session, NEXUS_KEY)
    assert v.wait_for_frame(0)
    posted = []
    session.tasks.dispatch = posted.append
    v.fps = 30
    v.playing = True
    wait_drops(v, 5)
    advances = [p for p in posted if getattr(p.args[0], "__name__", "") == "_advance"]
    assert len(advances) == 1  # never a queue of frames
    session.tasks.dispatch = None
    stop(v, session)
    for p in posted:
        p()  # the stale advance is ignored once paused
    assert v.index == 0


def wait_drops(viewer, count: int, timeout: float = 30) -> None:
    target = viewer.player.dropped + count
    deadline = time.monotonic() + timeout
    while viewer.player.dropped < target:
        assert time.monotonic() < deadline, "the ticker did not run"
        viewer.player.join(0.05)


def test_a_served_page_paces_playback_by_its_paint_reports(session, monkeypatch):
    from dashboard.state import playback

    monkeypatch.setattr(playback, "PAINT_TIMEOUT", 600.0)
    v = load(session, NEXUS_KEY)
    assert v.wait_for_frame(0)
    v.param.update(paced_by_page=True, fps=30)
    v.playing = True
    wait_drops(v, 5)
    assert v.index == 0 and v.player.advanced == 0  # frame 0 not reported painted: waits
    v.painted_index = 0  # the page reports it
    assert v.wait_for_frame(1 + playback.FRAMES_IN_FLIGHT)
    wait_drops(v, 5)
    # FRAMES_IN_FLIGHT frames may be on their way while the page paints the last: frames
    # 1 .. FRAMES_IN_FLIGHT unpainted, the next one sent, then it waits.
    assert v.index == 1 + playback.FRAMES_IN_FLIGHT
    assert v.player.advanced == 1 + playback.FRAMES_IN_FLIGHT
    v.painted_index = 1
    assert v.wait_for_frame(2 + playback.FRAMES_IN_FLIGHT)
    wait_drops(v, 5)
    assert v.index == 2 + playback.FRAMES_IN_FLIGHT
    assert v.player.advanced == 2 + playback.FRAMES_IN_FLIGHT
    stop(v, session)


def test_opening_another_stack_or_closing_stops_playback(session):
    v, seen = play(session, fps=30)
    seen.wait(3)
    load(session, SHORT_KEY)
    assert not v.playing and v.player.join(10)
    assert v.loop_range == (0, v.n_frames - 1) == (0, 11)
    assert v.param.loop_range.bounds == (0, 11)
    v.playing = True
    seen.wait(2)
    session.close()
    assert not v.playing and v.player.join(10)


def test_single_frame_and_bounds(session):
    v = load(session, IMAGE2D_KEY)
    v.playing = True
    assert not v.playing and v.status == "Nothing to play: this dataset has a single frame."
    load(session, NEXUS_KEY)
    with pytest.raises(ValueError):
        v.fps = 31
    with pytest.raises(ValueError):
        v.loop_range = (0, v.n_frames)  # constrained to the stack
    v.loop_range = (12, 3)
    assert v.loop_range == (3, 12)  # ordered
    v.loop_range = (2.4, 6.6)
    assert v.loop_range == (2, 7)  # whole frames
