"""The display mapping (analysis/display.py) against independent formulas, and the frame view's
Bokeh figure (ui/plots.FrameDisplay) outside a server: what it would send to the page."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from served_doc import ServedDoc

from dashboard.analysis import display


@pytest.fixture(params=[np.uint16, np.float32, np.int32])
def frame(request):
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 3000.0, (300, 400)).clip(0, 60000)
    return values.astype(request.param)


def test_linear_mapping_is_the_linear_colour_mapper(frame):
    low, high = 2000.0, 15000.0
    lut = display.display_lut(frame, (low, high), equalize=False)
    got = display.to_indices(frame, (low, high), lut)
    # Bokeh's LinearColorMapper: floor((v - low) / (high - low) * N), clipped to the palette.
    expected = np.clip(np.floor((frame.astype(np.float64) - low) / (high - low) * 256), 0, 255)
    assert got.dtype == np.uint8 and got.shape == frame.shape
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert np.mean(got != expected) < 0.01  # only values on a bin's edge may differ
    assert got[frame <= low].max() == 0 and got[frame >= high].min() == 255


def test_equalization_within_the_limits_flattens_the_histogram(frame):
    low, high = 1500.0, 20000.0
    lut = display.display_lut(frame, (low, high), equalize=True)
    got = display.to_indices(frame, (low, high), lut)
    inside = (frame > low) & (frame < high)
    counts = np.bincount(got[inside], minlength=256)
    # About the same number of the pixels between the limits per grey level...
    assert counts.max() < 2.5 * inside.sum() / 256
    assert (counts > 0).sum() > 200
    # ...monotonic in the value, and the values outside take the end colours.
    order = np.argsort(frame[inside], kind="stable")
    assert np.all(np.diff(got[inside][order].astype(int)) >= 0)
    assert got[frame < low].max() == 0 and got[frame > high].min() == 255


def test_equalization_matches_the_empirical_cdf():
    frame = np.random.default_rng(5).integers(0, 4096, (256, 256), dtype=np.uint16)
    low, high = 0.0, 4096.0
    got = display.to_indices(frame, (low, high),
                             display.display_lut(frame, (low, high), equalize=True))
    # eq_hist: a pixel's grey level is its rank among the displayed pixels, in 256 steps.
    rank = np.searchsorted(np.sort(frame.ravel()), frame, side="right") / frame.size
    assert np.abs(got - np.floor(rank * 255.999)).max() <= 3


def test_nan_and_constant_frames_do_not_break_the_mapping():
    frame = np.full((8, 8), 7.0, np.float32)
    frame[0, 0] = np.nan
    limits = display.frame_range(frame)
    assert limits[1] > limits[0]
    for equalize in (True, False):
        got = display.to_indices(frame, limits,
                                 display.display_lut(frame, limits, equalize=equalize))
        assert got.dtype == np.uint8 and got[0, 0] == 0


def test_viewport_grid_samples_the_part_in_view_to_the_screen():
    # Small frame, whole view: every pixel, no sampling.
    view = display.viewport_grid((100, 120), box=(600, 500))
    assert display.sample(np.zeros((100, 120)), view).shape == (100, 120)
    assert (view.x0, view.y0, view.width, view.height) == (0, 0, 120, 100)
    # Large frame: about the screen's pixels, spread over the whole frame.
    frame = np.arange(2048 * 2048, dtype=np.uint32).reshape(2048, 2048)
    view = display.viewport_grid(frame.shape, box=(660, 660))
    part = display.sample(frame, view)
    assert part.shape == (660, 660)
    assert part[0, 0] // 2048 < 4 and part[-1, -1] // 2048 > 2044
    # Zoomed (ranges in pixel coordinates, y inverted as on screen): only that part.
    view = display.viewport_grid(frame.shape, (99.5, 199.5), (349.5, 299.5), box=(660, 660))
    assert (view.x0, view.y0, view.width, view.height) == (100, 300, 100, 50)
    part = display.sample(frame, view)
    np.testing.assert_array_equal(part, frame[300:350, 100:200])
    # While moving: fewer pixels (about half the bytes).
    view = display.viewport_grid(frame.shape, box=(660, 660), scale=0.66)
    assert display.sample(frame, view).size <= 0.5 * 660 * 660


def test_colorbar_ticks_label_palette_positions_with_values():
    frame = np.linspace(0, 1000, 10000).reshape(100, 100)
    linear = display.colorbar_ticks((0, 1000), display.display_lut(frame, (0, 1000),
                                                                   equalize=False))
    assert list(linear) == [0, 64, 128, 191, 255]
    assert [round(v) for v in linear.values()] == [0, 250, 500, 746, 1000]
    skewed = frame ** 2 / 1000  # most values low: equalized ticks crowd there
    ticks = display.colorbar_ticks((0, 1000), display.display_lut(skewed, (0, 1000),
                                                                  equalize=True))
    assert ticks[128] < 300


def test_raw_copy_fits_the_browser():
    assert display.raw_copy(np.zeros(3, np.float64)).dtype == np.float32
    assert display.raw_copy(np.zeros(3, np.uint64)).dtype == np.float32
    assert display.raw_copy(np.zeros(3, np.uint16)).dtype == np.uint16


# -- the frame view's figure ------------------------------------------------------------------

def test_frame_display_sends_palette_indices_of_the_part_in_view():
    from bokeh.events import RangesUpdate

    from dashboard.ui.plots import FrameDisplay, palette

    frame = np.random.default_rng(1).integers(0, 60000, (1024, 1024), dtype=np.uint16)
    view = FrameDisplay(box=(500, 500))
    view.reset(frame.shape, (500, 500))
    view.show(frame, (1000.0, 50000.0), equalize=False)
    data = view.source.data
    assert data["image"][0].dtype == np.uint8 and data["image"][0].shape == (500, 500)
    assert (data["x"][0], data["y"][0], data["dw"][0], data["dh"][0]) == (-0.5, -0.5, 1024, 1024)
    # The raw values of the displayed pixels, for the hover, in a source of their own.
    raw = view.raw_source.data["value"][0]
    assert raw.shape == (500, 500) and raw.dtype == np.uint16
    expected = display.to_indices(raw, (1000.0, 50000.0),
                                  display.display_lut(raw, (1000, 50000), equalize=False))
    np.testing.assert_array_equal(data["image"][0], expected)
    # A zoom (the browser's RangesUpdate): the part in view, at full resolution.
    view._ranges_changed(RangesUpdate(view.figure, x0=99.5, x1=199.5, y0=349.5, y1=299.5))
    data = view.source.data
    assert (data["x"][0], data["y"][0], data["dw"][0], data["dh"][0]) == (99.5, 299.5, 100, 50)
    np.testing.assert_array_equal(view.raw_source.data["value"][0], frame[300:350, 100:200])
    # The zoom stays for the next frame; a new stack resets it.
    view.show(frame[::-1].copy(), None, equalize=True)
    assert view.source.data["dw"][0] == 100
    view.reset((64, 64), (500, 500))
    view.show(frame[:64, :64].copy(), None, equalize=True)
    assert view.source.data["dw"][0] == 64 and view.figure.x_range.end == 63.5
    # Colormaps are 256-colour palettes (the browser maps index k to colour k).
    for name in ("gray", "viridis", "magma", "inferno", "cividis", "fire"):
        assert len(palette(name)) == 256
    view.set_palette("viridis")
    assert view.mapper.palette == palette("viridis")
    assert palette("gray")[0] == "#000000" and palette("gray")[-1].lower() == "#ffffff"


def test_frame_display_is_freed_with_its_owner():
    from dashboard.ui.plots import FrameDisplay

    view = FrameDisplay()
    view.show(np.ones((4, 4)), None, equalize=True)
    ref = weakref.ref(view)
    del view
    gc.collect()
    assert ref() is None


def test_colorbar_labels_change_with_the_exact_rendering_only(monkeypatch):
    """New labels make the browser lay the whole figure out again: moving frames (playback,
    a drag) leave them alone, the exact rendering that follows brings them."""
    from dashboard.ui import plots

    doc = ServedDoc()
    view = plots.FrameDisplay(box=(200, 200))
    view._document = lambda: doc
    low = np.tile(np.arange(300, dtype=np.uint16), (300, 1))
    high = low * 200
    view.reset(low.shape, (200, 200))
    view.show(low, None, equalize=False)
    doc.run()
    labels_low = dict(view.colorbar.major_label_overrides)
    assert labels_low and view.raw_source.data["value"][0].size  # exact: labels and raw values

    view.show(high, None, equalize=False, moving=True)
    follow, settle = doc.due  # the follow-up, then the settle timer
    follow()
    assert view.colorbar.major_label_overrides == labels_low  # moving: no new labels
    assert view.raw_source.data["value"][0].size == 0  # nor raw values of a coarse sample
    settle()
    doc.run()
    labels_high = dict(view.colorbar.major_label_overrides)
    assert labels_high != labels_low and view.raw_source.data["value"][0].size

    # Playing: the labels follow at most every TICKS_PLAYING_PERIOD.
    view.playing = lambda: True
    monkeypatch.setattr(plots, "TICKS_PLAYING_PERIOD", 3600.0)
    view.show(low, None, equalize=False, moving=True)
    doc.run()
    assert view.colorbar.major_label_overrides == labels_high
    monkeypatch.setattr(plots, "TICKS_PLAYING_PERIOD", 0.0)
    view.show(low, None, equalize=False, moving=True)
    doc.run()
    labels = view.colorbar.major_label_overrides
    assert labels != labels_high and max(float(v) for v in labels.values()) < 300
