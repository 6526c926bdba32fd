"""Frames on screen: server-side time from a frame-index change to new image data, and bytes.

Run by hand (about a minute)::

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_render [--frames 12] [--viewport 1000x800]

A local 2048×2048 uint16 stack (12 frames, one chunk per frame, gzip) is opened with
:func:`dashboard.open_stack`; every frame is read once first, so the numbers are "once the frame
is fetched" (the frame cache). The HoloViews/Bokeh plot is built exactly as in the Frames view
and told the viewport's size (its ``PlotSize``/``RangeXY`` streams, which the browser drives).
Each method is timed side by side in one run, frame by frame:

naive
    ``hv.Image`` of the full frame into the same Bokeh plot (no rasterize): every pixel is sent.
project
    The dashboard's path: ``ViewerState.index`` changes → the latest-only reader takes the frame
    from the cache → ``frame_serial`` bumps → ``rasterize(hv.DynamicMap(...))`` (Datashader
    regrid to the viewport) → new array in the plot's ColumnDataSource.
floor
    Nearest-neighbour strided subsampling of the frame to the viewport in numpy: the least work
    and the fewest bytes any image path could send (no plot, no resampling quality).

Bytes per frame are the image array placed in the ColumnDataSource (what Bokeh sends as one
binary buffer over the websocket, plus a few hundred bytes of message).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def make_stack(path: Path, frames: int, side: int = 2048) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    base = 20000 * np.exp(-(((x - side / 2) ** 2 + (y - side / 2) ** 2) / (0.3 * side) ** 2))
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("/entry/data/data", (frames, side, side), dtype=np.uint16,
                                chunks=(1, side, side), compression="gzip", compression_opts=1)
        for i in range(frames):
            dset[i] = rng.poisson(base + 500 + 50 * i).astype(np.uint16)


def source_image(plot) -> np.ndarray:
    data = plot.handles["source"].data["image"][0]
    return np.asarray(data)


def run(frames: int, viewport: tuple[int, int]) -> dict:
    import holoviews as hv
    import panel as pn

    from dashboard.hdf5.stack import open_stack
    from dashboard.state.tasks import Tasks
    from dashboard.state.viewer import ViewerState
    from dashboard.ui import plots

    hv.extension("bokeh")
    width, height = viewport
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.h5"
        make_stack(path, frames)
        stack = open_stack(str(path))
        for i in range(frames):  # "once the frame is fetched"
            stack.frame(i)

        # -- project: the Frames view's own plot, driven through ViewerState ------------------
        tasks = Tasks()
        state = ViewerState(tasks=tasks)
        state._opened(stack, str(path), None)
        assert state.wait_for_frame(0)

        def image(serial):
            return plots.frame_image(state.frame, shape=state.frame_shape)

        element = plots.rasterized_frames(
            pn.bind(image, state.param.frame_serial),
            equalize=state.equalize, cmap=state.param.colormap,
            responsive=False, frame_width=width, frame_height=height,
        )
        plot = hv.renderer("bokeh").get_plot(element)
        for stream in plot.streams:  # what the browser reports for this viewport
            if type(stream).__name__ == "PlotSize":
                stream.event(width=width, height=height, scale=1.0)
        state.index = 1
        assert state.wait_for_frame(1)

        # -- naive: the full frame into a Bokeh plot ----------------------------------------
        naive_serial = {"i": 0}
        naive_stream = hv.streams.Stream.define("Frame", i=0)()
        naive = hv.DynamicMap(lambda i: plots.frame_image(stack.frame(i)), streams=[naive_stream])
        naive_plot = hv.renderer("bokeh").get_plot(
            naive.opts(cmap="gray", frame_width=width, frame_height=height, invert_yaxis=True))

        results = {"project": [], "naive": [], "floor": []}
        sizes = {"project": [], "naive": [], "floor": []}
        order = [i % frames for i in range(2, 2 + 3 * frames)]
        for i in order:
            # project
            before = state.frame_serial
            t0 = time.perf_counter()
            state.index = i
            while state.frame_serial == before:
                tasks.wait(timeout=0.001)
            results["project"].append(time.perf_counter() - t0)
            sizes["project"].append(source_image(plot).nbytes)
            # naive
            naive_serial["i"] = i
            t0 = time.perf_counter()
            naive_stream.event(i=i)
            results["naive"].append(time.perf_counter() - t0)
            sizes["naive"].append(source_image(naive_plot).nbytes)
            # floor
            t0 = time.perf_counter()
            frame = stack.frame(i)
            step_y = max(1, -(-frame.shape[0] // height))
            step_x = max(1, -(-frame.shape[1] // width))
            small = np.ascontiguousarray(frame[::step_y, ::step_x])
            results["floor"].append(time.perf_counter() - t0)
            sizes["floor"].append(small.nbytes)
        shape = source_image(plot).shape
        tasks.shutdown()
        stack.close()

    def summary(name):
        times = sorted(results[name])
        return {
            "median_ms": round(1000 * statistics.median(times), 1),
            "p90_ms": round(1000 * times[int(0.9 * (len(times) - 1))], 1),
            "bytes_per_frame": int(statistics.median(sizes[name])),
        }

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "frame": "2048x2048 uint16",
        "viewport": f"{width}x{height}",
        "budget_bytes": int(1.5 * width * height * 4),
        "project_image_shape": list(shape),
        "samples": len(order),
        "methods": {name: summary(name) for name in ("naive", "project", "floor")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--viewport", default="1000x800", help="WIDTHxHEIGHT in pixels")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("bench_render.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.viewport.lower().split("x"))
    report = run(args.frames, (width, height))
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
