"""Fixtures for the end-to-end tests: a dashboard server on 127.0.0.1 and Debian's Chromium.

Import into a test module with ``from browser_fixtures import *``. Browser tests are skipped
when Playwright or Chromium is missing, unless ``REQUIRE_BROWSER=1`` (CI), where they fail.
Screenshots go to ``test-artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("ECHO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# Patience for every wait on the page (waits end on their condition; this only bounds a failure):
# four test workers share the machine's cores with their browsers and servers.
TIMEOUT_MS = 60_000

__all__ = ["browser", "dashboard_server", "page", "new_page", "shot", "connect", "keys_json",
           "TIMEOUT_MS", "status", "click", "tab", "re", "everything_on_the_page", "LONG_KEY",
           "upload_long_stack", "tick"]

_ALL_TEXT = """() => {
  const parts = [location.href, document.title];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if ('value' in el && typeof el.value === 'string') parts.push(el.value);
      for (const attr of el.attributes || []) parts.push(attr.value);
      if (el.childNodes) for (const n of el.childNodes) if (n.nodeType === 3) parts.push(n.data);
    }
  };
  walk(document);
  return parts.join('\\n');
}"""


def everything_on_the_page(page) -> str:
    """Every text node, attribute and input value, shadow DOMs included, plus the URL."""
    return page.evaluate(_ALL_TEXT)


LONG_KEY = "long/run_0099_long.h5"


def upload_long_stack(s3, directory) -> str:
    """A fresh bucket with one longer stack (200 frames of 128², one chunk per frame, under
    7 MB for moto), so that a batch runs long enough to be cancelled. Returns the bucket."""
    import uuid

    import h5py
    import numpy as np

    name = f"long-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=name)
    path = Path(directory) / "long.h5"
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", chunks=(1, 128, 128),
                         data=rng.integers(100, 4000, (200, 128, 128), dtype=np.uint16))
    s3.client.upload_file(str(path), name, LONG_KEY)
    return name


def _missing(reason: str):
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    expect.set_options(timeout=TIMEOUT_MS)  # the machine is shared: be patient, never sleep
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"Chromium not found at {CHROMIUM}")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def dashboard_server(moto_server):
    """The dashboard on a free port, its endpoint defaulting to the test S3 server."""
    from dashboard.app import RunningServer
    from dashboard.config import Settings

    server = RunningServer(Settings(endpoint=moto_server.endpoint))
    try:
        yield server
    finally:
        server.stop()


def new_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    page.get_by_role("button", name="Connect").wait_for()
    return page


@pytest.fixture
def page(browser, dashboard_server):
    page = new_page(browser, dashboard_server.url)
    try:
        yield page
    finally:
        page.context.close()


def shot(page, name: str) -> Path:
    """Save a full-page screenshot ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def keys_json(credentials) -> str:
    return json.dumps({"access_key": credentials.access_key, "secret_key": credentials.secret_key})


def status(page, css_class: str):
    """The locator of a status line (``echo-...`` CSS class)."""
    return page.locator(f".{css_class}").first


def click(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()


def tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=title).first.click()


def tick(page, key: str, *, selected: int = 1, on: bool = True) -> None:
    """Tick (or untick) the table row showing ``key``; wait until the server counts ``selected``.

    The count line is the server's word, so a Load pressed next finds the selection there.
    """
    from playwright.sync_api import expect as pw_expect

    box = page.locator(".tabulator-row", has_text=key).first.locator("input[type=checkbox]")
    box.check() if on else box.uncheck()
    count = status(page, "echo-count")
    if selected:
        pw_expect(count).to_contain_text(f", {selected} selected")
    else:
        pw_expect(count).not_to_contain_text("selected")


def connect(page, *, endpoint: str, credentials, expect: str = "Connected to") -> None:
    """Fill endpoint and pasted keys, press Connect, wait for the status line."""
    from playwright.sync_api import expect as pw_expect

    page.get_by_label("Endpoint").fill(endpoint)
    page.get_by_placeholder('{"access_key"').fill(keys_json(credentials))
    click(page, "Connect")
    pw_expect(status(page, "echo-connect-status")).to_contain_text(expect)


def open_in_frames(page, *, endpoint: str, credentials, bucket: str, key: str) -> None:
    """Connect, list ``bucket``, tick ``key`` and load it in the Frames step."""
    page.get_by_label("Endpoint").fill(endpoint)
    page.get_by_placeholder('{"access_key"').fill(keys_json(credentials))
    click(page, "Connect")
    page.locator(".bk-input-group", has_text="Bucket").locator("select").first.select_option(
        bucket)
    click(page, "List Objects")
    tick(page, key)
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
