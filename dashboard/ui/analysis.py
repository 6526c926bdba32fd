"""ROI time series, line profile and cost inspector below the frame: a thin view over
:class:`~dashboard.state.analysis.AnalysisState`.

``AnalysisTools(viewer_state)`` plugs into ``FramesView(state, tools=...)``: :meth:`attach`
draws the box and the line on the frame's Bokeh figure and listens to its Box Select and taps,
and the tool itself is the panel shown below the frame.
"""

from __future__ import annotations

import time

import holoviews as hv
import numpy as np
import panel as pn
import param

from ..state.analysis import AnalysisState
from ..state.viewer import ViewerState
from ..storage.listing import human_size
from .sinogram import sinogram_card
from .text import plain
from .widgets import (
    HIST_PLAYING_PERIOD,
    built_when,
    number_input,
    reporter,
    status_line,
)

ROI_COLOR = "#ff7f0e"
LINE_COLOR = "#17becf"
MEAN_COLOR = "#1f5f8b"

CSS = """
.echo-cost table { border-collapse: collapse; font-size: 13px; width: 100%; }
.echo-cost th { text-align: left; color: #555; font-weight: 600; padding: 2px 12px 2px 0;
                white-space: nowrap; vertical-align: top; width: 12em; }
.echo-cost td { padding: 2px 8px 2px 0; font-family: var(--bs-font-monospace, monospace);
                overflow-wrap: anywhere; }
.echo-cost .ok { color: #2a7a2a; }
.echo-cost .no { color: #b00020; font-weight: 600; }
.echo-cost .warn { background: #fff4e5; border-left: 4px solid #e69500; padding: 6px 10px;
                   margin: 6px 0; font-size: 13px; }
.echo-cost .good { background: #eaf5ea; border-left: 4px solid #2a7a2a; padding: 6px 10px;
                   margin: 6px 0; font-size: 13px; }
"""

HELP = ("**Box**: pick *Box Select* in the frame's toolbar and drag over the frame, or type the "
        "edges (columns x0:x1, rows y0:y1, end excluded, as in numpy). **Line**: click the frame "
        "twice (start, then end) or type the ends.")


def _size(n: int | None) -> str:
    return "–" if n is None else human_size(n, binary=True)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def cost_html(report: dict | None) -> str:
    """The cost report as a compact HTML table with its warnings (every string from the file
    as text: :func:`~dashboard.ui.text.plain`)."""
    if not report:
        return "<div class='echo-cost'><p>Open a stack to see what its frames cost.</p></div>"
    e = plain
    x = "×".join
    chunks = report["chunks"]
    chunk_text = (f"{x(str(n) for n in chunks)} ({report['chunks_per_frame']} per frame, "
                  f"{report['frames_per_chunk']} frame{'s' if report['frames_per_chunk'] > 1 else ''}"
                  " per chunk)") if chunks else f"none ({report['layout']})"
    filters = []
    for f in report["filters"]:
        mark = lambda ok: "<span class='ok'>yes</span>" if ok else "<span class='no'>no</span>"  # noqa: E731
        filters.append(f"{e(str(f['name']))} (id {f['id']}): built-in decoder {mark(f['builtin'])}"
                       f", h5py/hdf5plugin {mark(f['h5py'])}")
    last = report["last_frame"]
    if not last:
        last_text = "no frame read yet"
    elif last["path"] in ("cache", "prefetch"):
        where = "frame cache" if last["path"] == "cache" else "prefetch (read ahead)"
        last_text = f"frame {last['index']} from the {where}: no new request"
    else:
        stored = (f", {_size(last['stored_bytes'])} stored"
                  if last.get("stored_bytes") is not None else "")
        last_text = (f"frame {last['index']} via {e(str(last['path']))}: "
                     f"{_count(last['requests'], 'GET')}, "
                     f"{_size(last['bytes'])}{stored}, {1000 * last['seconds']:.0f} ms")
    hits, misses = report["cache_hits"], report["cache_misses"]
    rows = [
        ("Dataset", f"{e(report['dataset'])} · {x(str(n) for n in report['shape'])} "
                    f"{e(report['dtype'])}"),
        ("Chunks", chunk_text),
        ("Filters", "<br>".join(filters) or "none"),
        ("Read path", "direct (exact ranged GETs, decoded in Python)"
         if report["read_path"] == "direct" else "h5py"),
        ("Last frame", last_text),
        ("Frame cache", f"{_count(hits, 'hit')}, {misses} miss{'es' if misses != 1 else ''}"),
        ("File so far", f"{_count(report['get_requests'], 'GET')}, "
                        f"{_size(report['bytes_fetched'])}"),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    notes = "".join(f"<div class='warn'>⚠ {e(w)}</div>" for w in report["warnings"])
    if not report["warnings"]:
        notes = ("<div class='good'>Chunks are frame-aligned: each frame is one chunk, "
                 "one GET.</div>" if report["layout"] == "chunked" else
                 "<div class='good'>Each frame is one contiguous byte range, one GET.</div>")
    return f"<div class='echo-cost'>{notes}<table>{table}</table></div>"


class AnalysisTools(pn.viewable.Viewer):
    """The analysis tools of one session, for ``FramesView(viewer, tools=AnalysisTools(viewer))``.

    Parameters
    ----------
    viewer : ViewerState
        The session's viewer; the tools use its worker threads.
    state : AnalysisState, optional
        The session's analysis state (e.g. ``session.analysis``, closed by ``Session.close``);
        by default the tools make their own, which :meth:`close` cancels.
    """

    frame_serial = param.Integer(default=0, precedence=-1, doc=(
        "Follows the viewer's frame_serial; while playing at most twice a second (and on "
        "Pause): the frame matters more."))

    def __init__(self, viewer: ViewerState, *, state: AnalysisState | None = None,
                 sinogram=None, **params):
        super().__init__(**params)
        self.viewer, self.sinogram = viewer, sinogram
        self._followed = 0.0
        viewer.param.watch(self._follow, ["frame_serial", "playing"])
        self.state = state = state if state is not None else AnalysisState(viewer)
        self._attached = False
        # The box and the line drawn on the frame (see attach): plain Bokeh glyphs.
        from bokeh.models import ColumnDataSource

        self._roi_source = ColumnDataSource(data=dict(left=[], right=[], top=[], bottom=[]))
        self._line_source = ColumnDataSource(data=dict(x=[], y=[]))
        self._ends_source = ColumnDataSource(data=dict(x=[], y=[]))
        state.param.watch(self._draw_roi, ["x0", "x1", "y0", "y1"])
        state.param.watch(self._draw_line, ["line_x0", "line_y0", "line_x1", "line_y1",
                                            "line_pending"])
        viewer.param.watch(self._draw_all, ["stack"])
        self._draw_all()
        self._download = pn.widgets.FileDownload(
            callback=state.csv_file, filename=state.csv_filename(), label="Download CSV",
            color="success", disabled=True, width=160, css_classes=["echo-roi-csv"])
        state.param.watch(self._on_series, "series")
        self._layout = self._build()

    # -- overlay over the frame -----------------------------------------------------------

    def attach(self, figure) -> None:
        """Draw the box and the line on ``figure`` (the frame's Bokeh figure, x = column,
        y = row) and take its Box Select rectangles and taps."""
        from bokeh.events import DoubleTap, SelectionGeometry, Tap

        fixed = dict(line_alpha=1.0, selection_line_alpha=1.0, nonselection_line_alpha=1.0)
        # An outline only: a tint would change the pixels a scientist is judging.
        figure.quad(left="left", right="right", top="top", bottom="bottom",
                    source=self._roi_source, fill_alpha=0.0, line_color=ROI_COLOR, line_width=2,
                    selection_fill_alpha=0.0, nonselection_fill_alpha=0.0, **fixed)
        figure.line(x="x", y="y", source=self._line_source, line_color=LINE_COLOR,
                    line_width=2, **fixed)
        figure.scatter(x="x", y="y", source=self._ends_source, size=8, fill_color=LINE_COLOR,
                       line_color="white", fill_alpha=1.0, selection_fill_alpha=1.0,
                       nonselection_fill_alpha=1.0, **fixed)
        figure.on_event(SelectionGeometry, self._on_geometry)
        # Two quick clicks (start, end) arrive as a tap and a double tap.
        figure.on_event(Tap, self._on_tap_event)
        figure.on_event(DoubleTap, self._on_tap_event)
        self._attached = True

    def _draw_all(self, *events) -> None:
        self._draw_roi()
        self._draw_line()

    def _draw_roi(self, *events) -> None:
        s = self.state
        self._roi_source.data = (
            dict(left=[], right=[], top=[], bottom=[]) if self.viewer.stack is None else
            dict(left=[s.x0 - 0.5], right=[s.x1 - 0.5], top=[s.y0 - 0.5], bottom=[s.y1 - 0.5]))

    def _draw_line(self, *events) -> None:
        s = self.state
        if self.viewer.stack is None:
            line, ends = ([], []), ([], [])
        elif s.line_pending:
            line, ends = ([], []), ([s.line_x0], [s.line_y0])
        else:
            line = ends = ([s.line_x0, s.line_x1], [s.line_y0, s.line_y1])
        self._line_source.data = dict(x=list(line[0]), y=list(line[1]))
        self._ends_source.data = dict(x=list(ends[0]), y=list(ends[1]))

    def _on_geometry(self, event) -> None:
        geometry = event.geometry or {}
        if not event.final or geometry.get("type") != "rect":
            return
        bounds = tuple(geometry.get(k) for k in ("x0", "y0", "x1", "y1"))
        if any(v is None for v in bounds):
            return
        self._on_bounds(bounds)

    def _on_tap_event(self, event) -> None:
        self._on_tap(event.x, event.y)

    def _on_bounds(self, bounds=None) -> None:
        if bounds is not None and self.viewer.stack is not None:
            self.state.set_bounds(bounds)

    def _on_tap(self, x=None, y=None) -> None:
        self.state.click(x, y)

    # -- plots ----------------------------------------------------------------------------

    def _series_pane(self, series):
        if series is None or len(series) == 0:
            return None
        return pn.pane.HoloViews(self._series_plot(series), sizing_mode="stretch_width",
                                 css_classes=["echo-roi-plot"])

    @staticmethod
    def _series_plot(series) -> hv.Overlay:
        frames = series.frames
        curves = [
            hv.Curve((frames, series.max), "frame", "intensity", label="max").opts(
                color="#d62728", line_dash="dashed", line_width=1),
            hv.Curve((frames, series.mean), "frame", "intensity", label="mean").opts(
                color=MEAN_COLOR, line_width=2),
            hv.Curve((frames, series.min), "frame", "intensity", label="min").opts(
                color="#2ca02c", line_dash="dashed", line_width=1),
        ]
        if len(frames) < 60:  # the frames as dots while they can be told apart
            curves.append(hv.Scatter((frames, series.mean), "frame", "intensity").opts(
                color=MEAN_COLOR, size=4))
        step = int(frames[1] - frames[0]) if len(frames) > 1 else 1
        title = (f"Box {series.box.label()} · frames {frames[0]}–{frames[-1]}"
                 + (f" step {step}" if step != 1 else ""))
        return hv.Overlay(curves).opts(
            title=title, legend_position="right", responsive=True, height=280, xlabel="frame",
            ylabel="intensity in box", tools=["hover"], show_grid=True, framewise=True,
            axiswise=True, toolbar="above")

    def _profile_figure(self):
        """The line profile: a plain Bokeh figure whose line is updated in place (it follows
        every frame; a HoloViews update would walk the page's whole document each time)."""
        from bokeh.models import ColumnDataSource, HoverTool
        from bokeh.plotting import figure

        self._profile_source = ColumnDataSource(data=dict(distance=[], intensity=[]))
        fig = figure(height=280, sizing_mode="stretch_width", title="Line profile: no frame",
                     x_axis_label="distance along the line (pixels)", y_axis_label="intensity",
                     tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
        line = fig.line(x="distance", y="intensity", source=self._profile_source,
                        line_color=LINE_COLOR, line_width=2)
        fig.add_tools(HoverTool(renderers=[line], tooltips=[("distance", "@distance{0.[00]}"),
                                                            ("intensity", "@intensity")],
                                mode="vline"))
        self._profile_fig = fig
        for name in ("frame_serial",):
            self.param.watch(self._draw_profile, name)
        self.state.param.watch(self._draw_profile, ["line_x0", "line_y0", "line_x1", "line_y1"])
        self._draw_profile()
        return fig

    def _draw_profile(self, *events) -> None:
        s = self.state
        profile = s.profile()
        if profile is None:
            self._profile_source.data = dict(distance=[], intensity=[])
            self._profile_fig.title.text = "Line profile: no frame"
            return
        distance, values = profile
        self._profile_source.data = dict(distance=distance, intensity=values)
        self._profile_fig.title.text = (
            f"Frame {self.viewer.shown_index}: ({s.line_x0:g}, {s.line_y0:g}) → "
            f"({s.line_x1:g}, {s.line_y1:g}), {len(values)} samples")

    def _follow(self, *events) -> None:
        # The frames view calls follow_frame() once each frame is painted, with its
        # histogram; this is the fallback when no frames view is attached.
        if (self.viewer.playing and {event.name for event in events} == {"frame_serial"}
                and time.monotonic() - self._followed < 2 * HIST_PLAYING_PERIOD):
            return
        if self._attached:
            return  # the frames view follows after the frame
        self.follow_frame()

    def follow_frame(self) -> None:
        """Show the viewer's current frame in the line profile and the cost inspector."""
        self._followed = time.monotonic()
        self.frame_serial = self.viewer.frame_serial

    def _cost_html(self, serial, stack) -> str:
        return cost_html(self.state.cost())

    def _on_series(self, event) -> None:
        self._download.param.update(filename=self.state.csv_filename(),
                                    disabled=event.new is None)

    # -- layout ---------------------------------------------------------------------------

    def _build(self):
        state, viewer = self.state, self.viewer
        num = dict(width=110, margin=(5, 5), report=reporter(state, "roi_status"))
        ends = dict(num, step=1, report=reporter(state, "line_status"))
        roi = pn.Card(
            pn.Row(
                number_input(state.param.x0, name="x0 (column)", **num),
                number_input(state.param.x1, name="x1 (excl.)", **num),
                number_input(state.param.y0, name="y0 (row)", **num),
                number_input(state.param.y1, name="y1 (excl.)", **num),
                css_classes=["echo-roi-box"],
            ),
            pn.Row(
                number_input(state.param.first, **num),
                number_input(state.param.last, **num),
                number_input(state.param.step, **num),
            ),
            pn.Row(
                pn.widgets.Button.from_param(state.param.run, color="primary",
                                             width=190, margin=(5, 5)),
                pn.widgets.Button.from_param(state.param.cancel, width=90, margin=(5, 5),
                                             disabled=pn.bind(lambda r: not r,
                                                              state.param.running)),
                self._download,
            ),
            pn.indicators.Progress(value=state.param.progress, max=100, bar_color="primary",
                                   sizing_mode="stretch_width", height=14, margin=(4, 10),
                                   css_classes=["echo-roi-progress"]),
            status_line(state.param.roi_status, css_class="echo-roi-status"),
            # A new plot per series (fresh axes; a series arrives once per run), none before.
            built_when(state.param.series, self._series_pane, sizing_mode="stretch_width"),
            title="ROI time series", collapsible=False, sizing_mode="stretch_width",
            css_classes=["echo-roi"],
        )
        line = pn.Card(
            pn.Row(
                number_input(state.param.line_x0, name="start x", **ends),
                number_input(state.param.line_y0, name="start y", **ends),
                number_input(state.param.line_x1, name="end x", **ends),
                number_input(state.param.line_y1, name="end y", **ends),
                css_classes=["echo-line-ends"],
            ),
            status_line(state.param.line_status, css_class="echo-line-status"),
            pn.widgets.Checkbox.from_param(state.param.click_line),
            pn.pane.Markdown(HELP, styles={"font-size": "12px", "color": "#555"},
                             margin=(0, 10)),
            pn.Column(pn.pane.Bokeh(self._profile_figure(), sizing_mode="stretch_width"),
                      sizing_mode="stretch_width", css_classes=["echo-profile-plot"]),
            title="Line profile", collapsible=False, sizing_mode="stretch_width",
            css_classes=["echo-profile"],
        )
        cost = pn.Card(
            pn.pane.HTML(pn.bind(self._cost_html, self.param.frame_serial, viewer.param.stack),
                         stylesheets=[CSS], sizing_mode="stretch_width",
                         css_classes=["echo-cost-pane"]),
            title="Cost inspector", collapsible=False, sizing_mode="stretch_width",
            css_classes=["echo-cost-card"],
        )
        below = (pn.Row(sinogram_card(self.sinogram), cost, sizing_mode="stretch_width")
                 if self.sinogram is not None else cost)
        return pn.Column(pn.Row(roi, line, sizing_mode="stretch_width"), below,
                         sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout

    def close(self) -> None:
        """Cancel a running series (call when the session closes)."""
        self.state.close()


__all__ = ["AnalysisTools", "cost_html"]
