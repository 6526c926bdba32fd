"""Deep links: the pure link table (round trips, hostile query strings) and restoring a view
through the session's state against the demo store in moto."""

from __future__ import annotations

from urllib.parse import parse_qs, quote

import h5py
import numpy as np
import param
import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.processing.pipeline import SIGMA_BOUNDS
from dashboard.config import Settings
from dashboard.demo.store import (
    DEMO_BUCKET, DXCHANGE_KEY, EMPTY_BUCKET, NEXUS_DATASET, NEXUS_KEY,
)
from dashboard.state import links
from dashboard.state.browser import BrowserState
from dashboard.state.links import FIELDS, Link, decode_query, encode_query
from dashboard.state.processor import ProcessorState
from dashboard.state.session import Session
from dashboard.state.viewer import COLORMAPS, ViewerState
from dashboard.text import shown

OWNERS = {"browser": BrowserState, "viewer": ViewerState, "processor": ProcessorState}
SECRET_PARTS = (ACCESS_KEY, SECRET_KEY, "secret", "access_key", "credentials", "profile",
                "output", "download")


def no_secrets(query: str) -> None:
    for part in SECRET_PARTS:
        assert part.lower() not in query.lower(), part


# -- pure: the table -------------------------------------------------------------------------


def full_view() -> dict:
    values = {
        "endpoint": "https://s3.example.org:8443", "bucket": "echo-demo",
        "key": "beamline/2026-11/scan 0001 µ+&=#?.nxs", "dataset": "/entry/data/data",
        "frame": 17, "colormap": "viridis", "equalize": False,
        "contrast": (12.5, 3400.0),
        "start": 25, "end": 39, "step": 2, "sigma": 2.5, "format": "TIFF",
    }
    if "contrast_mode" in ViewerState.param:
        values["contrast_mode"] = "manual"
    if "percentiles" in ViewerState.param:
        values["percentiles"] = (2.0, 98.5)
    return values


def test_a_full_view_round_trips():
    values = full_view()
    query = encode_query(values)
    link = decode_query("?" + query, OWNERS)
    assert link.values == values and link.problems == () and link.ignored == 0
    assert link.message() == ""
    no_secrets(query)
    # Readable and in table order: where, then what is shown, then processing.
    names = list(parse_qs(query))
    assert names == [f.name for f in FIELDS if f.name in values]


def test_encoding_refuses_names_outside_the_table():
    with pytest.raises(KeyError):
        encode_query({"bucket": "b", "secret_key": SECRET_KEY})
    with pytest.raises(KeyError):
        encode_query({"output": "/home/alice/out"})
    assert "output" not in links.BY_NAME and "credentials_path" not in links.BY_NAME


@settings(max_examples=60, deadline=None)
@given(
    key=st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn")),
                min_size=1, max_size=60).map(lambda s: s + ".h5"),
    frame=st.integers(0, links.MAX_FRAME),
    colormap=st.sampled_from(COLORMAPS),
    equalize=st.booleans(),
    low=st.floats(-1e6, 1e6, allow_nan=False), width=st.floats(0, 1e6, allow_nan=False),
    sigma=st.floats(*SIGMA_BOUNDS, allow_nan=False),
)
def test_round_trip_of_any_valid_view(key, frame, colormap, equalize, low, width, sigma):
    values = {"bucket": "b-1.x_y", "key": key, "frame": frame, "colormap": colormap,
              "equalize": equalize, "contrast": (low, low + width), "sigma": sigma}
    link = decode_query(encode_query(values), OWNERS)
    assert link.problems == ()
    assert {k: v for k, v in link.values.items() if k not in ("contrast", "sigma")} == {
        k: v for k, v in values.items() if k not in ("contrast", "sigma")}
    np.testing.assert_allclose(link.values["contrast"], values["contrast"], rtol=1e-9,
                               atol=1e-9)
    assert link.values["sigma"] == pytest.approx(sigma, rel=1e-9, abs=1e-12)


HOSTILE = {
    "frame": ["-3", "1e3", "99999999999999999999", "nan", "７", "0x10", "", " "],
    "colormap": ["<script>alert(1)</script>", "jet", "gray;rm -rf /", "grаy"],  # Cyrillic а
    "equalize": ["maybe", "2", "TRUE!"],
    "contrast": ["1", "5,1", "nan,inf", "1,2,3", "1e400,2", "a,b", "-inf,0"],
    "sigma": ["-1", "0", "0.001", "101", "inf", "1e-400x", "4;DROP TABLE"],
    "step": ["0", "-1"],
    "format": ["EXE", "png/../../etc"],
    "bucket": ["../etc", "a/b", "", "x" * 300, "<b>", "bucket name"],
    "key": ["notes.txt", "a\x00.h5", "a\nb.h5", "x" * 1100 + ".h5", "\ufffd.h5",
            "a\u202eb.h5"],  # right-to-left override
    "dataset": ["entry/data", "/", "/a\x1b[31m"],
    "endpoint": ["ftp://x", "http://user:pw@evil.example", "javascript:alert(1)",
                 "https://x.example/?a=1", "https://x.example#frag", "http://h:99999",
                 "http://"],
}


@pytest.mark.parametrize("name,text", [(n, t) for n, ts in HOSTILE.items() for t in ts])
def test_hostile_values_are_dropped_with_a_reason(name, text):
    link = decode_query("?" + quote(name) + "=" + quote(text, safe=""), OWNERS)
    assert name not in link.values
    if text == "":
        assert link.message() == ""  # an empty value means "not given"
        return
    message = link.message()
    assert message.startswith("Parts of this link were ignored: " + name + " (")
    # Our own words only: nothing of the hostile value comes back.
    assert "<" not in message and "script" not in message and "\x00" not in message
    assert len(message) < 300


def test_jupyters_token_is_neither_used_nor_reported():
    # The JupyterHub launcher opens .../echo-s3-viewer/app?token=...: not a part of our link.
    link = decode_query("?token=0123abcd&colormap=magma", OWNERS)
    assert link.values == {"colormap": "magma"} and link.ignored == 0
    assert link.message() == ""


def test_unknown_duplicate_and_oversized_parameters():
    link = decode_query("?frame=1&frame=2&utm_source=x&tab=3&colormap=magma", OWNERS)
    assert link.values == {"colormap": "magma"}
    assert link.problems == ("frame (given 2 times)",) and link.ignored == 2
    assert link.message() == ("Parts of this link were ignored: frame (given 2 times), "
                              "2 unknown parameters.")
    huge = decode_query("?key=" + "a" * 20_000 + ".h5", OWNERS)
    assert not huge and "too long" in huge.message()
    many = decode_query("&".join(f"p{i}=1" for i in range(500)), OWNERS)
    assert not many and many.message()
    # Request arguments (what the server hands over) work the same, bytes and all.
    args = {"bucket": [b"echo-demo"], "frame": [b"3"], "key": ["caf\u00e9.h5".encode()]}
    assert decode_query(args, OWNERS).values == {"bucket": "echo-demo", "frame": 3,
                                                 "key": "caf\u00e9.h5"}
    assert decode_query({"key": [b"\xff\xfe.h5"]}, OWNERS).problems  # not UTF-8


def test_choices_are_case_insensitive_and_canonical():
    link = decode_query("colormap=Viridis&format=tiff&equalize=NO", OWNERS)
    assert link.values == {"colormap": "viridis", "format": "TIFF", "equalize": False}


def test_a_missing_state_parameter_counts_as_unknown():
    class OldViewer(param.Parameterized):  # a dashboard without contrast modes
        colormap = param.Selector(default="gray", objects=["gray"])

    owners = {"viewer": OldViewer}
    link = decode_query("contrast_mode=locked&percentiles=1,99&colormap=gray", owners)
    assert link.values == {"colormap": "gray"} and link.ignored == 2
    assert links.read_view({"viewer": OldViewer()}, ["colormap", "contrast_mode"]) == {
        "colormap": "gray"}


# -- state: restoring a view against the demo store -----------------------------------------


@pytest.fixture
def make_session(moto_server, credentials, demo):
    made = []

    def make(*, connect=True, settings=None):
        s = Session(settings or Settings(endpoint=moto_server.endpoint),
                    credentials=credentials if connect else None, connect=connect)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def nexus_frames(demo):
    with h5py.File(demo.path(NEXUS_KEY)) as f:
        return f[NEXUS_DATASET][()]


def open_view(session, key=NEXUS_KEY):
    assert session.wait(60)
    session.browser.bucket = DEMO_BUCKET
    session.browser.list_objects = True
    assert session.wait(60)
    session.browser.selection = [key]
    session.viewer.load = True
    assert session.wait(60)
    return session.viewer


def test_link_of_a_view_restores_the_same_view_in_another_session(make_session, demo):
    a = make_session()
    v = open_view(a)
    v.param.update(colormap="magma", equalize=False, index=23)
    assert v.wait_for_frame(23)
    a.processor.param.update(start=22, end=30, step=2, sigma=1.5, format="NPY")
    query = a.link_query()
    no_secrets(query)
    assert a.link() == {
        **{"bucket": DEMO_BUCKET, "key": NEXUS_KEY, "dataset": NEXUS_DATASET, "frame": 23,
           "colormap": "magma", "equalize": False, "start": 22, "end": 30, "step": 2,
           "sigma": 1.5, "format": "NPY"},
        **links.read_view(a.owners(), ["contrast_mode", "percentiles"]),
        **({"contrast": v.contrast} if v.contrast is not None
           and "contrast_mode" not in ViewerState.param else {}),
    }

    b = make_session(connect=False)  # the link is opened before connecting
    b.restore("?" + query)
    assert b.restoring and "opens once you are connected" in b.link_status
    assert b.viewer.colormap == "magma" and b.viewer.equalize is False  # display: at once
    b.start(credentials=a.browser._credentials)
    assert b.wait_restored(60), b.link_status
    w = b.viewer
    assert w.wait_for_frame(23)
    np.testing.assert_array_equal(w.frame, nexus_frames(demo)[23])
    assert w.url == f"s3://{DEMO_BUCKET}/{NEXUS_KEY}" and w.dataset == NEXUS_DATASET
    assert b.browser.bucket == DEMO_BUCKET and b.browser.selection == [NEXUS_KEY]
    p = b.processor
    assert (p.start, p.end, p.step, p.sigma, p.format) == (22, 30, 2, 1.5, "NPY")
    assert b.link_status == f"Link opened: {shown(NEXUS_KEY)}, {shown(NEXUS_DATASET)}, frame 23."
    assert b.link_query() == query  # the same view, the same link
    no_secrets(b.link_query())


def test_restoring_another_dataset_of_the_file(make_session):
    s = make_session()
    assert s.wait(60)
    s.restore(f"bucket={DEMO_BUCKET}&key={quote(DXCHANGE_KEY)}&dataset=/exchange/data_white"
              "&frame=3")
    assert s.wait_restored(60), s.link_status
    assert s.viewer.stack.dataset == "/exchange/data_white"
    assert s.viewer.wait_for_frame(3)
    assert s.link_status.startswith("Link opened:") and "frame 3" in s.link_status


def test_out_of_range_values_are_clamped_or_skipped_with_a_message(make_session, demo):
    s = make_session()
    last = nexus_frames(demo).shape[0] - 1
    s.restore(f"bucket={DEMO_BUCKET}&key={quote(NEXUS_KEY)}&frame=999999&start=5000"
              "&dataset=/no/such&colormap=jet")
    assert s.wait_restored(60), s.link_status
    assert s.viewer.wait_for_frame(last)
    text = s.link_status
    assert f"Frame 999999 is beyond the last frame ({last}): showing {last}." in text
    assert "start 5000 does not fit this file" in text
    assert "is not an image stack of this file" in text and "colormap (one of" in text
    assert s.processor.start == 20  # the stack's default stayed


@pytest.mark.parametrize("query,expected", [
    (f"bucket={DEMO_BUCKET}&key=beamline/2026-11/gone_9999.h5",
     "The link's file beamline/2026-11/gone_9999.h5 is not in s3://echo-demo/"),
    ("bucket=no-such-bucket&key=a.h5", "The bucket no-such-bucket of this link is not visible"),
    (f"bucket={EMPTY_BUCKET}&key=a.h5", "could not be listed or is empty"),
])
def test_missing_objects_are_reported(make_session, query, expected):
    s = make_session()
    s.restore(query)
    assert s.wait_restored(60)
    assert expected in s.link_status
    assert s.viewer.stack is None


def test_a_link_for_another_endpoint_waits_for_the_user(make_session, moto_server):
    early = make_session(connect=False)
    early.restore(f"endpoint=https://s3.elsewhere.example&bucket={DEMO_BUCKET}&key=a.h5")
    assert early.restoring and early.link_status.endswith(
        "It is for the endpoint https://s3.elsewhere.example: if you trust it, enter it as "
        "the Endpoint.")
    s = make_session()
    s.restore(f"endpoint=https://s3.elsewhere.example&bucket={DEMO_BUCKET}"
              f"&key={quote(NEXUS_KEY)}&frame=2")
    assert s.wait(60)
    s.tasks.wait(5)
    assert s.restoring
    assert "This link is for the endpoint https://s3.elsewhere.example" in s.link_status
    assert s.browser.endpoint == moto_server.endpoint  # never switched behind the user's back
    assert s.viewer.stack is None
    # The user goes their own way: the waiting link is set aside (the address bar is freed).
    open_view(s)
    assert not s.restoring and "was set aside: another file was opened" in s.link_status


def test_the_link_of_a_custom_endpoint_names_it(make_session, moto_server):
    s = make_session(settings=Settings(), connect=False)  # the server's default is ECHO ...
    s.browser.connect_now(_keys(), endpoint=moto_server.endpoint)  # ... the user chose another
    assert s.wait(60) and s.browser.connected
    s.browser.bucket = DEMO_BUCKET  # other tests' buckets on the shared server may sort first
    assert s.link()["endpoint"] == moto_server.endpoint
    # A link for that endpoint opens once the session is connected there.
    t = make_session(settings=Settings(), connect=False)
    t.restore(s.link_query())
    t.browser.connect_now(_keys(), endpoint=moto_server.endpoint)
    assert t.wait_restored(60) and t.link_status.startswith("Link opened: s3://echo-demo/")


def _keys():
    from dashboard.storage.credentials import Credentials

    return Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)


def test_display_only_links_and_a_key_without_bucket(make_session):
    s = make_session(connect=False)
    link = s.restore("colormap=cividis&equalize=false")
    assert isinstance(link, Link) and not s.restoring
    assert s.viewer.colormap == "cividis" and s.viewer.equalize is False
    assert s.link_status == "Link opened: display settings applied."
    s.restore(f"key={quote(NEXUS_KEY)}&frame=4&sigma=2")
    assert s.link_status == "Not applied without the link's bucket: key, frame, sigma."
    assert not s.restoring and s.processor.sigma == 4.0


def test_a_hostile_link_never_raises_and_leaves_the_session_usable(make_session):
    s = make_session()
    s.restore("?bucket=%3Cscript%3E&key=%00.h5&frame=-1&colormap=%E2%80%AE&sigma=1e999"
              "&contrast=nan,1&equalize=%F0%9F%92%A9&" + "x=1&" * 50)
    assert not s.restoring
    assert s.link_status.startswith("Parts of this link were ignored:")
    assert "<script" not in s.link_status
    v = open_view(s)  # the session still works
    assert v.wait_for_frame(0)
    no_secrets(s.link_query())


def test_no_file_open_links_only_the_bucket_and_display(make_session):
    s = make_session()
    assert s.wait(60)
    s.browser.bucket = DEMO_BUCKET
    values = s.link()
    assert values["bucket"] == DEMO_BUCKET and "key" not in values and "frame" not in values
    assert "start" not in values and "endpoint" not in values
    unconnected = make_session(connect=False)
    assert "bucket" not in unconnected.link()


def test_contrast_settings_travel_with_the_link(make_session):
    a = make_session()
    v = open_view(a)
    assert v.wait_for_frame(0)
    v.param.update(contrast_mode="locked", percentiles=(2.0, 97.0))
    assert a.wait(60)
    values = a.link()
    assert values["contrast_mode"] == "locked" and values["percentiles"] == (2.0, 97.0)
    assert "contrast" not in values  # derived from the stack: the receiver computes its own
    b = make_session()
    b.restore(a.link_query())
    assert b.wait_restored(60), b.link_status
    assert b.wait(60)
    w = b.viewer
    assert (w.contrast_mode, w.percentiles) == ("locked", (2.0, 97.0))
    assert w.contrast is not None and np.allclose(w.contrast, v.contrast)  # same sample

    v.contrast = (1000.0, 20000.0)  # dragging the limits makes them manual
    assert a.link()["contrast_mode"] == "manual" and a.link()["contrast"] == (1000.0, 20000.0)
    c = make_session()
    c.restore(a.link_query())
    assert c.wait_restored(60), c.link_status
    assert c.viewer.wait_for_frame(0)
    assert (c.viewer.contrast_mode, c.viewer.contrast) == ("manual", (1000.0, 20000.0))
