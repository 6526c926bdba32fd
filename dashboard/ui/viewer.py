"""The Inspect and Frames steps: thin views over :class:`ViewerState`."""

from __future__ import annotations

import time

import panel as pn
import param
from panel.custom import JSComponent

from ..state.viewer import ViewerState
from . import plots
from .follow import ShownFrame
from .text import plain
from .values import value_panel
from .widgets import HIST_PLAYING_PERIOD, number_box, number_input, reporter, status_line

FRAME_BOX = (900, 660)  # the frame view's largest size in screen pixels (aspect kept)
NAME_CHARS = 200  # the most the tree shows of one group, dataset or attribute name
ATTR_CHARS = 300  # ... and of one attribute value

TREE_CSS = """
.echo-tree { font-family: var(--bs-font-monospace, monospace); font-size: 13px;
             overflow-wrap: anywhere; }
.echo-tree details { margin-left: 1.1em; }
.echo-tree summary { cursor: pointer; }
.echo-tree .kind { color: #777; }
.echo-tree .meta { color: #2a6099; }
.echo-tree .stack { background: #e8f2e0; border-radius: 3px; padding: 0 3px; }
.echo-tree table { margin: 2px 0 4px 1.6em; border-collapse: collapse; font-size: 12px; }
.echo-tree td { padding: 0 8px 0 0; vertical-align: top; }
"""


def tree_html(description: dict | None, current: str | None = None) -> str:
    """The ``describe()`` document as nested, collapsible HTML (every string from the file as
    text: :func:`~dashboard.ui.text.plain`; attribute values shortened to
    :data:`ATTR_CHARS`)."""
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
        name = plain(path.rsplit("/", 1)[-1] or "/", NAME_CHARS)
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
        label = f"<b>{name}</b> <span class='kind'>{plain(kind)}</span>"
        if meta:
            label += f" <span class='meta'>{plain(' · '.join(meta))}</span>"
        if path == current:
            label = f"<span class='stack'>{label} (shown)</span>"
        attrs = node.get("attrs") or {}
        rows = "".join(
            f"<tr><td>@{plain(k, NAME_CHARS)}</td><td>{plain(v, ATTR_CHARS)}</td></tr>"
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
    notes = description.get("notes") or []
    if description.get("truncated") and not notes:
        notes = [f"Only the first {description.get('node_limit')} entries are shown "
                 "(the file has more)."]
    text += "".join(f"<p><i>{plain(note)}</i></p>" for note in notes)  # what was cut, and why
    url = plain(description.get("url", ""))
    return f"<div class='echo-tree'><p><b>{url}</b></p>{text}</div>"


class InspectView(pn.viewable.Viewer):
    """The open file's tree and the choice of image stack."""

    def __init__(self, state: ViewerState, values=None, **params):
        super().__init__(**params)
        self.state = state
        self._layout = pn.Column(
            pn.widgets.Select.from_param(state.param.dataset, width=360),
            *([value_panel(values)] if values is not None else []),
            pn.pane.HTML(
                pn.bind(tree_html, state.param.tree, state.param.dataset),
                stylesheets=[TREE_CSS], sizing_mode="stretch_width",
                css_classes=["echo-tree-pane"],
            ),
            sizing_mode="stretch_width",
        )

    def __panel__(self):
        return self._layout


PLAY_LABEL, PAUSE_LABEL = "▶ Play", "❚❚ Pause"
CONTRAST_OPTIONS = {"Per frame": "percentile", "Locked (stack)": "locked", "Manual": "manual"}
DIRECTION_OPTIONS = {"▶ Forward": "forward", "◀ Backward": "backward"}

FRAMES_CSS = """
.echo-achieved-fps p, .echo-contrast-status p { margin: 4px 0; color: #444; font-size: 13px; }
"""


class PlaybackBridge(JSComponent):
    """The page's side of playback (an invisible 1-pixel element).

    * Play/Pause from the keyboard: ``k`` anywhere (but in a text box), or the space bar when
      no control has the focus; only while the Frames step is visible.
    * Paint reports: when :attr:`frame` changes (after the frame's image update was sent), the
      browser answers with :attr:`painted` on its next animation frame, so playback never
      sends frames faster than this page shows them (a slow link or a busy browser lowers the
      achieved rate instead of queueing; a hidden tab stops answering).
    """

    presses = param.Integer(default=0, doc="Bumped on each shortcut press.")
    frame = param.Integer(default=-1, doc="The frame just sent to the page.")
    painted = param.Integer(default=-1, doc="The frame the page has painted.")

    #: Panel holds a change from the page for 50 ms by default (coalescing typing); a paint
    #: report held that long delays the next frame of playback by as much.
    _debounce = 0

    _esm = """
    export function render({ model, el }) {
      const typing = (t) => t && (t.isContentEditable ||
        ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
      const handler = (event) => {
        if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
        if (!el.isConnected || el.getClientRects().length === 0) return;  // step hidden
        const target = event.composedPath()[0];
        const key = event.key;
        const space = key === " " && (target === document.body || target === document.documentElement);
        if (!(space || ((key === "k" || key === "K") && !typing(target)))) return;
        event.preventDefault();
        model.presses += 1;
      };
      document.addEventListener("keydown", handler);
      model.on("remove", () => document.removeEventListener("keydown", handler));
      model.on("frame", () => {
        const frame = model.frame;
        requestAnimationFrame(() => { model.painted = frame; });
      });
      el.style.display = "block";
      el.style.width = "1px";
      el.style.height = "1px";
    }
    """


#: Seconds the histogram and the other secondary views wait at most for the page to report
#: the new frame painted (they follow the paint report, so they never delay the frame).
SECONDARY_WAIT = 0.3


class FramesView(pn.viewable.Viewer):
    """The large frame, its histogram and the frame, playback and contrast controls.

    The frame is a :class:`~dashboard.ui.plots.FrameDisplay` (mapped on the server, drawn by
    the browser). ``tools`` (optional) extends the view: ``tools.attach(figure)`` draws on the
    frame's Bokeh figure (and listens to its taps and selections), and ``tools`` itself (a
    Panel viewable) is shown below the frame.
    """

    def __init__(self, state: ViewerState, *, tools=None, **params):
        super().__init__(**params)
        self.state = state
        self.tools = tools
        self._hist_cache: tuple[int, tuple] | None = None
        self._hist_drawn = 0.0
        self._secondary_due = False
        self._last_frame_at = 0.0
        # One display path for every frame change: the server maps, the browser draws.
        self.display = plots.FrameDisplay(box=FRAME_BOX)
        if tools is not None and hasattr(tools, "attach"):
            tools.attach(self.display.figure)
        state.param.watch(self._new_stack, ["stack"])
        self.display.playing = lambda: state.playing
        # Registered before the view's widgets and panes: the image goes to the page first.
        state.param.watch(self._frame_due, ["frame_serial", "contrast", "equalize"])
        state.param.watch(lambda event: self.display.set_palette(event.new), ["colormap"])
        state.param.watch(self._hist_due, ["frame_serial", "contrast", "playing"])
        self._new_stack()
        self._limits_shown = 0.0
        self.histogram = plots.LimitsHistogram(self._dragged)
        # What the frame controls show: the frame at once when stepping, a few times a second
        # while playing (see dashboard.ui.follow).
        self.shown = shown = ShownFrame(state)
        width = dict(width=110, margin=(5, 5))
        controls = pn.Row(
            pn.widgets.Button.from_param(state.param.first, **width),
            pn.widgets.Button.from_param(state.param.previous, **width),
            pn.widgets.IntSlider.from_param(shown.param.index, sizing_mode="stretch_width",
                                            label="Frame", css_classes=["echo-frame-slider"]),
            pn.widgets.Button.from_param(state.param.next, **width),
            pn.widgets.Button.from_param(state.param.last, **width),
            number_input(shown.param.index, report=reporter(state, "status"),
                         label="Frame number", width=120),
            sizing_mode="stretch_width",
        )
        self.play_button = pn.widgets.Button.from_param(
            state.param.toggle_play, label=PLAY_LABEL, color="success", width=110,
            margin=(18, 5, 5, 5), description="Play/Pause (keyboard: k, or space)",
            css_classes=["echo-play"])
        self.bridge = PlaybackBridge(width=1, height=1, margin=0)
        self.bridge.param.watch(lambda event: setattr(state, "toggle_play", True), "presses")
        self.bridge.param.watch(self._painted, "painted")
        state.param.watch(self._on_playing, "playing")
        # The paint request goes with the image (one message); the watcher is for a frame
        # that brings no image (after the plot's own watchers: the request follows the image).
        self.display.sent = lambda: self._sent(state.shown_index)
        state.param.watch(lambda event: self._sent(event.new), "shown_index", precedence=10)
        state.paced_by_page = True
        playback = pn.Row(
            self.play_button,
            pn.widgets.IntSlider.from_param(state.param.fps, width=170, margin=(5, 15),
                                            css_classes=["echo-fps"]),
            pn.widgets.RadioButtonGroup.from_param(
                state.param.direction, options=DIRECTION_OPTIONS, width=210,
                color="primary", variant="outline",
                margin=(18, 10, 5, 10), css_classes=["echo-direction"]),
            self._loop_slider(state),
            pn.pane.Markdown(pn.bind(self._rate_text, shown.param.rate,
                                     state.param.playing, state.param.fps),
                             css_classes=["echo-status", "echo-achieved-fps"], width=230,
                             margin=(22, 10, 0, 10), stylesheets=[FRAMES_CSS]),
            self.bridge,
            sizing_mode="stretch_width",
        )
        # The limits as two number boxes (typed; Enter or leaving the box applies them).
        box = dict(width=118, step=1.0, format="0[.][000]")
        said = reporter(state, "contrast_status")
        self.low_input = number_box(label="Low limit", report=said, **box)
        self.high_input = number_box(label="High limit", report=said, **box)
        self._showing_limits = False
        for widget in (self.low_input, self.high_input):
            widget.param.watch(self._typed_limits, "value")
        self._show_limits()
        contrast = pn.Column(
            pn.pane.Markdown("**Contrast**", margin=(0, 10)),
            pn.widgets.RadioButtonGroup.from_param(
                state.param.contrast_mode, options=CONTRAST_OPTIONS, sizing_mode="stretch_width",
                color="primary", variant="outline",
                css_classes=["echo-contrast-mode"]),
            pn.widgets.RangeSlider.from_param(
                state.param.percentiles, step=0.5, format="0[.]0", sizing_mode="stretch_width",
                css_classes=["echo-percentiles"],
                disabled=pn.bind(lambda mode: mode == "manual", state.param.contrast_mode)),
            pn.Row(self.low_input, self.high_input),
            pn.Column(pn.pane.Bokeh(self.histogram.figure, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width", height=230, css_classes=["echo-histogram"]),
            pn.pane.Markdown("Drag the edges of the orange band to set the limits.",
                             styles={"font-size": "12px", "color": "#666"}, margin=(0, 10)),
            status_line(state.param.contrast_status, css_class="echo-contrast-status",
                        stylesheets=[FRAMES_CSS]),
            sizing_mode="stretch_width",
        )
        side = pn.Column(
            contrast,
            pn.Row(
                pn.widgets.Checkbox.from_param(state.param.equalize, label="Equalize (histogram)",
                                               margin=(24, 10, 5, 10)),
                pn.widgets.Select.from_param(state.param.colormap, width=130),
            ),
            status_line(shown.param.label, css_class="echo-frame-label"),
            width=320,
        )
        self._layout = pn.Column(
            pn.Row(
                pn.widgets.Button.from_param(state.param.load, color="primary", width=200),
                pn.widgets.Button.from_param(state.param.reload, color="warning", width=100,
                                             visible=state.param.newer,
                                             css_classes=["echo-reload"]),
                pn.indicators.LoadingSpinner(value=True, visible=state.param.loading, size=24,
                                             width=24, height=24, margin=(12, 5)),
                status_line(state.param.status, css_class="echo-viewer-status",
                            sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            ),
            controls,
            playback,
            pn.Row(
                # One Bokeh figure for the life of the view: new stacks reset its axes, new
                # frames replace its pixels, so the zoom survives frames, colormap, contrast.
                pn.Column(pn.pane.Bokeh(self.display.figure), css_classes=["echo-frame"]),
                pn.pane.Bokeh(self.display.colorbar_figure, margin=(5, 0)),
                side,
                sizing_mode="stretch_width",
            ),
            *([tools] if tools is not None else []),
            sizing_mode="stretch_width",
        )

    def _new_stack(self, *events) -> None:
        state = self.state
        self.display.reset(state.frame_shape, plots.fit_box(state.frame_shape, FRAME_BOX))
        self._frame_due()

    def _frame_due(self, *events) -> None:
        # The frame first, at once; everything else follows it (see _hist_due).
        state = self.state
        now = time.monotonic()
        moving = state.playing or now - self._last_frame_at < self.display.settle_s
        if any(event.name == "frame_serial" for event in events):
            self._last_frame_at = now
        else:
            moving = state.playing  # a contrast/equalize change of a still frame: exact
        self.display.show(state.frame, state.contrast, equalize=state.equalize, moving=moving)

    def _hist_due(self, *events) -> None:
        now = time.monotonic()
        names = {event.name for event in events}
        if (self.state.playing and names == {"frame_serial"} | (names & {"contrast"})
                and now - self._hist_drawn < HIST_PLAYING_PERIOD):
            return  # playing: skip this frame's histogram (a later one comes soon)
        self._hist_drawn = now
        # After this frame has been painted, coalesced: the histogram and the tools' plots
        # never delay the frame.
        if self._secondary_due:
            return
        self._secondary_due = True
        # When the page reports the frame painted (see _painted), or at the latest after
        # SECONDARY_WAIT (a change of the limits alone brings no paint report).
        doc = self.display.figure.document
        if doc is None or doc.session_context is None:
            self._redraw_secondary()
        else:
            doc.add_timeout_callback(self._redraw_secondary, int(1000 * SECONDARY_WAIT))

    def _redraw_secondary(self) -> None:
        if not self._secondary_due:
            return  # done already (on the paint report)
        self._secondary_due = False
        state = self.state
        counts = edges = None
        if self._hist_cache is None or self._hist_cache[0] != state.frame_serial:
            counts, edges = plots.histogram_counts(state.frame)
            self._hist_cache = (state.frame_serial, (counts, edges))
        self.histogram.update(counts, edges, state.contrast)
        self._show_limits()
        follow = getattr(self.tools, "follow_frame", None)
        if follow is not None:
            follow()

    def _dragged(self, low: float, high: float) -> None:
        # Dragging the band on the histogram: manual limits.
        self.state.set_limits(low, high)

    # -- limits as numbers --------------------------------------------------------------------

    def _show_limits(self, *events) -> None:
        now = time.monotonic()
        if self.state.playing and events and now - self._limits_shown < HIST_PLAYING_PERIOD:
            return  # playing: the boxes follow at most twice a second (and on Pause)
        self._limits_shown = now
        limits = self.state.contrast
        self._showing_limits = True
        try:
            low, high = limits if limits is not None else (None, None)
            step = max((high - low) / 100, 1e-6) if limits is not None else 1.0
            step = float(f"{step:.1g}")
            for widget, value in ((self.low_input, low), (self.high_input, high)):
                widget.param.update(value=None if value is None else round(value, 3), step=step)
        finally:
            self._showing_limits = False

    def _typed_limits(self, event) -> None:
        if self._showing_limits:
            return
        message = self.state.set_limits(self.low_input.value, self.high_input.value)
        if message:
            self._show_limits()  # back to the limits in use; the message says why

    # -- playback -----------------------------------------------------------------------------

    def _sent(self, index: int) -> None:
        self.bridge.frame = index

    def _painted(self, event) -> None:
        self.state.painted_index = event.new
        if not self._secondary_due:
            return
        doc = self.display.figure.document
        if doc is None or doc.session_context is None:
            self._redraw_secondary()
        else:
            # On the next tick, under the document's lock: changing Bokeh models inside the
            # callback of a change the page sent failed in Bokeh ("_pending_writes should be
            # non-None ...") and the page lost the Next presses that came with it.
            doc.add_next_tick_callback(self._redraw_secondary)

    def _on_playing(self, event) -> None:
        self.play_button.param.update(label=PAUSE_LABEL if event.new else PLAY_LABEL,
                                      color="warning" if event.new else "success")
        if not event.new:
            self._show_limits()
            self.display.settle()  # the exact rendering of the frame paused on

    @staticmethod
    def _loop_slider(state: ViewerState) -> pn.widgets.IntRangeSlider:
        """The loop range; disabled below two frames, where its bounds are (0, 0), shown as
        (0, 1): Bokeh refuses a slider whose start equals its end (error E-1021 in the log of
        every new session)."""
        slider = pn.widgets.IntRangeSlider.from_param(
            state.param.loop_range, sizing_mode="stretch_width", css_classes=["echo-loop-range"],
            disabled=pn.bind(lambda n: n < 2, state.param.n_frames))

        def keep_apart(*_events) -> None:
            if slider.end <= slider.start:
                slider.end = slider.start + 1

        slider.param.watch(keep_apart, ["start", "end"])
        keep_apart()
        return slider

    @staticmethod
    def _rate_text(achieved: float, playing: bool, fps: int) -> str:
        if not playing:
            return "Paused" if achieved == 0 else f"Paused (last: {achieved:.1f} frames/s)"
        if achieved == 0:
            return f"Playing at up to {fps} frames/s…"
        return f"Achieved **{achieved:.1f}** of {fps} frames/s"

    def __panel__(self):
        return self._layout
