"""The frame display in Chromium: step latency, playback rate, bytes per frame, 8 sessions.

Run by hand (about ten minutes with the baseline)::

    git worktree add /tmp/display-base 9f300d1      # the code before the one display path
    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_display \\
        [--baseline /tmp/display-base] [--sizes 1024 2048] [--steps 15] [--seconds 6] \\
        [--json benchmarks/bench_display.json] [--write BENCHMARKS.md]

For each code tree (this one, and ``--baseline``'s checkout) a server process is started with
that tree first on ``PYTHONPATH`` (``--serve``, this same file). It serves, per frame size, two
apps over the same in-memory frames (12 frames of smooth structure plus noise, uint16; the
frames are on the server before the clock starts):

dash
    The whole dashboard (``EchoS3Viewer`` with its histogram, analysis tools, address bar) of a
    :class:`~dashboard.state.session.Session` whose viewer was handed an in-memory stack
    (``ViewerState._opened``); ``?equalize=0`` turns Equalize off, ``?fps=20`` sets the rate.
floor
    A minimal app: one plain Bokeh ``image`` of 8-bit indices into a 256-grey palette, mapped
    on the server (viewport sample, 1-99 % limits, linear or equalized lookup table), a Next
    and a Play button (Play steps at the rate asked from a periodic callback, unpaced).

Measured in headless Debian Chromium (Playwright):

step
    Next pressed (a click dispatched in the page, ``performance.now()``) until the frame's
    image data in the page has changed and the next animation frame has run (Bokeh paints in
    its own, earlier, animation-frame callback). 0.4 s between steps (a user's pace).
play
    Play at 20 frames/s for ``--seconds``: distinct images applied in the page per second, and
    the websocket bytes received per frame (Chrome DevTools protocol), against the frame
    view's size in screen pixels.
sessions
    8 Bokeh websocket clients (``tests/served_sessions.LiveClient``, in this process) each
    pressing Next ``--steps`` times as fast as frames come back: per-step latency (press to the
    client's image changed) and the server process's CPU seconds per frame (psutil).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
CHROMIUM = os.environ.get("ECHO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
N_FRAMES = 12
BOX = (900, 660)  # the dashboard's FRAME_BOX


# -- the frames ------------------------------------------------------------------------------

def make_frames(size: int, n: int = N_FRAMES, seed: int = 7) -> np.ndarray:
    """``n`` frames of ``size``² uint16: a vignetted field, moving blobs, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 20000 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) * 3) + 3000
    frames = np.empty((n, size, size), np.uint16)
    for k in range(n):
        cx, cy = 0.3 + 0.4 * k / n, 0.5 + 0.1 * np.sin(k)
        blob = 15000 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.004)
        noise = rng.normal(0, 800, (size, size)).astype(np.float32)
        frames[k] = np.clip(base + blob + noise, 0, 65535).astype(np.uint16)
    return frames


class MemoryStack:
    """Enough of ``FrameStack`` for the viewer: frames from memory."""

    dataset = "/entry/data/data"

    def __init__(self, frames: np.ndarray):
        self._frames = frames
        self.shape, self.dtype = frames.shape, frames.dtype
        self.candidates = []

    def __len__(self) -> int:
        return len(self._frames)

    def frame(self, index: int) -> np.ndarray:
        return self._frames[int(index)]

    def cached_frame(self, index: int) -> np.ndarray:
        return self._frames[int(index)]

    def frames(self, indices):
        for index in indices:
            yield self._frames[int(index)]

    def close(self) -> None:
        pass


# -- the server process ----------------------------------------------------------------------

def _fit(size: int) -> tuple[int, int]:
    scale = min(BOX[0] / size, BOX[1] / size)
    return round(size * scale), round(size * scale)


def floor_app(frames: np.ndarray):
    """Plain Bokeh: one image of uint8 palette indices mapped on the server."""
    import panel as pn
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, LinearColorMapper
    from bokeh.palettes import Greys256
    from bokeh.plotting import figure

    args = pn.state.session_args
    equalize = args.get("equalize", [b"1"])[0] != b"0"
    fps = int(args.get("fps", [b"20"])[0])
    n, size = len(frames), frames.shape[1]
    width, height = _fit(size)
    rows = (np.arange(height) * size // height) if size > height else slice(None)
    cols = (np.arange(width) * size // width) if size > width else slice(None)

    def indices(frame: np.ndarray) -> np.ndarray:
        values = frame[rows][:, cols]
        low, high = np.percentile(frame[::2, ::2], [1, 99])
        bins = ((values.astype(np.float32) - low) * (4096 / (high - low))).clip(0, 4095)
        bins = bins.astype(np.intp)
        if equalize:
            cdf = np.cumsum(np.bincount(bins.ravel(), minlength=4096))
            lut = (cdf * 255 // cdf[-1]).astype(np.uint8)
        else:
            lut = (np.arange(4096) // 16).astype(np.uint8)
        return lut[bins]

    state = {"i": 0, "play": None}
    source = ColumnDataSource(dict(image=[indices(frames[0])], x=[-0.5], y=[-0.5],
                                   dw=[size], dh=[size]))
    fig = figure(frame_width=width, frame_height=height, x_range=(-0.5, size - 0.5),
                 y_range=(size - 0.5, -0.5), tools="pan,wheel_zoom,reset")
    fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=source,
              color_mapper=LinearColorMapper(palette=Greys256, low=-0.5, high=255.5))

    def step() -> None:
        state["i"] = (state["i"] + 1) % n
        source.data = dict(image=[indices(frames[state["i"]])], x=[-0.5], y=[-0.5],
                           dw=[size], dh=[size])

    next_button, play = Button(label="Next"), Button(label="Play")
    next_button.on_click(step)
    doc = pn.state.curdoc

    def toggle() -> None:
        if state["play"] is None:
            state["play"] = doc.add_periodic_callback(step, int(1000 / fps))
        else:
            doc.remove_periodic_callback(state["play"])
            state["play"] = None

    play.on_click(toggle)
    return pn.pane.Bokeh(column(row(next_button, play), fig))


def dash_app(frames: np.ndarray):
    """The whole dashboard, its viewer handed an in-memory stack."""
    import panel as pn

    from dashboard.app import _scheduler
    from dashboard.config import Settings
    from dashboard.state.session import Session
    from dashboard.ui.app import EchoS3Viewer, extension

    extension()
    args = pn.state.session_args
    session = Session(Settings(endpoint="http://127.0.0.1:9"), connect=False)
    doc = pn.state.curdoc
    session.tasks.dispatch = _scheduler(doc)
    pn.state.on_session_destroyed(lambda context: session.close())
    viewer = session.viewer
    viewer.param.update(equalize=args.get("equalize", [b"1"])[0] != b"0",
                        fps=int(args.get("fps", [b"20"])[0]))
    page = EchoS3Viewer(session=session).template()
    size = frames.shape[1]
    session.tasks.post(viewer._opened, MemoryStack(frames), f"s3://bench/frames_{size}.h5", None)
    return page


def serve(port: int, sizes: list[int], procs: int = 1) -> None:
    import panel as pn

    stacks = {size: make_frames(size) for size in sizes}
    apps = {}
    for size in sizes:
        apps[f"dash{size}"] = (lambda frames=stacks[size]: dash_app(frames))
        apps[f"floor{size}"] = (lambda frames=stacks[size]: floor_app(frames))
    server = pn.serve(apps, port=port, address="127.0.0.1", show=False, start=False,
                      websocket_max_message_size=200 * 2 ** 20, num_procs=procs)
    print("READY", flush=True)
    server.start()
    server.io_loop.start()


class Server:
    def __init__(self, tree: Path, sizes: list[int], procs: int = 1):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.process = subprocess.Popen(
            [sys.executable, str(HERE), "--serve", str(self.port), "--sizes", *map(str, sizes),
             "--procs", str(procs)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(tree))
        for line in self.process.stdout:  # Panel announces itself first
            if line.strip() == "READY":
                break
        else:
            raise RuntimeError(f"the server for {tree} did not start")
        self.url = f"http://127.0.0.1:{self.port}"
        import psutil

        self.ps = psutil.Process(self.process.pid)

    def cpu(self) -> float:
        """CPU seconds of the server (all its processes with ``--procs``)."""
        total = 0.0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except Exception:  # psutil.NoSuchProcess: gone meanwhile
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        import psutil

        children = self.ps.children(recursive=True)  # the forked servers of --procs
        for proc in [self.ps, *children]:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs([self.ps, *children], timeout=20)
        for proc in alive:
            proc.kill()


# -- the page side ---------------------------------------------------------------------------

FIND = """
window.__echo = window.__echo || {};
window.__echo.source = () => {
  // The dashboard's frame figure by name (its colour bar is an image too), else (the floor
  // app) the largest image.
  for (const doc of Bokeh.documents) for (const m of doc._all_models.values()) {
    if (m.name === 'echo-frame-figure')
      for (const r of m.renderers) if (r.data_source && r.data_source.data.image)
        return r.data_source;
  }
  let best = null, area = -1;
  for (const doc of Bokeh.documents) for (const m of doc._all_models.values()) {
    if (m.data && m.data.image && m.data.image.length) {
      const img = m.data.image[0];
      const n = img.length || 0;
      if (n > area) { best = m; area = n; }
    }
  }
  return best;
};
// The frame's data source, found once: walking every model of the page on each animation
// frame cost the page with more models (the dashboard) far more than the floor app.
window.__echo.cached = () => window.__echo.src || (window.__echo.src = window.__echo.source());
window.__echo.button = (label) => {
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'BUTTON' && el.classList.contains('bk-btn') &&
          el.textContent.trim() === label) return el;
      if (el.shadowRoot) { const hit = walk(el.shadowRoot); if (hit) return hit; }
    }
    return null;
  };
  return walk(document);
};
window.__echo.frameBox = () => {
  let best = null;
  for (const v of Bokeh.index.all_views ? Bokeh.index.all_views() : []) {
    if (!v.frame || !v.frame.bbox || !v.model.x_range) continue;
    const a = v.frame.bbox.width * v.frame.bbox.height;
    if (best === null || a > best) best = a;
  }
  return best;
};
"""

STEP = """async (label) => {
  const src = window.__echo.cached();
  const old = src.data.image[0];
  const t0 = performance.now();
  window.__echo.button(label).click();
  return await new Promise((resolve, reject) => {
    const check = () => {
      const now = window.__echo.cached();
      if (now.data.image[0] !== old) requestAnimationFrame(() => resolve(performance.now() - t0));
      else if (performance.now() - t0 > 30000) reject(new Error('no new frame'));
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  });
}"""

COUNT = """() => {
  window.__echo.changes = [];
  let last = window.__echo.cached().data.image[0];
  const tick = () => {
    if (window.__echo.stop) return;
    const src = window.__echo.cached();
    if (src && src.data.image[0] !== last) {
      last = src.data.image[0];
      window.__echo.changes.push(performance.now());
    }
    requestAnimationFrame(tick);
  };
  window.__echo.stop = false;
  requestAnimationFrame(tick);
}"""


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def open_app(browser, url: str, dash: bool):
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    context.set_default_timeout(120_000)
    page = context.new_page()
    page.goto(url)
    if dash:
        page.locator(".echo-frame-label").get_by_text("Frame 0 of").wait_for()
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
    page.evaluate(FIND)
    page.wait_for_function("() => window.__echo.source() !== null")
    page.wait_for_timeout(1500)  # the secondary views settle
    return context, page


def measure_steps(browser, url: str, dash: bool, steps: int) -> dict:
    context, page = open_app(browser, url, dash)
    try:
        page.evaluate(STEP, "Next")  # warm-up (first frame after load)
        page.wait_for_timeout(400)
        times = []
        for _ in range(steps):
            times.append(page.evaluate(STEP, "Next"))
            page.wait_for_timeout(400)
        return {"p50": _pct(times, 50), "p90": _pct(times, 90), "all": times}
    finally:
        context.close()


def measure_play(browser, url: str, dash: bool, seconds: float) -> dict:
    context, page = open_app(browser, url, dash)
    try:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        received = []

        def on_frame(event) -> None:
            payload = event["response"]["payloadData"]
            size = len(payload) * 3 // 4 if event["response"]["opcode"] == 2 else len(payload)
            received.append(size)

        cdp.on("Network.webSocketFrameReceived", on_frame)
        box = page.evaluate("() => window.__echo.frameBox()")
        page.evaluate("() => window.__echo.button('▶ Play') || window.__echo.button('Play')")
        page.evaluate("() => (window.__echo.button('▶ Play') || window.__echo.button('Play'))"
                      ".click()")
        page.wait_for_timeout(1500)  # up to speed
        page.evaluate(COUNT)
        received.clear()
        page.wait_for_timeout(seconds * 1000)
        changes = page.evaluate("() => { window.__echo.stop = true; "
                                "return window.__echo.changes.slice(); }")
        total = sum(received)
        page.evaluate("() => (window.__echo.button('❚❚ Pause') || window.__echo.button('Play'))"
                      ".click()")
        frames = len(changes)
        rate = (frames - 1) / ((changes[-1] - changes[0]) / 1000) if frames > 2 else 0.0
        return {"fps": rate, "frames": frames, "bytes_per_frame": total / max(frames, 1),
                "viewport_px": box, "bytes_per_px": total / max(frames, 1) / box}
    finally:
        context.close()


def measure_sessions(server: Server, size: int, n_sessions: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from bokeh.events import ButtonClick
    from bokeh.models import Button, ColumnDataSource
    from served_sessions import LiveClient

    import dashboard.ui.app  # noqa: F401 - the page's model types, for the client to read
    import panel.models.tabulator  # noqa: F401

    url = f"{server.url}/dash{size}"  # (Equalize on: the default)
    clients = [LiveClient(url) for _ in range(n_sessions)]
    try:
        arrived = [threading.Event() for _ in clients]
        hooks = []
        for k, client in enumerate(clients):
            def hook(doc, k=k):
                deadline = time.monotonic() + 120
                while True:
                    # The frame figure's image, once the frame is there (the colour bar, a
                    # figure of its own, is an image too).
                    sources = [r.data_source for fig in doc.select({"name": "echo-frame-figure"})
                               for r in fig.renderers
                               if isinstance(getattr(r, "data_source", None), ColumnDataSource)
                               and np.size(r.data_source.data.get("image", [[]])[0]) > 100]
                    buttons = [m for m in doc.select({"type": Button}) if m.label == "Next"]
                    if sources and buttons:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("no frame in the client")
                    return None
                source = sources[0]
                source.on_change("data", lambda attr, old, new: arrived[k].set())
                return buttons[0]

            button = None
            deadline = time.monotonic() + 180
            while button is None:
                button = client.call(hook)
                if button is None:
                    assert time.monotonic() < deadline, "no frame"
                    time.sleep(0.2)
            hooks.append(button)
        time.sleep(2.0)
        latencies: list[float] = []
        missed: list[int] = []
        lock = threading.Lock()

        def run(k: int) -> None:
            client, button = clients[k], hooks[k]
            for _ in range(steps):
                arrived[k].clear()
                start = time.perf_counter()
                client.call(lambda doc: doc.callbacks.send_event(ButtonClick(button)))
                if not arrived[k].wait(20):
                    with lock:
                        missed.append(k)
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
                time.sleep(0.05)

        cpu0, wall0 = server.cpu(), time.perf_counter()
        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu, wall = server.cpu() - cpu0, time.perf_counter() - wall0
        frames = len(latencies)
        return {"p50": 1000 * _pct(latencies, 50), "p90": 1000 * _pct(latencies, 90),
                "frames": frames, "missed": len(missed),
                "cpu_ms_per_frame": 1000 * cpu / max(frames, 1),
                "wall_s": wall}
    finally:
        for client in clients:
            client.close()


def run_tree(label: str, tree: Path, args) -> dict:
    from playwright.sync_api import sync_playwright

    server = Server(tree, args.sizes)
    out: dict = {"label": label, "tree": str(tree)}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for size in args.sizes:
                    for app in ("dash", "floor"):
                        if app == "floor" and label != "this":
                            continue  # the floor app does not depend on the tree
                        for eq in (1, 0):
                            key = f"{app}{size}_eq{eq}"
                            out[key] = measure_steps(
                                browser, f"{server.url}/{app}{size}?equalize={eq}",
                                app == "dash", args.steps)
                            print(label, key, {k: round(v, 1) for k, v in out[key].items()
                                               if k != "all"}, flush=True)
                        key = f"{app}{size}_play"
                        out[key] = measure_play(browser, f"{server.url}/{app}{size}?fps=20",
                                                app == "dash", args.seconds)
                        print(label, key, out[key], flush=True)
            finally:
                browser.close()
        if args.sessions:
            out["sessions"] = measure_sessions(server, args.sizes[0], args.sessions,
                                               args.session_steps)
            print(label, "sessions", out["sessions"], flush=True)
    finally:
        server.stop()
    return out


def sessions_only(args) -> int:
    """The concurrent sessions alone, against a server of ``--procs`` processes."""
    started = dt.datetime.now(dt.timezone.utc)
    server = Server(ROOT, args.sizes[:1], args.procs)
    try:
        time.sleep(2.0)  # every process up
        result = measure_sessions(server, args.sizes[0], args.sessions, args.session_steps)
    finally:
        server.stop()
    print(json.dumps({"started": started.isoformat(timespec="minutes"), "procs": args.procs,
                      "sessions": args.sessions, "size": args.sizes[0], **result}))
    return 0


def table(results: list[dict], sizes: list[int], sessions: int = 8) -> str:
    this = next(r for r in results if r["label"] == "this")
    lines = [
        "| size | code | Equalize | step p50 ms | step p90 ms | p50 / floor | p90 / floor |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        for eq in (1, 0):
            floor = this[f"floor{size}_eq{eq}"]
            lines.append(f"| {size}² | floor (plain Bokeh, server LUT) | {'on' if eq else 'off'} "
                         f"| {floor['p50']:.0f} | {floor['p90']:.0f} | 1 | 1 |")
            for r in results:
                d = r[f"dash{size}_eq{eq}"]
                lines.append(
                    f"| {size}² | {r['name']} | {'on' if eq else 'off'} | {d['p50']:.0f} | "
                    f"{d['p90']:.0f} | {d['p50'] / floor['p50']:.2f} | "
                    f"{d['p90'] / floor['p90']:.2f} |")
    lines += ["", "| size | code | playback at 20 asked: frames/s | / floor | bytes per frame | "
              "viewport px | bytes per viewport px |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        floor = this[f"floor{size}_play"]
        rows = [("floor (unpaced periodic callback)", floor)] + [
            (r["name"], r[f"dash{size}_play"]) for r in results]
        for name, d in rows:
            lines.append(f"| {size}² | {name} | {d['fps']:.1f} | {d['fps'] / floor['fps']:.2f} | "
                         f"{d['bytes_per_frame'] / 1e3:,.0f} kB | {d['viewport_px']:,.0f} | "
                         f"{d['bytes_per_px']:.2f} |")
    if any("sessions" in r for r in results):
        lines += ["", f"| code | {sessions} sessions stepping: step p50 ms | p90 ms | frames (no answer "
                  "in 20 s) | server CPU ms per frame |", "| --- | ---: | ---: | ---: | ---: |"]
        for r in results:
            if "sessions" in r:
                s = r["sessions"]
                lines.append(f"| {r['name']} | {s['p50']:.0f} | {s['p90']:.0f} | {s['frames']} "
                             f"({s['missed']}) | {s['cpu_ms_per_frame']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--session-steps", type=int, default=6)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--procs", type=int, default=1,
                        help="server processes (Panel's --num-procs) for the sessions' server")
    parser.add_argument("--sessions-only", action="store_true",
                        help="only the concurrent sessions (no browser)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.sizes, args.procs)
        return 0
    if args.sessions_only:
        return sessions_only(args)
    started = dt.datetime.now(dt.timezone.utc)
    load0 = os.getloadavg()
    results = []
    trees = [("this", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    for label, tree in trees:
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        result = run_tree(label, tree, args)
        result["name"] = (f"dashboard, one display path (`{commit}`)" if label == "this"
                          else f"dashboard before (`{commit}`)")
        results.append(result)
    meta = {"started": started.isoformat(timespec="minutes"), "cpus": os.cpu_count(),
            "machine": platform.machine(), "load_before": load0, "load_after": os.getloadavg()}
    text = table(results, args.sizes, args.sessions)
    print(json.dumps(meta))
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
