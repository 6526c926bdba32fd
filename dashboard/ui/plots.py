"""Pure HoloViews builders: frame images, histograms, the five-panel preview.

Images are ``hv.Image`` in pixel coordinates (x = column, y = row, row 0 at the top) so that the
hover shows the pixel a scientist would name. Every image goes through Datashader's
``rasterize``: only about the viewport's pixels cross the websocket, and zoom survives updates.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable

import holoviews as hv
import numpy as np
from holoviews.operation.datashader import rasterize

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
        ``(nan, nan)`` for the data's range (see :func:`clim_of`).
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


def rasterized_frames(callback, *, equalize: bool = True, cmap="gray", **opts):
    """``rasterize(hv.DynamicMap(callback))`` styled as the main frame view.

    Parameters
    ----------
    callback
        A ``param.depends``/``pn.bind`` function returning :func:`frame_image` output; its
        dependencies become the DynamicMap's streams.
    equalize
        Histogram-equalized colour mapping (Bokeh's ``EqHistColorMapper``, computed in the
        browser over the displayed pixels, so the hover still shows raw values) or linear.
        Fixed for the plot's life: BokehJS repaints an image when its colour mapper's
        properties change, but not when the mapper object itself is replaced, so the view
        builds a new plot when the switch changes.
    cmap
        A colormap name or a parameter (dynamic).

    Notes
    -----
    ``hooks`` in ``opts`` run after the plot's own (which keeps one image glyph).
    Colour limits travel with the image: the callback returns ``frame_image(..., clim=...)``
    (the option survives ``rasterize``), so a new frame with new limits is one update of the
    plot. A separate ``.apply.opts(clim=...)`` stream would update the plot twice per frame.
    The limits change the same mapper in place, so the image repaints; with ``equalize`` the
    histogram is equalized *within* the limits (values outside take the end colours).
    """
    dmap = hv.DynamicMap(callback)
    style = dict(
        cmap="gray", colorbar=True, tools=["hover"], hover_tooltips=HOVER, invert_yaxis=True,
        responsive=True, min_height=480, active_tools=["wheel_zoom"],
        xlabel="x (column)", ylabel="y (row)", cnorm="eq_hist" if equalize else "linear",
        toolbar="above",
    )
    hooks = [_one_image_glyph, *opts.pop("hooks", [])]
    style.update(opts)
    return rasterize(dmap).opts(hooks=hooks, **style).apply.opts(cmap=cmap)


def _one_image_glyph(plot, element) -> None:
    """Drop the image's selection, non-selection and muted copies (HoloViews adds them; an
    image is never selected or muted). Each copy is a glyph view in the browser that maps all
    the pixels again, with a full equalizing scan, whenever the colour limits change."""
    renderer = plot.handles.get("glyph_renderer")
    extra = ("selection_glyph", "nonselection_glyph", "muted_glyph")
    if renderer is not None and any(getattr(renderer, name, None) is not None
                                    for name in extra):
        renderer.update(**dict.fromkeys(extra))


class DirectFrames:
    """Playback's fast path: new frames written straight into the Bokeh image of a frame plot.

    Each HoloViews update of the frame plot runs the DynamicMap, Datashader's regrid, the
    overlay's plots and a walk over the page's whole Bokeh document (which grows with the page:
    ~430 models here), about 100 ms a frame on a loaded machine. While playing, :meth:`show`
    instead replaces the pixels of the plot's ``ColumnDataSource`` and the colour mapper's
    limits: one data change, no new model, no walk. The part in view is cut out and sampled to about the plot's pixels (nearest neighbour, as
    cheap as numpy indexing; Datashader averages instead), so a zoomed view stays sharp; the
    next HoloViews update (e.g. on Pause) rasterizes again.

    Pass :attr:`hook` as a ``hooks`` option of the plot (see :func:`rasterized_frames`); it
    remembers the plot each time HoloViews draws it.
    """

    #: Limits that moved by at most this share of their range are left as they are while
    #: playing: each change makes the browser map (and, equalizing, scan) every pixel again,
    #: several times; per-frame percentiles jitter by less than this. Pause shows the exact ones.
    tolerance = 0.02

    def __init__(self):
        self.plot = None
        # HoloViews keeps a ``hooks`` option in its process-wide ``Store`` of custom options
        # until every element carrying those options is gone. A bound method there would own
        # this object -> the plot -> its DynamicMap and elements (so they are never gone) ->
        # the page and the session's state: no closed session would ever be freed (issue 6).
        # The hook therefore refers to this object weakly.
        ref = weakref.ref(self)

        def hook(plot, element) -> None:
            direct = ref()
            if direct is not None:
                direct.plot = plot

        self.hook = hook

    def forget(self) -> None:
        """Drop the plot (it is being replaced, e.g. another stack was opened)."""
        self.plot = None

    def show(self, frame: np.ndarray | None, limits=None) -> bool:
        """Put ``frame`` (2-D, row 0 at the top) with colour ``limits`` on the page.

        Returns ``False`` (nothing done) when there is no live plot to write to; the caller
        then updates the plot through HoloViews.
        """
        plot = self.plot
        if plot is None or frame is None or np.ndim(frame) != 2 or min(np.shape(frame)) < 1:
            return False
        source = plot.handles.get("source")
        mapper = plot.handles.get("color_mapper")
        if (source is None or mapper is None or source.document is None
                or "image" not in source.data):
            return False
        image, (x0, y0, width, height) = _visible_pixels(frame, plot)
        if image.dtype.kind not in "uif" or image.dtype == np.float16:
            image = image.astype(np.float32)
        elif image.dtype.itemsize > 4 and image.dtype.kind in "ui":
            image = image.astype(np.float64)
        low, high = clim_of(limits)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            low, high = _finite_range(image)
        from panel.io.document import hold

        # One message: BokehJS then sets each model's changes at once, so the browser maps
        # (and, equalizing, scans) the pixels twice per frame rather than once per property.
        with hold(source.document, policy="combine"):
            source.data.update(image=[image], x=[x0 - 0.5], y=[y0 - 0.5], dw=[float(width)],
                               dh=[float(height)])
            if _limits_moved((mapper.low, mapper.high), (low, high), self.tolerance):
                mapper.update(low=low, high=high)
        return True


def _limits_moved(old, new, tolerance: float) -> bool:
    """Whether colour limits moved by more than ``tolerance`` of the old range."""
    if any(v is None or not np.isfinite(v) for v in old):
        return True
    scale = tolerance * abs(old[1] - old[0])
    return abs(new[0] - old[0]) > scale or abs(new[1] - old[1]) > scale


def _visible_pixels(frame: np.ndarray, plot) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The pixels of ``frame`` inside the plot's x/y ranges, sampled to at most the plot's
    size in screen pixels, and their ``(column, row, width, height)`` in frame pixels."""
    rows, cols = frame.shape
    figure = plot.state

    def span(axis_range, n):
        ends = (axis_range.start, axis_range.end) if axis_range is not None else (None, None)
        if any(v is None or not np.isfinite(v) for v in ends):
            return 0, n
        low, high = sorted(float(v) for v in ends)
        first = int(np.clip(np.floor(low + 0.5), 0, n - 1))
        return first, int(np.clip(np.ceil(high + 0.5), first + 1, n))

    c0, c1 = span(plot.handles.get("x_range"), cols)
    r0, r1 = span(plot.handles.get("y_range"), rows)
    box_w = max(1, int(figure.frame_width or figure.width or cols))
    box_h = max(1, int(figure.frame_height or figure.height or rows))
    picked_rows = (np.linspace(r0, r1 - 1, box_h).round().astype(np.intp)
                   if r1 - r0 > box_h else slice(r0, r1))
    picked_cols = (np.linspace(c0, c1 - 1, box_w).round().astype(np.intp)
                   if c1 - c0 > box_w else slice(c0, c1))
    image = frame[picked_rows][:, picked_cols]
    return np.ascontiguousarray(image), (c0, r0, c1 - c0, r1 - r0)


def _finite_range(image: np.ndarray) -> tuple[float, float]:
    sample = _sample(image)
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


def clim_of(limits) -> tuple[float, float]:
    """``contrast`` limits as a HoloViews ``clim`` (``(nan, nan)`` when there are none)."""
    if limits is None:
        return (float("nan"), float("nan"))
    low, high = limits
    return (float(low), float(high))


def thumbnail(frame: np.ndarray | None, *, size: int = 260) -> hv.Image:
    """A small, static, rasterized image of one frame (the browser's "View Last Frame")."""
    return rasterize(frame_image(frame), dynamic=False, width=size, height=size).opts(
        cmap="gray", cnorm="eq_hist", tools=["hover"], hover_tooltips=HOVER, invert_yaxis=True,
        data_aspect=1, frame_width=size, xaxis=None, yaxis=None, toolbar=None,
    )


def histogram(frame: np.ndarray | None, *, bins: int = HIST_BINS, title: str = "Histogram",
              **opts) -> hv.Histogram:
    """The histogram of a frame's finite values (an even sample for frames over ~1 M pixels)."""
    if frame is None or frame.size == 0:
        counts, edges = np.zeros(1), np.array([0.0, 1.0])
    else:
        sample = _sample(frame)
        finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
        if finite.size == 0:
            counts, edges = np.zeros(1), np.array([0.0, 1.0])
        else:
            low, high = float(finite.min()), float(finite.max())
            if high <= low:
                high = low + 1.0
            counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    style = dict(title=title, xlabel="value", ylabel="pixels", color="#4c72b0", line_color=None,
                 responsive=True, height=200, tools=["hover"], toolbar=None, framewise=True,
                 axiswise=True)
    style.update(opts)
    return hv.Histogram((edges, counts), kdims=["value"], vdims=["pixels"]).opts(**style)


LIMITS_STYLE = dict(fill_color="#f0a020", fill_alpha=0.18, line_color="#c05800", line_alpha=1.0,
                    line_width=3, hover_fill_color="#f0a020", hover_fill_alpha=0.3,
                    hover_line_color="#e06000", hover_line_alpha=1.0)


def limits_histogram(hist: hv.Histogram, limits, on_drag: Callable[[float, float], None],
                     **opts) -> hv.Histogram:
    """``hist`` with the colour limits drawn on it as a shaded band whose edges can be dragged.

    Parameters
    ----------
    hist
        From :func:`histogram` (not modified: a clone is styled).
    limits : (low, high) or None
        The limits in use; the x range grows to include them.
    on_drag
        Called with ``(low, high)`` when the user drags an edge (or the whole band) in the
        browser; not called for changes made from Python.
    opts
        More plot options, e.g. an ``xformatter``: pass the same Bokeh model on every update
        (a new model per update makes Bokeh re-walk the whole document, ~50 ms a frame).

    Notes
    -----
    The band is a Bokeh ``BoxAnnotation(editable=True)`` added once per plot by a hook (Bokeh
    3.9 moves editable annotations by dragging without any tool; HoloViews has no editable
    span element). Later updates move the same annotation.
    """
    element = hist.clone()
    if limits is None:
        return element.opts(**opts)
    low, high = (float(v) for v in limits)
    edges = hist.edges if hasattr(hist, "edges") else hist.dimension_values(0)
    left, right = min(float(np.min(edges)), low), max(float(np.max(edges)), high)
    pad = 0.04 * (right - left or 1.0)
    return element.opts(xlim=(left - pad, right + pad), xticks=4,
                        hooks=[_limits_hook(low, high, on_drag)], **opts)


def _limits_hook(low: float, high: float, on_drag):
    # The hook stays in HoloViews' process-wide Store of custom options as long as an element
    # carrying it lives; holding ``on_drag`` (a view's bound method) strongly there would keep
    # the view, its plots and elements and so the session's state alive forever (issue 6).
    drag_ref = (weakref.WeakMethod(on_drag) if inspect.ismethod(on_drag)
                else (lambda: on_drag))

    def hook(plot, element) -> None:
        from bokeh.models import BoxAnnotation

        box = plot.handles.get("echo_limits")
        if box is None:
            box = BoxAnnotation(editable=True, movable="x", resizable="x", level="overlay",
                                name="echo-contrast-limits", **LIMITS_STYLE)
            state = {"quiet": False}

            def changed(attr, old, new) -> None:
                drag = drag_ref()
                if (drag is not None and not state["quiet"] and box.left is not None
                        and box.right is not None):
                    drag(float(box.left), float(box.right))

            box.on_change("left", changed)
            box.on_change("right", changed)
            plot.state.add_layout(box)
            plot.handles.update(echo_limits=box, echo_limits_state=state)
        state = plot.handles["echo_limits_state"]
        state["quiet"] = True  # our own update, not a drag
        try:
            if (box.left, box.right) != (low, high):
                box.update(left=low, right=high)
        finally:
            state["quiet"] = False

    return hook


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
