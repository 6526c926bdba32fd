"""Views and builders without a browser: layout, plots, escaping, serving entry points."""

from __future__ import annotations

import base64
import inspect
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dashboard.config import Settings
from dashboard.demo.server import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_notebook_layout_and_template_build():
    import panel as pn
    from bokeh.document import Document

    import dashboard
    from dashboard.ui.app import TITLE, EchoS3Viewer, extension

    extension()
    assert dashboard.EchoS3Viewer is EchoS3Viewer
    viewer = EchoS3Viewer(settings=Settings(endpoint="http://127.0.0.1:9"))
    root = pn.panel(viewer).get_root(Document())
    assert root is not None
    template = viewer.template()
    assert template.title == TITLE
    assert [name for name, _ in zip(viewer.tabs._names, range(4))] == [
        "1 · Browse", "2 · Inspect", "3 · Frames", "4 · Process"]
    viewer.session.close()


def test_frame_image_uses_pixel_coordinates():
    from dashboard.ui.plots import frame_image

    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)  # 3 rows, 4 columns
    image = frame_image(frame)
    for row in range(3):
        for col in range(4):
            assert image[col, row] == frame[row, col]
    blank = frame_image(None, shape=(5, 7))
    assert blank.dimension_values(2, flat=False).shape == (5, 7)


def test_rasterized_frame_is_viewport_sized_and_compact():
    import holoviews as hv
    from holoviews.operation.datashader import rasterize

    from dashboard.ui.plots import frame_image

    hv.extension("bokeh")
    frame = np.random.default_rng(0).integers(0, 60000, (2048, 2048), dtype=np.uint16)
    out = rasterize(frame_image(frame), dynamic=False, width=800, height=600)
    data = out.dimension_values(2, flat=False)
    assert data.shape == (600, 800)
    assert data.dtype.itemsize <= 4


def test_histogram_counts_every_pixel_of_small_frames():
    from dashboard.ui.plots import HIST_BINS, histogram_counts

    rng = np.random.default_rng(1)
    frame = rng.normal(size=(64, 64)).astype(np.float32)
    frame[0, 0] = np.nan
    counts, _ = histogram_counts(frame)
    assert counts.sum() == frame.size - 1
    # Integer frames are counted per value first: the same counts and edges as np.histogram.
    for dtype in (np.uint8, np.uint16):
        ints = rng.integers(3, np.iinfo(dtype).max - 3, size=(200, 300)).astype(dtype)
        counts, edges = histogram_counts(ints)
        expected = np.histogram(ints, bins=HIST_BINS, range=(int(ints.min()), int(ints.max())))
        np.testing.assert_array_equal(counts, expected[0])
        np.testing.assert_array_equal(edges, expected[1])


def test_tree_html_escapes_file_contents():
    from dashboard.ui.viewer import tree_html

    description = {
        "url": "s3://b/<evil>.h5",
        "nodes": [
            {"path": "/", "kind": "group", "attrs": {"note": "<script>alert(1)</script>"}},
            {"path": "/<img src=x>", "kind": "dataset", "shape": [3, 4, 5], "dtype": "uint16",
             "chunks": [1, 4, 5], "filters": [{"id": 32008, "name": "bitshuffle"}], "attrs": {}},
        ],
        "truncated": True, "node_limit": 2,
    }
    html = tree_html(description, "/<img src=x>")
    assert "<script>" not in html and "<img src=x>" not in html and "<evil>" not in html
    assert "3×4×5" in html and "chunks 1×4×5" in html and "bitshuffle" in html
    assert "(shown)" in html and "Only the first 2 entries" in html
    # The walk's own notes (what was cut by a budget, and why) are shown as text.
    noted = tree_html({**description, "notes": ["<b>attrs</b> of /x not read (2.0 MB)"]})
    assert "&lt;b&gt;attrs&lt;/b&gt; of /x not read (2.0 MB)" in noted
    assert "No file loaded yet" in tree_html(None)


def test_serve_signature_matches_the_cli():
    from dashboard.app import serve

    params = inspect.signature(serve).parameters
    assert list(params) == ["settings", "demo", "port", "address", "show",
                            "allow_websocket_origin", "prefix", "auth", "ssl_certfile",
                            "ssl_keyfile"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())


def test_jupyter_server_proxy_entry():
    from dashboard.jupyter import setup_panel_proxy

    spec = setup_panel_proxy()
    command = spec["command"]
    assert command[1:4] == ["-m", "panel", "serve"] and Path(command[4]).name == "app.py"
    assert Path(command[4]).is_file() and "{port}" in command
    assert "{base_url}echo-s3-viewer" in command and spec["absolute_url"] is True
    assert spec["launcher_entry"]["title"] == "ECHO S3 Viewer"


@pytest.mark.slow
def test_panel_serve_app_module_is_servable(tmp_path):
    """``panel serve dashboard/app.py`` builds the page per session (no traceback)."""
    port = free_port()
    env = {**os.environ, "ECHO_S3_ENDPOINT": "http://127.0.0.1:9"}
    process = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "dashboard/app.py", "--address", "127.0.0.1",
         "--port", str(port), "--num-threads", "2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Patient: the page is built in the request, and test workers share the cores.
        deadline = time.monotonic() + 240
        body = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=120) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None, process.stderr.read() if process.poll() is not None else "timeout"
        assert "<title>ECHO S3 Viewer</title>" in body and "Traceback" not in body
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def test_fit_box_keeps_square_pixels():
    from dashboard.ui.plots import fit_box

    assert fit_box((256, 256), (900, 660)) == (660, 660)
    assert fit_box((2167, 2070), (900, 660)) == (630, 660)
    assert fit_box((200, 2560), (900, 660)) == (900, 70)  # a wide detector strip
    assert fit_box((10, 5000), (900, 660)) == (900, 60)  # never thinner than 60 pixels


def test_pasted_and_uploaded_keys_stay_out_of_debug_logs(caplog, moto_server):
    from conftest import SECRET_KEY

    from dashboard.state.browser import BrowserState
    from dashboard.ui.browser import ConnectView

    state = BrowserState(endpoint=moto_server.endpoint)
    view = ConnectView(state)
    text = '{"access_key": "AKIAX", "secret_key": "%s"}' % SECRET_KEY
    with caplog.at_level("DEBUG"):
        view._password._process_events({"value_input": text})
        view._upload._process_events(
            {"value": base64.b64encode(text.encode()).decode(), "filename": "k.json"})
        view._password._log("probe %s", "visible")  # other DEBUG lines of the widget: dropped too
    assert state.credentials_text == text
    assert SECRET_KEY not in caplog.text
    state.connect = True
    assert view._password.value_input == "" and view._password.value == ""
    assert view._upload.value is None
    state.tasks.wait(30)
    state.tasks.shutdown()


@pytest.mark.slow
def test_listing_dates_are_utc_whatever_the_server_time_zone():
    from datetime import datetime, timezone

    from dashboard.storage.s3 import ObjectInfo
    from dashboard.ui.browser import objects_frame

    code = (
        "import os, time; os.environ['TZ'] = 'Asia/Tokyo'; time.tzset();"
        "from datetime import datetime, timedelta, timezone;"
        "from dashboard.storage.s3 import ObjectInfo;"
        "from dashboard.ui.browser import objects_frame;"
        "t = datetime(2026, 1, 2, 23, 30, tzinfo=timezone(timedelta(hours=-5)));"
        "print(objects_frame([ObjectInfo('a.h5', 1, t, 'e')]).iloc[0, 2])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2026-01-03 04:30"  # 23:30 at UTC-5, shown in UTC
    here = objects_frame([ObjectInfo("b.h5", 1, datetime(2026, 1, 1, tzinfo=timezone.utc), "e")])
    assert list(here.columns)[2] == "Modified (UTC)"
    assert here.iloc[0, 2] == "2026-01-01 00:00"


def test_the_key_file_field_is_hidden_when_server_keys_are_off():
    import panel as pn

    from dashboard.ui.app import EchoS3Viewer, extension

    extension()

    def key_file_fields(app):
        return [w for w in app.connect_view.__panel__().select(pn.widgets.TextInput)
                if w.name == "Credentials file (on the server)"]

    shown = EchoS3Viewer(settings=Settings(server_keys=True))
    hidden = EchoS3Viewer(settings=Settings(server_keys=False))
    try:
        assert [w.visible for w in key_file_fields(shown)] == [True]
        assert [w.visible for w in key_file_fields(hidden)] == [False]
    finally:
        shown.session.close()
        hidden.session.close()
