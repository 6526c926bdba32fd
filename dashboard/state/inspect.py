"""Inspect fills when a file is selected: the selected HDF5 file's tree, described in the
background (newest selection only), before Load is pressed."""

from __future__ import annotations

import logging

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
