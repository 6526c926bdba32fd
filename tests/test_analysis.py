"""Analysis (issue 7, features 4–6): pure functions against hand-made arrays, FrameStack's region
reads against h5py over a real S3 endpoint (moto over HTTP), the ROI series against a direct
numpy computation, the chunks a region costs, and the cost report."""

from __future__ import annotations

import math
import sys
import uuid
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hdf5_files  # noqa: E402

from dashboard import open_stack  # noqa: E402
from dashboard.analysis.cost import builtin_decoder, cost_report, h5py_decoder  # noqa: E402
from dashboard.analysis.profile import line_points, profile_line  # noqa: E402
from dashboard.analysis.roi import (  # noqa: E402
    Box,
    Cancelled,
    box_from_bounds,
    clamp_box,
    frame_range,
    region_stats,
    roi_series,
    series_csv,
)
from dashboard.hdf5.chunks import LRUBytes  # noqa: E402
from dashboard.storage.s3 import S3  # noqa: E402

DATASET = "/entry/data/data"


# -- boxes ---------------------------------------------------------------------------------


def test_box_geometry_and_label():
    box = Box(10, 20, 5, 8)
    assert box.shape == (3, 10) and box.size == 30
    assert box.rows == slice(5, 8) and box.cols == slice(10, 20)
    assert box.label() == "x 10–19, y 5–7"


@pytest.mark.parametrize("box, expected", [
    (Box(10, 20, 5, 8), Box(10, 20, 5, 8)),
    (Box(20, 10, 8, 5), Box(10, 20, 5, 8)),        # swapped ends are ordered
    (Box(-5, 200, -1, 100), Box(0, 96, 0, 64)),    # clipped to the frame
    (Box(95, 95, 63, 63), Box(95, 96, 63, 64)),    # empty → one pixel, last column/row
    (Box(500, 600, 70, 80), Box(95, 96, 63, 64)),  # wholly outside → the nearest corner pixel
    (Box(-9, -3, -9, -3), Box(0, 1, 0, 1)),
])
def test_clamp_box(box, expected):
    assert clamp_box(box, (64, 96)) == expected


def test_clamp_box_needs_pixels():
    with pytest.raises(ValueError):
        clamp_box(Box(0, 1, 0, 1), (0, 5))


@pytest.mark.parametrize("bounds, expected", [
    ((-0.5, -0.5, 95.5, 63.5), Box(0, 96, 0, 64)),    # the whole image extent
    ((9.6, 4.6, 19.4, 7.4), Box(10, 20, 5, 8)),       # pixel centres inside
    ((19.4, 7.4, 9.6, 4.6), Box(10, 20, 5, 8)),       # drawn right-to-left, bottom-to-top
    ((3.1, 3.1, 3.2, 3.2), Box(3, 4, 3, 4)),          # thinner than a pixel: the one touched
    ((-30, -30, 2.0, 1.0), Box(0, 3, 0, 2)),
    ((90.2, 60.2, 400, 400), Box(91, 96, 61, 64)),
])
def test_box_from_drawn_bounds(bounds, expected):
    assert box_from_bounds(bounds, (64, 96)) == expected


@pytest.mark.parametrize("args, expected", [
    ((0, 9, 1, 10), range(0, 10)),
    ((2, 9, 3, 10), range(2, 10, 3)),
    ((9, 2, 1, 10), range(2, 10)),
    ((-5, 50, 0, 10), range(0, 10)),  # clipped; step at least 1
    ((0, 0, 1, 0), range(0)),
])
def test_frame_range(args, expected):
    assert list(frame_range(*args)) == list(expected)


def test_region_stats_against_numpy():
    rng = np.random.default_rng(1)
    for dtype in ("uint8", "uint16", "int32", "uint32", "float32", ">u2", "float64"):
        region = rng.integers(0, 250, (7, 5)).astype(dtype)
        before = region.copy()
        mean, low, high = region_stats(region)
        assert mean == pytest.approx(float(region.astype(np.float64).mean()), rel=1e-12)
        assert (low, high) == (float(region.min()), float(region.max()))
        np.testing.assert_array_equal(region, before)
    nan = np.array([[1.0, np.nan], [3.0, 5.0]], np.float32)
    assert region_stats(nan) == (3.0, 1.0, 5.0)
    assert all(math.isnan(v) for v in region_stats(np.full((2, 2), np.nan)))
    with pytest.raises(ValueError):
        region_stats(np.zeros((0, 3)))


class _FakeStack:
    """``regions`` over an in-memory array (the pure function needs nothing more)."""

    def __init__(self, data):
        self.data = data
        self.closed = False

    def regions(self, indices, rows, cols):
        try:
            for i in indices:
                yield self.data[i, rows, cols]
        finally:
            self.closed = True


def test_roi_series_progress_and_cancel():
    data = np.arange(5 * 4 * 6, dtype=np.uint16).reshape(5, 4, 6)
    seen = []
    series = roi_series(_FakeStack(data), Box(1, 3, 2, 4), [4, 0, 2],
                        progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    np.testing.assert_array_equal(series.frames, [4, 0, 2])
    np.testing.assert_array_equal(series.mean, data[[4, 0, 2], 2:4, 1:3].mean(axis=(1, 2)))
    np.testing.assert_array_equal(series.min, data[[4, 0, 2], 2:4, 1:3].min(axis=(1, 2)))
    np.testing.assert_array_equal(series.max, data[[4, 0, 2], 2:4, 1:3].max(axis=(1, 2)))
    fake = _FakeStack(data)
    calls = []
    with pytest.raises(Cancelled, match="after 2 of 5"):
        roi_series(fake, Box(0, 6, 0, 4), range(5), cancelled=lambda: calls.append(1) or
                   len(calls) >= 2)
    assert fake.closed, "a cancelled series closes its reader (stops the read-ahead)"


def test_series_csv_has_a_header_and_round_trips():
    data = (np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4) / 3)
    series = roi_series(_FakeStack(data), Box(0, 3, 1, 4), range(3))
    text = series_csv(series)
    lines = text.splitlines()
    assert lines[0] == "frame,mean,min,max" and len(lines) == 4
    table = np.loadtxt(text.splitlines()[1:], delimiter=",")
    np.testing.assert_array_equal(table[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(table[:, 1], series.mean)  # repr precision: exact
    np.testing.assert_array_equal(table[:, 2], series.min)
    np.testing.assert_array_equal(table[:, 3], series.max)


# -- line profiles -------------------------------------------------------------------------


def test_line_points_include_both_ends():
    points = line_points((0, 0), (0, 4))
    np.testing.assert_array_equal(points, [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4]])
    assert len(line_points((0, 0), (3, 4))) == 6  # length 5 → 6 samples
    np.testing.assert_array_equal(line_points((2, 3), (2, 3)), [[2, 3]])
    assert len(line_points((0, 0), (0, 4), num=9)) == 9


def test_profile_along_a_row_is_the_row():
    image = np.arange(30, dtype=np.uint16).reshape(5, 6)
    before = image.copy()
    distance, values = profile_line(image, (2, 0), (2, 5))
    np.testing.assert_array_equal(values, image[2])
    np.testing.assert_array_equal(distance, np.arange(6.0))
    _, column = profile_line(image, (4, 1), (0, 1))  # a column, bottom to top
    np.testing.assert_array_equal(column, image[::-1, 1])
    np.testing.assert_array_equal(image, before)


def test_profile_is_exact_on_a_plane_and_averages_half_pixels():
    rows, cols = np.mgrid[0:20, 0:30]
    plane = 3.0 * rows - 2.0 * cols + 7.0  # bilinear interpolation is exact on a plane
    distance, values = profile_line(plane, (1.25, 2.5), (17.0, 26.75), num=50)
    t = np.linspace(0, 1, 50)
    r, c = 1.25 + t * (17.0 - 1.25), 2.5 + t * (26.75 - 2.5)
    np.testing.assert_allclose(values, 3.0 * r - 2.0 * c + 7.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(distance, t * math.hypot(17.0 - 1.25, 26.75 - 2.5), atol=1e-9)
    checker = np.array([[0, 10], [20, 40]], np.uint8)
    _, mid = profile_line(checker, (0.5, 0.5), (0.5, 0.5))
    assert mid[0] == pytest.approx(17.5)  # the mean of the four pixels
    _, nearest = profile_line(checker, (0.4, 0.6), (0.4, 0.6), order=0)
    assert nearest[0] == 10


def test_profile_outside_takes_the_edge_and_rejects_3d():
    image = np.array([[1.0, 2.0], [3.0, 4.0]])
    _, values = profile_line(image, (0, -3), (0, 0), num=4)
    np.testing.assert_array_equal(values, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        profile_line(np.zeros((2, 2, 2)), (0, 0), (1, 1))


# -- region reads and ROI series over S3 ---------------------------------------------------

# name -> (dtype, create_dataset keyword arguments): tiled and frame chunks, several dtypes
ROI_FILES = {
    "frame_u16_bslz4": ("uint16", dict(chunks=(1, 64, 96), **hdf5plugin.Bitshuffle(cname="lz4"))),
    "tiles_u16_gzip": ("uint16", dict(chunks=(1, 16, 32), compression="gzip", shuffle=True)),
    "tiles_u32_zstd": ("uint32", dict(chunks=(1, 20, 40), **hdf5plugin.Zstd())),  # ragged edges
    "tiles_f32_blosc": ("float32", dict(chunks=(2, 24, 24), **hdf5plugin.Blosc(cname="lz4"))),
    "frame_be_u2": (">u2", dict(chunks=(1, 64, 96), compression="gzip")),
    "contiguous_i16": ("int16", dict()),
    "tiles_plain_u16": ("uint16", dict(chunks=(1, 16, 16))),  # no filter: sizes are exact
}

BOXES = [
    Box(0, 96, 0, 64),    # the whole frame
    Box(0, 1, 0, 1),      # single pixel, top-left corner
    Box(95, 96, 63, 64),  # single pixel, bottom-right corner
    Box(40, 41, 30, 31),  # single pixel inside
    Box(0, 96, 10, 11),   # one full row (touches both side edges)
    Box(95, 96, 0, 64),   # last column (touches top and bottom edges)
    Box(10, 70, 5, 50),   # spans several tiles
    Box(17, 30, 33, 47),  # inside one tile of the 16×16 / 16×32 layouts
]


def _write(path: Path, name: str) -> Path:
    dtype, kwargs = ROI_FILES[name]
    data = hdf5_files._frames(dtype, n=6, h=64, w=96, seed=3)
    if np.dtype(dtype).kind == "f":
        data[2, 3, 4] = np.nan  # NaN pixels are ignored by the statistics
    with h5py.File(path, "w") as f:
        f.create_dataset(DATASET, data=data, dtype=dtype, **kwargs)
    return path


@pytest.fixture(scope="module")
def roi_store(moto_server, credentials, tmp_path_factory):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"roi-{uuid.uuid4().hex[:10]}"
    s3.client.create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("roi")
    local = {}
    for name in ROI_FILES:
        local[name] = _write(folder / f"{name}.h5", name)
        s3.client.upload_file(str(local[name]), bucket, f"{name}.h5")
    return {"s3": s3, "bucket": bucket, "local": local}


def _open(store, name, **kwargs):
    return open_stack(f"s3://{store['bucket']}/{name}.h5", s3=store["s3"], prefetch=False,
                      cache=LRUBytes(1 << 26), **kwargs)


def _truth(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[DATASET][()]


@pytest.mark.parametrize("name", list(ROI_FILES))
def test_regions_equal_h5py(roi_store, name):
    truth = _truth(roi_store["local"][name])
    with _open(roi_store, name) as stack:
        assert stack.direct
        for box in BOXES:
            region = stack.region(3, box.rows, box.cols)
            assert region.dtype == truth.dtype
            np.testing.assert_array_equal(region, truth[3, box.rows, box.cols])
            assert not region.flags.writeable
        # (start, stop) tuples, negative frames and numpy-style clipping
        np.testing.assert_array_equal(stack.region(-1, (60, 99), (-5, None)),
                                      truth[-1, 60:99, -5:])
        regions = list(stack.regions([5, 0, 3], slice(7, 29), slice(30, 31)))
        for k, i in enumerate([5, 0, 3]):
            np.testing.assert_array_equal(regions[k], truth[i, 7:29, 30:31])
        with pytest.raises(ValueError):
            stack.region(0, slice(5, 5), None)
        with pytest.raises(ValueError):
            stack.region(0, None, slice(0, 10, 2))
        with pytest.raises(IndexError):
            stack.region(6)


@pytest.mark.parametrize("name", list(ROI_FILES))
def test_roi_series_equals_numpy_on_the_same_frames(roi_store, name):
    truth = _truth(roi_store["local"][name]).astype(np.float64)
    indices = list(frame_range(1, 5, 2, 6)) + [0]
    with _open(roi_store, name) as stack:
        for box in BOXES:
            series = roi_series(stack, box, indices)
            cube = truth[indices][:, box.rows, box.cols]
            np.testing.assert_array_equal(series.frames, indices)
            np.testing.assert_allclose(series.mean, np.nanmean(cube, axis=(1, 2)),
                                       rtol=1e-12, atol=0)
            np.testing.assert_array_equal(series.min, np.nanmin(cube, axis=(1, 2)))
            np.testing.assert_array_equal(series.max, np.nanmax(cube, axis=(1, 2)))


def _chunk_sizes(path: Path, frame: int, box: Box) -> tuple[int, list[int]]:
    """Stored bytes of every chunk of ``frame`` and of the chunks that intersect ``box``."""
    with h5py.File(path, "r") as f:
        d = f[DATASET]
        ch, cw = d.chunks[1:]
        lead = (frame // d.chunks[0]) * d.chunks[0]
        total, needed = 0, []
        for y in range(0, d.shape[1], ch):
            for x in range(0, d.shape[2], cw):
                size = d.id.get_chunk_info_by_coord((lead, y, x)).size
                total += size
                if y < box.y1 and y + ch > box.y0 and x < box.x1 and x + cw > box.x0:
                    needed.append(size)
        return total, needed


def _delta(stack, fn):
    before = stack.stats
    result = fn()
    after = stack.stats
    return result, {k: after[k] - before[k] for k in ("data_requests", "data_bytes")}


def test_a_region_reads_only_the_chunks_it_needs(roi_store):
    name = "tiles_plain_u16"  # 64×96 frames in 16×16 tiles: 24 chunks of 512 bytes per frame
    path = roi_store["local"][name]
    truth = _truth(path)
    with _open(roi_store, name) as stack:
        stack.wait_index(30)
        stack.region(0, slice(0, 1), slice(0, 1))  # warm the chunk index
        # One tile: one GET of exactly that tile.
        box = Box(17, 30, 33, 47)
        total, needed = _chunk_sizes(path, 4, box)
        assert len(needed) == 1 and total == 24 * 512
        region, d = _delta(stack, lambda: stack.region(4, box.rows, box.cols))
        np.testing.assert_array_equal(region, truth[4, box.rows, box.cols])
        assert d == {"data_requests": 1, "data_bytes": needed[0]}
        assert stack.stats["last_region"]["stored_bytes"] == needed[0]
        # 2×2 tiles: those four chunks only (adjacent ones may share a GET)
        box = Box(10, 20, 12, 20)
        total, needed = _chunk_sizes(path, 2, box)
        assert len(needed) == 4
        region, d = _delta(stack, lambda: stack.region(2, box.rows, box.cols))
        np.testing.assert_array_equal(region, truth[2, box.rows, box.cols])
        assert stack.stats["last_region"]["stored_bytes"] == sum(needed)
        assert 1 <= d["data_requests"] <= 4
        assert sum(needed) <= d["data_bytes"] < total
        # The whole frame needs all 24 chunks: the region path costs what frame() costs.
        _, d = _delta(stack, lambda: stack.region(1))
        assert stack.stats["last_region"]["stored_bytes"] == total
        # A frame already in the cache is sliced: no request at all.
        stack.frame(5)
        region, d = _delta(stack, lambda: stack.region(5, box.rows, box.cols))
        assert d == {"data_requests": 0, "data_bytes": 0}
        assert stack.stats["last_region"]["path"] == "cache"
        np.testing.assert_array_equal(region, truth[5, box.rows, box.cols])
        # A series over 6 frames of a one-tile box: 6 GETs of one tile each.
        box = Box(50, 60, 2, 9)
        _, d = _delta(stack, lambda: roi_series(stack, box, [0, 1, 2, 3, 4]))
        tile = _chunk_sizes(path, 0, box)[1]
        assert d["data_requests"] == 5 and len(tile) == 1
        assert d["data_bytes"] == sum(_chunk_sizes(path, i, box)[1][0] for i in range(5))
        assert stack.stats["regions_read"] >= 8


def test_frame_aligned_chunks_read_the_one_frame_chunk(roi_store):
    name = "frame_u16_bslz4"
    path = roi_store["local"][name]
    with _open(roi_store, name) as stack:
        box = Box(3, 4, 3, 4)
        total, needed = _chunk_sizes(path, 2, box)
        assert needed == [total]
        _, d = _delta(stack, lambda: stack.region(2, box.rows, box.cols))
        assert d == {"data_requests": 1, "data_bytes": total}


def test_contiguous_region_is_one_ranged_get(roi_store):
    name = "contiguous_i16"
    truth = _truth(roi_store["local"][name])
    with _open(roi_store, name) as stack:
        box = Box(10, 20, 30, 33)
        region, d = _delta(stack, lambda: stack.region(1, box.rows, box.cols))
        np.testing.assert_array_equal(region, truth[1, 30:33, 10:20])
        # from (row 30, col 10) to (row 32, col 19) inclusive, 2 bytes a pixel
        assert d == {"data_requests": 1, "data_bytes": ((32 - 30) * 96 + 10) * 2}


def test_h5py_fallback_region(roi_store, testdata):
    """Blosc2 has no built-in decoder: regions come from h5py's hyperslab read."""
    s3 = roi_store["s3"]
    s3.client.upload_file(str(testdata / "blosc2.h5"), roi_store["bucket"], "blosc2.h5")
    with h5py.File(testdata / "blosc2.h5") as f:
        truth = f["/DS1"][()]
    with open_stack(f"s3://{roi_store['bucket']}/blosc2.h5", s3=s3, prefetch=False,
                    cache=LRUBytes(1 << 24)) as stack:
        assert not stack.direct
        rows, cols = slice(3, 17), slice(5, 6)
        np.testing.assert_array_equal(stack.region(0, rows, cols), truth[rows, cols])
        assert stack.stats["last_region"]["path"] == "h5py"
        series = roi_series(stack, Box(0, truth.shape[1], 0, 1), [0])
        assert series.mean[0] == pytest.approx(truth[0].astype(np.float64).mean(), rel=1e-12)
        report = cost_report(stack)
        assert report["read_path"] == "h5py"
        blosc2 = [f for f in report["filters"] if f["id"] == 32026]
        assert blosc2 and not blosc2[0]["builtin"] and blosc2[0]["h5py"]
        assert any("through h5py" in w and "Blosc2" in w for w in report["warnings"])


# -- the cost report -----------------------------------------------------------------------


def test_cost_report_of_frame_aligned_chunks(roi_store):
    with _open(roi_store, "frame_u16_bslz4") as stack:
        stack.frame(2)
        stack.frame(2)
        report = cost_report(stack)
    assert report["chunks"] == (1, 64, 96) and report["layout"] == "chunked"
    assert report["chunks_per_frame"] == 1 and report["frames_per_chunk"] == 1
    assert report["frame_aligned"] and report["warnings"] == []
    assert report["read_path"] == "direct"
    assert [f["id"] for f in report["filters"]] == [32008]
    assert report["filters"][0]["builtin"] and report["filters"][0]["h5py"]
    assert report["cache_hits"] == 1 and report["cache_misses"] == 1
    assert report["last_frame"]["path"] == "cache"
    assert report["frame_bytes"] == 64 * 96 * 2 and report["dtype"] == "uint16"


def test_cost_report_warns_about_tiles_and_multi_frame_chunks(roi_store):
    with _open(roi_store, "tiles_plain_u16") as stack:
        stack.frame(1)
        report = cost_report(stack)
    assert not report["frame_aligned"]
    assert report["chunks_per_frame"] == 24 and report["frames_per_chunk"] == 1
    assert report["last_frame"]["requests"] >= 1 and report["last_frame"]["path"] == "direct"
    assert report["last_frame"]["stored_bytes"] == 24 * 512
    (warning,) = report["warnings"]
    assert "not frame-aligned" in warning and "24 chunks" in warning and "4×6 tiles" in warning
    with _open(roi_store, "tiles_f32_blosc") as stack:
        report = cost_report(stack)
    assert report["chunks_per_frame"] == 3 * 4 and report["frames_per_chunk"] == 2
    assert len(report["warnings"]) == 2
    assert "12 chunks" in report["warnings"][0] and "holds 2 frames" in report["warnings"][1]
    with _open(roi_store, "contiguous_i16") as stack:
        report = cost_report(stack)
    assert report["layout"] == "contiguous" and report["chunks"] is None
    assert report["frame_aligned"] and report["warnings"] == [] and report["filters"] == []


def test_decoder_availability():
    for fid in (1, 2, 32001, 32004, 32008, 32015):
        assert builtin_decoder(fid), fid
        assert h5py_decoder(fid), fid
    assert not builtin_decoder(32026) and h5py_decoder(32026)  # Blosc2: h5py only
    assert not builtin_decoder(32999) and not h5py_decoder(32999)
