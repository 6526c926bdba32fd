"""The Connect sidebar and the Browse step: thin views over :class:`BrowserState`."""

from __future__ import annotations

import logging
from datetime import timezone

import pandas as pd
import panel as pn

from ..state.browser import BrowserState
from ..storage.listing import human_size
from ..text import shown
from . import plots
from .live import follow_row
from .widgets import built_when, status_line

COLUMNS = ["Key", "Size", "Modified (UTC)"]
FRESH_COLUMN = "Since following"
KEY_CHARS = 200  # a longer key is shown shortened in the middle (the table keeps the real key)
#: Tabulator's "plaintext" formatter escapes the cell: a key is never HTML.
PLAIN_COLUMNS = {name: "plaintext" for name in [*COLUMNS, FRESH_COLUMN]}
#: The look of a row that landed or changed while following.
FRESH_STYLE = "background-color: #fff3c4"


def objects_frame(objects, fresh: dict | None = None) -> pd.DataFrame:
    """The table rows: key (as text: :func:`~dashboard.text.shown`), human-readable size
    and date (UTC) of each object; with ``fresh`` (key → "new"/"changed", while following)
    a column saying which landed or changed.

    UTC, not the server's local time: a hosted dashboard's server clock says nothing about
    where its users are, and S3 itself reports UTC."""
    columns = {
        "Key": [shown(o.key, KEY_CHARS) for o in objects],
        "Size": [human_size(o.size) for o in objects],
        "Modified (UTC)": [
            o.last_modified.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"
                                                              if fresh else "%Y-%m-%d %H:%M")
            for o in objects
        ],
    }
    if fresh:
        columns[FRESH_COLUMN] = [fresh.get(o.key, "") for o in objects]
    return pd.DataFrame(columns, columns=list(columns),
                        dtype=object)  # plain strings: Tabulator shows pandas' string dtype as NaN


# Runs in the page when the session offers a download: the browser fetches it (and shows its
# own progress), as a click on a link would.
_SAVE_JS = """
const url = cb_obj.value;
if (url) {
  const link = document.createElement('a');
  link.href = url; link.download = ''; link.style.display = 'none';
  document.body.appendChild(link); link.click(); link.remove();
}
"""


def _browser_saves(state: BrowserState):
    """An invisible field: a new :attr:`BrowserState.delivery` makes the page fetch it."""
    field = pn.widgets.TextInput(value="", visible=False, disabled=True)
    field.jscallback(value=_SAVE_JS)
    state.param.watch(lambda event: setattr(field, "value", event.new), "delivery")
    return field


KEY_INPUT_LOGGERS = ("panel.viewable.PasswordInput", "panel.viewable.FileInput")


def _drop_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


def quiet_key_inputs() -> None:
    """Keep Panel's DEBUG event log ("received events {'value_input': ...}") of the key
    inputs out of every log: those events carry the pasted or uploaded keys."""
    for name in KEY_INPUT_LOGGERS:
        logger = logging.getLogger(name)
        if _drop_debug not in logger.filters:
            logger.addFilter(_drop_debug)


def endpoint_widget(state: BrowserState):
    """The Endpoint: typed freely, or on a shared server a choice of the operator's endpoints
    (:attr:`BrowserState.allowed_endpoints`; Connect refuses any other value all the same)."""
    if not state.allowed_endpoints:
        return pn.widgets.TextInput.from_param(state.param.endpoint, sizing_mode="stretch_width")
    select = pn.widgets.Select(label="Endpoint", options=list(state.allowed_endpoints),
                               value=state.endpoint, sizing_mode="stretch_width")
    select.param.watch(lambda event: setattr(state, "endpoint", event.new), "value")
    state.param.watch(lambda event: setattr(select, "value", event.new), "endpoint")
    return select


class ConnectView(pn.viewable.Viewer):
    """Endpoint, key file path, pasted/uploaded keys, "Connect" and a status line."""

    def __init__(self, state: BrowserState, **params):
        super().__init__(**params)
        quiet_key_inputs()
        self.state = state
        self._password = pn.widgets.PasswordInput(
            label="…or paste keys (JSON)",
            placeholder='{"access_key": "…", "secret_key": "…"}',
            sizing_mode="stretch_width",
        )
        self._upload = pn.widgets.FileInput(accept=".json,application/json", multiple=False,
                                            sizing_mode="stretch_width")
        # One way only: the keys go from the widget into the session's state, never back.
        self._password.param.watch(self._take_password, ["value", "value_input"])
        self._upload.param.watch(self._take_upload, "value")
        state.param.watch(self._clear_secrets, "connect")
        self._layout = pn.Column(
            endpoint_widget(state),
            pn.widgets.TextInput.from_param(
                state.param.credentials_path, placeholder="~/.echo/keys.json",
                sizing_mode="stretch_width", visible=state.server_keys,
            ),
            self._password,
            pn.pane.Markdown("…or upload a key file:", margin=(0, 10)),
            self._upload,
            pn.widgets.Button.from_param(state.param.connect, color="primary",
                                         sizing_mode="stretch_width"),
            pn.Row(
                pn.indicators.LoadingSpinner(value=True, visible=state.param.busy, size=20,
                                             width=20, height=20, margin=(12, 0, 0, 10)),
                status_line(state.param.status, css_class="echo-connect-status",
                            error=state.param.failed, sizing_mode="stretch_width"),
            ),
            status_line(state.param.connection, css_class="echo-connection",
                        label="Connected:"),
            sizing_mode="stretch_width",
        )

    def _take_password(self, *events) -> None:
        for event in events:
            if event.new:
                self.state.credentials_text = event.new

    def _take_upload(self, event) -> None:
        if event.new:
            try:
                self.state.credentials_text = event.new.decode("utf-8")
            except UnicodeDecodeError:
                self.state.status = "The uploaded key file is not UTF-8 text."
            else:
                self.state.status = "Key file received; press Connect."

    def _clear_secrets(self, event) -> None:
        # Runs after the state has read the keys; wipe them from the page and the widgets.
        self._password.param.update(value="", value_input="")
        self._upload.param.update(value=None, filename=None)
        self._upload.clear()  # the browser's file input too

    def __panel__(self):
        return self._layout


class BrowseView(pn.viewable.Viewer):
    """Bucket, listing, filters, the objects table, download and the last-frame thumbnail."""

    def __init__(self, state: BrowserState, live=None, **params):
        super().__init__(**params)
        self.state, self.live = state, live
        self._syncing = False
        self._keys: list[str] = []
        self._table = pn.widgets.Tabulator(
            objects_frame([]), selectable="checkbox", show_index=False, disabled=True,
            pagination="local", page_size=20, sizing_mode="stretch_width",
            layout="fit_data_stretch", header_align="left",
            css_classes=["echo-objects"], theme="bootstrap5", formatters=dict(PLAIN_COLUMNS),
        )
        self._table.param.watch(self._selection_from_table, "selection")
        self._table.style.apply(self._fresh_style, axis=1)
        if live is not None:
            live.param.watch(self._refresh_table, "fresh")
        state.param.watch(self._refresh_table, ["listing", "directory", "keyword", "sort_by",
                                                "descending", "hdf5_only"])
        state.param.watch(self._selection_to_table, "selection")
        controls = pn.Row(
            pn.widgets.Select.from_param(state.param.bucket, width=200),
            pn.widgets.Button.from_param(state.param.list_objects, color="primary",
                                         width=120, margin=(28, 10, 10, 10)),
            pn.widgets.Select.from_param(state.param.directory, width=260),
            pn.widgets.TextInput.from_param(state.param.keyword, width=180,
                                            placeholder="part of the name"),
            pn.widgets.Select.from_param(state.param.sort_by, width=110),
            pn.Column(
                pn.widgets.Checkbox.from_param(state.param.descending),
                pn.widgets.Checkbox.from_param(state.param.hdf5_only),
                margin=(18, 5, 5, 5),
            ),
            sizing_mode="stretch_width",
        )
        download = pn.Row(
            pn.widgets.TextInput.from_param(state.param.download_dir, min_width=200,
                                            sizing_mode="stretch_width",
                                            visible=state.server_folders),
            pn.pane.Markdown("Downloads go to your browser: one file as it is, several as one "
                             "zip.", visible=not state.server_folders,
                             css_classes=["echo-download-note"], margin=(28, 10, 10, 10)),
            pn.widgets.Button.from_param(state.param.download, color="success",
                                         width=170, margin=(28, 10, 10, 10)),
            pn.widgets.Button.from_param(state.param.cancel_download, width=150,
                                         margin=(28, 10, 10, 10)),
            _browser_saves(state),
            sizing_mode="stretch_width",
        )
        progress = pn.indicators.Progress(value=state.param.download_progress, max=100,
                                          sizing_mode="stretch_width", height=12,
                                          css_classes=["echo-download-progress"])
        thumbnail = pn.Column(
            "### Last frame",
            pn.widgets.Button.from_param(state.param.view_last_frame, width=160),
            built_when(state.param.thumbnail, _thumbnail_pane),
            status_line(state.param.thumbnail_title, css_class="echo-thumbnail-title"),
            width=340,
        )
        self._layout = pn.Column(
            controls,
            *([follow_row(live)] if live is not None else []),
            status_line(state.param.status, css_class="echo-browse-status",
                        error=state.param.failed),
            pn.Row(
                pn.Column(
                    status_line(state.count_text, css_class="echo-count"),
                    self._table,
                    download,
                    progress,
                    status_line(state.param.download_status, css_class="echo-download-status",
                                error=state.param.download_failed),
                    sizing_mode="stretch_width",
                ),
                thumbnail,
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )
        self._refresh_table()

    # The table is the one piece of view glue: rows follow `objects()`, ticks follow `selection`.

    def _refresh_table(self, *events) -> None:
        objects = self.state.objects()
        self._keys = [o.key for o in objects]
        selected = [k for k in self.state.selection if k in set(self._keys)]
        self._syncing = True
        try:
            self._table.value = objects_frame(objects, self._fresh())
            self._table.selection = [self._keys.index(k) for k in selected]
        finally:
            self._syncing = False
        if selected != self.state.selection:
            self.state.selection = selected

    def _fresh(self) -> dict:
        return self.live.fresh if self.live is not None else {}

    def _fresh_style(self, row) -> list[str]:
        """Rows that landed or changed while following stand out."""
        keys, fresh = self._keys, self._fresh()
        position = int(row.name)
        marked = position < len(keys) and keys[position] in fresh
        return [FRESH_STYLE if marked else ""] * len(row)

    def _selection_from_table(self, event) -> None:
        if self._syncing:
            return
        keys = self._keys
        chosen = [keys[i] for i in event.new if i < len(keys)]
        # Keep the order in which the user ticked rows (the first .h5 is the one viewed).
        ordered = [k for k in self.state.selection if k in chosen] + [
            k for k in chosen if k not in self.state.selection
        ]
        self.state.selection = ordered

    def _selection_to_table(self, event) -> None:
        if self._syncing:
            return
        keys = self._keys
        wanted = sorted(keys.index(k) for k in event.new if k in keys)
        if sorted(self._table.selection) != wanted:
            self._syncing = True
            try:
                self._table.selection = wanted
            finally:
                self._syncing = False

    def __panel__(self):
        return self._layout


def _thumbnail_pane(frame):
    if frame is None:
        return None
    return pn.pane.HoloViews(plots.thumbnail(frame), width=320, height=320,
                             css_classes=["echo-thumbnail"])

