"""Deep links on the page: the address bar follows the view, and a "Copy link" button.

The state side (:mod:`dashboard.state.links`, :meth:`Session.link` / :meth:`Session.restore`)
knows what a link holds; this module only moves it in and out of the browser:

* in: the query string of the request that opened the page (``pn.state.session_args``) goes to
  :meth:`Session.restore` once, when the page is built;
* out: :class:`AddressBar`, a small ``JSComponent``, receives the current query string and
  writes it into the address bar with ``history.replaceState`` — at most every
  :data:`THROTTLE_MS`, so scrubbing or playing frames neither floods the history (Back still
  leaves the page) nor trips the browser's limit on history calls;
* "Copy link": ``navigator.clipboard.writeText`` where the page is a secure context (https or
  localhost); elsewhere the link is selected in its text field for Ctrl+C.

Panel's own ``pn.state.location.sync``/``update_query`` are not used: they add a history entry
(``pushState``) for every change and parse values by guesswork (a key ``0001`` would come back
as the number 1), while a link must be checked field by field (see
:func:`~dashboard.state.links.decode_query`).
"""

from __future__ import annotations

import panel as pn
import param
from panel.custom import JSComponent

from ..state import links
from ..state.session import Session
from .widgets import status_line

THROTTLE_MS = 500

#: The link follows the view at most this often: a step or a played frame changes the frame
#: number in it, and working the link out and sending it to the page cost as much as the frame
#: itself; the address bar is throttled further in the page (:data:`THROTTLE_MS`).
FOLLOW_MS = 250

_ESM = """
export function render({ model, el }) {
  const row = document.createElement("div");
  row.className = "echo-link-row";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "echo-copy-link";
  button.textContent = "Copy link";
  const text = document.createElement("input");
  text.type = "text";
  text.readOnly = true;
  text.className = "echo-link-text";
  text.setAttribute("aria-label", "Link to this view");
  const note = document.createElement("div");
  note.className = "echo-copy-note";
  note.setAttribute("role", "status");
  row.append(button, text);
  el.append(row, note);

  const url = () => {
    const q = model.query;
    return window.location.origin + window.location.pathname + (q ? "?" + q : "")
      + window.location.hash;
  };
  // While a link is being opened (hold), the address bar keeps that link.
  const show = () => { text.value = model.hold ? window.location.href : url(); };

  let timer = null;
  let last = 0;
  const write = () => {
    timer = null;
    last = Date.now();
    if (model.hold) return;
    const target = url();
    if (target !== window.location.href) {
      window.history.replaceState(window.history.state, "", target);
    }
  };
  const sync = () => {
    show();
    if (!model.hold && timer === null) {
      timer = setTimeout(write, Math.max(0, last + model.throttle - Date.now()));
    }
  };
  model.on("query", sync);
  model.on("hold", sync);
  sync();

  text.addEventListener("focus", () => text.select());
  button.addEventListener("click", async () => {
    const link = text.value;
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(link);
      note.textContent = "Link copied to the clipboard.";
    } catch (err) {
      text.focus();
      text.select();
      let copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      note.textContent = copied ? "Link copied to the clipboard."
        : "Press Ctrl+C (⌘C) to copy the selected link.";
    }
    model.copies = model.copies + 1;
  });
}
"""

_CSS = """
.echo-link-row { display: flex; gap: 6px; align-items: center; width: 100%; }
.echo-copy-link {
  flex: none; padding: 6px 12px; border: 1px solid #1f5f8b; border-radius: 4px;
  background: #1f5f8b; color: white; font: inherit; cursor: pointer;
}
.echo-copy-link:hover { background: #184a6c; }
.echo-link-text {
  flex: 1; min-width: 0; padding: 5px 6px; border: 1px solid #ccc; border-radius: 4px;
  font-family: var(--bs-font-monospace, monospace); font-size: 12px; color: #333;
}
.echo-copy-note { font-size: 12px; color: #555; min-height: 1.2em; margin-top: 3px; }
"""


class AddressBar(JSComponent):
    """Writes :attr:`query` into the page's address bar (``replaceState``, throttled, not while
    :attr:`hold`) and shows the full link with a "Copy link" button."""

    query = param.String(default="", doc="The view as a query string, without '?'.")
    throttle = param.Integer(default=THROTTLE_MS, bounds=(0, None),
                             doc="At most one address-bar update per this many ms.")
    hold = param.Boolean(default=False, doc="Leave the address bar alone (a link is opening).")
    copies = param.Integer(default=0, doc="How often 'Copy link' was pressed.")

    _esm = _ESM
    _stylesheets = [_CSS]


def incoming_query() -> dict:
    """The query arguments of the request that opened this page (``{}`` outside a server)."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return {}
    try:
        return dict(pn.state.session_args or {})
    except Exception:  # noqa: BLE001 - no request (e.g. a test document): no link
        return {}


class LinksView(pn.viewable.Viewer):
    """The "Link" section: copy button, link text and what opening a link did.

    Parameters
    ----------
    session : Session
        Whose view the link describes.
    """

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.session = session
        self.bar = AddressBar(sizing_mode="stretch_width", margin=(5, 10),
                              css_classes=["echo-address-bar"])
        owners = session.owners()
        watched: dict = {session.browser: {"bucket", "connected"},
                         session.viewer: {"url", "stack"}, session: {"restoring"}}
        for item in links.FIELDS:
            if item.owner is not None and links.parameter(owners, item) is not None:
                watched.setdefault(owners[item.owner], set()).add(item.param)
        for owner, names in watched.items():
            owner.param.watch(self._changed, sorted(names))
        self._doc = pn.state.curdoc
        self._due = False
        self._layout = pn.Column(
            self.bar,
            status_line(session.param.link_status, css_class="echo-link-status",
                        sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        self._refresh()

    def _changed(self, *events) -> None:
        # Coalesced: the frame goes to the page first, the link follows (at most every
        # FOLLOW_MS); opening a link starts or ends at once.
        doc = self._doc
        if (doc is None or doc.session_context is None
                or any(event.name == "restoring" for event in events)):
            self._refresh()
        elif not self._due:
            self._due = True
            doc.add_timeout_callback(self._refresh, FOLLOW_MS)

    def _refresh(self) -> None:
        self._due = False
        # While a link is being opened the address bar keeps it (hold), so that a reload or a
        # copy before Connect still has the whole link.
        self.bar.param.update(query=self.session.link_query(), hold=self.session.restoring)

    def __panel__(self):
        return self._layout
