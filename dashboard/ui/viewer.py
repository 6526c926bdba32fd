"""The Inspect and Frames steps: thin views over :class:`ViewerState`."""

from __future__ import annotations

import html

import holoviews as hv
import panel as pn

from ..state.viewer import ViewerState
from . import plots
from .browser import status_line

FRAME_BOX = (900, 660)  # the frame view's largest size in screen pixels (aspect kept)

TREE_CSS = """
.echo-tree { font-family: var(--bs-font-monospace, monospace); font-size: 13px; }
.echo-tree details { margin-left: 1.1em; }
.echo-tree summary { cursor: pointer; }
.echo-tree .kind { color: #777; }
.echo-tree .meta { color: #2a6099; }
.echo-tree .stack { background: #e8f2e0; border-radius: 3px; padding: 0 3px; }
.echo-tree table { margin: 2px 0 4px 1.6em; border-collapse: collapse; font-size: 12px; }
.echo-tree td { padding: 0 8px 0 0; vertical-align: top; }
"""


def tree_html(description: dict | None, current: str | None = None) -> str:
    """The ``describe()`` document as nested, collapsible HTML (every string escaped)."""
    if not description:
        return ("<p>No file loaded yet: select an .h5 file in Browse, then press "
                "<b>Load Selected H5 File</b> in Frames.</p>")
    nodes = description.get("nodes", [])
    children: dict[str, list[dict]] = {}
    for node in nodes:
        path = node["path"]
        if path == "/":
            continue
        parent = path.rsplit("/", 1)[0] or "/"
        children.setdefault(parent, []).append(node)

    def render(node: dict, depth: int) -> str:
        path = node["path"]
        name = html.escape(path.rsplit("/", 1)[-1] or "/")
        kind = node.get("kind", "")
        meta = []
        if node.get("shape") is not None:
            meta.append("×".join(str(n) for n in node["shape"]) or "scalar")
        if node.get("dtype"):
            meta.append(str(node["dtype"]))
        if node.get("chunks"):
            meta.append("chunks " + "×".join(str(n) for n in node["chunks"]))
        filters = [f.get("name") or str(f.get("id")) for f in node.get("filters") or []]
        if filters:
            meta.append("filters " + ", ".join(str(f) for f in filters))
        if node.get("target"):
            meta.append("→ " + str(node["target"]))
        label = f"<b>{name}</b> <span class='kind'>{html.escape(kind)}</span>"
        if meta:
            label += f" <span class='meta'>{html.escape(' · '.join(meta))}</span>"
        if path == current:
            label = f"<span class='stack'>{label} (shown)</span>"
        attrs = node.get("attrs") or {}
        rows = "".join(
            f"<tr><td>@{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in attrs.items()
        )
        body = f"<table>{rows}</table>" if rows else ""
        body += "".join(render(child, depth + 1) for child in children.get(path, []))
        if not body:
            return f"<div style='margin-left:1.1em'>{label}</div>"
        on_path = bool(current) and (current == path or current.startswith(path.rstrip("/") + "/"))
        opened = " open" if depth < 1 or on_path else ""
        return f"<details{opened}><summary>{label}</summary>{body}</details>"

    root = next((n for n in nodes if n["path"] == "/"), {"path": "/", "kind": "group"})
    text = render(root, 0)
    if description.get("truncated"):
        text += (f"<p><i>Only the first {description.get('node_limit')} entries are shown "
                 "(the file has more).</i></p>")
    url = html.escape(str(description.get("url", "")))
    return f"<div class='echo-tree'><p><b>{url}</b></p>{text}</div>"


class InspectView(pn.viewable.Viewer):
    """The open file's tree and the choice of image stack."""

    def __init__(self, state: ViewerState, **params):
        super().__init__(**params)
        self.state = state
        self._layout = pn.Column(
            pn.widgets.Select.from_param(state.param.dataset, width=360),
            pn.pane.HTML(
                pn.bind(tree_html, state.param.tree, state.param.dataset),
                stylesheets=[TREE_CSS], sizing_mode="stretch_width",
                css_classes=["echo-tree-pane"],
            ),
            sizing_mode="stretch_width",
        )

    def __panel__(self):
        return self._layout


class FramesView(pn.viewable.Viewer):
    """The large rasterized frame, its histogram and the frame controls.

    ``tools`` (optional) extends the view: ``tools.overlay()`` returns HoloViews elements (with
    their drawing streams) laid over every frame plot, and ``tools`` itself (a Panel viewable)
    is shown below the frame.
    """

    def __init__(self, state: ViewerState, *, tools=None, **params):
        super().__init__(**params)
        self.state = state
        self.tools = tools
        hist = hv.DynamicMap(pn.bind(self._histogram, state.param.frame_serial))
        width = dict(width=110, margin=(5, 5))
        controls = pn.Row(
            pn.widgets.Button.from_param(state.param.first, **width),
            pn.widgets.Button.from_param(state.param.previous, **width),
            pn.widgets.IntSlider.from_param(state.param.index, sizing_mode="stretch_width",
                                            label="Frame", css_classes=["echo-frame-slider"]),
            pn.widgets.Button.from_param(state.param.next, **width),
            pn.widgets.Button.from_param(state.param.last, **width),
            pn.widgets.IntInput.from_param(state.param.index, label="Frame number", width=120),
            sizing_mode="stretch_width",
        )
        side = pn.Column(
            pn.widgets.Checkbox.from_param(state.param.equalize, label="Equalize (histogram)"),
            pn.widgets.Select.from_param(state.param.colormap, width=200),
            pn.pane.HoloViews(hist, sizing_mode="stretch_width", height=230),
            status_line(state.frame_label, css_class="echo-frame-label"),
            width=320,
        )
        self._layout = pn.Column(
            pn.Row(
                pn.widgets.Button.from_param(state.param.load, color="primary", width=200),
                pn.indicators.LoadingSpinner(value=True, visible=state.param.loading, size=24,
                                             width=24, height=24, margin=(12, 5)),
                status_line(state.param.status, css_class="echo-viewer-status",
                            sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            ),
            controls,
            pn.Row(
                # A new plot per opened stack (fresh axes for its shape) and per colour
                # normalisation; within those one DynamicMap serves every frame and the zoom
                # survives frame and colormap changes.
                pn.pane.HoloViews(pn.bind(self._frame_plot, state.param.stack,
                                          state.param.equalize),
                                  css_classes=["echo-frame"]),
                side,
                sizing_mode="stretch_width",
            ),
            *([tools] if tools is not None else []),
            sizing_mode="stretch_width",
        )

    def _frame_plot(self, stack, equalize: bool):
        state = self.state
        width, height = plots.fit_box(state.frame_shape, FRAME_BOX)
        plot = plots.rasterized_frames(
            pn.bind(self._image, state.param.frame_serial),
            equalize=equalize, cmap=state.param.colormap,
            responsive=False, frame_width=width, frame_height=height, min_height=None,
            aspect=None, data_aspect=None,  # the box already has the frame's shape
        )
        overlay = self.tools.overlay() if self.tools is not None else None
        return plot if overlay is None else plot * overlay

    def _image(self, serial: int) -> hv.Image:
        # Before the first frame arrives, a blank of the stack's shape sets the axes.
        return plots.frame_image(self.state.frame, shape=self.state.frame_shape)

    def _histogram(self, serial: int) -> hv.Histogram:
        return plots.histogram(self.state.frame, title="Histogram of this frame")

    def __panel__(self):
        return self._layout
