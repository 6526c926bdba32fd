"""End to end in Debian's Chromium: the ROI time series (box drawn on the frame and typed, run
to completion with progress, CSV download), the line profile following the frame and the cost
inspector (frame-aligned and tile-chunked files), on a page composed of a real session's
FramesView with AnalysisTools, served over HTTP against moto."""

from __future__ import annotations

import csv
import io
import threading
import uuid

import h5py
import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403

from dashboard.config import Settings
from dashboard.storage.s3 import S3

DATASET = "/entry/data/data"
FRAMES_KEY = "beam/scan_frames.h5"  # 30 frames of 96×128, one chunk per frame
TILES_KEY = "beam/scan_tiles.h5"    # 30 frames of 96×128 in 32×32 tiles


def _frames(n=30, h=96, w=128, seed=4):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(n):
        spot = 3000 * np.exp(-((x - 30 - 2 * k) ** 2 + (y - 40) ** 2) / 200.0)
        ramp = 200 + 8 * x  # a horizontal ramp: the line profile shows it
        frames.append(rng.poisson(ramp + spot * (1 + 0.05 * np.sin(k / 3))))
    return np.asarray(frames, dtype=np.uint16)


@pytest.fixture(scope="module")
def files(moto_server, credentials, tmp_path_factory):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"ana-{uuid.uuid4().hex[:10]}"
    s3.client.create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("browser-analysis")
    data = _frames()
    for key, chunks in ((FRAMES_KEY, (1, 96, 128)), (TILES_KEY, (1, 32, 32))):
        path = folder / key.replace("/", "_")
        with h5py.File(path, "w") as f:
            f.create_dataset(DATASET, data=data, chunks=chunks, compression="gzip", shuffle=True)
        s3.client.upload_file(str(path), bucket, key)
    return {"bucket": bucket, "data": data}


class AnalysisPage:
    """A served page: one Session per browser session, its FramesView with AnalysisTools, the
    file named by ``?key=`` selected (the lead wires the same two lines into the dashboard)."""

    def __init__(self, endpoint, credentials, bucket):
        import asyncio

        import panel as pn
        from panel.io.server import get_server
        from tornado.ioloop import IOLoop

        from dashboard.app import _scheduler
        from dashboard.state.analysis import AnalysisState
        from dashboard.state.session import Session
        from dashboard.ui.analysis import AnalysisTools
        from dashboard.ui.app import extension
        from dashboard.ui.viewer import FramesView

        self.sessions = []

        def app():
            extension()
            session = Session(Settings(endpoint=endpoint), credentials=credentials)
            assert session.wait(60)
            session.browser.bucket = bucket
            assert session.wait(60)
            key = pn.state.session_args.get("key", [FRAMES_KEY.encode()])[0].decode()
            session.browser.selection = [key]
            session.tasks.dispatch = _scheduler(pn.state.curdoc)
            # as the dashboard wires it: the session's AnalysisState, shown by AnalysisTools
            analysis = AnalysisState(session.viewer)
            tools = AnalysisTools(session.viewer, state=analysis)
            assert tools.state is analysis
            self.sessions.append((session, tools))

            def closed(context):
                tools.close()
                session.close()

            pn.state.on_session_destroyed(closed)
            return pn.Column(FramesView(session.viewer, tools=tools), sizing_mode="stretch_width")

        ready = threading.Event()

        def run():
            asyncio.set_event_loop(asyncio.new_event_loop())
            self.loop = IOLoop.current()
            self.server = get_server({"": app}, port=0, address="127.0.0.1", loop=self.loop,
                                     start=False, show=False)
            self.server.start()
            ready.set()
            self.loop.start()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(60)
        self.url = f"http://127.0.0.1:{self.server.port}/"

    def stop(self):
        self.loop.add_callback(self.server.stop)
        self.loop.add_callback(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(moto_server, credentials, files):
    server = AnalysisPage(moto_server.endpoint, credentials, files["bucket"])
    yield server
    server.stop()


def open_page(browser, served, key):
    context = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)  # noqa: F405
    page = context.new_page()
    page.goto(f"{served.url}?key={key}")
    click(page, "Load Selected H5 File")  # noqa: F405
    expect_text(page, "echo-frame-label", "Frame 0 of 29")
    return page


def expect_text(page, css_class, text):
    from playwright.sync_api import expect

    expect(status(page, css_class)).to_contain_text(text)  # noqa: F405





_FRAME_GEOMETRY = """() => {
  // The largest Bokeh plot (the frame): where its data area is on the page, and its ranges.
  let best = null;
  for (const view of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    if (!view.frame || !view.frame.bbox || !view.model.x_range || !view.el) continue;
    const rect = view.el.getBoundingClientRect();
    const area = view.frame.bbox.width * view.frame.bbox.height;
    if (best === null || area > best.area) {
      const b = view.frame.bbox;
      best = {area, left: rect.left + b.left, top: rect.top + b.top, width: b.width,
              height: b.height, xs: view.model.x_range.start, xe: view.model.x_range.end,
              ys: view.model.y_range.start, ye: view.model.y_range.end};
    }
  }
  return best;
}"""


_FRAME_PLOT_ID = """() => {
  let best = null;
  for (const view of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    if (!view.frame || !view.frame.bbox || !view.model.x_range) continue;
    const area = view.frame.bbox.width * view.frame.bbox.height;
    if (best === null || area > best.area) best = {area, id: view.model.id};
  }
  return best && best.id;
}"""


_FRAME_IMAGE_SUM = """() => {
  // The sum of the palette indices the frame's image holds in the browser.
  for (const view of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    if (view.model.name !== 'echo-frame-figure') continue;  // not the colour bar's image
    for (const r of view.model.renderers) {
      const source = r.data_source;
      if (source && source.data && 'image' in source.data && source.data.image.length) {
        let sum = 0;
        for (const v of source.data.image[0]) sum += v;
        return sum;
      }
    }
  }
  return null;
}"""


def to_screen(page, x, y):
    """Page coordinates of the frame's data point (x = column, y = row)."""
    g = page.evaluate(_FRAME_GEOMETRY)
    sx = g["left"] + (x - g["xs"]) / (g["xe"] - g["xs"]) * g["width"]
    sy = g["top"] + (g["ye"] - y) / (g["ye"] - g["ys"]) * g["height"]
    return sx, sy



_PROFILE_DATA = """() => {
  // The line profile's data as the browser has it (the Curve's ColumnDataSource).
  for (const view of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    const source = view.model.data_source;
    if (source && source.data && 'distance' in source.data && source.data.distance.length) {
      return {distance: Array.from(source.data.distance),
              values: Array.from(source.data.intensity)};
    }
  }
  return null;
}"""


_TITLES = """() => (Bokeh.index.all_views ? Bokeh.index.all_views() : [])
  .filter(v => v.model.title && typeof v.model.title.text === 'string')
  .map(v => v.model.title.text)"""


def expect_title(page, text):
    """Wait until a plot's title (drawn on its canvas) contains ``text``."""
    page.wait_for_function("(text) => (%s)().some(t => t.includes(text))" % _TITLES, arg=text)


def drag(page, start, end):
    """Mouse drag between two data points of the frame."""
    page.mouse.move(*to_screen(page, *start))
    page.mouse.down()
    x, y = to_screen(page, *end)
    page.mouse.move(x, y, steps=8)
    page.mouse.up()


def box_inputs(page):
    return page.locator(".echo-roi-box input")


def expect_box(page, x0, x1, y0, y1):
    from playwright.sync_api import expect

    for k, value in enumerate((x0, x1, y0, y1)):
        expect(box_inputs(page).nth(k)).to_have_value(str(value))


def test_roi_series_from_a_drawn_box_to_csv(browser, served, files, tmp_path):
    from playwright.sync_api import expect

    data = files["data"].astype(np.float64)
    page = open_page(browser, served, FRAMES_KEY)
    expect_text(page, "echo-roi-status", "x 32–95, y 24–71 (3072 pixels)")  # default: centre
    # Draw: choose Box Select in the frame's toolbar, drag over the frame.
    page.get_by_title("Box Select").first.click()
    drag(page, (40.3, 20.3), (80.4, 50.4))  # pixel centres 41..80 × 21..50
    expect_box(page, 41, 81, 21, 51)
    expect_text(page, "echo-roi-status", "x 41–80, y 21–50 (1200 pixels)")
    plot_id = page.evaluate(_FRAME_PLOT_ID)
    # Keyboard: type an edge, clamped to the frame.
    box_inputs(page).nth(3).fill("500")
    box_inputs(page).nth(3).press("Enter")
    expect_box(page, 41, 81, 21, 96)
    box_inputs(page).nth(3).fill("60")
    box_inputs(page).nth(3).press("Enter")
    expect_box(page, 41, 81, 21, 60)
    # Run to completion: the status counts frames, the bar ends full.
    # Record what the status line and the progress bar go through (inside their shadow roots).
    status(page, "echo-roi-status").evaluate("""el => {
      const root = el.shadowRoot || el;
      window.__roiStatus = [];
      new MutationObserver(() => window.__roiStatus.push(root.textContent))
        .observe(root, {subtree: true, characterData: true, childList: true});
    }""")  # noqa: F405
    page.locator(".echo-roi-progress progress").evaluate("""el => {
      window.__roiProgress = [];
      new MutationObserver(() => window.__roiProgress.push(el.getAttribute('value')))
        .observe(el, {attributes: true});
    }""")
    click(page, "Compute ROI series")  # noqa: F405
    expect_text(page, "echo-roi-status", "x 41–80, y 21–59: 30 frames in")
    progress = page.locator(".echo-roi-progress progress")
    expect(progress).to_have_attribute("value", "100")
    seen = page.evaluate("window.__roiStatus")
    assert any("Computing x 41–80, y 21–59" in text for text in seen), seen
    bar = page.evaluate("window.__roiProgress")
    assert bar and bar[-1] == "100" and [int(v) for v in bar] == sorted(int(v) for v in bar), bar
    expect_title(page, "Box x 41–80, y 21–59 · frames 0–29")
    shot(page, "analysis_roi_series")  # noqa: F405
    # The CSV: header row, one row per frame, equal to numpy on the same pixels.
    with page.expect_download() as info:
        page.locator(".echo-roi-csv button").click()
    download = info.value
    assert download.suggested_filename == "roi_scan_frames_x41-81_y21-60.csv"
    text = (tmp_path / "roi.csv")
    download.save_as(text)
    rows = list(csv.reader(io.StringIO(text.read_text())))
    assert rows[0] == ["frame", "mean", "min", "max"] and len(rows) == 31
    table = np.array([[float(v) for v in row] for row in rows[1:]])
    cube = data[:, 21:60, 41:81]
    np.testing.assert_array_equal(table[:, 0], np.arange(30))
    np.testing.assert_allclose(table[:, 1], cube.mean(axis=(1, 2)), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(table[:, 2], cube.min(axis=(1, 2)))
    np.testing.assert_array_equal(table[:, 3], cube.max(axis=(1, 2)))
    assert "AKIA" not in text.read_text() and "secret" not in text.read_text()
    # A repainted frame (equalize off: new pixels in the same figure) keeps the box tool.
    # (set on the server, on the session's event loop)
    session, _tools = served.sessions[-1]
    before = page.evaluate(_FRAME_IMAGE_SUM)
    session.tasks.post(session.viewer.param.update, equalize=False)
    page.wait_for_function("(n) => (%s)() !== n" % _FRAME_IMAGE_SUM, arg=before)
    assert page.evaluate(_FRAME_PLOT_ID) == plot_id  # the same plot: zoom and tools kept
    drag(page, (100.4, 80.4), (110.3, 90.3))
    expect_box(page, 101, 111, 81, 91)
    # A range with a step, cancel enabled only while running
    inputs = page.locator(".echo-roi input")
    inputs.nth(5).fill("30")  # beyond the last frame: refused, said, the box restored
    inputs.nth(5).press("Enter")
    expect_text(page, "echo-roi-status", "Last frame must be between 0 and 29.")
    expect(inputs.nth(5)).to_have_value("29")
    inputs.nth(4).fill("3")
    inputs.nth(4).press("Enter")
    inputs.nth(6).fill("5")
    inputs.nth(6).press("Enter")
    click(page, "Compute ROI series")  # noqa: F405
    expect_text(page, "echo-roi-status", "x 101–110, y 81–90: 6 frames in")
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_disabled()
    page.context.close()


def test_line_profile_follows_the_frame(browser, served, files):
    from dashboard.analysis.profile import profile_line

    data = files["data"]
    page = open_page(browser, served, FRAMES_KEY)
    # Two clicks on the frame: start, then end.
    page.mouse.click(*to_screen(page, 10.0, 30.0))
    page.mouse.click(*to_screen(page, 100.0, 70.0))
    ends = page.locator(".echo-line-ends input")
    from playwright.sync_api import expect

    expect(ends.nth(3)).to_have_value(re.compile(r"^(69\.\d+|70(\.\d+)?)$"))  # noqa: F405
    values = [float(ends.nth(k).input_value()) for k in range(4)]
    assert values == pytest.approx([10.0, 30.0, 100.0, 70.0], abs=0.3)
    # Exact ends by keyboard.
    for k, value in enumerate(("12", "30", "120", "70")):
        ends.nth(k).fill(value)
        ends.nth(k).press("Enter")
    expect_title(page, "Frame 0: (12, 30) → (120, 70)")
    # Beyond the frame, or cleared: a message under the boxes, the box back to the end in use.
    ends.nth(2).fill("1e6")
    ends.nth(2).press("Enter")
    expect(status(page, "echo-line-status")).to_have_text(  # noqa: F405
        re.compile(r"end x must be between 0 and \d+\."))
    expect(ends.nth(2)).to_have_value("120")
    ends.nth(1).fill("")
    ends.nth(1).press("Enter")
    expect(status(page, "echo-line-status")).to_have_text(  # noqa: F405
        "start y was left empty: kept 30.")
    expect(ends.nth(1)).to_have_value("30")
    ends.nth(3).fill("-2")
    ends.nth(3).press("Enter")
    expect(status(page, "echo-line-status")).to_contain_text(  # noqa: F405
        "end y must be between 0 and")
    expect(ends.nth(3)).to_have_value("70")
    expect_title(page, "Frame 0: (12, 30) → (120, 70)")

    def profile_in_browser():
        got = page.evaluate(_PROFILE_DATA)
        return got and np.asarray(got["values"])

    expected0 = profile_line(data[0], (30, 12), (70, 120))[1]
    page.wait_for_function("""(n) => { const f = %s; const d = f();
                              return d && d.values.length === n; }""" % _PROFILE_DATA,
                           arg=len(expected0))
    np.testing.assert_allclose(profile_in_browser(), expected0, rtol=1e-12)
    shot(page, "analysis_line_profile")  # noqa: F405
    # Another frame: the profile follows.
    page.get_by_label("Frame number").fill("7")
    page.get_by_label("Frame number").press("Enter")
    expect_text(page, "echo-frame-label", "Frame 7 of 29")
    expect_title(page, "Frame 7: (12, 30) → (120, 70)")
    expected7 = profile_line(data[7], (30, 12), (70, 120))[1]
    assert not np.allclose(expected0, expected7)
    page.wait_for_function("""(first) => { const f = %s; const d = f();
                              return d && d.values[0] !== first; }""" % _PROFILE_DATA,
                           arg=float(expected0[0]))
    np.testing.assert_allclose(profile_in_browser(), expected7, rtol=1e-12)
    page.context.close()


def test_cost_inspector_aligned_and_tiled(browser, served):
    from playwright.sync_api import expect

    page = open_page(browser, served, FRAMES_KEY)
    cost = page.locator(".echo-cost-card")
    expect(cost).to_contain_text("Chunks are frame-aligned: each frame is one chunk, one GET.")
    expect(cost).to_contain_text("1×96×128 (1 per frame, 1 frame per chunk)")
    expect(cost).to_contain_text("shuffle (id 2): built-in decoder yes, h5py/hdf5plugin yes")
    expect(cost).to_contain_text("gzip (id 1): built-in decoder yes")
    expect(cost).to_contain_text("direct (exact ranged GETs")
    # frame 0 may already sit in the process-wide frame cache (an earlier page read it)
    expect(cost).to_contain_text(re.compile(  # noqa: F405
        r"frame 0 (via direct: 1 GET, 14\.\d KiB|from the frame cache: no new request)"))
    page.get_by_label("Frame number").fill("4")
    page.get_by_label("Frame number").press("Enter")
    expect(cost).to_contain_text(re.compile(r"frame 4 (via direct|from the)"))  # noqa: F405
    expect(cost).not_to_contain_text("not frame-aligned")
    page.context.close()

    page = open_page(browser, served, TILES_KEY)
    cost = page.locator(".echo-cost-card")
    expect(cost).to_contain_text("Chunks are not frame-aligned: each 96×128 frame is split over "
                                 "12 chunks (3×4 tiles of 32×32), so every frame costs 12 chunk "
                                 "reads")
    expect(cost).to_contain_text("1×32×32 (12 per frame, 1 frame per chunk)")
    expect(cost).to_contain_text(re.compile(r"frame 0 via direct: [1-9]\d* GETs?, "))  # noqa: F405
    cost.scroll_into_view_if_needed()
    shot(page, "analysis_cost_tiles")  # noqa: F405
    page.context.close()
