"""Status lines: an error looks like one (class and style), and stops looking so when replaced;
Preview and Batch are greyed out while they cannot run."""

from __future__ import annotations

import param

from dashboard.ui.widgets import ERROR_STYLE, NORMAL_STYLE, status_line


class _State(param.Parameterized):
    status = param.String("Ready.")
    failed = param.Boolean(False)


def test_an_error_status_line_has_the_error_class_and_style_until_replaced():
    state = _State()
    line = status_line(state.param.status, css_class="echo-x", error=state.param.failed)
    assert "echo-error" not in line.css_classes and line.styles == NORMAL_STYLE
    state.param.update(status="Could not open it.", failed=True)
    assert line.css_classes == ["echo-status", "echo-x", "echo-error"]
    assert line.styles == ERROR_STYLE and line.object == "<p>Could not open it.</p>"
    state.param.update(status="Done.", failed=False)
    assert "echo-error" not in line.css_classes and line.styles == NORMAL_STYLE


def test_preview_and_batch_buttons_follow_the_state():
    import panel as pn

    from dashboard.config import Settings
    from dashboard.state.session import Session
    from dashboard.ui.processor import ProcessView

    session = Session(Settings(), connect=False)
    state = session.processor
    view = ProcessView(state)
    buttons = {b.name: b for b in view._layout.select(pn.widgets.Button)}
    assert buttons["Preview Last Frame"].disabled and buttons["Batch Process & Save"].disabled
    status = [m for m in view._layout.select(pn.pane.HTML)
              if "echo-process-status" in m.css_classes][0]
    state.param.update(status="Could not run the batch: disk full.", failed=True)
    assert "echo-error" in status.css_classes
    session.close()
