"""End to end in Chromium: Follow a prefix while files land in it and grow (moto), the newest
opened on its last frame, Reload offered for a replaced file, paused while the tab is hidden."""

from __future__ import annotations

import uuid

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, connect, shot, status, tab
from test_batch import write_stack
from test_browser_dashboard import _keys, checkbox, choose, expect, type_in

from dashboard.storage.s3 import S3

pytestmark = pytest.mark.browser

HIDE = """() => {
  Object.defineProperty(document, "hidden", {value: true, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  Object.defineProperty(document, "hidden", {value: false, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_follow_a_prefix_as_files_land_and_grow(page, moto_server, credentials, tmp_path):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"live-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)

    def land(key: str, frames: int, seed: int) -> None:
        path = write_stack(tmp_path / f"{seed}.h5", n=frames, shape=(16, 16), seed=seed)
        s3.client.upload_file(str(path), bucket, key)

    land("run/scan_0001.h5", 4, 1)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    connect(page, endpoint=moto_server.endpoint, credentials=_keys())
    choose(page, "Bucket", bucket)
    click(page, "List Objects")
    choose(page, "Directory", "run/")
    type_in(page, "Check every (s)", "2")
    checkbox(page, "Follow").check()
    follow = status(page, "echo-follow-status")
    expect(follow).to_contain_text(f"Following s3://{bucket}/run/: nothing new")

    land("run/scan_0002.h5", 6, 2)
    first_row = page.locator(".tabulator-row").first
    expect(first_row).to_contain_text("run/scan_0002.h5")
    expect(first_row).to_contain_text("new")
    shot(page, "50-follow-a-prefix")
    expect(first_row.locator(".tabulator-cell", has_text="scan_0002")).to_have_css(
        "background-color", "rgb(255, 243, 196)")  # highlighted
    expect(follow).to_contain_text("1 new")
    shot(page, "50-follow-a-prefix")

    # Open the newest on its last frame; it grows (written again): reopened on its new last.
    checkbox(page, "Open the newest HDF5 file").check()
    tab(page, "Frames")
    label = status(page, "echo-frame-label")
    expect(label).to_have_text("Frame 5 of 5")
    land("run/scan_0002.h5", 9, 3)
    expect(label).to_have_text("Frame 8 of 8")

    # Without it, a replaced open file is offered for Reload instead of failing.
    tab(page, "Browse")
    checkbox(page, "Open the newest HDF5 file").uncheck()
    land("run/scan_0002.h5", 11, 4)
    tab(page, "Frames")
    expect(status(page, "echo-viewer-status")).to_have_text(
        "A newer version of scan_0002.h5 exists: press Reload to open it.")
    expect(label).to_have_text("Frame 8 of 8")  # the frame on screen stays
    click(page, "Reload")
    expect(label).to_have_text("Frame 8 of 10")
    expect(page.get_by_role("button", name="Reload")).to_be_hidden()

    # A background tab pauses following; shown again, it goes on.
    tab(page, "Browse")
    page.evaluate(HIDE)
    expect(follow).to_contain_text("Paused while this page is hidden")
    page.evaluate(SHOW)
    expect(follow).to_contain_text(f"Following s3://{bucket}/run/")
    checkbox(page, "Follow").uncheck()
    expect(follow).to_have_text("Stopped following.")
    assert "Traceback" not in page.content()
    page_origin = page.url.split("/", 3)[:3]
    assert all(url.split("/", 3)[:3] == page_origin for url in requests), \
        {url for url in requests if url.split("/", 3)[:3] != page_origin}
