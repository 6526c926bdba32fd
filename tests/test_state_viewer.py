"""ViewerState, ProcessorState and the task helpers: set parameters, trigger actions, assert."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from dashboard.config import Settings
from dashboard.demo.store import (
    DEMO_BUCKET, IMAGE2D_KEY, NEXUS_DATASET, NEXUS_KEY, NOT_HDF5_KEY, SHORT_KEY,
)
from dashboard.processing.pipeline import flat_from_frames, process
from dashboard.state.processor import START_MESSAGE
from dashboard.state.session import Session
from dashboard.state.tasks import LatestOnly, Tasks, user_message


@pytest.fixture
def session(moto_server, credentials, demo):
    s = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert s.wait(60)
    s.browser.bucket = DEMO_BUCKET
    yield s
    s.close()


def load(session, key):
    session.browser.selection = [key]
    session.viewer.load = True
    assert session.wait(60)
    return session.viewer


def local(demo, key, dataset=NEXUS_DATASET):
    with h5py.File(demo.path(key)) as f:
        return f[dataset][()]


def test_load_needs_a_selected_h5_file(session):
    session.viewer.load = True
    assert session.viewer.status == "Select an .h5 file in the browser first."
    assert session.processor.problem().startswith("Select an .h5 file in the browser first")


def test_load_shows_tree_candidates_and_frame_zero(session, demo):
    v = load(session, NEXUS_KEY)
    data = local(demo, NEXUS_KEY)
    assert v.n_frames == data.shape[0] and v.frame_shape == data.shape[1:]
    assert v.dataset == NEXUS_DATASET and NEXUS_DATASET in v.param.dataset.objects
    assert v.url == f"s3://{DEMO_BUCKET}/{NEXUS_KEY}"
    paths = {n["path"] for n in v.tree["nodes"]}
    assert NEXUS_DATASET in paths
    assert v.wait_for_frame(0)
    np.testing.assert_array_equal(v.frame, data[0])
    assert v.equalize is True and v.colormap == "gray"
    assert v.frame_label() == f"Frame 0 of {data.shape[0] - 1}"


def test_each_frame_control_moves_and_reads_the_right_frame(session, demo):
    v = load(session, NEXUS_KEY)
    data = local(demo, NEXUS_KEY)
    last = data.shape[0] - 1
    steps = [("next", 1), ("next", 2), ("previous", 1), ("last", last), ("previous", last - 1),
             ("first", 0)]
    for action, expected in steps:
        setattr(v, action, True)
        assert v.index == expected
        assert v.wait_for_frame(expected), action
        np.testing.assert_array_equal(v.frame, data[expected])
    v.index = 7
    assert v.wait_for_frame(7)
    np.testing.assert_array_equal(v.frame, data[7])
    v.previous = True
    v.first = True
    v.previous = True  # stays at 0
    assert v.index == 0
    with pytest.raises(ValueError):
        v.index = last + 1  # the bounds follow the stack


def test_switching_dataset_reopens(session, demo):
    v = load(session, NEXUS_KEY)
    other = next(p for p in v.param.dataset.objects if p != NEXUS_DATASET)
    v.dataset = other
    assert session.wait(60)
    assert v.stack.dataset == other and v.wait_for_frame(0)
    np.testing.assert_array_equal(v.frame, local(demo, NEXUS_KEY, other)[0])


@pytest.mark.parametrize(
    ("key", "message"),
    [(NOT_HDF5_KEY, "is not an HDF5 file"),
     ("calibration/geometry.json", "Select an .h5 file in the browser first.")],
)
def test_unusable_files_say_why_and_the_session_keeps_working(session, demo, key, message):
    v = load(session, NEXUS_KEY)
    session.browser.selection = [key]
    v.load = True
    assert session.wait(60)
    assert message in v.status and "Traceback" not in v.status
    load(session, SHORT_KEY)
    assert v.n_frames == local(demo, SHORT_KEY).shape[0]


def test_two_d_file_and_short_stack_cannot_be_processed(session):
    v = load(session, IMAGE2D_KEY)
    assert v.n_frames == 1 and v.wait_for_frame(0)
    p = session.processor
    assert "is a single 2-D image (256×256 uint16), not a stack" in v.status
    assert "is a single 2-D image, not a stack: processing needs at least 21" in p.problem()
    load(session, SHORT_KEY)
    assert "needs at least 21" in p.problem()
    p.batch = True
    assert "needs at least 21" in p.status and not p.running


def test_process_defaults_bounds_and_start_rule(session):
    v = load(session, NEXUS_KEY)
    p = session.processor
    assert (p.start, p.end, p.step, p.sigma, p.format) == (20, v.n_frames - 1, 1, 4.0, "PNG")
    p.start = 5
    assert p.check() == f"{START_MESSAGE} (got 5)."
    p.batch = True
    assert p.status == f"{START_MESSAGE} (got 5)." and not p.running and p.failed
    p.start = 30
    p.end = 25
    assert "must not be before the start frame" in p.check()
    with pytest.raises(ValueError):
        p.end = v.n_frames  # bounded by the stack


def test_preview_is_the_last_frame_of_the_range_with_the_batch_flat(session, demo):
    v = load(session, NEXUS_KEY)
    p = session.processor
    p.param.update(sigma=2.5, start=25, end=36, step=4)  # 25, 29, 33: the last is 33
    p.preview = True
    assert session.wait(60)
    data = local(demo, NEXUS_KEY)
    expected = process(data[33], flat_from_frames(data[5:25]), 2.5)
    for name, array in expected.items():
        np.testing.assert_allclose(getattr(p.stages, name), array, rtol=1e-6, atol=1e-6)
    assert p.preview_sigma == 2.5
    assert p.preview_title.startswith("Frame 33 (the last of the range), flat field from "
                                      "frames 5–24")
    assert v.n_frames == data.shape[0]


def test_batch_five_frames(session, tmp_path):
    load(session, NEXUS_KEY)
    p = session.processor
    p.param.update(start=20, end=24, format="NPY", output=str(tmp_path / "out"))
    assert p.check() == "5 frames will be written as NPY."
    p.batch = True
    assert p.running
    assert session.wait(120)
    files = sorted(Path(tmp_path / "out").rglob("*.npy"))
    assert len(files) == 5
    assert (p.done, p.total, p.progress, p.running) == (5, 5, 100, False)
    assert p.status == "Batch finished." and "Processed 5 of 5 frames" in p.summary
    assert "5/5 frames" in p.progress_text()


def test_cancel_a_longer_batch(session, moto_server, credentials, tmp_path):
    from browser_fixtures import LONG_KEY, upload_long_stack

    from dashboard.storage.s3 import S3

    session.browser.bucket = upload_long_stack(S3(moto_server.endpoint, credentials), tmp_path)
    load(session, LONG_KEY)
    p = session.processor
    p.param.update(start=20, end=session.viewer.n_frames - 1, format="TIFF",
                   output=str(tmp_path / "long"))
    started = threading.Event()
    p.param.watch(lambda e: started.set() if e.new >= 1 else None, "done")
    p.batch = True
    assert started.wait(60)
    p.cancel = True
    assert session.wait(60)
    assert not p.running and p.status == "Batch cancelled."
    assert p.done < p.total and "Cancelled after" in p.summary


def test_latest_only_skips_stale_requests():
    tasks = Tasks(max_workers=2)
    gate, seen = threading.Event(), []

    def slow(value):
        gate.wait(10)
        seen.append(value)

    runner = LatestOnly(tasks, slow)
    for i in range(100):
        runner.request(i)
    gate.set()
    assert tasks.wait(10)
    assert seen[-1] == 99 and len(seen) <= 2
    tasks.shutdown()


def test_user_message_hides_unexpected_exceptions():
    from dashboard.errors import EchoError

    assert user_message(EchoError("Plain sentence."), "x") == "Plain sentence."
    text = user_message(KeyError("s3cr3t"), "read frame 3")
    assert text == "Could not read frame 3: unexpected KeyError (details are in the server log)."


def test_frames_read_while_the_page_is_busy_are_coalesced(session, demo):
    """Served sessions apply results on the event loop; stale frames never queue up there."""
    v = load(session, NEXUS_KEY)
    assert v.wait_for_frame(0)
    posted = []
    session.tasks.dispatch = posted.append  # the "event loop" is busy: nothing runs yet
    for i in range(1, 31):
        v.index = i
    assert session.wait(30)
    shows = [p for p in posted if getattr(p.args[0], "__name__", "") == "_show_latest"]
    # At most one pending update, whatever the number of frames read (none when every frame
    # asked for was read ahead already: those are shown in the update that asks for them).
    assert len(shows) <= 1
    session.tasks.dispatch = None
    for p in posted:
        p()
    assert v.shown_index == 30
    np.testing.assert_array_equal(v.frame, local(demo, NEXUS_KEY)[30])


def test_batch_to_an_s3_prefix(session, s3, bucket):
    load(session, NEXUS_KEY)
    p = session.processor
    p.param.update(start=30, end=32, format="PNG", output=f"s3://{bucket}/processed/run1")
    p.batch = True
    assert session.wait(120)
    keys = [o.key for o in s3.list_objects(bucket, "processed/run1/").objects]
    assert len([k for k in keys if k.endswith(".png")]) == 3
    assert p.status == "Batch finished." and f"s3://{bucket}/processed/run1" in p.summary


@pytest.mark.parametrize("value", [(float("nan"), 39), (0, float("nan")), (0, float("inf"))])
def test_non_finite_loop_range_is_refused_and_playback_still_loops(session, value):
    v = load(session, NEXUS_KEY)
    v.loop_range = (5, 8)
    with pytest.raises(ValueError, match="Loop over frames must be finite"):
        v.loop_range = value
    assert v.loop_range == (5, 8)
    v.loop_range = (30.4, 2.6)  # still usable: rounded and ordered
    assert v.loop_range == (3, 30)
    v.index = 8
    assert v.wait_for_frame(8)


class CachedStack:
    """Frames in memory; frames below ``cached_below`` count as on the server already."""

    dataset = "/entry/data/data"
    candidates: list = []

    def __init__(self, frames, cached_below: int):
        self._frames, self.cached_below = frames, cached_below
        self.shape, self.dtype = frames.shape, frames.dtype
        self.reads = []

    def __len__(self):
        return len(self._frames)

    def cached_frame(self, index):
        return self._frames[index] if index < self.cached_below else None

    def frame(self, index):
        self.reads.append(index)
        return self._frames[index]

    def close(self):
        pass


def test_cached_frames_are_shown_in_the_update_that_asks_and_stale_ones_dropped():
    from dashboard.state.viewer import ViewerState

    frames = np.arange(6 * 4 * 4, dtype=np.uint16).reshape(6, 4, 4)
    loop = []  # the session's event loop: posted updates wait here until run
    viewer = ViewerState(tasks=Tasks(dispatch=loop.append))
    stack = CachedStack(frames, cached_below=3)
    viewer._opened(stack, "s3://b/k.h5", None)
    assert viewer.tasks.wait(10)
    while loop:
        loop.pop(0)()
    assert viewer.shown_index == 0
    # A cached frame: on screen before the setter returns (no worker, no trip through the loop).
    viewer.index = 2
    assert viewer.shown_index == 2 and np.array_equal(viewer.frame, frames[2]) and not loop
    assert 2 not in stack.reads  # from the cache: no read on the event loop
    assert viewer.contrast is not None
    # An uncached one goes through a worker and the loop...
    viewer.index = 5
    assert viewer.tasks.wait(10) and len(loop) == 1 and viewer.shown_index == 2
    # ...and if the user moves on meanwhile (to a cached frame), the late result is dropped.
    viewer.index = 1
    assert viewer.shown_index == 1
    loop.pop(0)()
    assert viewer.shown_index == 1 and np.array_equal(viewer.frame, frames[1])
    viewer.close()


def test_the_files_flat_choices_arriving_late_keep_the_range(session):
    """The flats a file offers are looked up in the background; a link (or the user) may set
    the range before they arrive. Their arrival changes the choices, not the range."""
    load(session, NEXUS_KEY)
    p = session.processor
    p.param.update(start=22, end=30)
    p._offer(session.viewer.stack, p._preview_generation)  # the lookup, finishing late
    assert (p.start, p.end, p.flat) == (22, 30, "before-start")
