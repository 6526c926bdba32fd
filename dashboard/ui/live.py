"""The Browse step's Follow row: a thin view over :class:`~dashboard.state.live.LiveFollow`,
and the page's own word on whether it is hidden (a background tab pauses following)."""

from __future__ import annotations

import panel as pn
import param
from panel.custom import JSComponent

from ..state.live import LiveFollow
from .widgets import number_input, reporter, status_line


class PageVisibility(JSComponent):
    """``hidden`` follows ``document.hidden`` (the Page Visibility API): true while the tab
    is in the background or the window minimised."""

    hidden = param.Boolean(default=False)

    _esm = """
    export function render({ model }) {
      const update = () => {
        if (model.hidden !== document.hidden) { model.hidden = document.hidden }
      }
      document.addEventListener("visibilitychange", update)
      model.on("remove", () => document.removeEventListener("visibilitychange", update))
      update()
      return document.createElement("span")
    }
    """


def follow_row(live: LiveFollow):
    """Follow, its interval, Open the newest HDF5 file, and what following has seen."""
    p = live.param
    visibility = PageVisibility(width=0, height=0, margin=0)
    visibility.param.watch(lambda event: setattr(live, "hidden", event.new), "hidden")
    return pn.Column(
        pn.Row(
            pn.widgets.Checkbox.from_param(p.follow, margin=(14, 10, 5, 10),
                                           css_classes=["echo-follow"]),
            number_input(p.interval, report=reporter(live, "status"), step=1.0, width=130),
            pn.widgets.Checkbox.from_param(p.open_newest, margin=(14, 10, 5, 10)),
            visibility,
            sizing_mode="stretch_width",
        ),
        status_line(p.status, css_class="echo-follow-status", error=p.failed),
        sizing_mode="stretch_width",
    )
