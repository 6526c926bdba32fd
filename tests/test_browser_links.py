"""Deep links in Debian's Chromium: the address bar follows the view, "Copy link" copies it,
and the link opened in a fresh browser context restores file, dataset, frame and colormap once
connected. No key material ever reaches a URL."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import TIMEOUT_MS, click, connect, shot, status, tab, tick
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.demo.store import DEMO_BUCKET, NEXUS_DATASET, NEXUS_KEY
from dashboard.storage.credentials import Credentials

pytestmark = pytest.mark.browser

KEYS = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
LAST = 39  # the small demo NeXus stack has 40 frames


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def open_page(browser, url: str, *, clipboard: bool = False):
    context = browser.new_context(
        viewport={"width": 1600, "height": 1000},
        permissions=["clipboard-read", "clipboard-write"] if clipboard else [],
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    page.get_by_role("button", name="Connect").wait_for(timeout=2 * TIMEOUT_MS)  # shared cores
    return page


def no_key_material(*texts: str) -> None:
    for text in texts:
        for secret in (ACCESS_KEY, SECRET_KEY, "secret", "access_key", "credentials"):
            assert secret.lower() not in text.lower(), (secret, text)


def choose(page, label: str, value: str) -> None:
    page.locator(".bk-input-group", has_text=label).locator("select").first.select_option(value)


def selected(page, label: str) -> str:
    return page.locator(".bk-input-group", has_text=label).locator("select").first.input_value()


def frame_label(page):
    return status(page, "echo-frame-label")


def coloured(page) -> bool:
    """The middle of the frame image is in colour (viridis), not grey."""
    import io

    import numpy as np
    from PIL import Image

    png = page.locator(".echo-frame canvas").first.screenshot()
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    h, w = rgb.shape[:2]
    middle = rgb[int(h * 0.3):int(h * 0.7), int(w * 0.25):int(w * 0.55)]
    return float(abs(middle[..., 0] - middle[..., 2]).mean()) > 20


def wait_until(page, check, message: str, timeout: float = 30.0) -> None:
    import time

    from playwright.sync_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except PlaywrightError:  # a plot being replaced
            pass
        if time.monotonic() > deadline:
            shot(page, "failed-" + re.sub(r"\W+", "-", message))
            raise AssertionError(message)
        page.wait_for_timeout(100)


def query_of(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_copy_the_link_and_open_it_in_a_fresh_context(browser, dashboard_server, moto_server,
                                                      demo):
    a = open_page(browser, dashboard_server.url, clipboard=True)
    b = None
    try:
        history_at_start = a.evaluate("history.length")
        connect(a, endpoint=moto_server.endpoint, credentials=KEYS)
        no_key_material(a.url)
        choose(a, "Bucket", DEMO_BUCKET)
        expect(a).to_have_url(re.compile(r"bucket=echo-demo"))
        click(a, "List Objects")
        expect(status(a, "echo-count")).to_contain_text("objects shown")
        keyword = a.locator(".bk-input-group", has_text="Keyword").locator("input").first
        keyword.fill("scan_0001")
        keyword.press("Enter")
        expect(a.locator(".tabulator-row").filter(has_not_text="scan_0001")).to_have_count(0)
        tick(a, NEXUS_KEY)
        tab(a, "Frames")
        click(a, "Load Selected H5 File")
        expect(frame_label(a)).to_have_text(f"Frame 0 of {LAST}")
        # Step through frames quickly: the address bar follows, the history does not grow.
        for _ in range(6):
            click(a, "Next")
        expect(frame_label(a)).to_have_text(f"Frame 6 of {LAST}")
        box = a.locator(".bk-input-group", has_text="Frame number").locator("input").first
        box.fill("17")
        box.press("Enter")
        expect(frame_label(a)).to_have_text(f"Frame 17 of {LAST}")
        choose(a, "Colormap", "viridis")
        wait_until(a, lambda: coloured(a), "viridis did not colour the frame")
        expect(a).to_have_url(re.compile(r"frame=17.*colormap=viridis"))
        assert a.evaluate("history.length") == history_at_start  # replaced, never pushed
        query = query_of(a.url)
        assert query["bucket"] == DEMO_BUCKET and query["key"] == NEXUS_KEY
        assert query["dataset"] == NEXUS_DATASET and query["frame"] == "17"
        assert "output" not in query and "endpoint" not in query  # the server's default

        # Copy link: the clipboard and the text field both hold the address bar's link.
        a.get_by_role("button", name="Copy link").click()
        expect(a.locator(".echo-copy-note")).to_have_text("Link copied to the clipboard.")
        link = a.evaluate("navigator.clipboard.readText()")
        assert link == a.locator(".echo-link-text").input_value() == a.url
        no_key_material(link, a.url)
        shot(a, "40-link-copied")

        # A colleague opens it: nothing happens before Connect, then the view comes back.
        b = open_page(browser, link)
        expect(status(b, "echo-link-status")).to_contain_text("it opens once you are connected")
        assert b.url == link  # the address bar keeps the link while it waits
        # (the link lists its bucket at once: the status line moves on from "Connected")
        connect(b, endpoint=moto_server.endpoint, credentials=KEYS, expect="s3://echo-demo/")
        expect(frame_label(b)).to_have_text(f"Frame 17 of {LAST}", timeout=60_000)
        expect(status(b, "echo-link-status")).to_contain_text(
            f"Link opened: {NEXUS_KEY}, {NEXUS_DATASET}, frame 17.")
        assert selected(b, "Colormap") == "viridis"
        wait_until(b, lambda: coloured(b), "the restored frame is not in viridis")
        expect(status(b, "echo-viewer-status")).to_contain_text(
            f"scan_0001.nxs: {NEXUS_DATASET}, {LAST + 1} frames")
        expect(b).to_have_url(re.compile(r"frame=17"))
        assert query_of(b.url) == query  # the same view, the same link
        shot(b, "41-link-restored")
        no_key_material(b.url, b.locator(".echo-link-text").input_value())
    finally:
        a.context.close()
        if b is not None:
            b.context.close()


def test_hostile_and_dead_links_are_messages(browser, dashboard_server, moto_server, demo):
    hostile = ("?bucket=%3Cimg%20src=x%20onerror=alert(1)%3E&frame=-4&colormap=jet"
               "&sigma=1e999&key=%E2%80%AE.h5&" + "&".join(f"x{i}=1" for i in range(30)))
    page = open_page(browser, dashboard_server.url + hostile)
    try:
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        expect(status(page, "echo-link-status")).to_contain_text(
            "Parts of this link were ignored: bucket (")
        line = status(page, "echo-link-status")
        for part in ("frame (", "colormap (", "sigma (", "key (", "30 unknown parameters"):
            expect(line).to_contain_text(part)
        expect(line).not_to_contain_text("onerror")
        assert page.locator(".echo-link-status img").count() == 0
        # The page works normally and its address bar now follows the (empty) view.
        connect(page, endpoint=moto_server.endpoint, credentials=KEYS)
        expect(page).not_to_have_url(re.compile("onerror"))
        assert not dialogs
        shot(page, "42-link-hostile")

        # Without a clipboard (a plain-http server): the link is selected for Ctrl+C.
        page.evaluate("Object.defineProperty(navigator, 'clipboard', "
                      "{value: undefined, configurable: true})")
        page.get_by_role("button", name="Copy link").click()
        expect(page.locator(".echo-copy-note")).to_have_text(re.compile(
            r"Link copied to the clipboard\.|Press Ctrl\+C \(⌘C\) to copy the selected link\."))
        text = page.locator(".echo-link-text")
        assert text.evaluate("e => [e.selectionStart, e.selectionEnd]") == [
            0, len(text.input_value())]
        expect(page).to_have_url(text.input_value())
    finally:
        page.context.close()
    dead = f"?bucket={DEMO_BUCKET}&key={quote('beamline/2026-11/deleted_0042.h5')}&frame=3"
    page = open_page(browser, dashboard_server.url + dead)
    try:
        connect(page, endpoint=moto_server.endpoint, credentials=KEYS, expect="s3://echo-demo/")
        expect(status(page, "echo-link-status")).to_contain_text(
            "The link's file beamline/2026-11/deleted_0042.h5 is not in s3://echo-demo/")
        no_key_material(page.url)
    finally:
        page.context.close()


COUNT_HISTORY_CALLS = """
window.__replaced = [];
window.__pushed = 0;
const replace = history.replaceState.bind(history);
const push = history.pushState.bind(history);
history.replaceState = (s, t, u) => { window.__replaced.push([Date.now(), String(u)]);
                                      return replace(s, t, u); };
history.pushState = (s, t, u) => { window.__pushed += 1; return push(s, t, u); };
"""


def test_with_server_keys_a_link_opens_at_once_and_scrubbing_is_throttled(browser, moto_server,
                                                                          demo):
    from dashboard.app import RunningServer
    from dashboard.config import Settings

    link = f"?bucket={DEMO_BUCKET}&key={quote(NEXUS_KEY)}&frame=5&colormap=magma&equalize=false"
    with RunningServer(Settings(endpoint=moto_server.endpoint), credentials=KEYS) as server:
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(COUNT_HISTORY_CALLS)
        page = context.new_page()
        try:
            page.goto(server.url + link)
            entries = page.evaluate("history.length")
            expect(frame_label(page)).to_have_text(f"Frame 5 of {LAST}", timeout=60_000)
            expect(status(page, "echo-link-status")).to_contain_text("Link opened:")
            assert selected(page, "Colormap") == "magma"
            assert not page.locator(".bk-Checkbox", has_text="Equalize").locator(
                "input").first.is_checked()
            # Scrub with the keyboard: 25 frames in quick succession.
            before = page.evaluate("window.__replaced.length")
            start = page.evaluate("Date.now()")
            handle = page.locator(".echo-frame-slider .noUi-handle").first
            for _ in range(25):  # press() focuses the handle first: a re-render may not lose it
                handle.press("ArrowRight")
            expect(frame_label(page)).to_have_text(f"Frame 30 of {LAST}")
            expect(page).to_have_url(re.compile(r"frame=30&"))
            calls = page.evaluate("window.__replaced")[before:]
            elapsed = page.evaluate("Date.now()") - start
            times = [t for t, _ in calls]
            assert 1 <= len(calls) <= elapsed / 500 + 2, (len(calls), elapsed)
            assert all(b - a >= 450 for a, b in zip(times, times[1:])), times
            assert page.evaluate("window.__pushed") == 0  # Back still leaves the page
            assert page.evaluate("history.length") == entries
            no_key_material(page.url, *(u for _, u in page.evaluate("window.__replaced")),
                            page.locator(".echo-link-text").input_value())
            shot(page, "43-link-server-keys")
        finally:
            context.close()
