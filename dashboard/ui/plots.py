"""Pure HoloViews builders: frame images, histograms, the five-panel preview.

Images are ``hv.Image`` in pixel coordinates (x = column, y = row, row 0 at the top) so that the
hover shows the pixel a scientist would name. Every image goes through Datashader's
``rasterize``: only about the viewport's pixels cross the websocket, and zoom survives updates.
"""

from __future__ import annotations

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
    style.update(opts)
    return rasterize(dmap).opts(**style).apply.opts(cmap=cmap)


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
    def hook(plot, element) -> None:
        from bokeh.models import BoxAnnotation

        box = plot.handles.get("echo_limits")
        if box is None:
            box = BoxAnnotation(editable=True, movable="x", resizable="x", level="overlay",
                                name="echo-contrast-limits", **LIMITS_STYLE)
            state = {"quiet": False}

            def changed(attr, old, new) -> None:
                if not state["quiet"] and box.left is not None and box.right is not None:
                    on_drag(float(box.left), float(box.right))

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
