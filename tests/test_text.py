"""Text from data is shown as text: bidi and control characters neutralised, long names
shortened, HTML escaped, never Markdown (the helpers; the page is walked in
test_browser_xss.py)."""

from __future__ import annotations

import param
import pytest

from dashboard.text import BIDI_CONTROLS, labels, neutral, shorten, shown

PAYLOADS = [
    "b<script>document.title='pwned'</script>.h5",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "[x](javascript:alert(1))",
    "**bold**",
    "e\u202egnp.exe.h5",
    "a&amp;b \"quoted\" 'single'",
]


@pytest.mark.parametrize("char", list(BIDI_CONTROLS))
def test_every_bidi_control_becomes_a_visible_marker(char):
    text = neutral(f"a{char}b")
    assert char not in text and text == f"a[U+{ord(char):04X}]b"


def test_controls_are_marked_but_tab_and_newline_kept():
    assert neutral("a\x00b\x1b[31mc\x7f\x85") == "a[U+0000]b[U+001B][31mc[U+007F][U+0085]"
    assert neutral("line 1\n\tline 2") == "line 1\n\tline 2"
    assert neutral("e\u202egnp.exe.h5") == "e[U+202E]gnp.exe.h5"


@pytest.mark.parametrize("limit", [3, 10, 80, 120])
def test_long_names_are_shortened_in_the_middle_to_the_limit(limit):
    name = "run_" + "x" * 5000 + "_final.h5"
    short = shorten(name, limit)
    assert len(short) == limit and "…" in short and short[0] == "r"
    assert shorten("ab.h5", limit + 5) == "ab.h5"
    if limit >= 80:
        assert short.startswith("run_x") and short.endswith("_final.h5")
    assert shorten(name, 2) == "ru"


def test_shown_neutralises_then_shortens_and_takes_any_object():
    assert shown("e\u202egnp.exe.h5") == "e[U+202E]gnp.exe.h5"
    assert len(shown("k" * 5000)) == 120
    assert shown(42) == "42" and shown(b"x") == "b'x'"


def test_labels_are_text_and_unique_and_keep_the_values():
    long_a, long_b = "a" * 300 + "1.h5", "a" * 300 + "2.h5"
    values = ["e\u202egnp.exe.h5", "e[U+202E]gnp.exe.h5", long_a, long_b, "plain"]
    options = labels(values, limit=50)
    assert list(options.values()) == values
    assert len(set(options)) == len(values)
    assert all(len(label) <= 54 and "\u202e" not in label for label in options)
    assert options["e[U+202E]gnp.exe.h5"] == "e\u202egnp.exe.h5"
    assert options["e[U+202E]gnp.exe.h5 (2)"] == "e[U+202E]gnp.exe.h5"


# -- the page's side ------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
def test_plain_escapes_every_payload(payload):
    from dashboard.ui.text import plain

    out = plain(payload)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert "\u202e" not in out
    import html

    assert html.unescape(out) == neutral(payload)


def test_text_html_is_one_paragraph_with_an_optional_label():
    from dashboard.ui.text import MESSAGE_CHARS, text_html

    assert text_html("") == "" and text_html(None) == ""
    assert text_html("a\nb<c>") == "<p>a<br>b&lt;c&gt;</p>"
    assert text_html("x", label="Connected:") == "<p><strong>Connected:</strong> x</p>"
    long = text_html("Could not open s3://b/" + "k" * 5000 + ": not HDF5.")
    assert len(long) < MESSAGE_CHARS + 20 and long.endswith(": not HDF5.</p>")


class _State(param.Parameterized):
    status = param.String("")

    @param.depends("status")
    def shouting(self) -> str:
        return self.status.upper()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_status_line_shows_markup_as_text(payload):
    import panel as pn

    from dashboard.ui.widgets import status_line

    state = _State()
    line = status_line(state.param.status, css_class="echo-x")
    method = status_line(state.shouting, css_class="echo-y")
    state.status = f"Could not open {payload}."
    for pane in (line, method):
        assert isinstance(pane, pn.pane.HTML) and not isinstance(pane, pn.pane.Markdown)
        assert "<script" not in pane.object.lower() and "<img" not in pane.object.lower()
        assert "<svg" not in pane.object.lower() and "\u202e" not in pane.object
    assert "**bold**" in status_line("**bold**", css_class="z").object


def test_the_objects_table_shows_keys_as_plain_text():
    from datetime import datetime, timezone

    from dashboard.state.browser import BrowserState
    from dashboard.storage.s3 import ObjectInfo
    from dashboard.ui.browser import BrowseView, objects_frame

    now = datetime.now(timezone.utc)
    objects = [ObjectInfo(p, 1, now, "") for p in [*PAYLOADS, "k" * 5000 + ".h5"]]
    frame = objects_frame(objects)
    assert "e[U+202E]gnp.exe.h5" in list(frame["Key"])
    assert max(len(k) for k in frame["Key"]) <= 200
    from dashboard.ui.app import _plotting_backend

    _plotting_backend()
    view = BrowseView(BrowserState())
    assert all(view._table.formatters[c] == "plaintext" for c in frame.columns)
