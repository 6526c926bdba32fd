"""The whole dashboard: :class:`EchoS3Viewer` (plain layout for notebooks, template for serving)."""

from __future__ import annotations

import functools

import panel as pn

from ..config import Settings
from ..state.session import Session
from .analysis import AnalysisTools
from .browser import BrowseView, ConnectView
from .links import LinksView, incoming_query
from .processor import ProcessView
from .viewer import FramesView, InspectView

TITLE = "ECHO S3 Viewer"
ACCENT = "#1f5f8b"
EXTENSIONS = ("tabulator",)

STEPS = ("1 · Browse", "2 · Inspect", "3 · Frames", "4 · Process")


def extension(**kwargs) -> None:
    """``pn.extension`` with what the dashboard needs (served pages; notebooks need nothing:
    :class:`EchoS3Viewer` loads what it needs there itself)."""
    import holoviews as hv

    pn.extension(*EXTENSIONS, **kwargs)
    hv.extension("bokeh", logo=False)


def _plotting_backend() -> None:
    """HoloViews' Bokeh backend: the views set Bokeh options as they are built."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401 - registers the renderer

    if hv.Store.current_backend not in hv.Store.renderers:
        hv.Store.set_current_backend("bokeh")


def _notebook_extension() -> None:
    """In a Jupyter kernel, put what the viewer needs into the page once: Bokeh, Panel,
    HoloViews and Tabulator, every script and style sheet inline in the cell's output.

    Inline because the page must not need the internet: Panel's default in notebooks is its
    CDN, and a facility's JupyterHub often has no way out. Nothing happens when these are
    loaded already (e.g. the user ran ``pn.extension("tabulator", inline=True)``).
    """
    from panel.config import panel_extension

    if not _in_kernel() or _served():
        return
    loaded = (panel_extension._loaded and pn.config.inline
              and set(EXTENSIONS) <= set(panel_extension._loaded_extensions))
    if not loaded:
        pn.extension(*EXTENSIONS, inline=True)


class _KernelDispatch:
    """How background results reach a notebook session's state (``Tasks.dispatch``).

    On the kernel's main thread, one at a time, as the served app applies them on its
    session's event loop: Panel's and HoloViews' models are not thread-safe (applied on the
    worker threads, frames stayed blank and the page met unknown models). And not while a
    view of the session is being drawn: the page drops the changes that reach it before the
    output exists (a key file connects within the cell, before the page has drawn it), so
    they wait for the first change the page sends back (the sizes it has laid out).
    """

    def __init__(self):
        from IPython import get_ipython

        self._loop = get_ipython().kernel.io_loop  # add_callback is safe from any thread
        self._drawing = False  # main thread only, as _held
        self._held: list = []

    def __call__(self, fn) -> None:
        self._loop.add_callback(self._apply, fn)

    def _apply(self, fn) -> None:
        if self._drawing:
            self._held.append(fn)
        else:
            fn()

    def drawing(self, doc) -> None:
        """``doc`` is being sent to the page (called on the main thread)."""
        from bokeh.document.events import ModelChangedEvent

        def changed(event) -> None:
            if isinstance(event, ModelChangedEvent) and event.setter is not None:
                doc.remove_on_change(changed)
                self._loop.add_callback(self._drawn)  # after Panel has applied the change

        self._drawing = True
        doc.on_change(changed)

    def _drawn(self) -> None:
        self._drawing = False
        held, self._held = self._held, []
        for fn in held:
            fn()


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class EchoS3Viewer(pn.viewable.Viewer):
    """ECHO S3 Viewer: Connect → Browse → Inspect → Frames → Process.

    Parameters
    ----------
    session : Session, optional
        The state to show; by default a new one from ``settings``/``credentials``.
    settings : Settings, optional
        Endpoint, key file, listing limit (``Settings.from_env()`` by default).
    credentials : Credentials, optional
        Ready-made keys; the session connects at once.
    endpoint, credentials_path : str, optional
        Shortcuts for the notebook: ``EchoS3Viewer(endpoint=..., credentials_path="keys.json")``.

    Examples
    --------
    >>> from dashboard import EchoS3Viewer      # doctest: +SKIP
    >>> EchoS3Viewer(credentials_path="~/.echo/keys.json")   # a notebook cell renders it
    """

    def __init__(self, session: Session | None = None, *, settings: Settings | None = None,
                 credentials=None, endpoint: str | None = None,
                 credentials_path: str | None = None, **params):
        super().__init__(**params)
        _plotting_backend()
        _notebook_extension()
        start = session is None
        if start:
            settings = (settings or Settings.from_env()).with_overrides(
                endpoint=endpoint, credentials_path=credentials_path)
            session = Session(settings, credentials=credentials, connect=False)
        self._dispatch = None
        if session.tasks.dispatch is None and _in_kernel():
            session.tasks.dispatch = self._dispatch = _KernelDispatch()
        self.session = session
        self.connect_view = ConnectView(session.browser)
        self.browse_view = BrowseView(session.browser, session.live)
        self.inspect_view = InspectView(session.viewer, session.values)
        self.frames_view = FramesView(
            session.viewer, tools=AnalysisTools(session.viewer, state=session.analysis,
                                                sinogram=session.sinogram))
        self.process_view = ProcessView(session.processor)
        self.tabs = pn.Tabs(
            (STEPS[0], self.browse_view),
            (STEPS[1], self.inspect_view),
            (STEPS[2], self.frames_view),
            (STEPS[3], self.process_view),
            dynamic=False, sizing_mode="stretch_width", css_classes=["echo-steps"],
        )
        # The obvious next step: after loading a file, show its frames (choosing another
        # stack of the same file in Inspect stays in Inspect).
        session.viewer.param.watch(self._show_frames, "url")
        # Deep links: a served page opens the link it was called with and keeps its address
        # bar on the current view (not in notebooks: their URL is the notebook's).
        query = incoming_query()
        if query:
            session.restore(query)
        self.links_view = LinksView(session) if _served() else None
        self.sidebar = pn.Column(
            "## Connect", self.connect_view,
            pn.pane.Markdown(
                "Keys stay in this browser session only. After connecting they are cleared "
                "from the page.", styles={"font-size": "12px", "color": "#666"},
            ),
            *(["## Link", self.links_view] if self.links_view is not None else []),
            sizing_mode="stretch_width",
        )
        if start:  # connects at once when keys or a key file were given
            session.start(credentials=credentials)

    def _show_frames(self, event) -> None:
        if event.new:
            self.tabs.active = 2

    def __panel__(self):
        """The plain layout (templates do not render inline in notebooks)."""
        return _Layout(
            pn.pane.Markdown(f"# {TITLE}"),
            pn.Row(pn.Column(self.sidebar, width=320), self.tabs, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
            on_render=self._dispatch.drawing if self._dispatch is not None else None,
        )

    def template(self) -> pn.template.FastListTemplate:
        """The served page: a FastListTemplate with Connect in the sidebar."""
        return pn.template.FastListTemplate(
            title=TITLE,
            sidebar=[self.sidebar],
            main=[self.tabs],
            accent=ACCENT,
            sidebar_width=330,
            main_layout=None,
            theme_toggle=False,
            # No header spinner: Panel's busy state is one for the whole process, so every
            # button press anywhere redrew the spinner of every open page (a message per page
            # per press). Long work shows its own spinner and progress where it happens.
            busy_indicator=None,
            design=_design(),
        )


@functools.cache
def _design():
    """Panel's Fast design without the one resource it takes from another site, its web font
    (Open Sans from fonts.googleapis.com): it told Google of every visit and fails on a server
    without internet. The page falls back to the system's sans-serif; everything else is
    served by the dashboard itself."""
    from panel.theme.fast import Fast

    return type("Fast", (Fast,), {"_resources": {**Fast._resources, "font": {}}})


class _Layout(pn.Column):
    """The notebook layout. With Panel's scripts inline in the page (:func:`_notebook_extension`)
    its style sheets must not come from its CDN either: every widget built for this output,
    now or later (a re-rendered status line, a new plot), takes them from the document's
    style-sheet cache, which holds each of them as a ``data:`` URL.

    (Panel's own ``inline`` mode replaces them after the first render, one model at a time,
    each change walking the whole document again: 30 s here for this layout; and it misses
    every widget built later, which then asks the CDN.)
    """

    def __init__(self, *objects, on_render=None, **params):
        super().__init__(*objects, **params)
        self._on_render = on_render

    def get_root(self, doc=None, comm=None, preprocess=True):
        notebook = comm is not None and doc is not None
        if notebook and self._on_render is not None:
            self._on_render(doc)
        root = super().get_root(doc, comm, preprocess)
        if notebook and pn.config.inline:
            _inline_stylesheets(root)
        return root


def _inline_stylesheets(root) -> None:
    """Replace Panel's style sheets (URLs on its CDN) in ``root``'s models by their text,
    one shared copy of each, before ``root`` joins its document."""
    from bokeh.models import (
        GlobalImportedStyleSheet, GlobalInlineStyleSheet, ImportedStyleSheet, InlineStyleSheet,
        UIElement,
    )
    from panel.io.resources import CDN_DIST, DIST_DIR

    inline: dict = {}

    def local(sheet):
        if not (isinstance(sheet, ImportedStyleSheet) and sheet.url.startswith(CDN_DIST)):
            return sheet
        glob = isinstance(sheet, GlobalImportedStyleSheet)
        key = (sheet.url, glob)
        if key not in inline:
            path = DIST_DIR / sheet.url[len(CDN_DIST):].split("?")[0]
            if not path.is_file():
                return sheet
            css = _css(path)
            inline[key] = GlobalInlineStyleSheet(css=css) if glob else InlineStyleSheet(css=css)
        return inline[key]

    for model in root.select({"type": UIElement}):
        sheets = [local(sheet) for sheet in model.stylesheets]
        if any(new is not old for new, old in zip(sheets, model.stylesheets)):
            model.stylesheets = sheets


@functools.lru_cache(maxsize=None)
def _css(path) -> str:
    return path.read_text(encoding="utf-8")


def _served() -> bool:
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None
