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


def test_stepping_the_controls_follow_the_paint_report_number_before_label():
    doc = ServedDoc()
    viewer, shown, order = shown_frame(doc)
    step(viewer, 3)
    # The image goes to the page alone: the controls wait for its paint report ...
    assert (shown.index, shown.label) == (0, "Frame 0 of 9")
    viewer.painted_index = 3
    assert (shown.index, shown.label) == (3, "Frame 3 of 9")
    # ... the number box and slider first, "Frame i of n" last (a test, or a user, reading
    # the label may type into the box at once).
    assert order == ["index", "label"]
    doc.run()  # the fallback timer that was armed finds nothing new
    assert order == ["index", "label"]


def test_a_page_that_does_not_report_its_paint_gets_the_controls_after_a_wait():
    doc = ServedDoc()
    viewer, shown, _ = shown_frame(doc)
    step(viewer, 5)
    assert shown.label == "Frame 0 of 9" and len(doc.due) == 1
    doc.run()  # PAINT_WAIT later
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
