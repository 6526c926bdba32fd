"""No markup from data, end to end in Chromium: a bucket whose object keys are payloads (script,
img/svg handlers, a Markdown ``javascript:`` link, Markdown emphasis, a right-to-left override,
a 5000-character key) and an HDF5 file whose group, dataset and attribute names and values are
payloads. The page lists, filters, selects, downloads, views, loads, inspects, processes, fails
on a payload-named non-HDF5 file and opens a payload link; after each step:

* no dialog opened (``page.on("dialog")``);
* no request left the app's origin (every other one is aborted and recorded: the payloads
  point at 203.0.113.9, a documentation address);
* no element, attribute or flag was created from a payload (a walk through every shadow root
  for ``on*``/``href``/``src`` attributes holding payload code, the marker element the payloads
  try to add, Markdown-rendered emphasis, ``window.__xss``);
* the payload text is on the page, as text.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlsplit

import h5py
import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import (
    TIMEOUT_MS, click, connect, everything_on_the_page, shot, status, tab,
)
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.storage.credentials import Credentials
from dashboard.storage.s3 import S3
from dashboard.text import shown

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EVIL = "203.0.113.9"  # TEST-NET-3: never routed; any request to it is a leak
MARK = "document.body.append(Object.assign(document.createElement('i'),{id:'xss-marker'}))"
SCRIPT_KEY = f"b<script>window.__xss=1;{MARK}</script>.h5"
IMG_KEY = f"<img src=http://{EVIL}/k.png onerror=\"window.__xss=1;{MARK}\">.h5"
SVG_KEY = "<svg onload=window.__xss=1>.h5"  # not HDF5: its load fails, quoting the key
MD_KEY = "[x](javascript:window.__xss=1) **bold**.h5"
BIDI_KEY = "e\u202egnp.exe.h5"
LONG_KEY = "long_" + "k" * 5000 + ".h5"

# Names inside the HDF5 file (no "/" in HDF5 names).
IMG = "<img src=x onerror=window.__xss=1>"
SVG = "<svg onload=window.__xss=1>"
SCRIPT = "<script>window.__xss=1"
BIDI = "e\u202egnp"
STACK = f"/entry/{SVG}/{IMG}"


def payload_file(path) -> None:
    """An HDF5 file whose names and attribute values are payloads; its stack is
    ``/entry/<svg ...>/<img ...>`` (22 frames of 16×16, so that a batch can run)."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs[IMG] = f"<script>window.__xss=1;{MARK}</script>"
        entry.attrs["title"] = "[x](javascript:window.__xss=1) **bold**"
        entry.attrs[BIDI] = "e\u202egnp.exe"
        entry.attrs["long"] = "v" * 5000
        group = entry.create_group(SVG)
        data = group.create_dataset(IMG, data=rng.integers(0, 4000, (22, 16, 16), np.uint16),
                                    chunks=(1, 16, 16))
        data.attrs["units"] = f"<a href=javascript:window.__xss=1>{EVIL}</a>"
        entry.create_dataset(BIDI, data=rng.integers(0, 9, (22, 8, 8), np.uint16))
        entry["link"] = h5py.SoftLink(f"/{SCRIPT}")


@pytest.fixture(scope="module")
def xss_bucket(moto_server, credentials, tmp_path_factory):
    s3 = S3(moto_server.endpoint, credentials)
    name = f"xss-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=name)
    path = tmp_path_factory.mktemp("xss") / "payload.h5"
    payload_file(path)
    for key in (SCRIPT_KEY, IMG_KEY, MD_KEY, BIDI_KEY, LONG_KEY):
        s3.client.upload_file(str(path), name, key)
    s3.client.put_object(Bucket=name, Key=SVG_KEY, Body=b"<svg onload=window.__xss=1> not HDF5")
    return name


_INJECTED = """() => {
  const found = [];
  const code = /__xss|xss-marker|203\\.0\\.113/;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      const tag = el.tagName.toLowerCase();
      for (const a of el.attributes) {
        const risky = /^on/i.test(a.name) || ['href', 'src', 'srcdoc', 'action', 'formaction',
          'xlink:href', 'style'].includes(a.name.toLowerCase());
        if (risky && code.test(a.value)) found.push(`${tag}[${a.name}=${a.value.slice(0, 60)}]`);
      }
      if (el.id === 'xss-marker') found.push('the marker element');
      if (tag === 'script' && code.test(el.textContent)) found.push('a script from data');
      if (['strong', 'em', 'b'].includes(tag) && el.textContent.trim() === 'bold')
        found.push('Markdown emphasis from data');
      if (tag === 'a' && /^\\s*javascript:/i.test(el.getAttribute('href') || ''))
        found.push('a javascript: link');
    }
  };
  walk(document);
  if (window.__xss) found.push('window.__xss was set');
  return found;
}"""


class Watch:
    """What the page did that it must not: dialogs, requests off its origin."""

    def __init__(self, context, origin: str):
        self.origin = origin
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def attach(self, page) -> None:
        def dialog(d) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

    def check(self, page, step: str) -> None:
        injected = page.evaluate(_INJECTED)
        assert not injected, f"{step}: {injected}"
        assert not self.dialogs, f"{step}: dialogs {self.dialogs}"
        assert not self.requests, f"{step}: requests off the page's origin {self.requests}"


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def choose(page, label: str, value: str) -> None:
    page.locator(".bk-input-group", has_text=label).locator("select").first \
        .select_option(label=value)


def options(page, label: str) -> list[str]:
    select = page.locator(".bk-input-group", has_text=label).locator("select").first
    return select.locator("option").all_text_contents()


def type_in(page, label: str, text: str) -> None:
    box = page.locator(".bk-input-group", has_text=label).locator("input").first
    box.fill(text)
    box.press("Enter")


def row(page, shown_key: str):
    return page.locator(".tabulator-row", has_text=shown_key).first


def tick(page, shown_key: str, on: bool = True) -> None:
    box = row(page, shown_key).locator("input[type=checkbox]")
    box.check() if on else box.uncheck()


def open_page(browser, url: str, origin: str):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    watch = Watch(context, origin)
    page = context.new_page()
    watch.attach(page)
    page.goto(url)
    page.get_by_role("button", name="Connect").wait_for()
    return page, watch


def test_payloads_in_keys_and_files_are_shown_as_text(browser, dashboard_server, moto_server,
                                                      xss_bucket, tmp_path):
    origin = dashboard_server.url.rstrip("/")
    page, watch = open_page(browser, dashboard_server.url, origin)
    keys = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    try:
        # Connect: a payload typed as the endpoint comes back in the error, as text.
        type_in(page, "Endpoint", IMG)
        page.get_by_placeholder('{"access_key"').fill('{"access_key": "a", "secret_key": "b"}')
        click(page, "Connect")
        expect(status(page, "echo-connect-status")).to_contain_text(f"got '{IMG}'")
        watch.check(page, "a payload endpoint")
        connect(page, endpoint=moto_server.endpoint, credentials=keys)

        # Browse: list; every key is a row of text; the folder choices are text.
        choose(page, "Bucket", xss_bucket)
        click(page, "List Objects")
        expect(status(page, "echo-browse-status")).to_contain_text("Listed 6 objects")
        checkbox = page.locator(".bk-Checkbox", has_text="HDF5 files only").locator("input")
        checkbox.first.uncheck()
        expect(status(page, "echo-count")).to_contain_text("6 of 6 objects shown")
        for shown_key in (SCRIPT_KEY.split("/")[0], IMG_KEY.split("/")[0], SVG_KEY, MD_KEY,
                          "e[U+202E]gnp.exe.h5", "long_kkkk"):
            expect(row(page, shown_key)).to_be_visible()
        long_row = row(page, "long_kkkk").inner_text()
        assert "…" in long_row and len(long_row) < 400
        folders = options(page, "Directory")
        assert any(f.startswith("b<script>window.__xss=1;") for f in folders), folders
        type_in(page, "Keyword", "**bold**")
        expect(status(page, "echo-count")).to_contain_text("1 of 6 objects shown")
        expect(row(page, MD_KEY)).to_be_visible()
        shot(page, "xss-01-listed")
        watch.check(page, "the listing")

        # Select, download and view the last frame of payload-named files.
        tick(page, MD_KEY)
        out = tmp_path / IMG
        type_in(page, "Download folder", str(out))
        click(page, "Download Selected")
        expect(status(page, "echo-download-status")).to_contain_text(f"Files are in {out}")
        assert (out / MD_KEY).is_file()
        click(page, "View Last Frame")
        expect(status(page, "echo-thumbnail-title")).to_contain_text(f"{MD_KEY} — frame 21 of")
        expect(status(page, "echo-browse-status")).to_contain_text(f"/{MD_KEY} shown")
        tick(page, MD_KEY, on=False)
        type_in(page, "Keyword", "")
        tick(page, "e[U+202E]gnp.exe.h5")
        click(page, "View Last Frame")
        expect(status(page, "echo-thumbnail-title")).to_contain_text("e[U+202E]gnp.exe.h5")
        shot(page, "xss-02-selected")
        watch.check(page, "download and last frame")

        # Load: the stack's payload names in the status lines and the cost inspector.
        tab(page, "Frames")
        click(page, "Load Selected H5 File")
        expect(status(page, "echo-frame-label")).to_have_text("Frame 0 of 21")
        expect(status(page, "echo-viewer-status")).to_contain_text(f"{STACK}, 22 frames")
        expect(page.locator(".echo-cost-pane")).to_contain_text(STACK)
        shot(page, "xss-03-frames")
        watch.check(page, "the frames")

        # Inspect: names, attributes and values of the file as text; the choice of stacks.
        tab(page, "Inspect")
        tree = page.locator(".echo-tree")
        for text in (IMG, SVG, f"<script>window.__xss=1;{MARK}</script>", "**bold**",
                     "e[U+202E]gnp", "e[U+202E]gnp.exe", f"/{SCRIPT}",
                     f"<a href=javascript:window.__xss=1>{EVIL}</a>"):
            expect(tree).to_contain_text(text)
        assert "…" in tree.inner_text() and "v" * 400 not in tree.inner_text()
        assert "/entry/e[U+202E]gnp" in options(page, "Image stack")
        choose(page, "Image stack", "/entry/e[U+202E]gnp")
        expect(status(page, "echo-viewer-status")).to_contain_text("/entry/e[U+202E]gnp, 22")
        choose(page, "Image stack", STACK)
        expect(status(page, "echo-viewer-status")).to_contain_text(f"{STACK}, 22")
        shot(page, "xss-04-inspect")
        watch.check(page, "the tree")

        # Process: preview and a two-frame batch into a payload-named folder.
        tab(page, "Process")
        click(page, "Preview Last Frame")
        expect(status(page, "echo-process-status")).to_have_text("Preview of frame 21 ready.")
        batch_out = tmp_path / SVG
        type_in(page, "Output folder", str(batch_out))
        click(page, "Batch Process & Save")
        expect(status(page, "echo-batch-summary")).to_contain_text("Processed 2 of 2 frames")
        expect(status(page, "echo-batch-summary")).to_contain_text(SVG)
        shot(page, "xss-05-processed")
        watch.check(page, "processing")

        # An error quoting a payload key: a non-HDF5 object named like markup.
        tab(page, "Browse")
        tick(page, "e[U+202E]gnp.exe.h5", on=False)
        checkbox.first.uncheck()
        tick(page, SVG_KEY)
        tab(page, "Frames")
        click(page, "Load Selected H5 File")
        expect(status(page, "echo-viewer-status")).to_contain_text(SVG_KEY)
        shot(page, "xss-06-error")
        watch.check(page, "an error")
        assert "\u202e" not in everything_on_the_page(page)  # shadow DOMs, attributes, values
    finally:
        page.context.close()

    # A link whose key and dataset are payloads: its messages are text, then it opens.
    query = f"bucket={xss_bucket}&key={quote(IMG_KEY)}&dataset={quote(STACK)}"
    page, watch = open_page(browser, f"{dashboard_server.url}?{query}", origin)
    try:
        target = shown(f"s3://{xss_bucket}/{IMG_KEY}")  # long names shortened in the middle
        expect(status(page, "echo-link-status")).to_have_text(
            f"Link to {target}: it opens once you are connected.")
        assert '<img src=http://203.0.113.9/k.png onerror="window.__xss=1;doc…' in target
        watch.check(page, "a payload link, waiting")
        connect(page, endpoint=moto_server.endpoint, credentials=keys, expect="")
        expect(status(page, "echo-link-status")).to_have_text(
            f"Link opened: {shown(IMG_KEY)}, {STACK}, frame 0.")
        shot(page, "xss-07-link")
        watch.check(page, "a payload link, opened")
    finally:
        page.context.close()
