"""Inspect fills when a file is selected: the selected HDF5 file's tree, described in the
background (newest selection only), before Load is pressed; and the value of a dataset chosen
there (:class:`DatasetValues`)."""

from __future__ import annotations

import logging

import param

from ..text import labels, shown
from .browser import BrowserState
from .tasks import LatestOnly, Tasks, user_message
from .viewer import ViewerState

log = logging.getLogger(__name__)


class Inspector:
    """Watches the selection of ``browser``; shows the selected file's tree as ``viewer.tree``.

    The request carries the provider and the URL; a result is dropped if the selection moved on,
    a load started, or the file is the one already open. The provider keeps the described
    Source for the Load that usually follows (:meth:`~.provider.Provider.inspect`).
    """

    def __init__(self, browser: BrowserState, viewer: ViewerState, tasks: Tasks):
        self.browser, self.viewer, self.tasks = browser, viewer, tasks
        self._runner = LatestOnly(tasks, self._describe)
        browser.param.watch(self._on_selection, "selection")

    def _on_selection(self, _event=None) -> None:
        url = self.browser.selected_url()
        provider = self.browser.provider
        if url is None or provider is None or self._open_already(url):
            return
        self._runner.request((provider, url))

    def _open_already(self, url: str) -> bool:
        return self.viewer.stack is not None and self.viewer.url == url

    def _describe(self, request) -> None:
        provider, url = request
        if self.browser.selected_url() != url:
            return  # stale before it started
        try:
            tree = provider.inspect(url)
        except Exception as exc:  # noqa: BLE001 - Load will say it again, in full
            log.info("inspecting %s failed: %s", url, user_message(exc, f"inspect {url}"))
            return
        self.tasks.post(self._show, provider, url, tree)

    def _show(self, provider, url: str, tree: dict) -> None:
        if self.viewer.loading or self._open_already(url):
            provider.discard(url)  # a Load overtook this: it has its own Source
            return
        if self.browser.selected_url() == url:
            self.viewer.tree = tree


class DatasetValues(param.Parameterized):
    """Inspect's values: the datasets of the tree shown, and the value of the one chosen
    (read in the background, newest choice only, within the value budget)."""

    path = param.Selector(default="", objects={"(choose a dataset)": ""}, label="Value of",
                          doc="A dataset of the file in Inspect.")
    value = param.Parameter(default=None, precedence=-1, doc="Its Value (hdf5.values).")
    status = param.String(default="")
    failed = param.Boolean(default=False, precedence=-1)

    def __init__(self, browser: BrowserState, viewer: ViewerState, tasks: Tasks, **params):
        super().__init__(**params)
        self.browser, self.viewer, self.tasks = browser, viewer, tasks
        self._runner = LatestOnly(tasks, self._read)
        viewer.param.watch(self._on_tree, "tree")

    def _on_tree(self, event) -> None:
        tree = event.new or {}
        paths = [n["path"] for n in tree.get("nodes", []) if n.get("kind") == "dataset"]
        self.param.path.objects = {"(choose a dataset)": "", **labels(paths)}
        self.param.update(path="", value=None, status="", failed=False)

    @param.depends("path", watch=True)
    def _on_path(self) -> None:
        tree, provider = self.viewer.tree or {}, self.browser.provider
        url = tree.get("url")
        if not self.path or not url or provider is None:
            self.param.update(value=None, status="")
            return
        stack = self.viewer.stack
        source = stack.source if stack is not None and self.viewer.url == url else None
        self.status = f"Reading {shown(self.path)} …"
        self._runner.request((provider, url, self.path, source))

    def _read(self, request) -> None:
        provider, url, path, source = request
        try:
            value = provider.value(url, path, source=source)
        except Exception as exc:  # noqa: BLE001 - one sentence, the session goes on
            self.tasks.post(self._shown, path, None, user_message(exc, f"read {path}"), True)
            return
        self.tasks.post(self._shown, path, value, "", False)

    def _shown(self, path: str, value, status: str, failed: bool) -> None:
        if path != self.path:
            return  # another dataset was chosen meanwhile
        self.param.update(value=value, status=status, failed=failed)
