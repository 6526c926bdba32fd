"""Playback in Chromium: the rate asked for, the rate the page shows, and where the time goes.

Run by hand (about two minutes per scale)::

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_playback [--scales small full]
        [--rates 10 30] [--seconds 8] [--profile] [--json benchmarks/bench_playback.json]

``small`` is the demo's 40 × 256² NeXus stack, ``full`` its 200 × 1024² one
(``ECHO_S3_DEMO_CACHE`` reuses a built demo cache, by default ``~/.cache/echo-s3-viewer``).
For each scale the embedded demo S3 store starts, then side by side in one run:

dashboard
    The served dashboard (:class:`~dashboard.app.RunningServer`) in headless Debian Chromium
    (Playwright): connect, list the demo bucket, open ``scan_0001.nxs``, set the rate with the
    keyboard on the rate slider, press Play for ``--seconds``. Reported: the achieved rate the
    page shows, the rate counted independently in the page (a ``MutationObserver`` on the frame
    label, timestamps from ``performance.now()``), the server's time per frame (the session's
    event loop applying one frame: ``ViewerState._show_latest`` with every watcher it triggers,
    i.e. the plot updates and their Bokeh document events) and the time from there until the
    page reports the paint (``PlaybackBridge``).
naive
    Panel's own ``pn.widgets.Player`` (browser-side timer, no pacing) driving the same
    ``ViewerState.index`` in a page holding only the rasterized frame and the label: what a
    textbook Panel app would do.
floor
    The state layer alone: :class:`~dashboard.state.session.Session` with its ``Player``
    ticker, paced by frames shown (no page, no plots).

With ``--profile`` py-spy samples this process while the dashboard plays at the highest rate
and the share of the event loop's frame time per component is printed (py-spy must be
installed in the venv).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("ECHO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LABEL = re.compile(r"Frame (\d+) of (\d+)")

RECORD = """() => {
  const find = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.classList && el.classList.contains('echo-frame-label')) return el;
      if (el.shadowRoot) { const hit = find(el.shadowRoot); if (hit) return hit; }
    }
    return null;
  };
  const label = find(document);
  window.echoSeen = [];
  const note = () => {
    const m = /Frame (\\d+) of/.exec(label.shadowRoot ? label.shadowRoot.textContent
                                                       : label.textContent);
    const n = m ? Number(m[1]) : -1;
    const seen = window.echoSeen;
    if (n >= 0 && (seen.length === 0 || seen[seen.length - 1][0] !== n))
      seen.push([n, performance.now()]);
  };
  note();
  new MutationObserver(note).observe(label.shadowRoot || label,
                                     {subtree: true, childList: true, characterData: true});
}"""

#: Substrings of frames in py-spy's stacks: the share of the event loop's per-frame time spent
#: under each (inclusive; they overlap).
COMPONENTS = {
    "HoloViews plot update (update_frame)": "update_frame (holoviews",
    "datashader rasterize": "(datashader",
    "rasterize operation (holoviews)": "operation/datashader.py",
    "Bokeh document walk (_references/recompute)": "recompute (bokeh",
    "Bokeh collect models (references)": "collect_models",
    "histogram view": "_histogram (dashboard",
    "line profile plot": "_profile_plot (dashboard",
    "cost inspector": "_cost_html (dashboard",
    "websocket/protocol serialisation": "(bokeh/protocol",
    "Bokeh model property changes (trigger)": "trigger (bokeh/model",
    "param watchers": "_call_watcher (param",
    "Panel pane updates": "_update_pane (panel",
}


class Timings:
    """Per frame on the server: how long applying it took, and when the page reported its
    paint (wraps two methods for the run; :meth:`restore` undoes it)."""

    def __init__(self):
        from dashboard.state.viewer import ViewerState
        from dashboard.ui import viewer as ui_viewer

        self.applied: dict[int, tuple[float, float]] = {}
        self.painted: dict[int, float] = {}
        self._restore = []
        show, painted = ViewerState._show_latest, ui_viewer.FramesView._painted
        timings = self

        def _show_latest(viewer):
            start = time.perf_counter()
            index = viewer._latest[1] if viewer._latest else -1

            def done():
                timings.applied[index] = (start, time.perf_counter())

            try:
                return show(viewer)
            finally:
                # The end of the event loop's current callback: includes whatever wraps this
                # call there (a held document's recompute and dispatch).
                try:
                    asyncio.get_running_loop().call_soon(done)
                except RuntimeError:
                    done()

        def _painted(view, event):
            timings.painted.setdefault(event.new, time.perf_counter())
            return painted(view, event)

        ViewerState._show_latest = _show_latest
        ui_viewer.FramesView._painted = _painted
        self._restore = [(ViewerState, "_show_latest", show),
                         (ui_viewer.FramesView, "_painted", painted)]

    def reset(self) -> None:
        self.applied.clear()
        self.painted.clear()

    def summary(self) -> dict:
        apply_ms = [1000 * (end - start) for start, end in self.applied.values()]
        paint_ms = [1000 * (self.painted[i] - end) for i, (_, end) in self.applied.items()
                    if i in self.painted and self.painted[i] >= end]
        return {"server_ms_median": _median(apply_ms), "server_ms_p90": _p90(apply_ms),
                "to_paint_ms_median": _median(paint_ms), "frames_applied": len(apply_ms)}

    def restore(self) -> None:
        for owner, name, value in self._restore:
            setattr(owner, name, value)


def _median(values):
    return round(statistics.median(values), 1) if values else None


def _p90(values):
    return round(sorted(values)[int(0.9 * (len(values) - 1))], 1) if values else None


def rate_of(seen: list, skip: int = 2) -> float | None:
    """Frames per second from ``[(frame, ms)]`` (label changes), ignoring the first ``skip``."""
    seen = seen[skip:]
    if len(seen) < 3:
        return None
    return round((len(seen) - 1) / ((seen[-1][1] - seen[0][1]) / 1000), 2)


# -- the floor: the state layer alone -------------------------------------------------------------

def floor(store, rates, seconds: float) -> dict:
    from dashboard.config import Settings
    from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY
    from dashboard.state.session import Session

    session = Session(Settings(endpoint=store.endpoint), credentials=store.credentials)
    out = {}
    try:
        assert session.wait(60)
        session.browser.bucket = DEMO_BUCKET
        session.browser.selection = [NEXUS_KEY]
        viewer = session.viewer
        viewer.load = True
        assert session.wait(120) and viewer.wait_for_frame(0, 60), viewer.status
        for rate in rates:
            shown = []
            watcher = viewer.param.watch(lambda e: shown.append((e.new, time.perf_counter())),
                                         "shown_index")
            viewer.fps = rate
            viewer.playing = True
            time.sleep(seconds)
            viewer.playing = False
            viewer.player.join(10)
            session.wait(30)
            viewer.param.unwatch(watcher)
            counted = rate_of([(i, 1000 * t) for i, t in shown])
            out[rate] = {"page_shows": None, "counted": counted,
                         "state_achieved": viewer.achieved_fps}
    finally:
        session.close()
    return out


# -- the served dashboard in Chromium -------------------------------------------------------------

def _expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def _move_handle(handle, target: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    handle.focus()
    while (now := round(float(handle.get_attribute("aria-valuenow")))) != target:
        assert time.monotonic() < deadline, f"the handle stays at {now}"
        handle.press("ArrowRight" if now < target else "ArrowLeft")


def _open_stack(page, n_frames: int) -> None:
    from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY

    _expect(page.locator(".echo-connect-status").first).to_contain_text("Connected to")
    page.locator(".bk-input-group", has_text="Bucket").locator("select").first.select_option(
        DEMO_BUCKET)
    page.get_by_role("button", name="List Objects", exact=True).click()
    _expect(page.locator(".echo-count").first).to_contain_text("objects shown")
    box = page.locator(".bk-input-group", has_text="Keyword").locator("input").first
    box.fill(NEXUS_KEY.rsplit("/", 1)[-1])
    box.press("Enter")
    page.locator(".tabulator-row", has_text=NEXUS_KEY).first.locator(
        "input[type=checkbox]").check()
    page.locator(".bk-tab", has_text="Frames").first.click()
    page.get_by_role("button", name="Load Selected H5 File", exact=True).click()
    _expect(page.locator(".echo-frame-label").first).to_have_text(
        f"Frame 0 of {n_frames - 1}", timeout=120_000)


def _play(page, seconds: float, timings: Timings | None, *, button: str = ".echo-play button",
          status: str | None = ".echo-achieved-fps p", profile=None) -> dict:
    if timings is not None:
        timings.reset()
    page.evaluate(RECORD)
    page.locator(button).first.click()
    recorder = profile() if profile else None
    page.wait_for_timeout(int(1000 * seconds))
    shown = page.locator(status).first.inner_text() if status else None
    seen = page.evaluate("() => window.echoSeen.slice()")
    page.locator(button).first.click()  # pause
    if recorder is not None:
        recorder.wait()
    page.wait_for_timeout(1500)
    match = re.search(r"Achieved\s*([\d.]+)", shown or "")
    row = {"page_shows": float(match.group(1)) if match else None, "counted": rate_of(seen),
           "label_changes": len(seen)}
    if timings is not None:
        row.update(timings.summary())
    return row


def dashboard(store, browser, rates, seconds: float, n_frames: int, profile_out=None) -> dict:
    from dashboard.app import RunningServer
    from dashboard.config import Settings

    timings = Timings()
    server = RunningServer(Settings(endpoint=store.endpoint), credentials=store.credentials)
    out = {}
    try:
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(server.url)
        _open_stack(page, n_frames)
        fps = page.locator(".echo-fps .noUi-handle").first
        for rate in rates:
            _move_handle(fps, rate)
            page.wait_for_timeout(800)
            profile = None
            if profile_out is not None and rate == max(rates):
                profile = lambda: Profiler(profile_out, seconds, timings)  # noqa: E731
            out[rate] = _play(page, seconds, timings, profile=profile)
        context.close()
    finally:
        server.stop()
        timings.restore()
    return out


# -- naive: Panel's Player widget ----------------------------------------------------------------

def naive_app(store, n_frames: int):
    """A page with ``pn.widgets.Player`` linked to the session's frame index, the rasterized
    frame and the label only (no histogram, no analysis, no pacing)."""
    import holoviews as hv
    import panel as pn

    from dashboard.config import Settings
    from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY
    from dashboard.state.session import Session
    from dashboard.ui import plots

    def app():
        session = Session(Settings(endpoint=store.endpoint), credentials=store.credentials)
        session.wait(60)
        session.browser.bucket = DEMO_BUCKET
        session.browser.selection = [NEXUS_KEY]
        viewer = session.viewer
        viewer.load = True
        session.wait(120)
        viewer.wait_for_frame(0, 60)
        rate = int(pn.state.session_args.get("rate", [b"10"])[0])
        player = pn.widgets.Player(start=0, end=n_frames - 1, value=0,
                                   interval=round(1000 / rate), loop_policy="loop",
                                   css_classes=["echo-naive-player"])
        # Start playing once the page is up (the browser's timer then steps the value).
        pn.state.onload(lambda: setattr(player, "direction", 1))
        player.link(viewer, value="index")
        width, height = plots.fit_box(viewer.frame_shape, (900, 660))

        def image(serial, contrast):
            return plots.frame_image(viewer.frame, clim=plots.clim_of(contrast))

        dmap = plots.rasterized_frames(pn.bind(image, viewer.param.frame_serial,
                                               viewer.param.contrast),
                                       responsive=False, frame_width=width,
                                       frame_height=height, min_height=None, aspect=None,
                                       data_aspect=None)
        pn.state.on_session_destroyed(lambda ctx: session.close())
        hv.extension("bokeh")
        return pn.Column(player, pn.pane.Markdown(viewer.frame_label,
                                                  css_classes=["echo-frame-label"]),
                         pn.pane.HoloViews(dmap))

    return app


def naive(store, browser, rates, seconds: float, n_frames: int) -> dict:
    import panel as pn

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = pn.serve({"naive": naive_app(store, n_frames)}, port=port, address="127.0.0.1",
                      show=False, threaded=True)
    out = {}
    try:
        for rate in rates:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(60_000)
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/naive?rate={rate}")
            _expect(page.locator(".echo-frame-label").first).to_contain_text(
                "Frame", timeout=120_000)
            page.evaluate(RECORD)
            page.wait_for_timeout(int(1000 * seconds))
            seen = page.evaluate("() => window.echoSeen.slice()")
            out[rate] = {"page_shows": None, "counted": rate_of(seen),
                         "label_changes": len(seen)}
            context.close()
    finally:
        server.stop()
    return out


# -- py-spy --------------------------------------------------------------------------------------

class Profiler:
    """``py-spy record`` of this process for ``seconds``; :meth:`wait` prints the shares."""

    def __init__(self, out: Path, seconds: float, timings: Timings):
        self.out, self.timings = out, timings
        py_spy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen(
            [str(py_spy), "record", "--pid", str(os.getpid()), "--duration",
             str(max(1, int(seconds) - 1)), "--rate", "200", "--format", "raw", "--threads",
             "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self) -> None:
        self.proc.wait(60)
        if not self.out.exists():
            print("py-spy wrote nothing:", self.proc.stderr.read().decode()[-500:])
            return
        print(profile_shares(self.out))


def profile_shares(path: Path, top: int = 25) -> str:
    """Shares of the samples under ``_show_latest`` (the frame being applied) per component,
    and the functions with the most inclusive samples there."""
    frames_total = 0
    parts = collections.Counter()
    inclusive = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "_show_latest" not in stack:
            continue
        n = int(count)
        frames_total += n
        below = stack.split("_show_latest", 1)[1]
        for name, needle in COMPONENTS.items():
            if needle in below:
                parts[name] += n
        for frame in set(below.split(";")[1:]):
            inclusive[re.sub(r":\d+\)", ")", frame)] += n
    if not frames_total:
        return "no samples under _show_latest"
    lines = [f"py-spy: {frames_total} samples while applying frames"]
    lines += [f"  {100 * n / frames_total:5.1f}%  {name}" for name, n in parts.most_common()]
    lines.append("  top functions (inclusive):")
    lines += [f"  {100 * n / frames_total:5.1f}%  {name[:150]}"
              for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", nargs="+", default=["small", "full"])
    parser.add_argument("--rates", nargs="+", type=int, default=[10, 30])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--methods", nargs="+", default=["dashboard", "naive", "floor"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from dashboard.demo.store import SHAPES, start_demo_store

    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"load {os.getloadavg()[0]:.1f}", "seconds": args.seconds, "runs": {}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for scale in args.scales:
            n_frames, rows, cols = SHAPES[scale].nexus
            store = start_demo_store(scale=scale)
            try:
                for method in args.methods:
                    if method == "floor":
                        runs = floor(store, args.rates, args.seconds)
                    elif method == "naive":
                        runs = naive(store, browser, args.rates, args.seconds, n_frames)
                    else:
                        profile_out = (Path(tempfile.gettempdir()) / f"playback-{scale}.txt"
                                       if args.profile else None)
                        runs = dashboard(store, browser, args.rates, args.seconds, n_frames,
                                         profile_out)
                    for rate, row in runs.items():
                        key = f"{rows}x{cols} {method} @{rate}"
                        result["runs"][key] = row
                        print(f"{key:32s} {row}", flush=True)
            finally:
                store.stop()
        browser.close()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
