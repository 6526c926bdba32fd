"""Sinogram / kymograph: a row or column of each frame equals numpy on the same frames; the bytes
read equal the forecast said beforehand; a tiled file reads only the tiles on that row
(counted); the Frames step builds it in the background and a click shows that frame."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hdf5_files import write_variant

from dashboard.analysis.sinogram import MAX_PIXELS, Line, check, forecast, sinogram
from dashboard.hdf5.stack import open_stack


def frames_of(path) -> np.ndarray:
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
    return data.reshape(-1, *data.shape[-2:])


@pytest.mark.parametrize("layout", ["one_frame_chunks", "tiled_chunks", "contiguous",
                                    "bitshuffle_lz4", "four_d"])
def test_a_row_or_column_of_each_frame_equals_numpy(layout, tmp_path):
    path = write_variant(tmp_path / f"{layout}.h5", layout)
    expected = frames_of(path)
    with open_stack(str(path), "/entry/data/data", prefetch=False) as stack:
        rows = sinogram(stack, Line("row", 10), range(0, len(stack), 2))
        cols = sinogram(stack, Line("column", 95), range(len(stack) - 1, -1, -1))
    np.testing.assert_array_equal(rows, expected[0::2, 10, :])
    np.testing.assert_array_equal(cols, expected[::-1, :, 95])
    assert rows.dtype == expected.dtype


@pytest.mark.parametrize("layout, pieces", [("tiled_chunks", 6), ("bitshuffle_lz4", 6),
                                            ("contiguous", 6)])
def test_the_bytes_read_are_the_forecast(layout, pieces, s3, bucket, tmp_path):
    """Over S3: a fresh handle's data bytes after the sinogram equal the forecast. The tiled
    file ((4, 32, 32) tiles, 64 × 96 frames) reads the 3 tiles on row 10 of each of its 2
    chunks of frames: 6 tiles, not the 12 whole-frame tiles."""
    path = write_variant(tmp_path / f"{layout}.h5", layout)
    s3.client.upload_file(str(path), bucket, f"{layout}.h5")
    url = f"s3://{bucket}/{layout}.h5"
    with open_stack(url, s3=s3, prefetch=False) as stack:
        cost = stack.region_cost(range(6), (10, 11), None)
        said = forecast(stack, Line("row", 10), range(6))
    with open_stack(url, s3=s3, prefetch=False) as stack:
        before = stack.stats["data_bytes"]
        image = sinogram(stack, Line("row", 10), range(6))
        fetched = stack.stats["data_bytes"] - before
    np.testing.assert_array_equal(image, frames_of(path)[:, 10, :])
    assert cost["exact"] and cost["pieces"] == pieces and fetched == cost["bytes"]
    assert said.startswith("Row 10 of 6 frames will read ")
    if layout == "tiled_chunks":
        assert fetched == 6 * (4 * 32 * 32 * 2)
    if layout == "contiguous":
        assert fetched == 6 * 96 * 2  # one row of each frame, nothing more
    # A column crosses every band of tiles: merged GETs (and their gaps) are forecast too.
    with open_stack(url, s3=s3, prefetch=False) as stack:
        column = stack.region_cost(range(5, -1, -1), None, (95, 96))
        before = stack.stats["data_bytes"]
        sinogram(stack, Line("column", 95), range(5, -1, -1))
        assert stack.stats["data_bytes"] - before == column["bytes"]


def test_refusals_in_one_sentence():
    assert check(Line("row", 64), (64, 96), 10) == ("The frame has 64 rows (0 to 63); 64 is "
                                                     "outside.")
    assert check(Line("row", 0), (64, 96), 0) == "The frame range is empty."
    assert "is more than this view holds" in check(Line("row", 0), (64, 96),
                                                   MAX_PIXELS // 96 + 1)
    assert check(Line("column", 95), (64, 96), 10) == ""


def test_the_frames_step_builds_it_in_the_background_and_a_click_shows_that_frame(tmp_path):
    from test_state_provider import load, memory_session

    path = write_variant(tmp_path / "scan.h5", "one_frame_chunks")
    session, _ = memory_session({"scan.h5": (path.read_bytes(), None)})
    try:
        load(session, "scan.h5")
        state, viewer = session.sinogram, session.viewer
        assert session.wait(30)
        assert state.index == 32 and state.axis == "row"
        assert state.status.startswith("Row 32 of 6 frames will read ")
        session.analysis.param.update(first=1, last=5, step=2)
        state.param.update(axis="column", index=7)
        assert session.wait(30) and state.status.startswith("Column 7 of 3 frames will read")
        state.compute = True
        assert session.wait(30) and not state.running, state.status
        np.testing.assert_array_equal(state.image, frames_of(path)[1:6:2, :, 7])
        assert list(state.frames) == [1, 3, 5] and "Click it to show a frame" in state.status
        state.go_to(4.6)  # nearest frame of the image: 5
        assert viewer.index == 5
        state.param.update(axis="row", index=90)  # a column number, not a row's
        assert state.failed and state.status == ("The frame has 64 rows (0 to 63); 90 is "
                                                 "outside.")
    finally:
        session.close()
