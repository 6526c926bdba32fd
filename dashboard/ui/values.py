"""Inspect's values: the dataset chosen, its value as text, a line plot of 1-D numbers (against
their NeXus axis when there is one) and a table of small 2-D or compound data."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from ..state.inspect import DatasetValues
from ..text import neutral, shown
from .text import plain
from .widgets import built_when, status_line

#: Characters of a value's text shown at most (a long string is shortened in the middle).
TEXT_LIMIT = 5000

VALUE_CSS = """
pre { white-space: pre-wrap; word-break: break-word; max-height: 14em; overflow: auto;
  margin: 4px 0; font-size: 13px; }
"""


def value_panel(state: DatasetValues):
    """The choice of dataset, a status line and the value of the one chosen."""
    return pn.Column(
        pn.widgets.Select.from_param(state.param.path, width=420, css_classes=["echo-value-of"]),
        status_line(state.param.status, css_class="echo-value-status", error=state.param.failed),
        built_when(state.param.value, _value_view, sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )


def _value_view(value):
    if value is None:
        return None
    what = f"{shown(value.path)}: {value.dtype or 'no data'}"
    if value.shape:
        what += ", shape " + "×".join(map(str, value.shape))
    if value.units:
        what += f", units {shown(value.units)}"
    parts = [_text(what, "echo-value-head"), _text(value.text(limit=40), "echo-value-text")]
    if value.kind == "array" and np.asarray(value.data).dtype.kind in "uifb":
        parts.append(pn.pane.HoloViews(_curve(value), sizing_mode="stretch_width", height=280,
                                       css_classes=["echo-value-plot"]))
    elif value.kind in ("table", "records"):
        table = _table(value)
        parts.append(pn.widgets.Tabulator(
            table, disabled=True, show_index=value.kind == "table", page_size=20,
            pagination="local", sizing_mode="stretch_width", css_classes=["echo-value-table"],
            formatters={c: "plaintext" for c in table.columns}, theme="bootstrap5"))
    return pn.Column(*parts, sizing_mode="stretch_width")


def _text(text: str, css_class: str) -> pn.pane.HTML:
    """Data shown as text (:func:`~dashboard.ui.text.plain`: escaped, control and bidi
    characters made visible)."""
    return pn.pane.HTML(f"<pre>{plain(text, TEXT_LIMIT)}</pre>", stylesheets=[VALUE_CSS],
                        css_classes=[css_class], sizing_mode="stretch_width", margin=(0, 10))


def _curve(value) -> hv.Curve:
    data = np.asarray(value.data)
    name, x = value.axis if value.axis is not None else ("index", np.arange(data.size))
    label = value.path.rsplit("/", 1)[-1] + (f" ({value.units})" if value.units else "")
    return hv.Curve((np.asarray(x), data), kdims=[neutral(str(name))],
                    vdims=[neutral(label)]).opts(responsive=True, height=260, tools=["hover"],
                                                 line_width=1.5, title="")


def _table(value) -> pd.DataFrame:
    if value.kind == "records":
        frame = pd.DataFrame.from_records(value.data)
    else:
        frame = pd.DataFrame(np.asarray(value.data))
    frame.columns = [neutral(str(c)) for c in frame.columns]
    return frame.astype(object).map(lambda v: neutral(str(v)))
