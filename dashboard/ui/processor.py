"""The Process step: parameters, the five-panel preview, the batch with progress and Cancel."""

from __future__ import annotations

import panel as pn

from ..state.processor import ProcessorState
from . import plots
from .widgets import number_input, reporter, status_line

PANEL_SIZE = 170  # screen pixels of each preview image's longer side


class ProcessView(pn.viewable.Viewer):
    """Thin view over :class:`ProcessorState`."""

    def __init__(self, state: ProcessorState, **params):
        super().__init__(**params)
        self.state = state
        self._stage_panels = None
        self._panels_shape = None
        p = state.param
        said = reporter(state, "status")
        form = pn.Column(
            pn.Row(number_input(p.start, report=said, width=110),
                   number_input(p.end, report=said, width=110),
                   number_input(p.step, report=said, width=90),
                   number_input(p.sigma, report=said, step=0.5, width=150),
                   pn.widgets.Select.from_param(p.format, width=100)),
            pn.Row(pn.widgets.Select.from_param(p.flat, width=300, css_classes=["echo-flat"]),
                   pn.widgets.Select.from_param(p.dark, width=300, css_classes=["echo-dark"])),
            pn.widgets.Select.from_param(p.flat_mode, width=300, visible=p.interpolable,
                                         css_classes=["echo-flat-mode"]),
            pn.widgets.TextInput.from_param(p.output, sizing_mode="stretch_width"),
            self._run_on(state),
            status_line(state.check, css_class="echo-process-check"),
            pn.Row(
                pn.widgets.Button.from_param(p.preview, color="primary", width=170,
                                             disabled=state.preview_disabled),
                pn.widgets.Button.from_param(p.batch, color="success", width=190,
                                             disabled=state.batch_disabled),
                pn.widgets.Button.from_param(p.cancel, color="danger", width=100,
                                             disabled=p.running.rx.not_()),
            ),
            pn.indicators.Progress(value=p.progress, max=100, sizing_mode="stretch_width",
                                   css_classes=["echo-batch-progress"]),
            status_line(state.progress_text, css_class="echo-batch-progress-text"),
            status_line(p.status, css_class="echo-process-status", error=p.failed),
            status_line(p.summary, css_class="echo-batch-summary"),
            width=620,
        )
        preview = pn.Column(
            status_line(p.preview_title, css_class="echo-preview-title"),
            pn.pane.Markdown("Press **Preview Last Frame** to see the five stages of the pipeline.",
                             visible=p.stages.rx.is_(None)),
            pn.Row(pn.bind(self._panels, p.stages.rx.is_not(None)),
                   css_classes=["echo-preview"], sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        self._layout = pn.Column(form, preview, sizing_mode="stretch_width")

    @staticmethod
    def _run_on(state: ProcessorState):
        """Run on: this server's threads or a Dask scheduler (typed, or the operator's own,
        fixed); hidden where the server offers threads only."""
        p = state.param
        scheduler = pn.widgets.TextInput.from_param(
            p.scheduler, placeholder="tcp://scheduler-host:8786", width=330,
            disabled=state.schedulers is not None, visible=p.run_on.rx() == "dask",
            css_classes=["echo-scheduler"])
        return pn.Row(pn.widgets.Select.from_param(p.run_on, width=250,
                                                   css_classes=["echo-run-on"]),
                      scheduler, visible=len(p.run_on.objects) > 1)

    def _panels(self, ready: bool):
        # Built at the first preview of a frame shape (so the plots start with real data and
        # square pixels); afterwards the DynamicMaps follow `stages` by themselves.
        stages = self.state.stages
        if not ready or stages is None:
            return self._stage_panels
        shape = stages.original.shape
        if self._stage_panels is None or self._panels_shape != shape:
            p = self.state.param
            pairs = plots.stage_panels(lambda: self.state.stages,
                                       {"stages": p.stages, "sigma": p.preview_sigma},
                                       shape=shape, size=PANEL_SIZE)
            self._panels_shape = shape
            self._stage_panels = pn.Row(*[
                pn.Column(pn.pane.HoloViews(image, css_classes=["echo-preview-image"],
                                            width=PANEL_SIZE + 20, height=PANEL_SIZE + 40),
                          pn.pane.HoloViews(hist, width=PANEL_SIZE + 40), margin=(0, 4))
                for image, hist in pairs
            ], sizing_mode="stretch_width")
        return self._stage_panels

    def __panel__(self):
        return self._layout
