"""Plot builders: the main frame view, histograms, the five-panel preview.

Images are in pixel coordinates (x = column, y = row, row 0 at the top) so that the hover shows
the pixel a scientist would name. The main frame view (:class:`FrameDisplay`) is a plain Bokeh
figure fed with palette indices mapped on the server (one path for every frame change; see its
docstring for why not a HoloViews DynamicMap). The small images (thumbnail, the preview's five
panels) are HoloViews elements through Datashader's ``rasterize``; histograms are HoloViews.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import holoviews as hv
import numpy as np
from holoviews.operation.datashader import rasterize

from ..analysis import display

HOVER = [("x (column)", "$x{0}"), ("y (row)", "$y{0}"), ("value", "@image")]
HIST_BINS = 128
HIST_MAX_PIXELS = 1 << 20  # histograms of larger frames use an even sample of ~1 M pixels

STAGE_NAMES = ("original", "normalized", "flat_corrected", "stretched", "smoothed")
STAGE_TITLES = {
    "original": "Original",
    "normalized": "Normalized",
    "flat_corrected": "Flat-field corrected",
    "stretched": "Stretched (1%/99%)",
    "smoothed": "Gaussian (σ={sigma:g})",
}


def frame_image(frame: np.ndarray | None, *, label: str = "value",
                shape: tuple[int, int] | None = None, clim=None) -> hv.Image:
    """A 2-D frame as an ``hv.Image`` with x = column and y = row (no copy of the pixels).

    Parameters
    ----------
    frame : (M, N) ndarray or None
        ``None`` gives a blank placeholder of ``shape`` (default 2×2) that costs no memory.
    clim : (low, high), optional
        Colour limits carried as the element's ``clim`` option (kept through ``rasterize``);
        ``(nan, nan)`` for the data's range.
    """
    if frame is None:
        height, width = shape if shape and min(shape) >= 2 else (2, 2)
        frame = np.broadcast_to(np.float32(0), (height, width))
    height, width = frame.shape
    # hv.Image puts the first row at the top (max y); flipping the view and inverting the
    # y axis makes y equal the row index, row 0 at the top.
    image = hv.Image(
        frame[::-1], bounds=(-0.5, -0.5, width - 0.5, height - 0.5),
        kdims=["x", "y"], vdims=[label],
    )
    return image if clim is None else image.opts(clim=tuple(clim))


def fit_box(shape: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` in screen pixels for a frame of ``shape`` (rows, columns) inside
    ``box`` (width, height), keeping square pixels."""
    rows, cols = (int(n) for n in shape) if shape and min(shape) > 0 else (1, 1)
    scale = min(box[0] / cols, box[1] / rows)
    return max(60, round(cols * scale)), max(60, round(rows * scale))


def palette(name: str) -> list[str]:
    """The 256 colours of a colormap name of the viewer (``gray`` runs black to white)."""
    import bokeh.palettes as bp

    if name == "fire":
        import colorcet

        colours = list(colorcet.fire)
    else:
        colours = list(getattr(bp, f"{name.capitalize()}256", bp.Greys256))
    if len(colours) != display.LEVELS:  # resample to exactly one colour per index
        picks = np.linspace(0, len(colours) - 1, display.LEVELS).round().astype(int)
        colours = [colours[k] for k in picks]
    return colours


def _format_value(value: float) -> str:
    """A colour bar label: up to five significant digits, no exponent between 1e-3 and 1e6."""
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.3g}"
    return f"{value:.5g}"


#: While playing, the colour bar's labels follow the frames at most this often (seconds).
TICKS_PLAYING_PERIOD = 1.0
#: Screen pixels above and below the colour bar's figure's plot area, so that it lines up with
#: the frame's (whose toolbar is above and x axis below).
BAR_TOP, BAR_BOTTOM = 30, 40
#: The colour bar's figure: 14 screen pixels of colours and room for labels of five digits.
BAR_WIDTH = 90


class FrameDisplay:
    """The main frame view: a Bokeh image of 8-bit palette indices mapped on the server.

    Every frame change (step, slider, playback, deep link, contrast, equalize) goes through
    :meth:`show`: the part of the frame in view is sampled to the plot's screen pixels and
    mapped through the colour limits (linear or histogram-equalized within them, see
    :mod:`dashboard.analysis.display`) to indices into a fixed 256-colour palette. The page
    receives one byte per displayed pixel and only draws it; a colormap change sends 256
    colours. While the frames move (``moving``: playing, dragging the slider, panning) the
    sample is taken at :attr:`moving_scale` of the screen resolution (about half the bytes);
    once they stay still, :meth:`settle` (called by the owner after :attr:`settle_s`) sends the
    exact rendering again. The raw values of the displayed pixels follow in a second, later
    message (see ``later``), for the hover's *value*, and so do the colour bar's labels, with
    the exact rendering only (while playing, at most every :data:`TICKS_PLAYING_PERIOD`): new
    labels change the colour bar's width, and the browser then lays the figure out again,
    which cost more than drawing the frame (playback at 1024²: 8 → 15 frames/s). The colour
    bar is a figure of its own (:attr:`colorbar_figure`, its axis :attr:`colorbar`), so a new
    frame repaints neither the bar nor its labels. With each new image goes, in the same
    websocket message, what the owner's :attr:`sent` sends (the page's paint request).

    Zoom and pan are the figure's own (wheel zoom, pan, box zoom, reset); each range change
    re-renders the frame for the new viewport (coalesced, see ``later``), so the zoom survives
    every new frame.

    Outside a served page (tests, notebooks without a server) every draw is exact and the
    follow-up happens at once.
    """

    #: Share of the screen resolution per axis while moving (0.66² ≈ 0.44 bytes per pixel).
    moving_scale = 0.66
    #: Seconds without a new frame after which the exact rendering is sent.
    settle_s = 0.25

    def __init__(self, *, box: tuple[int, int] = (600, 600)):
        from bokeh.events import RangesUpdate
        from bokeh.models import (
            ColumnDataSource, CustomJSHover, FixedTicker, HoverTool, LinearColorMapper, Range1d,
        )
        from bokeh.plotting import figure

        self.shape = (1, 1)
        self.box = box
        self.ranges: tuple | None = None  # (x_range, y_range) in view; None: the whole frame
        self._shown = None  # (frame, limits, equalize) last drawn
        self._exact = True
        self._value_due = None
        self._render_due = False
        self._settle_serial = 0
        self._ticks_at = 0.0
        #: Whether frames keep coming (the owner's playback): no settling meanwhile.
        self.playing = lambda: False
        #: Called with each new image, in the same websocket message.
        self.sent = lambda: None
        self.lut = display.display_lut(np.zeros(0), (0, 1), equalize=False)
        self.limits = (0.0, 1.0)
        self.source = ColumnDataSource(data=dict(
            image=[np.zeros((1, 1), np.uint8)], x=[-0.5], y=[-0.5], dw=[1.0], dh=[1.0]))
        self.mapper = LinearColorMapper(palette=palette("gray"), low=-0.5,
                                        high=display.LEVELS - 0.5)
        fig = figure(
            frame_width=box[0], frame_height=box[1], x_range=Range1d(-0.5, 0.5),
            y_range=Range1d(0.5, -0.5), tools="pan,wheel_zoom,box_zoom,box_select,reset,save",
            active_scroll="wheel_zoom", toolbar_location="above", x_axis_label="x (column)",
            y_axis_label="y (row)", name="echo-frame-figure",
        )
        fig.grid.visible = False
        self.renderer = fig.image(image="image", x="x", y="y", dw="dw", dh="dh",
                                  source=self.source, color_mapper=self.mapper)
        # The hover's value comes from the raw values of the displayed pixels, kept in a source
        # of their own: a new column in the image's source would make the browser map all
        # the pixels again.
        self.raw_source = ColumnDataSource(data=dict(value=[_NO_VALUES]))
        raw_value = CustomJSHover(args=dict(raw=self.raw_source), code=RAW_VALUE_JS)
        fig.add_tools(HoverTool(renderers=[self.renderer], tooltips=HOVER_RAW,
                                formatters={"@image": raw_value}))
        fig.on_event(RangesUpdate, self._ranges_changed)
        self.figure = fig
        # The colour bar is a figure of its own: Bokeh repaints a whole figure (every axis
        # label measured again) for each new image, and a bar inside the frame's figure cost
        # the page a tenth of the playback rate.
        bar = figure(width=BAR_WIDTH, frame_height=box[1], x_range=Range1d(0, 1),
                     y_range=Range1d(-0.5, display.LEVELS - 0.5), tools="",
                     toolbar_location=None, x_axis_location=None, y_axis_location="right",
                     outline_line_color=None, min_border_left=5, min_border_right=5,
                     min_border_top=BAR_TOP, min_border_bottom=BAR_BOTTOM,
                     name="echo-colorbar")
        bar.grid.visible = False
        bar.image(image=[np.arange(display.LEVELS, dtype=np.uint8)[:, None]], x=0, y=-0.5,
                  dw=1, dh=display.LEVELS, color_mapper=self.mapper)
        self.colorbar = bar.yaxis[0]
        self.colorbar.update(ticker=FixedTicker(ticks=[]), major_label_overrides={},
                             major_tick_out=4, minor_tick_line_color=None)
        self.colorbar_figure = bar

    # -- scheduling -------------------------------------------------------------------------

    def _document(self):
        doc = self.figure.document
        return doc if doc is not None and doc.session_context is not None else None

    def later(self, fn) -> None:
        """``fn`` on the session's next tick (after this update has gone to the page)."""
        doc = self._document()
        if doc is None:
            fn()
        else:
            doc.add_next_tick_callback(fn)

    def _settle_later(self, fn, seconds: float) -> None:
        doc = self._document()
        if doc is not None:
            doc.add_timeout_callback(fn, int(seconds * 1000))

    # -- geometry ---------------------------------------------------------------------------

    def reset(self, shape: tuple[int, int], box: tuple[int, int]) -> None:
        """A new stack: fresh axes for ``shape`` (rows, columns) in a plot of ``box``."""
        rows, cols = (max(1, int(n)) for n in shape) if shape and min(shape) > 0 else (1, 1)
        self.shape, self.box, self.ranges, self._shown = (rows, cols), box, None, None
        fig = self.figure
        fig.update(frame_width=int(box[0]), frame_height=int(box[1]))
        self.colorbar_figure.frame_height = int(box[1])
        fig.x_range.update(start=-0.5, end=cols - 0.5, reset_start=-0.5, reset_end=cols - 0.5)
        fig.y_range.update(start=rows - 0.5, end=-0.5, reset_start=rows - 0.5, reset_end=-0.5)
        self.source.data = dict(image=[np.zeros((1, 1), np.uint8)], x=[-0.5], y=[-0.5],
                                dw=[float(cols)], dh=[float(rows)])
        self.raw_source.data = dict(value=[_NO_VALUES])

    def _ranges_changed(self, event) -> None:
        ranges = ((event.x0, event.x1), (event.y0, event.y1))
        if any(v is None for pair in ranges for v in pair) or ranges == self.ranges:
            return
        self.ranges = ranges
        if self._shown is None or self._render_due:
            return
        self._render_due = True  # one re-render for a burst of range changes

        def render() -> None:
            self._render_due = False
            if self._shown is not None:
                self._draw(*self._shown, moving=True)

        self.later(render)

    # -- drawing ----------------------------------------------------------------------------

    def show(self, frame: np.ndarray | None, limits, *, equalize: bool,
             moving: bool = False) -> None:
        """Draw ``frame`` (2-D, row 0 at the top) with colour ``limits`` (``None``: its range)."""
        if frame is None or np.ndim(frame) != 2 or min(np.shape(frame)) < 1:
            self._shown = None
            return
        self._shown = (frame, limits, bool(equalize))
        self._draw(frame, limits, bool(equalize), moving=moving)

    def _draw(self, frame, limits, equalize: bool, *, moving: bool) -> None:
        scale = self.moving_scale if moving and self._document() is not None else 1.0
        view = display.viewport_grid(frame.shape, *(self.ranges or (None, None)),
                                     box=self.box, scale=scale)
        values = display.sample(frame, view)
        if limits is None or not all(np.isfinite(v) for v in limits) or limits[1] <= limits[0]:
            limits = display.frame_range(values)
        limits = (float(limits[0]), float(limits[1]))
        lut = display.display_lut(values, limits, equalize=equalize)
        indices = display.to_indices(values, limits, lut)
        self.lut, self.limits, self._exact = lut, limits, scale == 1.0
        data = dict(image=[indices], x=[view.x0 - 0.5], y=[view.y0 - 0.5],
                    dw=[float(view.width)], dh=[float(view.height)])
        if self._document() is None:
            self.source.data = data
        else:
            from panel.io.document import unlocked

            # Written to the websocket now, ahead of the label, widgets and everything else
            # this update changes (Bokeh would send it at the end of the callback, last), in
            # one message with what the owner sends along (``sent``: the paint request).
            with unlocked():
                self.source.data = data
                self.sent()
        # After the frame: its raw values (hover) and the colour bar's ticks.
        first = self._value_due is None
        self._value_due = (values, limits, lut)
        if first:
            self.later(self._follow)
        if not self._exact:
            self._settle_serial += 1
            serial = self._settle_serial
            self._settle_later(lambda: self.settle(serial), self.settle_s)

    def _follow(self) -> None:
        due, self._value_due = self._value_due, None
        if due is None:
            return
        values, limits, lut = due
        exact = self._exact and self.source.data["image"][0].shape == values.shape
        if exact or self.raw_source.data["value"][0].size:  # no message for "still none"
            self.raw_source.data = dict(value=[display.raw_copy(values) if exact else _NO_VALUES])
        now = time.monotonic()
        if not (exact or (self.playing() and now - self._ticks_at >= TICKS_PLAYING_PERIOD)):
            return
        self._ticks_at = now
        ticks = display.colorbar_ticks(limits, lut)
        # The same ticker model, changed in place (a new model makes Bokeh walk the document).
        self.colorbar.ticker.ticks = list(ticks)
        self.colorbar.major_label_overrides = {k: _format_value(v) for k, v in ticks.items()}

    def settle(self, serial: int | None = None) -> None:
        """Send the exact rendering of the frame shown (unless a newer one came meanwhile)."""
        if serial is not None and (serial != self._settle_serial or self.playing()):
            return  # a newer frame came meanwhile, or playback goes on (Pause settles)
        if not self._exact and self._shown is not None:
            self._draw(*self._shown, moving=False)

    def set_palette(self, name: str) -> None:
        self.mapper.palette = palette(name)


_NO_VALUES = np.zeros((0, 0), np.float32)
HOVER_RAW = [("x (column)", "$x{0}"), ("y (row)", "$y{0}"), ("value", "@image{custom}")]
#: The raw value of the hovered displayed pixel (``–`` while the frames move: the raw copy
#: follows only an exact rendering).
RAW_VALUE_JS = """
const at = special_vars.image_index;
const values = raw.data.value[0];
if (at == null || values == null || values.shape == null || values.shape.length != 2)
  return "–";
const [rows, cols] = values.shape;
if (at.i < 0 || at.j < 0 || at.i >= cols || at.j >= rows) return "–";
const v = values[at.j * cols + at.i];
return Number.isInteger(v) ? String(v) : v.toPrecision(6);
"""

def thumbnail(frame: np.ndarray | None, *, size: int = 260) -> hv.Image:
    """A small, static, rasterized image of one frame (the browser's "View Last Frame")."""
    return rasterize(frame_image(frame), dynamic=False, width=size, height=size).opts(
        cmap="gray", cnorm="eq_hist", tools=["hover"], hover_tooltips=HOVER, invert_yaxis=True,
        data_aspect=1, frame_width=size, xaxis=None, yaxis=None, toolbar=None,
    )


def histogram_counts(frame: np.ndarray | None, *, bins: int = HIST_BINS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, edges)`` of a frame's finite values (an even sample for frames over ~1 M
    pixels); one empty bin over ``[0, 1]`` without values."""
    if frame is None or frame.size == 0:
        return np.zeros(1), np.array([0.0, 1.0])
    sample = _sample(frame)
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if finite.size == 0:
        return np.zeros(1), np.array([0.0, 1.0])
    if finite.dtype.kind == "u" and finite.dtype.itemsize <= 2:
        # Counted per value first (np.bincount, a few ms for a 1024² uint16 frame), then the
        # values present are binned with their counts as weights: the same result as
        # np.histogram over every pixel, which costs ten times more.
        per_value = np.bincount(finite.ravel())
        values = np.flatnonzero(per_value)
        weights = per_value[values]
    else:
        values, weights = finite, None
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    counts, edges = np.histogram(values, bins=bins, range=(low, high), weights=weights)
    return counts.astype(np.int64), edges


def histogram(frame: np.ndarray | None, *, bins: int = HIST_BINS, title: str = "Histogram",
              **opts) -> hv.Histogram:
    """The histogram of a frame's finite values (an even sample for frames over ~1 M pixels)."""
    counts, edges = histogram_counts(frame, bins=bins)
    style = dict(title=title, xlabel="value", ylabel="pixels", color="#4c72b0", line_color=None,
                 responsive=True, height=200, tools=["hover"], toolbar=None, framewise=True,
                 axiswise=True)
    style.update(opts)
    return hv.Histogram((edges, counts), kdims=["value"], vdims=["pixels"]).opts(**style)


LIMITS_STYLE = dict(fill_color="#f0a020", fill_alpha=0.18, line_color="#c05800", line_alpha=1.0,
                    line_width=3, hover_fill_color="#f0a020", hover_fill_alpha=0.3,
                    hover_line_color="#e06000", hover_line_alpha=1.0)


class LimitsHistogram:
    """The frame's histogram with the colour limits as a band whose edges can be dragged: a
    plain Bokeh figure whose bars and band are updated in place (no new model, so no walk over
    the page's document: the histogram follows every frame for a few milliseconds).

    Parameters
    ----------
    on_drag
        Called with ``(low, high)`` when the user drags an edge (or the whole band) in the
        browser; not called for changes made from Python.
    """

    def __init__(self, on_drag: Callable[[float, float], None], *,
                 title: str = "Histogram of this frame", height: int = 200):
        from bokeh.models import BoxAnnotation, ColumnDataSource, HoverTool, NumeralTickFormatter
        from bokeh.plotting import figure

        self.source = ColumnDataSource(data=dict(left=[], right=[], pixels=[]))
        fig = figure(height=height, sizing_mode="stretch_width", title=title, toolbar_location=None,
                     tools="", x_axis_label="value", y_axis_label="pixels")
        bars = fig.quad(left="left", right="right", bottom=0, top="pixels", source=self.source,
                        fill_color="#4c72b0", line_color=None)
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("value", "@left{0.[00]a}–"
                                                                     "@right{0.[00]a}"),
                                                            ("pixels", "@pixels")]))
        fig.xaxis.formatter = NumeralTickFormatter(format="0.[00]a")
        fig.xaxis.ticker.desired_num_ticks = 4
        fig.y_range.start = 0
        self.box = BoxAnnotation(editable=True, movable="x", resizable="x", level="overlay",
                                 name="echo-contrast-limits", **LIMITS_STYLE)
        fig.add_layout(self.box)
        self._quiet = False
        self._on_drag = on_drag
        self.box.on_change("left", self._changed)
        self.box.on_change("right", self._changed)
        self.figure = fig

    def _changed(self, attr, old, new) -> None:
        box = self.box
        if not self._quiet and box.left is not None and box.right is not None:
            self._on_drag(float(box.left), float(box.right))

    def update(self, counts: np.ndarray | None, edges: np.ndarray | None, limits) -> None:
        """New bars (``None``: keep them) and limits (``None``: no band)."""
        if counts is not None:
            self.source.data = dict(left=edges[:-1], right=edges[1:], pixels=counts)
        edges = np.asarray(self.source.data["left"])
        right = np.asarray(self.source.data["right"])
        low, high = ((float(limits[0]), float(limits[1])) if limits is not None
                     else (float("nan"), float("nan")))
        lo = np.nanmin([edges.min() if edges.size else 0.0, low])
        hi = np.nanmax([right.max() if right.size else 1.0, high])
        pad = 0.04 * ((hi - lo) or 1.0)
        self.figure.x_range.update(start=lo - pad, end=hi + pad)
        self._quiet = True  # our own update, not a drag
        try:
            if limits is None:
                self.box.visible = False
            elif (self.box.left, self.box.right) != (low, high) or not self.box.visible:
                self.box.update(left=low, right=high, visible=True)
        finally:
            self._quiet = False


def _sample(frame: np.ndarray) -> np.ndarray:
    if frame.size <= HIST_MAX_PIXELS:
        return frame
    step = int(np.ceil(np.sqrt(frame.size / HIST_MAX_PIXELS)))
    return frame[::step, ::step]


def stage_panels(get_stages: Callable[[], object], depends: dict, *, shape=(1, 1),
                 size: int = 160) -> list[tuple[hv.DynamicMap, hv.DynamicMap]]:
    """For each of the five stages (Original → Gaussian), an image and its histogram.

    Parameters
    ----------
    get_stages
        Returns the current :class:`~dashboard.processing.pipeline.Stages` (or ``None``).
    depends
        Parameters the panels follow, e.g. ``{"stages": state.param.stages, "sigma": ...}``;
        the builders receive them as keyword arguments (``sigma`` titles the last panel).
    shape : (rows, columns)
        Frame shape: each image gets a ``size``-pixel box with square pixels.

    Returns
    -------
    list of (image, histogram) DynamicMap pairs, in pipeline order
        Kept as separate plots so that each column sizes itself (a Bokeh grid would align the
        images to the histograms' axes).
    """
    import panel as pn

    width, height = fit_box(shape, (size, size))
    panels = []
    for name in STAGE_NAMES:

        def image(name=name, **kwargs):
            # Static rasterization per preview: the panels are small and not for zooming.
            stages = get_stages()
            array = getattr(stages, name) if stages is not None else None
            title = STAGE_TITLES[name].format(sigma=kwargs.get("sigma", 0.0))
            return rasterize(frame_image(array), dynamic=False, width=width,
                             height=height).relabel(title)

        def hist(name=name, **kwargs):
            stages = get_stages()
            array = getattr(stages, name) if stages is not None else None
            return histogram(array, title="", responsive=False, frame_width=size - 30,
                             height=140, ylabel="", fontsize={"ticks": 8, "labels": 9})

        panels.append((
            hv.DynamicMap(pn.bind(image, **depends)).opts(
                cmap="gray", tools=["hover"], hover_tooltips=HOVER, invert_yaxis=True,
                frame_width=width, frame_height=height, aspect=None, data_aspect=None,
                xaxis=None, yaxis=None, toolbar=None, colorbar=False, fontsize={"title": 11},
            ),
            hv.DynamicMap(pn.bind(hist, **depends)),
        ))
    return panels
