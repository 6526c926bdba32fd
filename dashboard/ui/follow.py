"""The frame controls follow the frame, at a reader's pace while playing.

Every control that shows the frame number (the slider, the number box, "Frame i of n", the
achieved rate) costs the page a restyle and a layout when it changes: at 20 frames/s that was
more of the browser's time than drawing the frames. :class:`ShownFrame` is what those controls
show. Stepping, it follows the viewer at once; playing, at most every
:data:`PLAYING_PERIOD` seconds, always ending on the frame shown. What the user does with a
control goes to the viewer at once.
"""

from __future__ import annotations

import time

import panel as pn
import param
from panel.io.document import unlocked

from ..state.viewer import ViewerState

#: While playing, the controls show the frame at most this often (seconds).
PLAYING_PERIOD = 0.25


class ShownFrame(param.Parameterized):
    """The frame number, label and playback rate as the controls show them.

    ``index`` carries the viewer's bounds; setting it (a control) sets the viewer's.

    Parameters
    ----------
    state : ViewerState
        The viewer the controls belong to.
    """

    index = param.Integer(default=0, bounds=(0, 0), doc="The frame the controls show.")
    label = param.String(default="", doc="'Frame i of n' (or what is being read).")
    rate = param.Number(default=0.0, doc="The achieved frames per second, as shown.")

    def __init__(self, state: ViewerState, **params):
        super().__init__(**params)
        self.state = state
        self._doc = pn.state.curdoc
        self._due = False
        self._last = 0.0
        self._copying = False
        self.param.index.bounds = state.param.index.bounds
        state.param.watch(self._bounds, "index", what="bounds")
        # After the frame's own watchers (default precedence 0): the image goes to the page
        # before the controls that name it.
        state.param.watch(self._changed, ["index", "shown_index", "n_frames", "achieved_fps",
                                          "playing"], precedence=5)
        self.param.watch(self._chosen, "index")
        self._copy()

    def _bounds(self, event) -> None:
        self.param.index.bounds = event.new

    def _chosen(self, event) -> None:
        if not self._copying:
            self.state.index = event.new

    def _changed(self, *events) -> None:
        doc = self._doc
        if not self.state.playing or doc is None or doc.session_context is None:
            self._copy()
            return
        wait = self._last + PLAYING_PERIOD - time.monotonic()
        if wait <= 0:
            self._copy()
        elif not self._due:
            self._due = True
            doc.add_timeout_callback(self._copy, int(1000 * wait) + 1)

    def _copy(self) -> None:
        self._due = False
        self._last = time.monotonic()
        state = self.state
        self._copying = True
        try:
            # One websocket message for all the controls (each would be a message of its own,
            # and Bokeh walks the whole document for every message). In it, the number comes
            # first and "Frame i of n" last: once the label names a frame, the slider and the
            # number box show it too (a number typed after reading the label is not
            # overwritten by the box's own update arriving late).
            with unlocked():
                self.index = state.index
                self.param.update(label=state.frame_label(), rate=state.achieved_fps)
        finally:
            self._copying = False
