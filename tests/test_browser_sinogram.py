"""End to end in Chromium: the Frames step's sinogram card forecasts, builds a row across the
frames with progress, and a click on the image shows that frame."""

from __future__ import annotations

import re

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import SCREENSHOTS, click, shot, status, tab, tick
from test_browser_dashboard import choose, expect, list_demo, type_in, wait_frame

from dashboard.demo.store import NEXUS_KEY

pytestmark = pytest.mark.browser


def test_a_sinogram_from_the_frames_step(page, moto_server, demo):
    list_demo(page, moto_server)
    type_in(page, "Keyword", "scan_0001.nxs")
    tick(page, NEXUS_KEY)
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
    wait_frame(page, 0, 39)
    line = status(page, "echo-sinogram-status")
    expect(line).to_contain_text(re.compile(r"Row 128 of 40 frames will read [\d.]+ [kM]B "
                                            r"\(40 chunks; \d+ % of those frames"))
    choose(page, "Sinogram of a", "Column")
    expect(line).to_contain_text("Column 128 of 40 frames will read")
    click(page, "Compute sinogram")
    expect(line).to_contain_text(re.compile(r"Column 128 of 40 frames: .* read in .* s\. "
                                            r"Click it to show a frame\."))
    canvas = page.locator(".echo-sinogram-image canvas").first
    expect(canvas).to_be_visible()
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    # Near the top of the plot area: the last frames (the first frame is at the bottom).
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.3)
    expect(status(page, "echo-frame-label")).to_have_text(
        re.compile(r"Frame (2[5-9]|3\d) of 39"))  # a late frame, as clicked
    shot(page, "55-sinogram")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".echo-sinogram").first.screenshot(path=str(SCREENSHOTS / "55-sinogram-card.png"))
    assert "Traceback" not in page.content()
