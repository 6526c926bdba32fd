"""The sinogram card of the Frames step: a thin view over
:class:`~dashboard.state.sinogram.SinogramState`; a click on the image shows that frame."""

from __future__ import annotations

import numpy as np
import panel as pn

from ..state.sinogram import SinogramState
from .widgets import built_when, number_input, reporter, status_line


def sinogram_card(state: SinogramState) -> pn.Card:
    """Row or column, its number, Compute/Cancel, progress, the cost forecast, the image."""
    return pn.Card(
        pn.Row(
            pn.widgets.Select.from_param(state.param.axis, width=150, margin=(5, 5)),
            number_input(state.param.index, report=reporter(state, "status"), width=160,
                         margin=(5, 5)),
        ),
        pn.pane.Markdown("Frames: the ROI card's *First frame*, *Last frame* and *Step*.",
                         styles={"font-size": "12px", "color": "#555"}, margin=(0, 10)),
        pn.Row(
            pn.widgets.Button.from_param(state.param.compute, color="primary", width=190,
                                         margin=(5, 5)),
            pn.widgets.Button.from_param(state.param.cancel, width=90, margin=(5, 5),
                                         disabled=state.param.running.rx.not_()),
        ),
        pn.indicators.Progress(value=state.param.progress, max=100, bar_color="primary",
                               sizing_mode="stretch_width", height=14, margin=(4, 10),
                               css_classes=["echo-sinogram-progress"]),
        status_line(state.param.status, css_class="echo-sinogram-status",
                    error=state.param.failed),
        built_when(state.param.image, lambda image: _image_pane(state, image),
                   sizing_mode="stretch_width"),
        title="Sinogram / kymograph", collapsible=False, sizing_mode="stretch_width",
        css_classes=["echo-sinogram"],
    )


def _image_pane(state: SinogramState, image):
    """The image (frames up the y axis, the first at the bottom) in a plain Bokeh figure whose
    taps go to :meth:`SinogramState.go_to`, as the frame view's do."""
    from bokeh.events import Tap
    from bokeh.models import LinearColorMapper
    from bokeh.plotting import figure

    if image is None or state.frames is None:
        return None
    frames = state.frames
    first, last, step = frames[0], frames[-1], frames.step
    values = np.asarray(image, dtype=np.float32)
    low, high = (np.nanpercentile(values, [1, 99]) if values.size else (0.0, 1.0))
    if not high > low:
        high = low + 1
    length = values.shape[1]
    fig = figure(height=320, sizing_mode="stretch_width", title=state.line().label().capitalize(),
                 x_range=(0, length), y_range=(first - step / 2, last + step / 2),
                 tools="pan,wheel_zoom,reset,tap", toolbar_location="right",
                 x_axis_label="column" if state.axis == "row" else "row",
                 y_axis_label="frame", name="echo-sinogram-figure")
    mapper = LinearColorMapper(palette="Greys256", low=float(low), high=float(high))
    # Row k of the image is frame first + k·step: drawn from the bottom up.
    fig.image(image=[values], x=0, y=first - step / 2, dw=length, dh=(last - first) + step,
              color_mapper=mapper)
    fig.on_event(Tap, lambda event: event.y is not None and state.go_to(event.y))
    return pn.Column(pn.pane.Bokeh(fig, sizing_mode="stretch_width"),
                     sizing_mode="stretch_width", css_classes=["echo-sinogram-image"])
