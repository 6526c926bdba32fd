"""Playback and contrast in Debian's Chromium: play, see the frame label advance and loop, pause
(button and keyboard); switch contrast modes, type and drag limits, see the image repaint, see
locked limits hold across frames. Screenshots go to ``test-artifacts/screenshots/``."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, shot, status, tab
from test_browser_dashboard import (
    checkbox, expect, field, image_region, list_demo, tick, type_in, wait_frame, wait_image,
)

from dashboard.demo.store import NEXUS_KEY

pytestmark = pytest.mark.browser

LAST = 39  # the demo stack has 40 frames
LABEL = re.compile(r"Frame (\d+) of 39")


def open_stack(page, moto_server) -> None:
    list_demo(page, moto_server)
    type_in(page, "Keyword", NEXUS_KEY.rsplit("/", 1)[-1])
    expect(status(page, "echo-count")).to_have_text(re.compile(r"^1 of \d+ objects shown$"))
    tick(page, NEXUS_KEY)
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
    wait_frame(page, 0, LAST)


def frame_number(page) -> int:
    text = page.locator(".echo-frame-label p").first.text_content() or ""
    match = LABEL.search(text)
    return int(match.group(1)) if match else -1


RECORD = """() => {
  // The playback bridge's paint reports: the page sets `painted` on the animation frame after
  // each new frame's image arrived, so these are the frames the page drew, in order.
  let bridge = null;
  for (const doc of Bokeh.documents) for (const m of doc._all_models.values()) {
    const props = m.data && m.data.properties;
    if (props && props.painted && props.frame && props.presses) bridge = m;
  }
  window.echoFrames = [];
  const note = () => {
    const n = bridge.data.painted;
    const seen = window.echoFrames;
    if (n >= 0 && seen[seen.length - 1] !== n) seen.push(n);
  };
  note();
  bridge.data.properties.painted.change.connect(note);
}"""


def watch_frames(page, until, timeout: float = 60.0) -> list[int]:
    """Every frame the page paints from now on (its paint reports, recorded in the page, so
    none is missed), once ``until(seen)`` holds. The frame label follows only a few times a
    second while playing (dashboard.ui.follow)."""
    page.evaluate(RECORD)
    deadline = time.monotonic() + timeout
    while not until(seen := page.evaluate("() => window.echoFrames.slice()")):
        assert time.monotonic() < deadline, f"frames seen: {seen}"
        page.wait_for_timeout(100)
    return seen


def move_handle(page, handle, target: int, timeout: float = 30.0) -> None:
    """Move a slider handle to ``target`` with the arrow keys (keyboard only)."""
    deadline = time.monotonic() + timeout
    handle.focus()
    while (now := round(float(handle.get_attribute("aria-valuenow")))) != target:
        assert time.monotonic() < deadline, f"the handle stays at {now}"
        handle.press("ArrowRight" if now < target else "ArrowLeft")


def loop_over(page, first: int, last: int) -> None:
    """Set the loop range with the arrow keys on its two handles.

    Panel echoes each slider value back to the browser; keys pressed faster than the echoes
    arrive can be undone by a late echo, so the handles are checked again once settled."""
    handles = page.locator(".echo-loop-range .noUi-handle")
    for _ in range(5):
        move_handle(page, handles.nth(0), first)
        move_handle(page, handles.nth(1), last)
        page.wait_for_timeout(500)  # let late echoes arrive, then check
        values = [round(float(handles.nth(i).get_attribute("aria-valuenow"))) for i in (0, 1)]
        if values == [first, last]:
            return
    raise AssertionError(f"the loop range stays at {values}")


def play_button(page):
    return page.locator(".echo-play button").first


def limits(page) -> tuple[float, float]:
    return (float(field(page, "Low limit").input_value()),
            float(field(page, "High limit").input_value()))


def settled_limits(page, timeout: float = 30.0) -> tuple[float, float]:
    """The limits once the last updates of a drag have arrived (unchanged for about 2 s: the
    server handles each drag step in turn, slowly on a loaded machine)."""
    deadline = time.monotonic() + timeout
    history = [limits(page)]
    while len(history) < 4 or len(set(history[-4:])) > 1:
        assert time.monotonic() < deadline, f"the limits keep changing: {history}"
        page.wait_for_timeout(700)
        history.append(limits(page))
    return history[-1]


def mode_button(page, name: str):
    return page.locator(".echo-contrast-mode button", has_text=name).first


def test_playback_plays_loops_and_pauses(page, moto_server, demo):
    page.set_viewport_size({"width": 1600, "height": 1180})
    open_stack(page, moto_server)
    expect(play_button(page)).to_have_text("▶ Play")
    expect(status(page, "echo-achieved-fps")).to_have_text("Paused")
    shot(page, "20-frames-controls")

    # Loop over frames 3..8 at 10 frames/s: set from the keyboard on the range slider.
    fps = page.locator(".echo-fps .noUi-handle").first
    move_handle(page, fps, 10)
    loop_over(page, 3, 8)
    expect(page.locator(".echo-loop-range")).to_contain_text("Loop over frames: 3 .. 8")
    play_button(page).click()
    expect(play_button(page)).to_have_text("❚❚ Pause")
    page.mouse.move(5, 5)  # no tooltip over the controls in the screenshot
    seen = watch_frames(page, lambda s: s.count(8) >= 2 and s[-1] > 3)
    shot(page, "21-playing")
    wrapped = [k for k in range(1, len(seen)) if seen[k] < seen[k - 1]]
    assert wrapped and all(seen[k - 1] == 8 and seen[k] == 3 for k in wrapped), seen
    assert all(3 <= n <= 8 for n in seen[1:]), seen  # within the loop
    assert all(b == a + 1 for a, b in zip(seen[1:], seen[2:]) if b > a), seen  # forward
    expect(status(page, "echo-achieved-fps")).to_contain_text(re.compile(r"Achieved \d+\.\d of 10"))

    # Pause from the keyboard ("k"): the frame stays.
    page.locator("body").press("k")
    expect(play_button(page)).to_have_text("▶ Play")
    expect(status(page, "echo-achieved-fps")).to_contain_text("Paused (last:")
    paused = frame_number(page)
    for _ in range(5):  # a few frame periods: the label no longer moves
        page.wait_for_timeout(150)
        assert frame_number(page) == paused

    # Backward, from the keyboard again.
    page.locator(".echo-direction button", has_text="Backward").click()
    page.locator("body").press("k")
    expect(play_button(page)).to_have_text("❚❚ Pause")
    seen = watch_frames(page, lambda s: len(s) >= 8)
    play_button(page).click()
    expect(play_button(page)).to_have_text("▶ Play")
    steps = list(zip(seen, seen[1:]))
    assert all(b == a - 1 or (a, b) == (3, 8) for a, b in steps), seen
    assert (3, 8) in steps, seen

    # The rate is bounded (1-30 frames/s): the keyboard stops at the ends.
    move_handle(page, fps, 30)
    fps.press("ArrowRight")
    fps.press("End")
    expect(page.locator(".echo-fps")).to_contain_text("Rate (frames/s): 30")
    assert "Traceback" not in page.content()


def band_edges(page) -> tuple[float, float]:
    """Page x of the left and right edges of the limits band on the histogram (its orange
    edge lines, found in the canvas pixels) and the y of the band's middle."""
    from PIL import Image

    canvas = page.locator(".echo-histogram canvas").first
    box = canvas.bounding_box()
    rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=np.int16)
    edge = (np.abs(rgb - np.array([0xC0, 0x58, 0x00])).sum(axis=2) < 60).sum(axis=0)
    columns = np.flatnonzero(edge > 0.4 * edge.max())
    assert columns.size, "no limits band on the histogram"
    groups = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    scale = rgb.shape[1] / box["width"]
    left, right = (box["x"] + g.mean() / scale for g in (groups[0], groups[-1]))
    return left, right, box["y"] + box["height"] * 0.4


def percentiles_of(frames, low=1.0, high=99.0) -> tuple[float, float]:
    return tuple(float(v) for v in np.percentile(frames, [low, high]))


def test_contrast_modes_limits_and_repaint(page, moto_server, demo):
    import h5py

    from dashboard.analysis.contrast import N_SAMPLES, sample_indices

    with h5py.File(demo.path(NEXUS_KEY)) as f:
        data = f["/entry/data/data"][()]
    page.set_viewport_size({"width": 1600, "height": 1180})
    open_stack(page, moto_server)
    checkbox(page, "Equalize (histogram)").uncheck()  # linear: the limits set the grey levels
    # Per frame (default): the limits are this frame's 1st and 99th percentiles.
    expect(status(page, "echo-contrast-status")).to_have_text("1–99 % of each frame")
    expect(mode_button(page, "Per frame")).to_have_class(re.compile("bk-active"))
    expect(field(page, "Low limit")).to_have_value(_shown(percentiles_of(data[0])[0]))
    click(page, "Next")
    wait_frame(page, 1, LAST)
    expect(field(page, "Low limit")).to_have_value(_shown(percentiles_of(data[1])[0]))
    expect(field(page, "High limit")).to_have_value(_shown(percentiles_of(data[1])[1]))

    # Locked: the percentiles of 16 frames across the stack, the same on every frame.
    mode_button(page, "Locked").click()
    expect(status(page, "echo-contrast-status")).to_contain_text(
        f"Locked: 1–99 % of {N_SAMPLES} frames")
    locked = percentiles_of(data[sample_indices(len(data), N_SAMPLES)])
    expect(field(page, "Low limit")).to_have_value(_shown(locked[0]))
    expect(field(page, "High limit")).to_have_value(_shown(locked[1]))
    shown_locked = limits(page)
    for index in (2, 3, 4):
        click(page, "Next")
        wait_frame(page, index, LAST)
        assert limits(page) == shown_locked
    shot(page, "22-contrast-locked")

    # Manual, typed: the mode switches and the image repaints.
    before = image_region(page)
    span = locked[1] - locked[0]
    type_in(page, "Low limit", f"{locked[0] + 0.45 * span:.0f}")
    expect(mode_button(page, "Manual")).to_have_class(re.compile("bk-active"))
    expect(status(page, "echo-contrast-status")).to_have_text("Manual limits")
    narrowed = wait_image(page, lambda r: r.mean() < before.mean() - 10,
                          "raising the low limit did not darken the image")

    # Manual, dragged: pull the band's right edge to the left on the histogram.
    low, high = limits(page)
    left, right, y = band_edges(page)
    page.mouse.move(right, y)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(right - k * 0.3 * (right - left) / 8, y)
    page.mouse.up()
    expect(field(page, "High limit")).not_to_have_value(_shown(high))
    dragged = settled_limits(page)
    assert dragged[0] == low and low < dragged[1] < high, (low, high, dragged)
    wait_image(page, lambda r: r.mean() > narrowed.mean() + 10,
               "lowering the high limit by dragging did not brighten the image")
    shot(page, "23-contrast-dragged")

    # Reversed limits are put in order; back to per-frame limits.
    type_in(page, "Low limit", f"{dragged[1] + 100:.0f}")
    expect(field(page, "High limit")).to_have_value(f"{dragged[1] + 100:.0f}")
    expect(field(page, "Low limit")).to_have_value(_shown(dragged[1]))
    mode_button(page, "Per frame").click()
    expect(field(page, "Low limit")).to_have_value(_shown(percentiles_of(data[4])[0]))
    assert "Traceback" not in page.content()


def _shown(value: float) -> str:
    """A limit as the number box shows it (three decimals at most)."""
    text = f"{round(value, 3):.3f}".rstrip("0").rstrip(".")
    return text


_FRAME_STATE = """() => {
  // The frame figure as the page has it: its image (palette indices), where the image lies
  // in frame pixels, the axis ranges and where its data area is on the page.
  for (const view of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    if (view.model.name !== 'echo-frame-figure' || !view.frame) continue;
    for (const r of view.model.renderers) {
      const data = r.data_source && r.data_source.data;
      if (!data || !data.image) continue;
      const image = data.image[0];
      const rect = view.el.getBoundingClientRect();
      const b = view.frame.bbox;
      return {shape: image.shape, image: Array.from(image), x: data.x[0], y: data.y[0],
              dw: data.dw[0], dh: data.dh[0], xs: view.model.x_range.start,
              xe: view.model.x_range.end, ys: view.model.y_range.start,
              ye: view.model.y_range.end, left: rect.left + b.left, top: rect.top + b.top,
              width: b.width, height: b.height};
    }
  }
  return null;
}"""


_BAR_STATE = """() => {
  for (const view of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    if (view.model.name !== 'echo-colorbar' || !view.frame) continue;
    const rect = view.el.getBoundingClientRect();
    const b = view.frame.bbox;
    const labels = view.model.right[0].major_label_overrides;
    return {left: rect.left + b.left, top: rect.top + b.top, width: b.width, height: b.height,
            labels: Array.from(labels instanceof Map ? labels.values() : Object.values(labels))};
  }
  return null;
}"""


def frame_state(page) -> dict:
    got = page.evaluate(_FRAME_STATE)
    assert got is not None, "no frame figure on the page"
    got["image"] = np.asarray(got["image"], dtype=np.uint8).reshape(got["shape"])
    return got


def expected_indices(frame, *, equalize: bool, box=None, x_range=None, y_range=None):
    """The palette indices the server should send for ``frame`` (limits: 1-99 %)."""
    from dashboard.analysis import display
    from dashboard.analysis.contrast import percentile_limits
    from dashboard.state.viewer import LIMIT_PIXELS
    from dashboard.ui.plots import fit_box
    from dashboard.ui.viewer import FRAME_BOX

    limits = percentile_limits(frame, 1, 99, max_pixels=LIMIT_PIXELS)
    view = display.viewport_grid(frame.shape, x_range, y_range,
                                 box=box or fit_box(frame.shape, FRAME_BOX))
    values = display.sample(frame, view)
    return display.to_indices(values, limits, display.display_lut(values, limits,
                                                                  equalize=equalize))


def wait_indices(page, wanted, what: str, timeout: float = 30.0) -> dict:
    """Wait until the page's frame image holds exactly ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        got = frame_state(page)
        if got["image"].shape == wanted.shape and np.array_equal(got["image"], wanted):
            return got
        assert time.monotonic() < deadline, f"the page never showed {what}"
        page.wait_for_timeout(100)


def to_page(state, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of frame point (x = column, y = row)."""
    sx = state["left"] + (x - state["xs"]) / (state["xe"] - state["xs"]) * state["width"]
    sy = state["top"] + (state["ye"] - y) / (state["ye"] - state["ys"]) * state["height"]
    return sx, sy


def canvas_grey(page, state, points) -> list[int]:
    """The grey level the canvas shows at the centre of each frame pixel ``(x, y)``."""
    from PIL import Image

    picture = Image.open(io.BytesIO(page.screenshot())).convert("L")
    return [picture.getpixel(tuple(round(v) for v in to_page(state, x, y))) for x, y in points]


def test_frame_pixels_hover_and_zoom_follow_every_step(page, moto_server, demo):
    """What the user sees: the image's own pixels are the new frame's (mapped on the server,
    equalized or linear), the hover shows the raw value, and a zoom survives a step."""
    import h5py

    with h5py.File(demo.path(NEXUS_KEY)) as f:
        data = f["/entry/data/data"][()]
    page.set_viewport_size({"width": 1600, "height": 1180})
    open_stack(page, moto_server)
    page.mouse.move(5, 5)
    state = wait_indices(page, expected_indices(data[0], equalize=True), "frame 0 equalized")
    # Equalized: every grey level covers about the same number of pixels.
    levels = np.bincount(state["image"].ravel(), minlength=256)
    assert levels.max() < 4 * state["image"].size / 256, levels.max()
    click(page, "Next")
    wait_frame(page, 1, LAST)
    state = wait_indices(page, expected_indices(data[1], equalize=True), "frame 1 equalized")
    # The canvas shows those indices as grey levels (gray palette: index k is grey k).
    # (away from the ROI box's outline and the profile line drawn over the frame)
    points = [(20, 30), (100, 100), (200, 60), (70, 220), (250, 250), (30, 140)]
    grey = canvas_grey(page, state, points)
    assert all(abs(g - int(state["image"][y, x])) <= 2 for g, (x, y) in zip(grey, points)), grey
    # The colour bar (a figure of its own) stands right of the frame, as tall, labelled from
    # the low to the high limit.
    from dashboard.ui.plots import _format_value

    bar = page.evaluate(_BAR_STATE)
    assert bar is not None, "no colour bar on the page"
    assert abs(bar["top"] - state["top"]) <= 1 and abs(bar["height"] - state["height"]) <= 1, bar
    assert state["left"] + state["width"] < bar["left"] < state["left"] + state["width"] + 60
    lo, hi = percentiles_of(data[1])
    expect_bar = [_format_value(lo), _format_value(hi)]
    deadline = time.monotonic() + 30
    while [(bar := page.evaluate(_BAR_STATE))["labels"][i] for i in (0, -1)] != expect_bar:
        assert time.monotonic() < deadline, (bar, expect_bar)
        page.wait_for_timeout(100)

    # Hover: the raw value of the pixel under the pointer.
    page.mouse.move(*to_page(state, 100, 120))
    tooltip = page.locator(".bk-Tooltip, .bk-tooltip").first
    expect(tooltip).to_contain_text(str(int(data[1][120, 100])))
    expect(tooltip).to_contain_text("x (column)")
    shot(page, "24-hover-raw-value")

    # Equalize off: linear between the limits.
    checkbox(page, "Equalize (histogram)").uncheck()
    state = wait_indices(page, expected_indices(data[1], equalize=False), "frame 1 linear")
    lo, hi = percentiles_of(data[1])
    linear = np.clip(np.floor((data[1] - lo) / (hi - lo) * 256), 0, 255)
    assert np.abs(state["image"].astype(int) - linear).max() <= 1  # an independent formula

    # Zoom with the wheel over the frame: the page gets the part in view, at screen size.
    page.mouse.move(*to_page(state, 64, 64))
    for _ in range(4):
        page.mouse.wheel(0, -240)
    deadline = time.monotonic() + 30
    while (state := frame_state(page))["dw"] >= 256 or state["x"] < 0:
        assert time.monotonic() < deadline, state
        page.wait_for_timeout(100)
    zoom = (state["xs"], state["xe"], state["ys"], state["ye"])
    click(page, "Next")
    wait_frame(page, 2, LAST)
    wanted = expected_indices(data[2], equalize=False, x_range=zoom[:2], y_range=zoom[2:])
    state = wait_indices(page, wanted, "frame 2, zoomed")
    assert (state["xs"], state["xe"], state["ys"], state["ye"]) == zoom  # the zoom survived
    assert state["dw"] < 256 and state["x"] > 0
    shot(page, "25-zoom-survives-a-step")
    checkbox(page, "Equalize (histogram)").check()
    assert "Traceback" not in page.content()
