"""Open the selected HDF5 file, inspect its tree, move through its frames (Inspect + Frames)."""

from __future__ import annotations

import logging
import threading

import param

from ..analysis.contrast import (
    N_SAMPLES,
    clamp_limits,
    percentile_limits,
    sample_limits,
    stack_sample,
)
from ..hdf5.errors import ObjectChanged
from ..text import labels, shown
from .browser import BrowserState
from .checked import FiniteNumber, FiniteRange  # noqa: F401 (FiniteNumber: re-exported)
from .playback import Player, RateMeter
from .tasks import LatestOnly, Tasks, user_message

log = logging.getLogger(__name__)

COLORMAPS = ("gray", "viridis", "magma", "inferno", "cividis", "fire")
CONTRAST_MODES = ("percentile", "locked", "manual")
DIRECTIONS = ("forward", "backward")
#: Pixels per frame used for per-frame percentile limits: larger frames use an even sub-grid
#: (every 2nd row and column of a 1024² frame; the 1st/99th percentiles move by well under a
#: grey level) so that the limits cost a few ms per step.
LIMIT_PIXELS = 1 << 18


class ViewerState(param.Parameterized):
    """The open :class:`~dashboard.hdf5.stack.FrameStack` of one session and the frame on screen.

    Setting :attr:`index` asks for a frame; the newest request wins (see
    :class:`~dashboard.state.tasks.LatestOnly`), and :attr:`frame` / :attr:`shown_index` change
    when its pixels have arrived.

    Contrast: :attr:`contrast` holds the colour limits in use. :attr:`contrast_mode` says where
    they come from: ``"percentile"`` (this frame's :attr:`percentiles`), ``"locked"`` (the same
    percentiles of an even sample of :data:`N_SAMPLES` frames of the whole stack, computed once
    in the background) or ``"manual"`` (set by the user; setting :attr:`contrast` from outside
    switches to manual). :attr:`equalize` equalizes the histogram *within* the limits.

    Playback: :attr:`playing` steps :attr:`index` at :attr:`fps` in :attr:`direction`, looping
    over :attr:`loop_range` (see :mod:`dashboard.state.playback`); :attr:`achieved_fps` is
    measured from the frames actually shown.
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
                           doc="The colour limits in use (None: the frame's own range).")
    contrast_mode = param.Selector(default="percentile", objects=list(CONTRAST_MODES),
                                   label="Contrast")
    percentiles = FiniteRange(default=(1.0, 99.0), bounds=(0.0, 100.0),
                              label="Percentiles (%)")
    contrast_status = param.String(default="1–99 % of each frame",
                                   doc="Where the limits come from, in words.")

    playing = param.Boolean(default=False, label="Playing")
    toggle_play = param.Event(label="Play/Pause")
    fps = param.Integer(default=10, bounds=(1, 30), label="Rate (frames/s)")
    direction = param.Selector(default="forward", objects=list(DIRECTIONS), label="Direction")
    loop_range = FiniteRange(default=(0, 0), bounds=(0, 0), label="Loop over frames",
                             doc="First and last frame of the loop (inclusive).")
    achieved_fps = param.Number(default=0.0, bounds=(0, None), constant=True,
                                label="Achieved rate", doc="Frames/s actually shown.")
    painted_index = param.Integer(
        default=-1, precedence=-1,
        doc="The frame the page reports as painted (set by a view that can tell; -1: none).")
    paced_by_page = param.Boolean(
        default=False, precedence=-1,
        doc="Playback waits for `painted_index` too (the served page reports its paints).")

    frame = param.Array(default=None, allow_None=True, precedence=-1,
                        doc="The pixels of frame `shown_index` (2-D).")
    shown_index = param.Integer(default=-1, precedence=-1)
    frame_serial = param.Integer(default=0, precedence=-1,
                                 doc="Bumped whenever `frame` changes (cheap to depend on).")
    status = param.String(
        default="Select an .h5 file in the browser, then press Load Selected H5 File.")
    loading = param.Boolean(default=False)
    newer = param.Boolean(default=False, precedence=-1,
                          doc="The open file's object was replaced on the server: Reload.")
    reload = param.Event(label="Reload", doc="Open the newest version of the open file, "
                         "on the same frame (or the last, if it has fewer).")

    def __init__(self, *, tasks: Tasks | None = None, **params):
        super().__init__(**params)
        self.tasks = tasks or Tasks()
        self._frames = LatestOnly(self.tasks, self._read_frame)
        self._opening = False
        self._lock = threading.Lock()
        self._latest = None
        self._posted = False
        self._auto_contrast = False  # True while the state itself sets `contrast`
        self._sample = None  # (stack, pooled values of N_SAMPLES frames) for locked limits
        self._lock_generation = 0
        self._locker = LatestOnly(self.tasks, self._compute_locked)
        self.player = Player(self)
        self._meter = RateMeter()

    # -- opening -----------------------------------------------------------------------------

    @param.depends("load", watch=True)
    def _on_load(self) -> None:
        browser = self.browser
        if browser is None or browser.provider is None:
            self.status = "Connect first: give an endpoint and keys, then press Connect."
            return
        url = browser.selected_url()
        if url is None:
            self.status = "Select an .h5 file in the browser first."
            return
        self.open(url)

    def open(self, url: str, dataset: str | None = None, *, index: int | None = 0) -> None:
        """Open ``url`` (``dataset``, else the file's image stack) on frame ``index``
        (``None``: the last frame; an index past the end: the last)."""
        self.param.update(loading=True, status=f"Opening {url} …")
        self.tasks.submit(self._open, self.browser.provider, url, dataset, index=index)

    @param.depends("reload", watch=True)
    def _on_reload(self) -> None:
        if self.stack is None or self.browser is None or self.browser.provider is None:
            return
        self.open(self.url, self.stack.dataset, index=self.index)

    @param.depends("dataset", watch=True)
    def _on_dataset(self) -> None:
        stack = self.stack
        if self._opening or stack is None or self.dataset in (None, stack.dataset):
            return
        self.param.update(loading=True, status=f"Opening {self.dataset} …")
        self.tasks.submit(self._open, self.browser.provider, self.url, self.dataset,
                          same_file=True)

    def _open(self, provider, url: str, dataset: str | None, *, index: int | None = 0,
              same_file: bool = False) -> None:
        # One Source for the tree and the stack: one first-block GET per load.
        same = same_file and dataset is not None and (self.tree or {}).get("url") == url
        tree = self.tree if same else None
        try:
            opened = provider.open(url, dataset, tree=tree is None)
            tree = opened.tree or tree
            if opened.stack is None:
                raise opened.error
        except Exception as exc:  # noqa: BLE001 - action boundary
            if tree is not None and dataset is None:  # no stack, but the tree is worth seeing
                self.tasks.post(self._replace_stack, None, url=url, tree=tree)
            self.tasks.post(self.param.update, loading=False,
                            status=user_message(exc, f"open {url}"))
            return
        opened.stack.candidates  # noqa: B018 - the stack search runs here, never on the event loop
        self.tasks.post(self._opened, opened.stack, url, tree, index)

    def _opened(self, stack, url: str, tree, index: int | None = 0) -> None:
        self._replace_stack(stack, url=url, tree=tree)
        n = len(stack)
        index = n - 1 if index is None else min(index, n - 1)
        size = f"{stack.shape[-1]}×{stack.shape[-2]} {stack.dtype}"
        name = url.rsplit("/", 1)[-1]
        self.param.update(
            loading=False,
            status=(f"{name}: {stack.dataset} is a single 2-D image ({size}), not a stack."
                    if len(stack.shape) == 2
                    else f"{name}: {stack.dataset}, {n} frames of {size}."),
        )
        if index > 0:
            self._opening = True  # the index only: the read is requested just below
            try:
                self.index = index
            finally:
                self._opening = False
        self._frames.request(self._frame_request(index))

    def mark_newer(self, etag: str) -> None:
        """The listing says the open file's object now has ``etag``: if that is not the
        version open, say so (once) and offer Reload."""
        stack = self.stack
        if stack is not None and etag and etag != stack.etag:
            self._offer_reload()

    def _offer_reload(self) -> None:
        if not self.newer:
            name = shown(self.url.rsplit("/", 1)[-1])
            self.param.update(newer=True, status=f"A newer version of {name} exists: press "
                                                 "Reload to open it.")

    def _replace_stack(self, stack, *, url: str, tree) -> None:
        old = self.stack
        self._opening = True
        try:
            candidates = [c.path for c in stack.candidates] if stack is not None else []
            if stack is not None and stack.dataset not in candidates:
                candidates.insert(0, stack.dataset)
            self.param.dataset.objects = labels(candidates)  # shown as text
            n = len(stack) if stack is not None else 0
            self.playing = False
            self.param.index.bounds = (0, max(0, n - 1))
            self.param.loop_range.bounds = (0, max(0, n - 1))
            with param.edit_constant(self):
                self.param.update(
                    url=url,
                    n_frames=n,
                    frame_shape=tuple(stack.shape[-2:]) if stack is not None else (0, 0),
                )
            self.param.update(
                stack=stack, tree=tree, dataset=stack.dataset if stack is not None else None,
                newer=False,
                index=0, frame=None, shown_index=-1, frame_serial=self.frame_serial + 1,
                loop_range=(0, max(0, n - 1)),
            )
            self._sample = None
            self._lock_generation += 1
        finally:
            self._opening = False
        if self.contrast_mode == "locked" and stack is not None:
            self._lock_contrast()
        if old is not None and old is not stack:
            # Here on the event loop only told to stop; closed on a worker (closing waits for
            # its reads in flight and for HDF5, which another session may be holding).
            stop = getattr(old, "stop", None)
            if stop is not None:
                stop()
            if self.tasks.submit(_close_quietly, old) is None:
                _close_quietly(old)

    # -- frames ------------------------------------------------------------------------------

    @param.depends("index", watch=True)
    def _on_index(self) -> None:
        stack = self.stack
        if stack is None or self._opening:
            return
        lookup = getattr(stack, "cached_frame", None)
        frame = (lookup(self.index) if self.tasks.dispatch is not None and lookup is not None
                 else None)
        if frame is not None:
            # Already on the server: shown now, in this update, ahead of the controls' own
            # echoes (a worker thread and a second trip through the event loop cost more than
            # the lookup and the display mapping). Never a read here: the event loop is shared.
            self._read_frame(self._frame_request(self.index), post=False, frame=frame)
        else:
            self._frames.request(self._frame_request(self.index))

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

    def _frame_request(self, index: int) -> tuple:
        """What a frame read needs, taken on the event loop (workers never read live state):
        the stack, the frame, and the percentiles when the limits follow each frame."""
        percentiles = tuple(self.percentiles) if self.contrast_mode == "percentile" else None
        return self.stack, index, percentiles

    def _read_frame(self, request: tuple, post: bool = True, frame=None) -> None:
        stack, index, percentiles = request
        if stack is None:
            return
        try:
            if frame is None:
                frame = stack.frame(index)
            limits = (percentile_limits(frame, *percentiles, max_pixels=LIMIT_PIXELS)
                      if percentiles is not None else None)
        except ObjectChanged:
            self.tasks.post(self._replaced, stack, index)
            return
        except Exception as exc:  # noqa: BLE001
            self.tasks.post(self._read_failed, stack, index, user_message(exc, f"read frame {index}"))
            return
        # Coalesce: if the page has not shown the previous frame yet, replace it.
        with self._lock:
            self._latest = (stack, index, frame, limits)
            if not post:
                self._posted = True  # a posted show of an older frame finds nothing to do
            elif self._posted:
                return
            else:
                self._posted = True
        if post:
            self.tasks.post(self._show_latest)
        else:
            self._show_latest()

    def _read_failed(self, stack, index: int, message: str) -> None:
        """Say why, and point the controls back at the frame still on screen (unless the user
        has moved on meanwhile), so that slider, label and image agree. A read of a stack that
        has been replaced meanwhile (its handle closed under it) says nothing."""
        if stack is not self.stack:
            return
        self.param.update(playing=False, status=message)
        if stack is self.stack and self.index == index and self.shown_index >= 0:
            self.index = self.shown_index  # cached: no new request

    def _replaced(self, stack, index: int) -> None:
        """A read found the object replaced (its ETag pins every read): not an error, the
        file has moved on. Offer Reload; the frame on screen stays."""
        if stack is not self.stack:
            return
        self._offer_reload()
        self._read_failed(stack, index, self.status)

    def _show_latest(self) -> None:
        with self._lock:
            if self._latest is None:
                self._posted = False
                return  # shown already (a cached frame, shown at once)
            stack, index, frame, limits = self._latest
            self._latest, self._posted = None, False
        if stack is not self.stack:
            return  # another file was opened meanwhile
        if index != self.index and self.shown_index >= 0:
            return  # the user has moved on: that frame's own request is under way
        update = dict(frame=frame, shown_index=index, frame_serial=self.frame_serial + 1)
        if self.contrast_mode == "percentile":
            # The limits travel with the frame: one repaint, never a frame with old limits.
            update["contrast"] = limits if limits is not None else self._frame_limits(frame)
        self._auto_contrast = True
        try:
            self.param.update(**update)
        finally:
            self._auto_contrast = False
        if self.playing:
            rate = self._meter.tick()
            if rate is not None and abs(rate - self.achieved_fps) >= 0.05:
                with param.edit_constant(self):
                    self.achieved_fps = round(rate, 1)

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

    # -- contrast ----------------------------------------------------------------------------

    def _frame_limits(self, frame) -> tuple[float, float] | None:
        return (None if frame is None
                else percentile_limits(frame, *self.percentiles, max_pixels=LIMIT_PIXELS))

    def _set_limits(self, limits, status: str) -> None:
        self._auto_contrast = True
        try:
            self.param.update(contrast=limits, contrast_status=status)
        finally:
            self._auto_contrast = False

    @param.depends("contrast_mode", "percentiles", watch=True)
    def _on_contrast_mode(self) -> None:
        low, high = self.percentiles
        if low > high:  # e.g. from a link: keep the range usable
            self.percentiles = (high, low)
            return
        mode = self.contrast_mode
        if mode == "percentile":
            self._set_limits(self._frame_limits(self.frame),
                             f"{low:g}–{high:g} % of each frame")
        elif mode == "locked":
            self._lock_contrast()
        else:
            self.contrast_status = "Manual limits"

    @param.depends("contrast", watch=True)
    def _on_contrast(self) -> None:
        if self._auto_contrast or self.contrast is None:
            return
        try:
            limits = clamp_limits(self.contrast)
        except (TypeError, ValueError) as exc:
            self._set_limits(None, str(exc) if isinstance(exc, ValueError) else
                             "Contrast limits must be two numbers.")
            return
        if tuple(limits) != tuple(self.contrast):
            self.contrast = limits  # ordered and non-empty; comes back here once
            return
        if self.contrast_mode != "manual":
            self.contrast_mode = "manual"
        self.contrast_status = "Manual limits"

    def set_limits(self, low, high) -> str:
        """Limits typed by the user; returns (and shows) a message when they are not usable."""
        try:
            limits = clamp_limits((low, high))
        except (TypeError, ValueError):
            message = "Contrast limits must be two finite numbers."
            self.contrast_status = message
            return message
        self.contrast = limits
        return ""

    def _lock_contrast(self) -> None:
        stack = self.stack
        if stack is None:
            self.contrast_status = "Locked limits are computed when a stack is open."
            return
        self._lock_generation += 1
        if self._sample is None or self._sample[0] is not stack:
            n = min(N_SAMPLES, len(stack))
            self.contrast_status = f"Locking: reading {n} frames across the stack…"
        self._locker.request((stack, tuple(self.percentiles), self._lock_generation))

    def _compute_locked(self, request) -> None:
        """Worker: read the sample once per stack, then its percentiles (newest request only)."""
        stack, (low, high), generation = request

        def cancelled() -> bool:
            return generation != self._lock_generation or stack is not self.stack

        try:
            sample = self._sample
            if sample is None or sample[0] is not stack:
                # A handle of its own: opening another file closes the viewer's (the frames
                # already read come from the process-wide frame cache).
                with self.browser.provider.reopen(stack.spec()) as own:
                    values = stack_sample(own, n_samples=N_SAMPLES, cancelled=cancelled)
                if values is None:
                    return
                self._sample = sample = (stack, values)
            if cancelled():
                return
            limits = sample_limits(sample[1], low, high)
        except Exception as exc:  # noqa: BLE001 - action boundary
            if not cancelled():
                self.tasks.post(self.param.update,
                                contrast_status=user_message(exc, "lock the contrast"))
            return
        n = min(N_SAMPLES, len(stack))
        status = f"Locked: {low:g}–{high:g} % of {n} frames across the stack"
        self.tasks.post(self._locked_ready, stack, generation, limits, status)

    def _locked_ready(self, stack, generation, limits, status) -> None:
        if (stack is self.stack and generation == self._lock_generation
                and self.contrast_mode == "locked"):
            self._set_limits(limits, status)

    # -- playback ----------------------------------------------------------------------------

    @param.depends("toggle_play", watch=True)
    def _on_toggle_play(self) -> None:
        self.playing = not self.playing

    @param.depends("playing", watch=True)
    def _on_playing(self) -> None:
        if not self.playing:
            self.player.stop()
            return
        if self.stack is None or self.n_frames < 2:
            self.playing = False
            self.status = ("Load a stack first." if self.stack is None
                           else "Nothing to play: this dataset has a single frame.")
            return
        self._meter.reset()
        with param.edit_constant(self):
            self.achieved_fps = 0.0
        low, high = self.loop_range
        if not low <= self.index <= high:
            self.index = low if self.direction == "forward" else high
        self.player.start()

    @param.depends("loop_range", watch=True)
    def _on_loop_range(self) -> None:
        low, high = (int(round(v)) for v in self.loop_range)
        last = max(0, self.n_frames - 1)
        wanted = (min(max(min(low, high), 0), last), min(max(max(low, high), 0), last))
        if wanted != tuple(self.loop_range):
            self.loop_range = wanted

    def stop(self) -> None:
        """The session ended: stop playback and every read of the open stack, at once (never
        waits, never calls HDF5: safe on the event loop)."""
        self.playing = False
        self.player.stop()
        self._lock_generation += 1
        stop = getattr(self.stack, "stop", None)  # a FrameStack (stand-ins in tests may lack it)
        if stop is not None:
            stop()

    def close(self) -> None:
        """:meth:`stop`, then close the stack (waits for reads in flight: off the event loop)."""
        self.stop()
        if self.stack is not None:
            _close_quietly(self.stack)


def _close_quietly(stack) -> None:
    try:
        stack.close()
    except Exception:  # noqa: BLE001 - a stack closed under a failed read, say
        log.debug("closing a stack failed", exc_info=True)
