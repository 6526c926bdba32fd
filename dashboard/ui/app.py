"""The whole dashboard: :class:`EchoS3Viewer` (plain layout for notebooks, template for serving)."""

from __future__ import annotations

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
    """``pn.extension`` with what the dashboard needs (call once, e.g. first cell of a notebook)."""
    import holoviews as hv

    pn.extension(*EXTENSIONS, **kwargs)
    hv.extension("bokeh", logo=False)


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
        if session is None:
            settings = (settings or Settings.from_env()).with_overrides(
                endpoint=endpoint, credentials_path=credentials_path)
            session = Session(settings, credentials=credentials)
        self.session = session
        self.connect_view = ConnectView(session.browser)
        self.browse_view = BrowseView(session.browser)
        self.inspect_view = InspectView(session.viewer)
        self.frames_view = FramesView(
            session.viewer, tools=AnalysisTools(session.viewer, state=session.analysis))
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

    def _show_frames(self, event) -> None:
        if event.new:
            self.tabs.active = 2

    def __panel__(self):
        """The plain layout (templates do not render inline in notebooks)."""
        return pn.Column(
            pn.pane.Markdown(f"# {TITLE}"),
            pn.Row(pn.Column(self.sidebar, width=320), self.tabs, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
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
        )


def _served() -> bool:
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None
