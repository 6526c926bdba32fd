"""A stand-in for a served Bokeh document: what the ui layer schedules on it, run on demand."""

from __future__ import annotations


class ServedDoc:
    """Collects the callbacks scheduled on a served document; :meth:`run` runs them in order."""

    session_context = object()

    def __init__(self):
        self.due: list = []

    def add_next_tick_callback(self, fn):
        self.due.append(fn)

    def add_timeout_callback(self, fn, ms):
        self.due.append(fn)

    def run(self) -> None:
        while self.due:
            self.due.pop(0)()
