"""ShownFrame (ui/follow.py): what the frame controls show, and when, in a served page."""

from __future__ import annotations

import param
from panel.io.state import set_curdoc
from served_doc import ServedDoc

from dashboard.ui.follow import ShownFrame


class Viewer(param.Parameterized):
    """The parameters of ViewerState that ShownFrame follows."""

    index = param.Integer(default=0, bounds=(0, 9))
    shown_index = param.Integer(default=0)
    painted_index = param.Integer(default=0)
    n_frames = param.Integer(default=10)
    achieved_fps = param.Number(default=0.0)
    playing = param.Boolean(default=False)
    paced_by_page = True

    def frame_label(self) -> str:
        return f"Frame {self.shown_index} of {self.n_frames - 1}"


def shown_frame(doc):
    viewer = Viewer()
    with set_curdoc(doc):
        shown = ShownFrame(viewer)
    order: list[str] = []
    shown.param.watch(lambda e: order.append(e.name), ["index", "label"])
    return viewer, shown, order


def step(viewer, index: int) -> None:
    viewer.index = index
    viewer.shown_index = index


def test_the_number_box_and_slider_are_set_before_the_label():
    """A test, or a user, reading "Frame i of n" may type into the box at once: the box's own
    update must not arrive after the label and overwrite what was typed."""
    doc = ServedDoc()
    viewer, shown, order = shown_frame(doc)
    step(viewer, 3)
    assert (shown.index, shown.label) == (3, "Frame 3 of 9")
    assert order == ["index", "label"]


def test_while_playing_the_controls_follow_at_most_every_period():
    doc = ServedDoc()
    viewer, shown, _ = shown_frame(doc)
    viewer.playing = True
    shown._last = 1e12  # just copied: the next copy waits for PLAYING_PERIOD
    step(viewer, 5)
    assert shown.label == "Frame 0 of 9" and len(doc.due) == 1
    doc.run()
    assert (shown.index, shown.label) == (5, "Frame 5 of 9")


def test_pause_shows_the_frame_paused_on_at_once():
    doc = ServedDoc()
    viewer, shown, _ = shown_frame(doc)
    viewer.playing = True
    step(viewer, 7)
    viewer.playing = False
    assert (shown.index, shown.label) == (7, "Frame 7 of 9")


def test_outside_a_served_page_the_controls_follow_at_once():
    viewer, shown, _ = shown_frame(None)
    step(viewer, 2)
    assert (shown.index, shown.label) == (2, "Frame 2 of 9")
