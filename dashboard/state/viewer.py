"""Open the selected HDF5 file, inspect its tree, move through its frames (Inspect + Frames)."""

from __future__ import annotations

import logging
import threading

import param

from .browser import BrowserState
from .tasks import LatestOnly, Tasks, user_message

log = logging.getLogger(__name__)

COLORMAPS = ("gray", "viridis", "magma", "inferno", "cividis", "fire")


class ViewerState(param.Parameterized):
    """The open :class:`~dashboard.hdf5.stack.FrameStack` of one session and the frame on screen.

    Setting :attr:`index` asks for a frame; the newest request wins (see
    :class:`~dashboard.state.tasks.LatestOnly`), and :attr:`frame` / :attr:`shown_index` change
    when its pixels have arrived.
    """

    browser = param.ClassSelector(class_=BrowserState, precedence=-1)

    load = param.Event(label="Load Selected H5 File")
    url = param.String(default="", constant=True, doc="s3:// URL of the open file.")
    stack = param.Parameter(default=None, precedence=-1, doc="The open FrameStack or None.")
    tree = param.Parameter(default=None, precedence=-1, doc="describe() of the open file.")
    dataset = param.Selector(default=None, objects=[], label="Image stack")
    n_frames = param.Integer(default=0, bounds=(0, None), constant=True)
    frame_shape = param.Tuple(default=(0, 0), length=2, constant=True)

    index = param.Integer(default=0, bounds=(0, None), label="Frame")
    first = param.Event(label="First")
    previous = param.Event(label="Previous")
    next = param.Event(label="Next")
    last = param.Event(label="Last")

    equalize = param.Boolean(default=True, label="Equalize")
    colormap = param.Selector(default="gray", objects=list(COLORMAPS), label="Colormap")
    contrast = param.Range(default=None, allow_None=True, label="Contrast limits",
                           doc="Fixed colour limits (None: the frame's own range).")

    frame = param.Array(default=None, allow_None=True, precedence=-1,
                        doc="The pixels of frame `shown_index` (2-D).")
    shown_index = param.Integer(default=-1, precedence=-1)
    frame_serial = param.Integer(default=0, precedence=-1,
                                 doc="Bumped whenever `frame` changes (cheap to depend on).")
    status = param.String(
        default="Select an .h5 file in the browser, then press Load Selected H5 File.")
    loading = param.Boolean(default=False)

    def __init__(self, *, tasks: Tasks | None = None, **params):
        super().__init__(**params)
        self.tasks = tasks or Tasks()
        self._frames = LatestOnly(self.tasks, self._read_frame)
        self._opening = False
        self._lock = threading.Lock()
        self._latest = None
        self._posted = False

    # -- opening -----------------------------------------------------------------------------

    @param.depends("load", watch=True)
    def _on_load(self) -> None:
        browser = self.browser
        if browser is None or browser.s3 is None:
            self.status = "Connect first: give an endpoint and keys, then press Connect."
            return
        url = browser.selected_url()
        if url is None:
            self.status = "Select an .h5 file in the browser first."
            return
        self.param.update(loading=True, status=f"Opening {url} …")
        self.tasks.submit(self._open, browser.s3, url, None)

    @param.depends("dataset", watch=True)
    def _on_dataset(self) -> None:
        stack = self.stack
        if self._opening or stack is None or self.dataset in (None, stack.dataset):
            return
        self.param.update(loading=True, status=f"Opening {self.dataset} …")
        self.tasks.submit(self._open, self.browser.s3, self.url, self.dataset)

    def _open(self, s3, url: str, dataset: str | None) -> None:
        from ..hdf5.stack import open_stack
        from ..hdf5.tree import describe

        tree = self.tree if dataset is not None and url == self.url else None
        try:
            if tree is None:
                tree = describe(url, s3=s3)
            stack = open_stack(url, dataset, s3=s3)
        except Exception as exc:  # noqa: BLE001 - action boundary
            if tree is not None and dataset is None:  # no stack, but the tree is worth seeing
                self.tasks.post(self._replace_stack, None, url=url, tree=tree)
            self.tasks.post(self.param.update, loading=False,
                            status=user_message(exc, f"open {url}"))
            return
        self.tasks.post(self._opened, stack, url, tree)

    def _opened(self, stack, url: str, tree) -> None:
        self._replace_stack(stack, url=url, tree=tree)
        n = len(stack)
        size = f"{stack.shape[-1]}×{stack.shape[-2]} {stack.dtype}"
        name = url.rsplit("/", 1)[-1]
        self.param.update(
            loading=False,
            status=(f"{name}: {stack.dataset} is a single 2-D image ({size}), not a stack."
                    if len(stack.shape) == 2
                    else f"{name}: {stack.dataset}, {n} frames of {size}."),
        )
        self._frames.request(0)

    def _replace_stack(self, stack, *, url: str, tree) -> None:
        old = self.stack
        self._opening = True
        try:
            candidates = [c.path for c in stack.candidates] if stack is not None else []
            if stack is not None and stack.dataset not in candidates:
                candidates.insert(0, stack.dataset)
            self.param.dataset.objects = candidates
            n = len(stack) if stack is not None else 0
            self.param.index.bounds = (0, max(0, n - 1))
            with param.edit_constant(self):
                self.param.update(
                    url=url,
                    n_frames=n,
                    frame_shape=tuple(stack.shape[-2:]) if stack is not None else (0, 0),
                )
            self.param.update(
                stack=stack, tree=tree, dataset=stack.dataset if stack is not None else None,
                index=0, frame=None, shown_index=-1, frame_serial=self.frame_serial + 1,
            )
        finally:
            self._opening = False
        if old is not None and old is not stack:
            try:
                old.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the previous stack failed", exc_info=True)

    # -- frames ------------------------------------------------------------------------------

    @param.depends("index", watch=True)
    def _on_index(self) -> None:
        if self.stack is not None and not self._opening:
            self._frames.request(self.index)

    @param.depends("first", watch=True)
    def _on_first(self) -> None:
        self.index = 0

    @param.depends("previous", watch=True)
    def _on_previous(self) -> None:
        self.index = max(0, self.index - 1)

    @param.depends("next", watch=True)
    def _on_next(self) -> None:
        self.index = min(max(0, self.n_frames - 1), self.index + 1)

    @param.depends("last", watch=True)
    def _on_last(self) -> None:
        self.index = max(0, self.n_frames - 1)

    def _read_frame(self, index: int) -> None:
        stack = self.stack
        if stack is None:
            return
        try:
            frame = stack.frame(index)
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self.param.update, status=user_message(exc, f"read frame {index}"))
            return
        # Coalesce: if the page has not shown the previous frame yet, replace it.
        with self._lock:
            self._latest = (stack, index, frame)
            if self._posted:
                return
            self._posted = True
        self.tasks.post(self._show_latest)

    def _show_latest(self) -> None:
        with self._lock:
            stack, index, frame = self._latest
            self._latest, self._posted = None, False
        if stack is not self.stack:
            return  # another file was opened meanwhile
        self.param.update(frame=frame, shown_index=index, frame_serial=self.frame_serial + 1)

    @param.depends("shown_index", "n_frames")
    def frame_label(self) -> str:
        if self.stack is None:
            return ""
        if self.shown_index < 0:
            return "Reading…"
        return f"Frame {self.shown_index} of {self.n_frames - 1}"

    def wait_for_frame(self, index: int, timeout: float = 30.0) -> bool:
        """Block until frame ``index`` is on screen (tests and notebooks)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.shown_index == index and self.frame is not None:
                return True
            if not self.tasks.busy:
                time.sleep(0.005)
            self.tasks.wait(timeout=0.2)
        return False

    def close(self) -> None:
        if self.stack is not None:
            try:
                self.stack.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the stack failed", exc_info=True)
