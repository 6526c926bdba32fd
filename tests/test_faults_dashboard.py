"""A dashboard session through a store that fails every request, and back, without a reload.

Between the session and moto sits ``tests/faultproxy.py``. At 100% failure every action
(connect, list, load, frame, preview, batch, download, last-frame thumbnail) must end within a
bounded time with one clear sentence (no traceback, no key), while the rest of the session keeps
working; when the store comes back the *same* session works again. Once at the state level
(every action, HTTP 500 on every request), once in a browser (the store vanishes: connections
refused).

The sessions use production's S3 settings (5 s connect / 30 s read timeouts, 4 attempts): with
refused connections or immediate 500s an action ends after the retries and botocore's back-off
(at most 1 + 2 + 4 s, jittered), so ``BOUND`` (30 s) is a generous sanity bound that the action
*ends*; the test prints the measured times.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403
from faultproxy import FaultProxy, write_stack
from served_sessions import until

from conftest import ACCESS_KEY, SECRET_KEY
from dashboard.app import RunningServer
from dashboard.config import Settings
from dashboard.state.session import Session

BOUND = 30.0
KEY = "scans/run_fault.h5"
N = 30


@pytest.fixture
def stored(s3, bucket, tmp_path):
    data = write_stack(tmp_path / "run.h5", n=N)
    s3.client.upload_file(str(tmp_path / "run.h5"), bucket, KEY)
    return bucket, data


@pytest.fixture
def proxy(moto_server):
    with FaultProxy(moto_server.endpoint, max_lifetime=240) as proxy:
        yield proxy


def one_sentence(text: str) -> str:
    assert text and "\n" not in text.strip(), text
    assert "Traceback" not in text and 'File "' not in text, text
    assert len(text) < 400, text
    assert SECRET_KEY not in text and ACCESS_KEY not in text, text
    return text


def timed(start_action, finished, what: str) -> float:
    t0 = time.monotonic()
    start_action()
    until(finished, timeout=BOUND * 3, what=what)
    elapsed = time.monotonic() - t0
    assert elapsed < BOUND, f"{what} took {elapsed:.1f} s"
    return elapsed


@pytest.mark.slow
def test_every_action_fails_clearly_then_the_same_session_works(proxy, stored, tmp_path):
    bucket, data = stored
    session = Session(Settings(endpoint=proxy.endpoint), connect=False)
    b, v, p = session.browser, session.viewer, session.processor
    keys = json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})

    def connect():
        b.credentials_text = keys
        b.param.trigger("connect")

    def connected():
        return b.connected and not b.busy

    try:
        connect()
        until(connected, what="connected")
        b.bucket = bucket
        b.param.trigger("list_objects")
        until(lambda: b.listing and not b.busy, what="listing")
        b.selection = [KEY]
        v.param.trigger("load")
        assert v.wait_for_frame(0), v.status
        assert v.stack.wait_prefetch(60) and v.stack.is_cached(1)  # read ahead before the faults

        proxy.inject("internal", rate=1.0)
        times = {}
        seen = {}

        def changed(obj, name, busy=None):
            """Finished when ``name`` was set to a final message (not "…ing …") after now."""
            final: list[str] = []
            obj.param.watch(lambda e: final.append(e.new) if not e.new.rstrip().endswith("…")
                            else None, name)
            return lambda: bool(final) and (busy is None or not busy())

        # List: a message, the old listing stays.
        fin = changed(b, "status", lambda: b.busy)
        times["list"] = timed(lambda: b.param.trigger("list_objects"), fin, "list")
        seen["list"] = one_sentence(b.status)
        assert [o.key for o in b.listing] == [KEY]
        # A frame never read (prefetch reaches ±2 around frame 0): a message, frame 0 stays.
        fin = changed(v, "status")
        times["frame"] = timed(lambda: setattr(v, "index", 25), fin, "frame")
        seen["frame"] = one_sentence(v.status)
        assert v.shown_index == 0
        assert v.index == 0  # slider, label and image agree on the frame still shown
        # Load again: a message, the open file stays open.
        stack = v.stack
        fin = changed(v, "status", lambda: v.loading)
        times["load"] = timed(lambda: v.param.trigger("load"), fin, "load")
        seen["load"] = one_sentence(v.status)
        assert v.stack is stack
        # Preview (needs frames 9-29) and batch: messages, nothing written.
        fin = changed(p, "status", lambda: p.previewing)
        times["preview"] = timed(lambda: p.param.trigger("preview"), fin, "preview")
        seen["preview"] = one_sentence(p.status)
        out = tmp_path / "out"
        p.param.update(output=str(out), start=20, end=24)
        times["batch"] = timed(lambda: p.param.trigger("batch"), lambda: not p.running
                               and p.status != "Processing 5 frames…", "batch")
        seen["batch"] = one_sentence(p.status)
        assert not list(out.glob("*.png")) and not list(out.glob("*.part*"))
        # Download and last-frame thumbnail.
        dl = tmp_path / "dl"
        b.download_dir = str(dl)
        times["download"] = timed(lambda: b.param.trigger("download"),
                                  lambda: not b.downloading, "download")
        seen["download"] = one_sentence(b.download_status)
        assert not dl.exists() or not [f for f in dl.rglob("*") if f.is_file()]
        fin = changed(b, "status", lambda: b.busy)
        times["thumbnail"] = timed(lambda: b.param.trigger("view_last_frame"), fin, "thumbnail")
        seen["thumbnail"] = one_sentence(b.status)
        # The session stays usable meanwhile: local work still answers.
        b.keyword = "nothing-matches"
        assert b.objects() == []
        b.keyword = ""
        v.index = 1  # prefetched before the store failed: still shown
        assert v.wait_for_frame(1), v.status
        np.testing.assert_array_equal(v.frame, data[1])
        # Connect again: "Not connected: …" (last, it drops the connection).
        times["connect"] = timed(connect, lambda: not b.busy and not b.connected, "connect")
        seen["connect"] = one_sentence(b.status)
        assert b.status.startswith("Not connected:")
        assert proxy.faults["internal"] > 0
        for action, message in seen.items():
            print(f"\n{action}: {times[action]:.1f} s: {message}")

        # The store is back: the same session, no reload.
        proxy.clear()
        connect()
        until(connected, what="connected again")
        b.bucket = bucket
        b.param.trigger("list_objects")
        until(lambda: b.listing and not b.busy, what="listing again")
        b.selection = [KEY]
        v.param.trigger("load")
        assert v.wait_for_frame(0), v.status
        v.index = 25
        assert v.wait_for_frame(25), v.status
        np.testing.assert_array_equal(v.frame, data[25])
        p.param.trigger("preview")
        until(lambda: p.stages is not None and not p.previewing, what="preview")
        p.param.update(output=str(out), start=20, end=24)
        p.param.trigger("batch")
        until(lambda: not p.running and p.status != "Processing 5 frames…", what="batch")
        assert p.status == "Batch finished.", p.status
        assert len(list(out.glob("*.png"))) == 5
        b.param.trigger("download")
        until(lambda: not b.downloading, what="download")
        assert (dl / KEY).read_bytes() == (tmp_path / "run.h5").read_bytes()
    finally:
        session.close()


@pytest.mark.timeout(240)
def test_browser_session_survives_the_store_vanishing(browser, proxy, stored, credentials):
    from playwright.sync_api import expect

    bucket, _ = stored
    with RunningServer(Settings(endpoint=proxy.endpoint)) as server:
        page = new_page(browser, server.url)  # noqa: F405
        try:
            connect(page, endpoint=proxy.endpoint, credentials=credentials)  # noqa: F405
            page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
                .select_option(bucket)
            click(page, "List Objects")  # noqa: F405
            expect(status(page, "echo-browse-status")).to_contain_text("Listed")  # noqa: F405
            tick(page, KEY)  # noqa: F405
            tab(page, "Frames")  # noqa: F405
            click(page, "Load Selected H5 File")  # noqa: F405
            label = status(page, "echo-frame-label")  # noqa: F405
            expect(label).to_have_text(f"Frame 0 of {N - 1}")

            proxy.go_down()
            bound = int(BOUND * 1000)
            t0 = time.monotonic()
            click(page, "Last")  # noqa: F405
            viewer_status = status(page, "echo-viewer-status")  # noqa: F405
            expect(viewer_status).to_contain_text("Cannot reach", timeout=bound)
            frame_s = time.monotonic() - t0
            expect(label).to_have_text(f"Frame 0 of {N - 1}")  # the shown frame stays
            # The page answers meanwhile: First + Next show a prefetched frame, tabs switch.
            click(page, "First")  # noqa: F405
            click(page, "Next")  # noqa: F405
            expect(label).to_have_text(f"Frame 1 of {N - 1}")
            tab(page, "1 · Browse")  # noqa: F405
            t0 = time.monotonic()
            click(page, "List Objects")  # noqa: F405
            browse = status(page, "echo-browse-status")  # noqa: F405
            expect(browse).to_contain_text("Cannot reach", timeout=bound)
            list_s = time.monotonic() - t0
            text = everything_on_the_page(page)  # noqa: F405
            assert "Traceback" not in text and SECRET_KEY not in text and ACCESS_KEY not in text
            messages = {line.strip() for line in text.splitlines() if "Cannot reach" in line}
            assert messages
            for message in messages:
                one_sentence(message)
            shot(page, "faults-store-down")  # noqa: F405
            print(f"\nstore down: frame message after {frame_s:.1f} s, list after {list_s:.1f} s")

            proxy.come_back()
            click(page, "List Objects")  # noqa: F405
            expect(browse).to_contain_text("Listed")
            tab(page, "Frames")  # noqa: F405
            click(page, "Last")  # noqa: F405
            expect(label).to_have_text(f"Frame {N - 1} of {N - 1}")
            shot(page, "faults-store-back")  # noqa: F405
        finally:
            page.context.close()
