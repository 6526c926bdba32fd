"""Every widget of the dashboard at and beyond its bounds.

The widgets are found by walking the dashboard's layout (``EchoS3Viewer``), so widgets added
later are picked up by themselves. Each one gets the edge values of its family, twice:

- **as the browser sends them**: ``widget._process_events({...})``, the entry point Bokeh's
  server calls with a change from the page (model property names: ``active`` for radio buttons
  and checkboxes, the label for selects);
- **through the state**: ``setattr(state, name, value)``, as a notebook user would.

After every value: every state parameter is valid (inside its bounds, not NaN, one of its
options), the widget shows the state's value, and no exception other than Param's own refusal
(``ValueError``) escapes. At the end a real action still works (a frame of the demo read right,
a preview computed). Values a browser really sends on a normal page (a cleared number box,
the ends of a slider) must not raise at all; the outcomes of the others (sent only by a
modified client) are recorded in the table this module prints (``-s``) for RELIABILITY.md.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import Counter
from dataclasses import dataclass

import h5py
import numpy as np
import panel as pn
import param
import pytest
from browser_fixtures import browser, tick  # noqa: F401 - the Chromium fixture

from dashboard.config import Settings
from dashboard.demo.store import DEMO_BUCKET, NEXUS_DATASET, NEXUS_KEY
from dashboard.state.session import Session
from dashboard.ui.follow import ShownFrame


HUGE = 10**20  # JSON.stringify(1e20) is "100000000000000000000": arrives as a Python int
TEXTS = ["", "   ", "x" * 100_000, "日本語 ✓ 🙂", "../../../etc/passwd", "a\x00b",
         "<script>alert(1)</script>", "s3://", "s3://b/../../k", "\n\t"]

NUMERIC = (pn.widgets.IntInput, pn.widgets.FloatInput, pn.widgets.IntSlider,
           pn.widgets.FloatSlider, pn.widgets.EditableIntSlider, pn.widgets.EditableFloatSlider)
RANGES = (pn.widgets.IntRangeSlider, pn.widgets.RangeSlider)
CHOICES = (pn.widgets.Select, pn.widgets.RadioButtonGroup, pn.widgets.RadioBoxGroup)
TEXT = (pn.widgets.TextInput, pn.widgets.TextAreaInput)
BOOL = (pn.widgets.Checkbox, pn.widgets.Toggle)
# Not value widgets (actions, read-only displays) or covered elsewhere: the key inputs and the
# object table by test_browser_dashboard / test_secrets; Buttons fire param.Events.
OTHER = (pn.widgets.Button, pn.widgets.FileDownload, pn.indicators.LoadingSpinner, pn.indicators.Progress,
         pn.widgets.Tabulator, pn.widgets.PasswordInput, pn.widgets.FileInput)


# -- the dashboard, connected to the demo store, with a stack open ---------------------------


@pytest.fixture(scope="module")
def app(moto_server, credentials, demo):
    from bokeh.document import Document

    from dashboard.ui.app import EchoS3Viewer, extension

    extension()
    session = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert session.wait(60)
    session.browser.bucket = DEMO_BUCKET
    session.browser.selection = [NEXUS_KEY]
    session.viewer.load = True
    assert session.wait(60) and session.viewer.n_frames == 40
    viewer = EchoS3Viewer(session=session)
    pn.panel(viewer).get_root(Document())  # models exist, as in a served page
    yield viewer
    session.close()


@pytest.fixture
def errors():
    """ERROR records of every logger (Panel's ``Callback failed`` does not propagate)."""

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.ERROR)
            self.records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    handler = Collect()
    loggers = [logging.getLogger(), logging.getLogger("panel")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def binding(widget) -> tuple[param.Parameterized, str] | None:
    """The state parameter a ``Widget.from_param`` widget is linked to (from Panel's link)."""
    for what in ("value", "value_input", "value_throttled"):
        for watchers in (widget.param.watchers.get(what) or {}).values():
            for watcher in watchers:
                try:
                    names = inspect.getclosurevars(watcher.fn).nonlocals
                except (TypeError, ValueError):
                    continue
                if "parameterized" in names and "p_name" in names:
                    return names["parameterized"], names["p_name"]
    return None


def all_widgets(app) -> list:
    return list(pn.panel(app).select(pn.widgets.WidgetBase))


def label(widget) -> str:
    return getattr(widget, "label", None) or widget.name or type(widget).__name__


def states(app) -> list[param.Parameterized]:
    """The session's state models, plus any other model a widget is bound to."""
    found = [app.session.browser, app.session.viewer, app.session.processor]
    for widget in all_widgets(app):
        bound = binding(widget)
        if bound is not None and all(bound[0] is not s for s in found):
            found.append(bound[0])
    return found


def invalid(state: param.Parameterized) -> list[str]:
    """What is wrong with the state's values (empty: every value valid)."""
    problems = []
    for name, p in state.param.objects("existing").items():
        value = getattr(state, name)
        if isinstance(p, param.Event) or value is None:
            continue
        if isinstance(p, param.Number) and not isinstance(p, param.Integer):
            if not math.isfinite(value):
                problems.append(f"{name}={value!r} is not finite")
        if isinstance(p, param.Range) and any(isinstance(v, float) and math.isnan(v)
                                              for v in value):
            problems.append(f"{name}={value!r} holds NaN")
        if isinstance(p, param.Range) and value[0] > value[1]:
            problems.append(f"{name}={value!r} is reversed")
        try:
            p._validate(value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    return problems


EDITABLE = (param.Integer, param.Number, param.Range, param.Selector, param.Boolean,
            param.String)


def editable(p: param.Parameter, name: str) -> bool:
    """A value the user sets (not the open stack, frames, results or a button)."""
    return (isinstance(p, EDITABLE) and not isinstance(p, param.Event) and name != "name"
            and not p.constant and not (p.precedence is not None and p.precedence < 0))


def state_snapshot(app) -> dict:
    return {id(s): {n: getattr(s, n) for n, p in s.param.objects("existing").items()
                    if editable(p, n)}
            for s in states(app)}


# -- the edge values of each family ----------------------------------------------------------


@dataclass
class Case:
    widget: str
    kind: str  # the widget's class name
    family: str
    value: object
    path: str  # "browser" or "state"
    outcome: str = ""  # accepted / adjusted / refused / refused (server log) / ...
    browser_normal: bool = False  # a normal page sends this (cleared box, slider ends)


def numeric_values(widget, bound) -> list[tuple[object, bool]]:
    """(value, sent by a normal page?) for a number box or slider."""
    integer = isinstance(widget, (pn.widgets.IntInput, pn.widgets.IntSlider))
    start, end = widget.start, widget.end
    if bound is not None:
        low, high = bound[0].param[bound[1]].get_soft_bounds()
        start = low if low is not None else start
        end = high if high is not None else end
    values = [(0, True)] if (start is None or start <= 0) and (end is None or end >= 0) else []
    if start is not None:
        values += [(start, True), (start - 1, False)]
    if end is not None:
        values += [(end, True), (end + 1, False)]
    box = isinstance(widget, (pn.widgets.IntInput, pn.widgets.FloatInput))
    values += [(None, box), (-10**18, box and start is None), (HUGE, box and end is None),
               (float(HUGE), box and end is None and not integer), (-1e300, False),
               (math.nan, False), (math.inf, False), (-math.inf, False)]
    if integer:
        values.append((2.5, False))
    return values


def range_values(widget) -> list[tuple[object, bool]]:
    low, high = widget.start, widget.end
    mid = low + (high - low) / 2
    if isinstance(widget, pn.widgets.IntRangeSlider):
        mid = int(mid)
    return [((low, high), True), ((low, low), True), ((high, high), True), ((mid, low), False),
            ((low - 1, high + 1), False), ((math.nan, high), False), ((None, None), False),
            ((low, math.inf), False)]


def browser_events(widget, value) -> dict:
    """What the page sends for ``value`` (the Bokeh model's property)."""
    if isinstance(widget, (pn.widgets.RadioButtonGroup, pn.widgets.RadioBoxGroup)):
        return {"active": value}
    return {"value": value}


def choice_browser_values(widget) -> list[tuple[object, bool]]:
    if isinstance(widget, (pn.widgets.RadioButtonGroup, pn.widgets.RadioBoxGroup)):
        n = len(widget.options)
        return [(0, True), (n - 1, True), (-1, False), (n, False), (None, False), ("x", False)]
    labels = list(widget.labels)
    values = [(labels[0], True), (labels[-1], True)] if labels else []
    return values + [("not-an-option", False), ("", False), (None, False)]


def choice_state_values(owner, name) -> list:
    objects = list(owner.param[name].objects)
    values = [objects[0], objects[-1]] if objects else []
    return values + ["not-an-option", "", None, 0]


def family(widget) -> str | None:
    for name, classes in (("number", NUMERIC), ("range", RANGES), ("choice", CHOICES),
                          ("text", TEXT), ("bool", BOOL), ("other", OTHER)):
        if isinstance(widget, classes):
            return name
    return None


# -- running a case ----------------------------------------------------------------------------


def run_browser(app, widget, bound, value, errors) -> tuple[str, list[str]]:
    """Send one change as the page would: (outcome in words, problems found)."""
    before = None if bound is None else getattr(*bound)
    n_errors = len(errors)
    raised = None
    said: list[str] = []  # what a checked number box (ui/widgets.py) told the user
    report = getattr(widget, "report", None)
    if report is not None:
        widget.report = lambda message: (said.append(message), report(message))
    try:
        widget._process_events(browser_events(widget, value))
    except Exception as exc:  # noqa: BLE001 - recorded; Panel logs it as "Callback failed"
        raised = exc
    finally:
        if report is not None:
            widget.report = report
    assert app.session.wait(60)
    logged = errors[n_errors:]
    after = None if bound is None else getattr(*bound)
    problems = [f"state {p}" for state in states(app) for p in invalid(state)]
    if raised is not None:
        outcome = f"refused, {type(raised).__name__} logged (Callback failed)"
    elif logged:
        outcome = f"error logged: {logged[0].getMessage()[:60]}"
    elif said:
        outcome = f"refused with a message: {said[0]}"
    elif bound is None:
        outcome = "accepted by the widget"
    elif _same(after, before) and not _same(after, value):
        outcome = "refused quietly (widget reset)"
    else:
        outcome = "accepted" if _same(after, value) else f"adjusted to {after!r}"
    if bound is not None and not isinstance(widget, BOOL + CHOICES) \
            and not _same(widget.value, after):
        outcome += f"; widget left showing {widget.value!r}, state {after!r}"
    if report is not None and outcome.startswith("refused quietly"):
        problems.append("a checked number box refused a value without saying why")
    return outcome, problems


def run_state(app, owner, name, value) -> tuple[str, list[str]]:
    before = getattr(owner, name)
    try:
        setattr(owner, name, value)
    except Exception as exc:  # noqa: BLE001 - Param's refusal, or a watcher failed after it
        if isinstance(exc, ValueError) and _same(getattr(owner, name), before):
            return "refused (ValueError)", []
        assert app.session.wait(60)
        problems = [f"state {p}" for state in states(app) for p in invalid(state)]
        return f"accepted, then {type(exc).__name__} in a watcher", problems + [
            f"{type(exc).__name__}: {str(exc)[:80]}"]
    assert app.session.wait(60)
    problems = [f"state {p}" for state in states(app) for p in invalid(state)]
    after = getattr(owner, name)
    return ("accepted" if _same(after, value) else f"adjusted to {after!r}"), problems


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays etc.
        return False


def restore(app, snapshot: dict) -> None:
    for state in states(app):
        saved = snapshot.get(id(state), {})
        for name, value in saved.items():
            p = state.param[name]
            if p.constant or p.readonly or _same(getattr(state, name), value):
                continue
            try:
                setattr(state, name, value)
            except Exception:  # noqa: BLE001 - best effort; validity is checked separately
                pass
    assert app.session.wait(60)


# -- findings ----------------------------------------------------------------------------------

def _finding(case: Case, problems: list[str]) -> bool:
    """Is this case a finding (a test failure)?"""
    if problems:
        return True
    if case.browser_normal and (case.outcome.startswith(("refused, ", "error logged"))
                                or "widget left" in case.outcome):
        return True
    return False


RESULTS: list[Case] = []


@pytest.fixture(scope="module", autouse=True)
def table():
    """Print the outcomes at the end of the module, for RELIABILITY.md (``pytest -s``)."""
    yield
    rows = Counter((c.widget, c.path, c.outcome) for c in RESULTS)
    for (widget, path, outcome), n in sorted(rows.items()):
        print(f"| {widget} | {path} | {n} | {outcome} |")

# Parameters shown as text or indicators, or set by the view's own glue, not by a widget.
DISPLAY_ONLY = {"busy", "downloading", "download_progress", "loading", "playing", "previewing",
                "running", "done", "total", "progress", "frames_per_s", "eta_s", "contrast",
                "achieved_fps", "connected", "credentials_text"}


@pytest.mark.slow
def test_every_widget_is_found_and_has_a_family(app):
    widgets = all_widgets(app)
    unknown = [f"{type(w).__name__} {label(w)!r}" for w in widgets if family(w) is None]
    assert not unknown, f"widgets without edge cases (add their family here): {unknown}"
    counts = Counter(family(w) for w in widgets)
    assert counts["number"] >= 6 and counts["text"] >= 5 and counts["choice"] >= 5, counts
    # Every number, range, choice and flag a user sets has a widget bound to it.
    bound = {(id(b[0]), b[1]) for w in widgets if (b := binding(w)) is not None}
    # The frame controls are bound to what they show (dashboard.ui.follow), which sets the viewer.
    bound |= {(id(b[0].state), b[1]) for w in widgets
              if (b := binding(w)) is not None and isinstance(b[0], ShownFrame)}
    for state in (app.session.browser, app.session.viewer, app.session.processor):
        for name, p in state.param.objects("existing").items():
            if editable(p, name) and not isinstance(p, param.String) \
                    and name not in DISPLAY_ONLY:
                assert (id(state), name) in bound, f"{type(state).__name__}.{name} has no widget"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["number", "range", "choice", "text", "bool"])
def test_widgets_at_and_beyond_their_bounds(app, errors, kind):
    widgets = [w for w in all_widgets(app) if family(w) == kind]
    assert widgets
    snapshot = state_snapshot(app)
    findings: list[tuple[Case, list[str]]] = []
    ran: set = set()
    for widget in widgets:
        bound = binding(widget)
        if kind == "number":
            browser_values = numeric_values(widget, bound)
            state_values = [v for v, _ in browser_values]
        elif kind == "range":
            browser_values = range_values(widget)
            state_values = [v for v, _ in browser_values]
        elif kind == "choice":
            browser_values = choice_browser_values(widget)
            state_values = choice_state_values(*bound) if bound else []
        elif kind == "text":
            browser_values = [(t, True) for t in TEXTS]
            state_values = TEXTS
        else:
            browser_values = [(True, True), (False, True), (None, False), ([0], False)]
            state_values = [True, False, None, 1]
        runs = [("browser", v, normal) for v, normal in browser_values]
        runs += [("state", v, False) for v in (state_values if bound is not None else [])]
        for path, value, normal in runs:
            if path == "browser":
                outcome, problems = run_browser(app, widget, bound, value, errors)
            else:
                outcome, problems = run_state(app, *bound, value)
            case = Case(label(widget), type(widget).__name__, kind, value, path, outcome, normal)
            RESULTS.append(case)
            ran.add(_key(case))
            if _finding(case, problems):
                findings.append((case, problems))
            restore(app, snapshot)
    _report(findings, ran)


def _key(case: Case) -> tuple[str, str, str]:
    return (case.widget, repr(case.value), case.path)


def _report(findings, ran: set) -> None:
    """Fail on any finding (every one listed, with its outcome and the state's problems)."""

    def line(case, problems):
        return f"{case.widget} <- {case.value!r:.40} ({case.path}): {case.outcome} {problems}"

    assert ran
    assert not findings, "\n".join(line(c, p) for c, p in findings)


# -- the actions after edge values: a clear message, never "unexpected" ----------------------

LONG_NAME = "x" * 300  # beyond NAME_MAX (255)
FOLDERS = ["a\x00b", LONG_NAME, "../up/日本語 ✓", "/proc/no/such", "s3://", "   "]

def _clear(message: str) -> bool:
    return bool(message.strip()) and "unexpected" not in message and "Traceback" not in message


@pytest.fixture
def fresh(moto_server, credentials, demo):
    """A session of its own (connecting with bad settings must not spoil the shared one)."""
    session = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert session.wait(60)
    yield session
    session.close()


@pytest.mark.slow
def test_actions_after_edge_values_say_what_is_wrong(app, fresh, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative folders resolve from the server's folder
    session = app.session
    processor, browse = session.processor, session.browser
    outcomes: dict[tuple[str, str], str] = {}

    for sigma in (0.0, 1e-300, 100.0):
        try:
            processor.sigma = sigma
        except ValueError as exc:  # Param's refusal names the allowed range
            outcomes[("sigma", repr(sigma))] = str(exc)
            assert processor.sigma != sigma
            continue
        processor.preview = True
        assert session.wait(60)
        outcomes[("sigma", repr(sigma))] = processor.status
    processor.sigma = 4.0
    assert outcomes[("sigma", "100.0")] == "Preview of frame 39 ready."

    for folder in FOLDERS:
        processor.param.update(start=20, end=21, step=1, output=folder)
        processor.batch = True
        assert session.wait(120)
        outcomes[("output", repr(folder))] = processor.status
    browse.selection = [NEXUS_KEY]
    for folder in FOLDERS:
        browse.download_dir = folder
        browse.download = True
        assert session.wait(120)
        outcomes[("download_dir", repr(folder))] = browse.download_status or browse.status

    for path in FOLDERS + [str(tmp_path), "/etc/passwd"]:
        fresh.browser.credentials_path = path
        fresh.browser.connect = True
        assert fresh.wait(60)
        outcomes[("credentials_path", repr(path))] = fresh.browser.status
    fresh.browser.credentials_path = ""
    for endpoint in ("", "a\x00b", "ftp://x", "http://[::1", "http://127.0.0.1:99999",
                     "http://" + "h" * 300):
        fresh.browser.endpoint = endpoint
        fresh.browser.connect = True
        assert fresh.wait(60)
        outcomes[("endpoint", repr(endpoint))] = fresh.browser.status

    for (field, value), message in outcomes.items():
        RESULTS.append(Case(field, "action", "action", value, "action", message[:90]))
    unclear = {k: m for k, m in outcomes.items() if not _clear(m)}
    assert not unclear, unclear
    # Folders are server paths chosen by the user (no sandbox): "../up/…" is exactly that
    # folder, relative to the server's working folder, with the batch and the download in it.
    written = tmp_path / "up" / "日本語 ✓"
    assert sorted(p.suffix for p in written.glob("scan_0001*.png")) == [".png", ".png"]
    assert (written / NEXUS_KEY).is_file()


@pytest.mark.slow
def test_the_session_still_works_after_all_edges(app, demo):
    """A real action after all of the above: the frame read is the right one, a preview runs."""
    viewer, processor = app.session.viewer, app.session.processor
    viewer.index = 7
    assert viewer.wait_for_frame(7, timeout=60), (viewer.status, viewer.n_frames, viewer.dataset,
                                                  viewer.shown_index, viewer.playing,
                                                  viewer.loop_range, viewer.stack)
    with h5py.File(demo.path(NEXUS_KEY)) as f:
        np.testing.assert_array_equal(viewer.frame, f[NEXUS_DATASET][7])
    processor.param.update(sigma=2.0, start=20, end=viewer.n_frames - 1, step=1)
    processor.preview = True  # the last frame of the range: 39
    assert app.session.wait(60)
    assert processor.status == "Preview of frame 39 ready.", processor.status
    assert processor.stages is not None


# -- in Chromium: typing out-of-range numbers and pressing Enter -------------------------------

@pytest.mark.browser
def test_typing_out_of_range_numbers_in_chromium(browser, moto_server, credentials, demo):
    from browser_fixtures import click, everything_on_the_page, new_page, shot, status, tab
    from playwright.sync_api import expect

    from dashboard.app import RunningServer

    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logging.getLogger("panel").addHandler(handler)
    server = RunningServer(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    page = None
    try:
        page = new_page(browser, server.url)
        expect(status(page, "echo-connect-status")).to_contain_text("Connected to")
        page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
            .select_option(DEMO_BUCKET)
        click(page, "List Objects")
        keyword = page.locator(".bk-input-group", has_text="Keyword").locator("input").first
        keyword.fill("scan_0001.nxs")
        keyword.press("Enter")
        expect(page.locator(".tabulator-row")).to_have_count(1)
        tick(page, NEXUS_KEY)
        tab(page, "Frames")
        click(page, "Load Selected H5 File")
        expect(status(page, "echo-viewer-status")).to_contain_text("40 frames")

        def box(field):
            return page.locator(".bk-input-group:visible", has_text=field).locator("input").first

        def typed(field, text, line, message):
            """Type ``text``, press Enter: ``message`` on ``line``, the box back to its value."""
            entry = box(field)
            shown = entry.input_value()
            before = len(logged)
            entry.fill(text)
            entry.press("Enter")
            if message:
                expect(status(page, line)).to_contain_text(message)
            expect(entry).to_have_value(shown)  # the value in use, not what was typed
            assert logged[before:] == [], (field, text, logged[before:])
            outcomes[(field, text)] = f"refused with a message: {message}"

        outcomes: dict[tuple[str, str], str] = {}
        frames = "Frame number must be between 0 and 39."
        for text, message in (("99999", frames), ("-5", frames), ("", "left empty: kept 0"),
                              ("100000000000000000000", frames), ("1e400", frames)):
            typed("Frame number", text, "echo-viewer-status", message)
        expect(status(page, "echo-frame-label")).to_contain_text("of 39")
        # A number in range is still used.
        box("Frame number").fill("7")
        box("Frame number").press("Enter")
        expect(status(page, "echo-frame-label")).to_contain_text("7 of 39")
        shot(page, "edges-01-frames")
        tab(page, "Process")
        check = status(page, "echo-process-check")
        expect(check).to_have_text("20 frames will be written as PNG.")
        sigma = box("Gaussian").input_value()
        for field, text, message in (
                ("Start frame", "1000", "Start frame must be between 0 and 39."),
                ("Start frame", "-3", "Start frame must be between 0 and 39."),
                ("Start frame", "", "Start frame was left empty: kept 20."),
                ("End frame", "99999", "End frame must be between 0 and 39."),
                ("End frame", "-1", "End frame must be between 0 and 39."),
                ("Step", "0", "Step must be at least 1."),
                ("Step", "-2", "Step must be at least 1."),
                ("Step", "", "Step was left empty: kept 1."),
                ("Gaussian", "1e5", "Gaussian σ (pixels) must be between"),
                ("Gaussian", "-1", "Gaussian σ (pixels) must be between"),
                ("Gaussian", "101", "Gaussian σ (pixels) must be between"),
                ("Gaussian", "", f"Gaussian σ (pixels) was left empty: kept {sigma}.")):
            typed(field, text, "echo-process-status", message)
        # What the user sees is what the batch uses: the box says 20, the check line too.
        box("Start frame").fill("1000")
        box("Start frame").press("Enter")
        expect(status(page, "echo-process-status")).to_have_text(
            "Start frame must be between 0 and 39.")
        expect(box("Start frame")).to_have_value("20")
        expect(check).to_have_text("20 frames will be written as PNG.")
        shot(page, "edges-02-start-refused")
        box("Start frame").fill("25")
        box("Start frame").press("Enter")
        expect(check).to_have_text("15 frames will be written as PNG.")
        # Still usable: a preview of the last frame with the σ shown.
        click(page, "Preview Last Frame")
        expect(status(page, "echo-process-status")).to_contain_text("Preview of frame 39 ready")
        assert "Traceback" not in everything_on_the_page(page)
        assert logged == [], logged  # no "Callback failed" (or any error) on the server
    finally:
        logging.getLogger("panel").removeHandler(handler)
        if page is not None:
            page.context.close()
        server.stop()
    for (field, text), outcome in outcomes.items():
        RESULTS.append(Case(field, "typed", "typed", text, "chromium", outcome))


# -- the checked number box itself -------------------------------------------------------------


@pytest.mark.parametrize("integer", [True, False])
def test_checked_box_refuses_explains_and_restores_the_page(integer):
    from bokeh.document import Document

    from dashboard.ui.widgets import CheckedFloatInput, CheckedIntInput, number_input, reporter

    class Form(param.Parameterized):
        start = (param.Integer if integer else param.Number)(default=20, bounds=(0, 39),
                                                             label="Start frame")
        status = param.String(default="")

    form = Form()
    box = number_input(form.param.start, report=reporter(form, "status"))
    assert isinstance(box, CheckedIntInput if integer else CheckedFloatInput)
    model = box.get_root(Document())
    assert (model.low, model.high) == (None, None)  # no bounds on the page: every value is sent
    assert (box.start, box.end) == (0, 39)  # ... and checked here
    for sent, message in ((1000, "Start frame must be between 0 and 39."),
                          (-3, "Start frame must be between 0 and 39."),
                          (None, "Start frame was left empty: kept 20."),
                          (HUGE, "Start frame must be between 0 and 39."),
                          (math.nan, "Start frame must be between 0 and 39."
                           if not integer else "Start frame must be a whole number."),
                          (math.inf, "Start frame must be between 0 and 39."
                           if not integer else "Start frame must be a whole number."),
                          ("12", "Start frame must be "
                                 f"{'a whole number' if integer else 'a number'}.")):
        form.status = ""
        if not isinstance(sent, str):
            model.value = sent  # what the page shows after typing (as Bokeh applies it)
        box._process_events({"value": sent, "value_throttled": sent})
        assert form.status == message, (sent, form.status)
        assert form.start == 20 and box.value == 20
        assert model.value == 20  # sent back to the page
    form.status = ""
    box._process_events({"value": 25})  # in range: used, nothing said
    assert form.start == 25 and form.status == ""
    form.param.start.bounds = (0, 9)  # the bounds follow the state's (a shorter stack)
    assert (box.start, box.end) == (0, 9)
    box._process_events({"value": 12})
    assert form.start == 25 and form.status == "Start frame must be between 0 and 9."
