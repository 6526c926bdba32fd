"""AnalysisState over a real session (moto over HTTP): the box, the ROI series in the background
(progress, cancel, newest request wins, equal to numpy on the same frames), the line profile
following the frame, the cost report and what a new stack or closing does."""

from __future__ import annotations

import math
import re
import uuid

import h5py
import numpy as np
import pytest

from dashboard.analysis.profile import profile_line
from dashboard.analysis.roi import Box
from dashboard.config import Settings
from dashboard.state.analysis import AnalysisState
from dashboard.state.session import Session
from dashboard.storage.s3 import S3

DATASET = "/entry/data/data"
TILED_KEY = "scans/tiled_0001.h5"     # 120 frames of 48×80 in 16×16 tiles
FRAMES_KEY = "scans/frames_0002.h5"   # 5 frames of 40×30, one chunk per frame, float32


@pytest.fixture(scope="module")
def files(moto_server, credentials, tmp_path_factory):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"analysis-{uuid.uuid4().hex[:10]}"
    s3.client.create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("analysis")
    rng = np.random.default_rng(11)
    tiled = rng.integers(0, 60000, (120, 48, 80), dtype=np.uint16)
    frames = rng.normal(100, 20, (5, 40, 30)).astype(np.float32)
    for key, data, chunks in ((TILED_KEY, tiled, (1, 16, 16)), (FRAMES_KEY, frames, (1, 40, 30))):
        path = folder / key.replace("/", "_")
        with h5py.File(path, "w") as f:
            f.create_dataset(DATASET, data=data, chunks=chunks, compression="gzip")
        s3.client.upload_file(str(path), bucket, key)
    return {"bucket": bucket, TILED_KEY: tiled, FRAMES_KEY: frames}


@pytest.fixture
def session(moto_server, credentials, files):
    s = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert s.wait(60)
    s.browser.bucket = files["bucket"]
    assert s.wait(60)
    yield s
    s.close()


@pytest.fixture
def analysis(session):
    state = AnalysisState(session.viewer)
    yield state
    state.close()


def load(session, key):
    session.browser.selection = [key]
    session.viewer.load = True
    assert session.wait(60)
    assert session.viewer.wait_for_frame(0)
    return session.viewer


def test_before_a_stack_nothing_runs(analysis):
    assert analysis.cost() is None and analysis.profile() is None
    assert analysis.start_series() is False
    assert analysis.roi_status == "Open a stack first."
    assert analysis.csv_text() == "frame,mean,min,max\n"


def test_a_new_stack_sets_a_default_box_line_and_range(session, analysis):
    load(session, TILED_KEY)
    assert analysis.box() == Box(20, 60, 12, 36)  # the central half of 48×80
    assert (analysis.first, analysis.last, analysis.step) == (0, 119, 1)
    assert analysis.param.last.bounds == (0, 119)
    assert (analysis.line_x0, analysis.line_y0, analysis.line_x1, analysis.line_y1) == (
        20.0, 24.0, 59.0, 24.0)
    assert "x 20–59, y 12–35 (960 pixels)" in analysis.roi_status


def test_the_box_is_always_inside_the_frame(session, analysis):
    load(session, TILED_KEY)
    analysis.param.update(x0=-10, x1=500)
    assert (analysis.x0, analysis.x1) == (0, 80)
    analysis.y1 = analysis.y0  # empty → one row
    assert analysis.y1 == analysis.y0 + 1
    analysis.param.update(y0=30, y1=5)  # swapped → ordered
    assert (analysis.y0, analysis.y1) == (5, 30)
    analysis.set_bounds((9.6, 4.6, 19.4, 7.4))  # a drawn rectangle, in data coordinates
    assert analysis.box() == Box(10, 20, 5, 8)
    analysis.set_bounds((70.2, 40.3, 300.0, 300.0))
    assert analysis.box() == Box(71, 80, 41, 48)
    assert "x 71–79, y 41–47 (63 pixels)" in analysis.roi_status


@pytest.mark.parametrize("key", [TILED_KEY, FRAMES_KEY])
def test_series_equals_numpy_on_the_same_frames(session, analysis, files, key):
    load(session, key)
    data = files[key].astype(np.float64)
    for box, (first, last, step) in ((Box(0, 1, 0, 1), (0, 4, 1)),
                                     (Box(3, 29, 7, 40), (4, 0, 2)),      # edge-touching
                                     (Box(29, 30, 39, 40), (1, 3, 1))):   # bottom-right pixel
        analysis.set_box(box)
        analysis.param.update(first=first, last=last, step=step)
        analysis.run = True
        assert analysis.wait_series(60)
        series = analysis.series
        frames = list(range(min(first, last), max(first, last) + 1, step))
        cube = data[frames][:, box.rows, box.cols]
        np.testing.assert_array_equal(series.frames, frames)
        np.testing.assert_allclose(series.mean, cube.mean(axis=(1, 2)), rtol=1e-12, atol=0)
        np.testing.assert_array_equal(series.min, cube.min(axis=(1, 2)))
        np.testing.assert_array_equal(series.max, cube.max(axis=(1, 2)))
        assert analysis.progress == 100 and not analysis.running
        assert analysis.roi_status.startswith(f"{box.label()}: {len(frames)} frames in ")
        lines = analysis.csv_text().splitlines()
        assert lines[0] == "frame,mean,min,max" and len(lines) == len(frames) + 1
        assert lines[1].split(",")[0] == str(frames[0])
        assert float(lines[1].split(",")[1]) == series.mean[0]
        name = key.rsplit("/", 1)[-1][:-3]
        assert analysis.csv_filename() == (
            f"roi_{name}_x{box.x0}-{box.x1}_y{box.y0}-{box.y1}.csv")
        assert analysis.csv_file().read().decode() == analysis.csv_text()


def test_a_tile_box_series_reads_only_its_tiles(session, analysis, files):
    v = load(session, TILED_KEY)
    analysis.set_box(Box(33, 40, 2, 10))  # inside the tile at rows 0–15, columns 32–47
    analysis.run = True
    assert analysis.wait_series(60)
    reads = analysis.series_reads  # the series' own handle
    assert reads["regions_read"] == 120
    cached = sum(v.stack.is_cached(i) for i in range(120))
    assert reads["data_requests"] <= 120 - cached


def test_cancel_stops_the_series(session, analysis):
    load(session, TILED_KEY)
    pressed = []

    def cancel_on_first_progress(event):
        if event.new > 0 and not pressed:
            pressed.append(event.new)
            analysis.cancel = True

    analysis.param.watch(cancel_on_first_progress, "progress")
    analysis.run = True
    assert analysis.wait_series(60)
    assert pressed
    match = re.fullmatch(r"Cancelled: cancelled after (\d+) of 120 frames\.", analysis.roi_status)
    assert match and int(match.group(1)) < 120, analysis.roi_status
    assert analysis.series is None and not analysis.running


def test_a_new_request_cancels_the_old_one(session, analysis, files):
    v = load(session, TILED_KEY)
    first_box, second_box = Box(0, 80, 0, 48), Box(5, 6, 5, 6)
    started = []

    def restart_on_first_progress(event):
        if event.new > 0 and not started:
            started.append(True)
            analysis.set_box(second_box)
            analysis.param.update(first=10, last=19)
            analysis.run = True

    analysis.set_box(first_box)
    watcher = analysis.param.watch(restart_on_first_progress, "progress")
    analysis.run = True
    assert analysis.wait_series(60)
    analysis.param.unwatch(watcher)
    assert started and analysis.series.box == second_box
    np.testing.assert_array_equal(analysis.series.frames, range(10, 20))
    np.testing.assert_array_equal(analysis.series.mean, files[TILED_KEY][10:20, 5, 5])
    assert analysis.series_reads["regions_read"] < 120 + 10, "the first series went on"
    assert analysis.roi_status.startswith("x 5–5, y 5–5: 10 frames")


def test_line_profile_follows_the_frame(session, analysis, files):
    v = load(session, FRAMES_KEY)
    data = files[FRAMES_KEY]
    analysis.set_line(2.0, 3.5, 27.25, 36.0)
    distance, values = analysis.profile()
    expected = profile_line(data[0], (3.5, 2.0), (36.0, 27.25))
    np.testing.assert_array_equal(values, expected[1])
    np.testing.assert_array_equal(distance, expected[0])
    v.index = 3
    assert v.wait_for_frame(3)
    np.testing.assert_array_equal(analysis.profile()[1],
                                  profile_line(data[3], (3.5, 2.0), (36.0, 27.25))[1])
    # two clicks: start then end; clamped into the frame
    analysis.click(5.0, 6.0)
    assert analysis.line_pending and (analysis.line_x0, analysis.line_y0) == (5.0, 6.0)
    analysis.click(100.0, -4.0)
    assert not analysis.line_pending
    assert (analysis.line_x1, analysis.line_y1) == (29.0, 0.0)
    analysis.click_line = False
    analysis.click(1.0, 1.0)
    assert (analysis.line_x0, analysis.line_y0) == (5.0, 6.0)


def test_cost_follows_the_reads_and_warns_for_tiles(session, analysis):
    v = load(session, TILED_KEY)
    report = analysis.cost()
    assert report["chunks"] == (1, 16, 16) and report["chunks_per_frame"] == 15
    assert not report["frame_aligned"] and "15 chunks" in report["warnings"][0]
    assert report["last_frame"]["index"] == 0
    v.index = 7
    assert v.wait_for_frame(7)
    assert analysis.cost()["last_frame"]["index"] == 7
    load(session, FRAMES_KEY)
    report = analysis.cost()
    assert report["frame_aligned"] and report["warnings"] == []
    assert report["filters"][0]["name"] == "gzip" and report["filters"][0]["builtin"]


def test_a_new_stack_cancels_and_resets(session, analysis, files):
    load(session, TILED_KEY)
    analysis.run = True
    assert analysis.wait_series(60)
    assert analysis.series is not None
    load(session, FRAMES_KEY)
    assert analysis.series is None and not analysis.running
    assert analysis.box() == Box(7, 23, 10, 30) and analysis.last == 4


def test_close_drops_later_results(session, analysis):
    load(session, TILED_KEY)
    closed = []

    def close_on_first_progress(event):
        if event.new > 0 and not closed:
            closed.append(True)
            analysis.close()

    analysis.param.watch(close_on_first_progress, "progress")
    analysis.run = True
    assert session.wait(60)
    assert closed and analysis.series is None
    assert analysis.start_series() is False


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**20, -1.0,
                                   80.0])
def test_line_ends_stay_finite_and_on_the_frame(session, analysis, value):
    load(session, TILED_KEY)  # 48 rows × 80 columns: x in 0..79, y in 0..47
    assert analysis.param.line_x1.bounds == (0.0, 79.0)
    assert analysis.param.line_y0.bounds == (0.0, 47.0)
    before = (analysis.line_x0, analysis.line_y0, analysis.line_x1, analysis.line_y1)
    for name in ("line_x0", "line_y0", "line_x1", "line_y1"):
        with pytest.raises(ValueError):
            setattr(analysis, name, value)
    assert (analysis.line_x0, analysis.line_y0, analysis.line_x1, analysis.line_y1) == before
    analysis.set_line(value if math.isfinite(value) else 0, 3, 200, -4)  # clicks: clamped
    assert (analysis.line_x1, analysis.line_y0, analysis.line_y1) == (79.0, 3.0, 0.0)
    distance, values = analysis.profile()
    assert len(distance) == len(values) > 0 and np.isfinite(values).all()


def test_line_ends_refuse_non_finite_values_before_a_stack(analysis):
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="Line start x must be finite"):
            analysis.line_x0 = value
    analysis.line_x0 = 12.5
    assert analysis.line_x0 == 12.5
