"""End to end in Debian's Chromium: the whole Browse → Inspect → Frames → Process flow, error
paths and two isolated sessions, against the demo data in moto. Screenshots of every step go to
``test-artifacts/screenshots/`` (look at them)."""

from __future__ import annotations

import json
import re
import uuid

import h5py
import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import (
    LONG_KEY, click, connect, everything_on_the_page, new_page, shot, status, tab,
    tick, upload_long_stack,
)
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.demo.store import (
    DEMO_BUCKET, IMAGE2D_KEY, NEXUS_KEY, NOT_HDF5_KEY, SHORT_KEY,
)
from dashboard.state.processor import START_MESSAGE
from dashboard.storage.s3 import S3

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def long_bucket(moto_server, credentials, tmp_path_factory):
    return upload_long_stack(S3(moto_server.endpoint, credentials), tmp_path_factory.mktemp("long"))


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def choose(page, label: str, value: str) -> None:
    page.locator(".bk-input-group", has_text=label).locator("select").first.select_option(value)


def field(page, label: str):
    return page.locator(".bk-input-group", has_text=label).locator("input").first


def type_in(page, label: str, text: str) -> None:
    box = field(page, label)
    box.fill(text)
    box.press("Enter")


def checkbox(page, label: str):
    return page.locator(".bk-Checkbox", has_text=label).locator("input").first


def row(page, key: str):
    return page.locator(".tabulator-row", has_text=key).first


def shows_an_image(locator) -> bool:
    """True when the element's screenshot has many grey levels (an image, not a blank box)."""
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(locator.screenshot())).convert("L")
    return len(picture.getcolors(maxcolors=256) or []) > 40


def frame_pixels(page) -> bytes:
    return page.locator(".echo-frame canvas").first.screenshot()


def image_region(page):
    """The middle of the frame image (no axes, no colorbar) as an RGB array."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(frame_pixels(page))).convert("RGB"), dtype=np.int16)
    h, w = rgb.shape[:2]
    return rgb[int(h * 0.3):int(h * 0.7), int(w * 0.25):int(w * 0.55)]


def wait_image(page, check, message: str, timeout: float = 15.0):
    """Wait until ``check(image_region(page))`` holds (the image itself repainted)."""
    import time

    from playwright.sync_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout
    while True:
        try:
            region = image_region(page)
        except PlaywrightError:  # the plot is being rebuilt (equalize): its canvas was replaced
            region = None
        if region is not None and check(region):
            break
        if time.monotonic() > deadline:
            shot(page, "failed-" + message.replace(" ", "-"))
            raise AssertionError(message)
        page.wait_for_timeout(100)
    return region


def changed(page, before: bytes, timeout: float = 15.0) -> None:
    """Wait until the frame's pixels differ from ``before`` (polling the canvas)."""
    import time

    deadline = time.monotonic() + timeout
    while frame_pixels(page) == before:
        assert time.monotonic() < deadline, "the frame image did not change"
        page.wait_for_timeout(100)


def settled(page, last: int, timeout: float = 15.0) -> int:
    """Wait until the frame shown is the one in the frame-number box (after a drag)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        wanted = int(field(page, "Frame number").input_value())
        try:
            assert wanted > 20, f"the drag did not move the slider (at {wanted})"
            expect(status(page, "echo-frame-label")).to_have_text(
                f"Frame {wanted} of {last}", timeout=1000)
            return wanted
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def wait_frame(page, index: int, last: int) -> None:
    """Wait until the label names frame ``index`` and the number box shows it (before typing
    into the box: a number typed while the box's own update is on its way is overwritten)."""
    expect(status(page, "echo-frame-label")).to_have_text(f"Frame {index} of {last}")
    expect(field(page, "Frame number")).to_have_value(str(index))


def list_demo(page, moto_server):
    connect(page, endpoint=moto_server.endpoint, credentials=_keys())
    choose(page, "Bucket", DEMO_BUCKET)
    click(page, "List Objects")
    expect(status(page, "echo-count")).to_contain_text("objects shown")


def _keys():
    from dashboard.storage.credentials import Credentials

    return Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)


def test_the_whole_flow(page, moto_server, demo, tmp_path):
    shot(page, "01-start")
    # Connect: the pasted keys are gone from the page afterwards.
    list_demo(page, moto_server)
    expect(status(page, "echo-browse-status")).to_contain_text("Listed")
    seen = everything_on_the_page(page)
    assert "Listed" in seen and SECRET_KEY not in seen and ACCESS_KEY not in seen
    assert field(page, "paste keys").input_value() == ""
    shot(page, "02-connected-listed")

    # Filter by directory, then keyword.
    choose(page, "Directory", "beamline/2026-11/")
    in_dir = [k for k in demo.keys if k.startswith("beamline/2026-11/")
              and k.lower().endswith((".h5", ".nxs", ".hdf5", ".hdf"))]
    expect(status(page, "echo-count")).to_contain_text(f"{len(in_dir)} of ")
    expect(page.locator(".tabulator-row").first).to_contain_text("beamline/2026-11/")
    expect(page.locator(".tabulator-row", has_text="archive/")).to_have_count(0)
    type_in(page, "Keyword", "scan_0001.NXS")  # case-insensitive
    expect(page.locator(".tabulator-row")).to_have_count(1)
    expect(row(page, NEXUS_KEY)).to_contain_text("MB")  # human-readable size
    shot(page, "03-filtered")

    # Sort by size, descending: the largest object comes first.
    type_in(page, "Keyword", "")
    choose(page, "Sort by", "size")
    checkbox(page, "Descending").check()
    sizes = {k: demo.path(k).stat().st_size for k in demo.keys if k.startswith("beamline/2026-11/")
             and k.endswith((".h5", ".nxs"))}
    largest = max(sizes, key=sizes.get)
    expect(page.locator(".tabulator-row").first).to_contain_text(largest)
    shot(page, "04-sorted")

    # Select two files and download them.
    type_in(page, "Keyword", "_000")
    expect(page.locator(".tabulator-row").filter(has_not_text="_000")).to_have_count(0)
    tick(page, NEXUS_KEY, selected=1)
    tick(page, SHORT_KEY, selected=2)
    out = tmp_path / "downloads"
    type_in(page, "Download folder", str(out))
    click(page, "Download Selected")
    expect(status(page, "echo-download-status")).to_contain_text("2 downloaded")
    expect(page.locator(".echo-download-progress progress")).to_have_attribute("value", "100")
    for key in (NEXUS_KEY, SHORT_KEY):
        assert (out / key).read_bytes() == demo.path(key).read_bytes()
    shot(page, "05-downloaded")

    # View the last frame of the first selected HDF5 file.
    click(page, "View Last Frame")
    expect(status(page, "echo-thumbnail-title")).to_contain_text("scan_0001.nxs")
    expect(page.locator(".echo-thumbnail canvas").first).to_be_visible()
    assert shows_an_image(page.locator(".echo-thumbnail canvas").first)
    shot(page, "06-last-frame")

    # Load it: the Frames step opens on frame 0.
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
    with h5py.File(demo.path(NEXUS_KEY)) as f:
        last = f["/entry/data/data"].shape[0] - 1
    wait_frame(page, 0, last)
    expect(status(page, "echo-viewer-status")).to_contain_text("40 frames of 256×256 uint16")
    assert shows_an_image(page.locator(".echo-frame canvas").first)
    shot(page, "07-frames")

    # Hover shows the pixel's coordinates and value.
    box = page.locator(".echo-frame canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    tooltip = page.locator(".bk-Tooltip, .bk-tooltip").first
    expect(tooltip).to_contain_text("value")
    expect(tooltip).to_contain_text("x (column)")
    shot(page, "07b-hover")

    # Every control moves the frame, and the pixels change.
    before = frame_pixels(page)
    for name, index in (("Next", 1), ("Last", last), ("Previous", last - 1), ("First", 0)):
        click(page, name)
        wait_frame(page, index, last)
    type_in(page, "Frame number", "17")
    wait_frame(page, 17, last)
    expect(page.locator(".echo-frame-slider")).to_contain_text("17")
    page.locator(".echo-frame-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    wait_frame(page, 18, last)
    changed(page, before)

    # Drag the slider: the page ends on the frame the slider shows (no stale frame last).
    box = page.locator(".echo-frame-slider .noUi-base").first.bounding_box()
    handle = page.locator(".echo-frame-slider .noUi-handle").first.bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(box["x"] + box["width"] * (0.45 + 0.02 * k), y)
    page.mouse.up()
    settled(page, last)
    equalized = image_region(page)
    # gray (but for the thin outlines of the ROI box and the profile line drawn over it)
    assert np.percentile(abs(equalized[..., 0] - equalized[..., 2]), 90) <= 2
    checkbox(page, "Equalize (histogram)").uncheck()
    wait_image(page, lambda r: abs(r.astype(float).mean() - equalized.mean()) > 5,
               "switching equalize off did not repaint the image")
    choose(page, "Colormap", "viridis")
    viridis = wait_image(page, lambda r: abs(r[..., 0] - r[..., 2]).mean() > 20,
                         "choosing viridis did not colour the image")
    checkbox(page, "Equalize (histogram)").check()
    wait_image(page, lambda r: abs(r[..., 0] - r[..., 2]).mean() > 20
               and abs(r.astype(float).mean() - viridis.mean()) > 5,
               "equalize with viridis did not repaint the image")
    checkbox(page, "Equalize (histogram)").uncheck()
    wait_image(page, lambda r: abs(r.astype(float).mean() - viridis.mean()) < 2,
               "switching equalize off again did not repaint the image")
    shot(page, "08-frame-18-viridis-linear")

    # Inspect: the tree with shapes, dtypes and chunks.
    tab(page, "Inspect")
    tree = page.locator(".echo-tree")
    expect(tree).to_contain_text("40×256×256")
    expect(tree).to_contain_text("uint16")
    expect(tree).to_contain_text("chunks")
    shot(page, "09-inspect")

    # Process: preview five panels, then a 5-frame batch.
    tab(page, "Process")
    click(page, "Preview Last Frame")
    expect(status(page, "echo-process-status")).to_have_text(f"Preview of frame {last} ready.")
    expect(status(page, "echo-preview-title")).to_contain_text("σ = 4")
    panels = page.locator(".echo-preview-image")
    expect(panels).to_have_count(5)
    expect(panels.nth(4).locator("canvas").first).to_be_visible()
    assert all(shows_an_image(panels.nth(i)) for i in range(5))
    shot(page, "10-preview")

    batch_out = tmp_path / "processed"
    type_in(page, "Start frame", "20")
    type_in(page, "End frame", "24")
    choose(page, "Format", "NPY")
    type_in(page, "Output folder", str(batch_out))
    expect(status(page, "echo-process-check")).to_have_text("5 frames will be written as NPY.")
    click(page, "Batch Process & Save")
    expect(status(page, "echo-batch-summary")).to_contain_text("Processed 5 of 5 frames")
    expect(status(page, "echo-batch-progress-text")).to_contain_text("5/5 frames")
    expect(page.locator(".echo-batch-progress progress")).to_have_attribute("value", "100")
    assert len(list(batch_out.rglob("*.npy"))) == 5
    shot(page, "11-batch-done")

    # Inspect: choose the other image stack of the file; Frames follows it.
    tab(page, "Inspect")
    choose(page, "Image stack", "/entry/instrument/detector/data")
    expect(status(page, "echo-viewer-status")).to_contain_text("/entry/instrument/detector/data")
    expect(page.locator(".echo-tree")).to_contain_text("(shown)")
    shot(page, "11b-other-stack")


def test_cancel_a_longer_batch(page, moto_server, long_bucket, tmp_path):
    connect(page, endpoint=moto_server.endpoint, credentials=_keys())
    choose(page, "Bucket", long_bucket)
    click(page, "List Objects")
    tick(page, LONG_KEY)
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
    wait_frame(page, 0, 199)
    tab(page, "Process")
    type_in(page, "Output folder", str(tmp_path / "long"))
    choose(page, "Format", "TIFF")
    expect(status(page, "echo-process-check")).to_have_text("180 frames will be written as TIFF.")
    click(page, "Batch Process & Save")
    expect(status(page, "echo-batch-progress-text")).to_contain_text("frames/s")
    click(page, "Cancel")
    expect(status(page, "echo-process-status")).to_have_text("Batch cancelled.")
    expect(status(page, "echo-batch-summary")).to_contain_text("Cancelled after")
    shot(page, "12-batch-cancelled")
    written = len(list((tmp_path / "long").rglob("*.tif*")))
    assert 0 < written < 180


def test_file_errors_are_messages_and_the_session_keeps_working(page, moto_server, demo):
    list_demo(page, moto_server)
    choose(page, "Directory", "beamline/2026-11/")
    checkbox(page, "HDF5 files only").check()

    def load(key: str) -> None:
        tab(page, "Browse")
        type_in(page, "Keyword", key.rsplit("/", 1)[-1])
        # The filter has come back (one row, the last file's tick dropped) before this tick.
        expect(status(page, "echo-count")).to_have_text(re.compile(r"^1 of \d+ objects shown$"))
        tick(page, key)
        tab(page, "Frames")
        click(page, "Load Selected H5 File")

    # Nothing selected yet.
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
    expect(status(page, "echo-viewer-status")).to_have_text(
        "Select an .h5 file in the browser first.")

    load(NOT_HDF5_KEY)
    expect(status(page, "echo-viewer-status")).to_contain_text("is not an HDF5 file")
    shot(page, "13-not-hdf5")

    tab(page, "Browse")
    choose(page, "Directory", "(all)")
    load(IMAGE2D_KEY)
    expect(status(page, "echo-viewer-status")).to_contain_text("is a single 2-D image")
    tab(page, "Process")
    expect(status(page, "echo-process-check")).to_contain_text("single 2-D image, not a stack")
    shot(page, "14-two-d")

    load(SHORT_KEY)
    expect(status(page, "echo-viewer-status")).to_contain_text("12 frames")
    tab(page, "Process")
    expect(status(page, "echo-process-check")).to_contain_text("needs at least 21")
    expect(status(page, "echo-process-status")).to_contain_text("needs at least 21")
    expect(status(page, "echo-process-status")).to_have_class(re.compile(r"\becho-error\b"))
    for name in ("Preview Last Frame", "Batch Process & Save"):  # greyed out: too short
        expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    shot(page, "15-short")

    load(NEXUS_KEY)
    wait_frame(page, 0, 39)
    tab(page, "Process")
    # The step has taken the new stack's bounds and defaults (start 20, end 39) before we type.
    expect(status(page, "echo-process-check")).to_contain_text("20 frames will be written")
    type_in(page, "Start frame", "5")
    expect(status(page, "echo-process-check")).to_have_text(f"{START_MESSAGE} (got 5).")
    expect(page.get_by_role("button", name="Batch Process & Save", exact=True)).to_be_disabled()
    shot(page, "16-start-below-20")
    # Still working: a preview of the range's last frame runs.
    type_in(page, "Start frame", "20")
    expect(status(page, "echo-process-check")).to_contain_text("20 frames will be written")
    click(page, "Preview Last Frame")
    expect(status(page, "echo-process-status")).to_have_text("Preview of frame 39 ready.")
    assert "Traceback" not in page.content()


@pytest.fixture(scope="module")
def auth_server():
    from auth_moto import auth_moto_server

    buckets = {"alice": [f"alice-{uuid.uuid4().hex[:6]}"], "bob": [f"bob-{uuid.uuid4().hex[:6]}"]}
    with auth_moto_server(buckets) as server:
        yield server


def test_wrong_keys_then_right_keys(page, auth_server, tmp_path):
    from dashboard.storage.credentials import Credentials

    alice = auth_server.credentials("alice")
    wrong = Credentials(access_key=alice.access_key, secret_key="not-the-secret-123")
    connect(page, endpoint=auth_server.endpoint, credentials=wrong,
            expect="keys were rejected")
    assert "not-the-secret-123" not in everything_on_the_page(page)
    shot(page, "17-wrong-keys")
    # The session keeps working: upload the right key file instead.
    key_file = tmp_path / "alice.json"
    key_file.write_text(json.dumps({"access_key": alice.access_key,
                                    "secret_key": alice.secret_key}))
    page.locator("input[type=file]").first.set_input_files(str(key_file))
    expect(status(page, "echo-connect-status")).to_have_text("Key file received; press Connect.")
    click(page, "Connect")
    expect(status(page, "echo-connect-status")).to_contain_text("Connected to")
    seen = everything_on_the_page(page)
    assert alice.secret_key not in seen and alice.access_key not in seen
    assert page.locator("input[type=file]").first.input_value() == ""


def test_sessions_connect_at_start_with_given_keys(browser, moto_server, demo):
    """``serve --demo`` / ``--credentials``: each new session connects by itself."""
    from dashboard.app import RunningServer
    from dashboard.config import Settings

    with RunningServer(Settings(endpoint=moto_server.endpoint), credentials=_keys()) as server:
        pages = [new_page(browser, server.url) for _ in range(2)]
        try:
            for p in pages:
                expect(status(p, "echo-connect-status")).to_contain_text("Connected to")
            choose(pages[0], "Bucket", DEMO_BUCKET)
            click(pages[0], "List Objects")
            expect(status(pages[0], "echo-count")).to_contain_text("objects shown")
            expect(status(pages[1], "echo-count")).not_to_contain_text("objects shown")
            shot(pages[0], "19-auto-connected")
        finally:
            for p in pages:
                p.context.close()


def test_two_browser_contexts_see_only_their_own_buckets(browser, dashboard_server, auth_server):
    pages = {}
    try:
        for user in ("alice", "bob"):
            pages[user] = new_page(browser, dashboard_server.url)
            connect(pages[user], endpoint=auth_server.endpoint,
                    credentials=auth_server.credentials(user))
        for user, other in (("alice", "bob"), ("bob", "alice")):
            options = pages[user].locator(".bk-input-group", has_text="Bucket").locator("option")
            expect(options).to_have_text(list(auth_server.users[user].buckets))
            content = everything_on_the_page(pages[user])
            for bucket in auth_server.users[other].buckets:
                assert bucket not in content
            assert auth_server.credentials(other).access_key not in content
            shot(pages[user], f"18-isolated-{user}")
    finally:
        for p in pages.values():
            p.context.close()
