"""The one way text reaches the page: :func:`plain`.

Every string that comes from a bucket, a key, a file, an error, a link or a message built from
those is shown as text: never as Markdown (Panel's Markdown pane renders links, raw HTML and
``javascript:`` targets) and never as HTML. :func:`plain` neutralises bidi and control
characters and shortens it (:mod:`dashboard.text`), then escapes it for an HTML pane;
:func:`text_html` makes a paragraph of it for the status lines
(:func:`~dashboard.ui.widgets.status_line`). Option labels of choices are made in the state
(:func:`dashboard.text.labels`); Bokeh shows them, and plot titles, as text.
"""

from __future__ import annotations

import html

from ..text import shown

#: The most a status line shows of one message (a message holding a 5000-character key is
#: shortened in the middle, so that its end, usually the reason, stays).
MESSAGE_CHARS = 1000


def plain(text, limit: int = MESSAGE_CHARS) -> str:
    """``text`` (any object: ``str()`` of it) as HTML that shows exactly that text.

    Bidi and control characters become ``[U+XXXX]``, more than ``limit`` characters are
    shortened in the middle, and ``& < > " '`` are escaped.
    """
    return html.escape(shown("" if text is None else text, limit), quote=True)


def text_html(text, *, label: str | None = None) -> str:
    """A ``<p>`` of :func:`plain` text (newlines kept), after a bold ``label`` if given;
    ``""`` for empty text (an empty status line takes no room)."""
    if text is None or str(text) == "":
        return ""
    body = plain(text).replace("\n", "<br>")
    if label:
        body = f"<strong>{html.escape(label)}</strong> {body}"
    return f"<p>{body}</p>"
