"""Follow a prefix (live mode), at the state level against moto over HTTP: objects added and
replaced while a session follows; the schedule and the change rules on hand-made values."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from served_sessions import until
from test_batch import write_stack

from dashboard.config import Settings
from dashboard.state.live import IDLE_STOP_S, MAX_BACKOFF, PollSchedule
from dashboard.state.session import Session
from dashboard.storage.listing import changes
from dashboard.storage.s3 import ObjectInfo

T0 = datetime(2026, 12, 8, tzinfo=timezone.utc)


def test_changes_are_new_keys_and_replaced_objects():
    before = {"a.h5": ObjectInfo("a.h5", 10, T0, "e1"), "b.h5": ObjectInfo("b.h5", 5, T0, "e2")}
    after = [ObjectInfo("a.h5", 10, T0, "e1"),  # the same
             ObjectInfo("b.h5", 9, T0 + timedelta(seconds=5), "e3"),  # written again
             ObjectInfo("c.h5", 1, T0, "e4")]  # landed
    assert changes(before, after) == {"b.h5": "changed", "c.h5": "new"}
    assert changes(before, []) == {}  # removed keys are not news
    same_etag_new_date = [ObjectInfo("a.h5", 10, T0 + timedelta(seconds=1), "e1")]
    assert changes(before, same_etag_new_date) == {"a.h5": "changed"}


def test_the_schedule_backs_off_resets_and_stops_after_an_hour_of_quiet():
    schedule = PollSchedule(2.0)
    waits = [schedule.after(False, 2.0) for _ in range(5)]
    assert waits == [4.0, 8.0, 16.0, 16.0, 16.0] and max(waits) == 2.0 * MAX_BACKOFF
    assert schedule.after(True, 16.0) == 2.0 and schedule.quiet == 0.0
    quiet = PollSchedule(10.0)
    assert quiet.after(False, IDLE_STOP_S - 1) == 20.0
    assert quiet.after(False, 1.0) is None  # an hour without a change: stop


class Clock:
    """A monotonic clock the test moves on (the follower's only notion of time passing)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def live_bucket(s3):
    name = f"live-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def following(moto_server, credentials, s3, live_bucket, tmp_path):
    """A session connected to moto, listing ``live_bucket``/run/, and a counter of its
    ListObjectsV2 requests (started)."""
    write_stack(tmp_path / "old.h5", n=4, shape=(8, 8))
    s3.client.upload_file(str(tmp_path / "old.h5"), live_bucket, "run/scan_0001.h5")
    session = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert session.wait(60) and session.browser.connected
    b = session.browser
    b.bucket = live_bucket
    b.list_objects = True
    assert session.wait(60)
    b.directory = "run/"
    calls = []  # (monotonic time, request) of each ListObjectsV2 begun
    b.provider.s3.client.meta.events.register(
        "before-call.s3.ListObjectsV2",
        lambda **kwargs: calls.append((time.monotonic(), kwargs["params"])))
    yield session, calls
    session.close()


def test_follow_shows_a_new_object_at_the_next_poll_and_a_replaced_open_file(
        following, s3, live_bucket, tmp_path):
    session, calls = following
    live, viewer, b = session.live, session.viewer, session.browser
    b.selection = ["run/scan_0001.h5"]
    viewer.load = True
    assert session.wait(60) and viewer.wait_for_frame(0)

    live.param.update(interval=2.0, follow=True)
    assert (b.sort_by, b.descending) == ("date", True)  # newest first
    assert until(lambda: live.polls >= 1)
    assert live.status.startswith(f"Following s3://{live_bucket}/run/: nothing new; next "
                                  "check in")
    assert all(c["query_string"]["prefix"] == "run/" for _, c in calls)  # the prefix only

    write_stack(tmp_path / "new.h5", n=6, shape=(8, 8), seed=1)
    s3.client.upload_file(str(tmp_path / "new.h5"), live_bucket, "run/scan_0002.h5")
    started = len(calls)  # requests begun before the object existed
    assert until(lambda: "run/scan_0002.h5" in live.fresh, timeout=60)
    assert live.polls <= started + 1  # shown by the first listing begun after it landed
    assert live.fresh == {"run/scan_0002.h5": "new"}
    newest, landed = b.objects()[0], next(o for o in b.objects() if o.key.endswith("0002.h5"))
    assert landed.last_modified == newest.last_modified  # newest first (S3 dates: seconds)
    assert "1 new" in live.status

    # The open file is written again (a bigger version): Reload is offered, nothing fails.
    write_stack(tmp_path / "grown.h5", n=8, shape=(8, 8), seed=2)
    s3.client.upload_file(str(tmp_path / "grown.h5"), live_bucket, "run/scan_0001.h5")
    assert until(lambda: viewer.newer, timeout=60)
    assert viewer.status == "A newer version of scan_0001.h5 exists: press Reload to open it."
    assert live.fresh["run/scan_0001.h5"] == "changed"
    viewer.index = 3  # a read of the replaced object: the same offer, not an error
    assert until(lambda: viewer.index == 0 and viewer.newer)
    viewer.reload = True
    assert session.wait(60) and until(lambda: viewer.n_frames == 8 and not viewer.newer)

    # No request storm: one request per poll, never two within the interval (backing off
    # from it while nothing changes).
    assert len(calls) == live.polls
    gaps = [b - a for (a, _), (b, _) in zip(calls, calls[1:])]
    assert gaps and min(gaps) >= 2.0 * 0.99, gaps
    live.follow = False
    assert live.status == "Stopped following."
    stopped = len(calls)
    # The thread has ended: no request after the stop (its wait is woken at once).
    assert until(lambda: not any(t.name == "echo-follow" and t.is_alive()
                                 for t in threading.enumerate()))
    assert len(calls) == stopped


def test_open_newest_opens_each_new_file_on_its_last_frame(following, s3, live_bucket,
                                                            tmp_path):
    session, calls = following
    live, viewer = session.live, session.viewer
    live.param.update(interval=2.0, open_newest=True, follow=True)
    assert until(lambda: viewer.n_frames == 4 and viewer.shown_index == 3, timeout=60)
    assert viewer.url == f"s3://{live_bucket}/run/scan_0001.h5"
    write_stack(tmp_path / "new.h5", n=7, shape=(8, 8), seed=3)
    s3.client.upload_file(str(tmp_path / "new.h5"), live_bucket, "run/scan_0002.h5")
    assert until(lambda: viewer.url.endswith("scan_0002.h5") and viewer.shown_index == 6,
                 timeout=60)
    assert viewer.index == 6 and session.browser.selection == ["run/scan_0002.h5"]


def test_paused_while_hidden_and_stops_after_an_hour_without_changes(
        moto_server, credentials, s3, live_bucket, tmp_path):
    write_stack(tmp_path / "old.h5", n=4, shape=(8, 8))
    s3.client.upload_file(str(tmp_path / "old.h5"), live_bucket, "scan.h5")
    clock = Clock()
    session = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    try:
        assert session.wait(60)
        session.browser.bucket = live_bucket
        from dashboard.state.live import LiveFollow

        live = LiveFollow(session.browser, session.viewer, session.tasks, clock=clock)
        live.param.update(interval=2.0, hidden=True)
        live.follow = True  # in a hidden page: paused from the start
        assert live.status.startswith("Paused while this page is hidden")
        live.hidden = False  # shown again: a poll at once
        assert until(lambda: live.polls == 1)
        assert live.status.startswith(f"Following s3://{live_bucket}/: nothing new")
        live.hidden = True
        clock.now += IDLE_STOP_S  # an hour passes without a change
        live.hidden = False  # shown again: the poll at once finds nothing, an hour on
        assert until(lambda: not live.follow, timeout=60)
        assert live.polls == 2
        assert live.status == ("Stopped following: nothing changed for an hour. Tick Follow "
                               "to go on.")
        live.close()
    finally:
        session.close()


def test_follow_needs_a_connection(moto_server):
    session = Session(Settings(endpoint=moto_server.endpoint))
    try:
        session.live.follow = True
        assert not session.live.follow and session.live.failed
        assert session.live.status == "Connect and choose a bucket first, then Follow."
    finally:
        session.close()
