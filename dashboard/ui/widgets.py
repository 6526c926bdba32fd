"""Number boxes that check what is typed on the server and say what is wrong.

Panel's ``IntInput``/``FloatInput`` hand their bounds to the page, where Bokeh's spinner keeps
a typed number beyond them on screen and never sends it: the box says 1000 while the state (and
a batch) keep 20, and nothing tells the user. A cleared box sends ``null``, which Param refuses
with a logged traceback, and an integer beyond int64 typed into an unbounded float box breaks
Panel's own NaN check (``np.isnan(10**20)``).

The boxes here keep their bounds on the server only. Every typed value is checked before Panel
or Param see it: a value outside the bounds, not finite, not whole (integer boxes) or empty is
refused, the box is put back to the value in use and a one-sentence message says why
("Start frame must be between 0 and 39.").
"""

from __future__ import annotations

import inspect
import math
import typing as t
from collections.abc import Callable

import panel as pn
import param

from .text import text_html

Report = Callable[[str], None]

#: While playing, the histogram (and the analysis tools' plots, the limit boxes) are redrawn
#: at most this often (seconds): each redraw costs the page a layout of its figure (~100 ms at
#: 1024², measured; once a second it cost playback a tenth of its rate), and the frame
#: matters more.
HIST_PLAYING_PERIOD = 2.0

#: The page's properties that carry the typed number.
_VALUE_KEYS = ("value", "value_throttled")


def _number(value, integer: bool):
    """``value`` as an int (integer boxes) or float, or ``None`` when it is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if integer else float(value)
    if isinstance(value, float):
        if integer:
            return int(value) if math.isfinite(value) and value.is_integer() else None
        return value
    return None


def _fmt(number) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def bounds_text(label: str, start, end) -> str:
    """The sentence naming the values a box accepts."""
    if start is not None and end is not None:
        return f"{label} must be between {_fmt(start)} and {_fmt(end)}."
    if start is not None:
        return f"{label} must be at least {_fmt(start)}."
    if end is not None:
        return f"{label} must be at most {_fmt(end)}."
    return f"{label} must be a finite number."


class _CheckedBox:
    """Mixin for Panel's number boxes: bounds checked on the server, refusals explained."""

    report: Report | None = None
    _integer = False

    def _process_param_change(self, params: dict[str, t.Any]) -> dict[str, t.Any]:
        params = super()._process_param_change(params)
        params.pop("low", None)  # no bounds on the page: it sends every typed number here
        params.pop("high", None)
        return params

    def _process_property_change(self, props: dict[str, t.Any]) -> dict[str, t.Any]:
        message = None
        for key in _VALUE_KEYS:
            if key not in props:
                continue
            message = self.problem(props[key]) if message is None else message
            if message is not None:
                del props[key]
            else:
                props[key] = _number(props[key], self._integer)
        if message is not None:
            self._refused(message)
        return super()._process_property_change(props)

    def problem(self, value) -> str | None:
        """Why the page's ``value`` cannot be used (``None``: it can)."""
        label = self.label or self.name or "The number"
        if value is None:
            return f"{label} was left empty: kept {_fmt(self.value)}."
        number = _number(value, self._integer)
        if number is None:
            return f"{label} must be {'a whole number' if self._integer else 'a number'}."
        if not math.isfinite(number):
            return bounds_text(label, self.start, self.end)
        if (self.start is not None and number < self.start) or \
                (self.end is not None and number > self.end):
            return bounds_text(label, self.start, self.end)
        return None

    def _refused(self, message: str) -> None:
        if self.report is not None:
            self.report(message)
        # The page still shows what was typed: send it the value in use (straight to the
        # models, so no watcher of ``value`` runs for a value that did not change).
        for ref, (model, _) in list(self._models.items()):
            self._apply_update({}, self._process_param_change({"value": self.value}), model, ref)


class CheckedIntInput(_CheckedBox, pn.widgets.IntInput):
    """An ``IntInput`` whose bounds are checked on the server (see the module docstring)."""

    _integer = True


class CheckedFloatInput(_CheckedBox, pn.widgets.FloatInput):
    """A ``FloatInput`` whose bounds are checked on the server (see the module docstring)."""


def number_input(parameter: param.Parameter, *, report: Report,
                 **kwargs) -> CheckedIntInput | CheckedFloatInput:
    """A number box linked to ``parameter`` (as ``from_param``), refusals told to ``report``.

    Parameters
    ----------
    parameter : param.Integer or param.Number
        The state's parameter; its (soft) bounds become the box's, and follow it.
    report : callable
        Called with a one-sentence message when a typed value is refused (e.g. setting the
        state's status line).
    **kwargs
        Passed to ``from_param`` (label, width, step, ...).
    """
    cls = CheckedIntInput if isinstance(parameter, param.Integer) else CheckedFloatInput
    widget = cls.from_param(parameter, **kwargs)
    widget.report = report
    return widget


def number_box(*, report: Report, integer: bool = False,
               **kwargs) -> CheckedIntInput | CheckedFloatInput:
    """A number box not linked to a parameter (its value is watched by the caller)."""
    cls = CheckedIntInput if integer else CheckedFloatInput
    widget = cls(**kwargs)
    widget.report = report
    return widget


def reporter(owner: param.Parameterized, name: str) -> Report:
    """A ``report`` that writes the message into ``owner.<name>`` (a status parameter)."""

    def report(message: str) -> None:
        setattr(owner, name, message)

    return report


#: How an error looks in a status line (besides the ``echo-error`` CSS class).
ERROR_STYLE = {"color": "#b00020", "font-weight": "600"}
#: A status line's own look, set back explicitly after an error (Panel does not remove inline
#: styles that a new ``styles`` leaves out: the red stayed on the next message).
NORMAL_STYLE = {"color": "inherit", "font-weight": "inherit"}


#: Status lines look as Panel's Markdown paragraphs did; long names wrap anywhere.
STATUS_CSS = """
p { overflow-wrap: anywhere; }
strong { font-weight: 600; }
"""


class StatusHTML(pn.pane.HTML):
    """An HTML pane whose new text is sent as just that.

    Panel's markup panes send every property again when their object changes, stylesheets
    included: new stylesheet models, so Bokeh walks the session's whole document (~660 models
    for the dashboard) for each new status message, and the page restyles the line.
    """

    def _update(self, ref: str, model) -> None:
        model.text = self._transform_object(self.object)["object"]


def status_line(text, *, css_class: str, error=None, label: str | None = None,
                **kwargs) -> StatusHTML:
    """A one-line status message (a string, or a parameter or function to follow), shown as
    text (:func:`~dashboard.ui.text.text_html`): never Markdown or HTML, whatever names and
    replies it quotes.

    ``label`` (our own words, e.g. ``"Connected:"``) is shown in bold before a non-empty
    message. ``error`` (a boolean parameter or reference, e.g. ``state.param.failed``) marks
    the line as an error while true: the ``echo-error`` class and :data:`ERROR_STYLE`.
    """
    classes = ("echo-status", css_class)
    if error is not None:  # fresh list/dict each time: Panel may change what it is given
        kwargs["css_classes"] = pn.bind(
            lambda failed: [*classes, "echo-error"] if failed else [*classes], error)
        kwargs["styles"] = pn.bind(
            lambda failed: dict(ERROR_STYLE) if failed else dict(NORMAL_STYLE), error)
    else:
        kwargs["css_classes"] = [*classes]
    if inspect.ismethod(text):  # a param.depends method: follow its parameters
        text = pn.bind(text)
    kwargs["stylesheets"] = [STATUS_CSS, *kwargs.get("stylesheets", [])]
    shown = (text_html(text, label=label) if isinstance(text, str) else
             pn.bind(lambda value: text_html(value, label=label), text))
    return StatusHTML(shown, margin=(0, 10), **kwargs)


def built_when(parameter: param.Parameter, build: Callable[[t.Any], t.Any],
               **kwargs) -> pn.Column:
    """A column holding ``build(value)`` of ``parameter``'s value, rebuilt when it changes, and
    nothing while ``build`` returns ``None``: a plot with nothing to show yet (the last-frame
    thumbnail, the ROI series) costs a new page no models, no server time and no drawing."""
    owner, name = parameter.owner, parameter.name
    column = pn.Column(**kwargs)

    def refresh(*_events) -> None:
        shown = build(getattr(owner, name))
        column.objects = [] if shown is None else [shown]

    owner.param.watch(refresh, name)
    refresh()
    return column

