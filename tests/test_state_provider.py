"""The data provider and who owns what: the state models over an in-memory provider (no S3
server), plus the two facts only a real endpoint can show (one first-block GET per load, the
key file's endpoint when serving)."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.config import DEFAULT_ENDPOINT, Settings, resolve_endpoint
from dashboard.hdf5.source import FIRST_BLOCK
from dashboard.state.provider import MemoryProvider
from dashboard.state.session import Session
from dashboard.storage.credentials import Credentials

BUCKET = "beamline"
DATASET = "/entry/data/data"


def stack_bytes(n: int = 40, h: int = 24, w: int = 32, *, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """An HDF5 file in memory: a Bitshuffle-LZ4 uint16 stack at /entry/data/data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    beam = 2000 + 1500 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (w * h / 5))
    data = np.stack([rng.poisson(beam * (1 + 0.02 * k)) for k in range(n)]).astype("uint16")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(DATASET, data=data, chunks=(1, h, w), **hdf5plugin.Bitshuffle(cname="lz4"))
    return buffer.getvalue(), data


@pytest.fixture(scope="module")
def files():
    a, a_data = stack_bytes(seed=1)
    b, b_data = stack_bytes(n=30, seed=2)
    short, _ = stack_bytes(n=12, seed=3)
    return {"a.h5": (a, a_data), "b.h5": (b, b_data), "short.h5": (short, None)}


class GatedProvider(MemoryProvider):
    """Holds a job that reopens a stack until :attr:`gate` is set (to open another file first)."""

    def __init__(self, objects):
        super().__init__(objects)
        self.reopened = threading.Event()
        self.gate = threading.Event()

    def reopen(self, spec, **kwargs):
        stack = super().reopen(spec, **kwargs)
        self.reopened.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return stack


def memory_session(files, provider_class=MemoryProvider) -> tuple[Session, MemoryProvider]:
    provider = provider_class({BUCKET: {key: data for key, (data, _) in files.items()}})
    session = Session(Settings(), provider=provider)
    assert session.wait(30) and session.browser.connected
    session.browser.list_objects = True
    assert session.wait(30)
    return session, provider


def load(session, key):
    session.browser.selection = [key]
    assert session.wait(60)  # Inspect has described it (as a user would see before Load)
    session.viewer.load = True
    assert session.wait(60)
    assert session.viewer.stack is not None, session.viewer.status
    return session.viewer


def load_beside_a_job(session, key):
    """Load ``key`` while a gated job holds a worker: wait for the load, not for every task."""
    viewer, loaded = session.viewer, threading.Event()
    watcher = viewer.param.watch(lambda e: loaded.set() if not e.new else None, "loading")
    try:
        session.browser.selection = [key]
        viewer.load = True
        assert loaded.wait(60), viewer.status
    finally:
        viewer.param.unwatch(watcher)
    assert viewer.stack is not None, viewer.status
    return viewer


def url(key):
    return f"s3://{BUCKET}/{key}"


# -- the in-memory provider: the state tests' fast tier ---------------------------------------


def test_memory_session_lists_loads_and_shows_frames_without_a_server(files):
    session, provider = memory_session(files)
    try:
        assert session.browser.connection.startswith("memory://")
        assert [o.key for o in session.browser.listing] == ["a.h5", "b.h5", "short.h5"]
        v = load(session, "a.h5")
        assert v.wait_for_frame(0)
        np.testing.assert_array_equal(v.frame, files["a.h5"][1][0])
        assert v.tree["default_stack"] == DATASET
        assert provider.opened == {url("a.h5"): 1}  # tree and stack from one Source
    finally:
        session.close()


def test_inspect_fills_on_selection_and_load_reuses_its_source(files):
    session, provider = memory_session(files)
    try:
        v = session.viewer
        session.browser.selection = ["b.h5"]
        assert session.wait(30)
        assert v.tree["url"] == url("b.h5") and v.stack is None  # before Load
        v.load = True
        assert session.wait(30) and v.stack is not None and v.url == url("b.h5")
        assert provider.opened == {url("b.h5"): 1}  # selection and load: one Source
        session.browser.selection = ["a.h5"]
        assert session.wait(30)
        assert v.tree["url"] == url("a.h5") and v.url == url("b.h5")  # the stack stays
        v.dataset = DATASET  # same dataset: nothing reopened, the tree stays the selected one's
        assert provider.opened[url("a.h5")] == 1
    finally:
        session.close()


def test_preview_smoothed_panel_equals_the_batch_npy_bit_for_bit(files, tmp_path):
    session, _provider = memory_session(files)
    try:
        load(session, "a.h5")
        p = session.processor
        p.param.update(start=22, end=37, step=5, sigma=1.7, format="NPY",
                       output=str(tmp_path / "out"))  # frames 22, 27, 32, 37
        p.preview = True
        assert session.wait(60) and p.stages is not None, p.status
        assert p.preview_title.startswith("Frame 37 (the last of the range), flat field from "
                                          "frames 2–21 (the 20 before Start), σ = 1.7")
        p.batch = True
        assert session.wait(120) and p.status == "Batch finished.", p.status
        written = np.load(tmp_path / "out" / "a_000037.npy")
        assert written.dtype == p.stages.smoothed.dtype
        assert np.array_equal(written, p.stages.smoothed)  # bit for bit
    finally:
        session.close()


def test_a_batch_keeps_running_and_completes_while_another_file_is_opened(files, tmp_path):
    session, provider = memory_session(files, GatedProvider)
    try:
        load(session, "a.h5")
        p = session.processor
        p.param.update(start=20, end=39, format="NPY", output=str(tmp_path / "out"))
        p.batch = True
        assert provider.reopened.wait(30)  # the batch holds its own handle now
        v = load_beside_a_job(session, "b.h5")  # closes the viewer's handle on a.h5
        assert v.url == url("b.h5") and p.running
        provider.gate.set()
        assert session.wait(120)
        assert p.status == "Batch finished." and not p.failed, p.status
        assert len(sorted((tmp_path / "out").glob("a_*.npy"))) == 20
    finally:
        provider.gate.set()
        session.close()


def test_a_preview_of_the_previous_file_is_dropped(files):
    session, provider = memory_session(files, GatedProvider)
    try:
        load(session, "a.h5")
        p = session.processor
        p.preview = True
        assert provider.reopened.wait(30)
        load_beside_a_job(session, "b.h5")
        provider.gate.set()
        assert session.wait(60)
        assert p.stages is None and p.preview_title == ""  # stale: not shown for b.h5
    finally:
        provider.gate.set()
        session.close()


def test_short_stack_disables_preview_and_batch_and_errors_are_marked(files):
    session, _provider = memory_session(files)
    try:
        load(session, "a.h5")
        p = session.processor
        assert not p.preview_disabled() and not p.batch_disabled()
        assert (p.start, p.end) == (20, 39)
        load(session, "short.h5")
        assert (p.start, p.end) == (11, 11)  # the counts follow the file
        assert p.preview_disabled() and p.batch_disabled()
        assert "has 12 frames; a batch needs at least 21" in p.status and p.failed
        load(session, "b.h5")
        assert p.status == "Ready: frames 20–29 of 30." and not p.failed
    finally:
        session.close()


# -- one endpoint rule -------------------------------------------------------------------------


def test_the_endpoint_rule_given_then_key_file_then_echo():
    keys = Credentials("a", "b", endpoint="http://keys.example:9000")
    assert resolve_endpoint("http://given.example/", keys) == "http://given.example"
    assert resolve_endpoint(None, keys) == "http://keys.example:9000"
    assert resolve_endpoint(None, Credentials("a", "b")) == DEFAULT_ENDPOINT
    assert Settings().endpoint_for(keys) == "http://keys.example:9000"
    assert Settings.from_env({}, endpoint="http://cli.example").endpoint_for(keys) == (
        "http://cli.example")
    assert Settings.from_env({"ECHO_S3_ENDPOINT": "http://env.example"}).endpoint_for(keys) == (
        "http://env.example")


def test_serve_credentials_with_an_endpoint_in_the_file_connects_there(moto_server, demo,
                                                                      tmp_path):
    from dashboard.cli import _settings, build_parser

    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                "endpoint": moto_server.endpoint}))
    path.chmod(0o600)
    args = build_parser().parse_args(["serve", "--credentials", str(path)])
    session = Session(_settings(args))  # what `serve` gives every new session
    try:
        assert session.wait(60)
        assert session.browser.connected, session.browser.status
        assert session.browser.provider.endpoint == moto_server.endpoint
        assert session.browser.status.startswith(f"Connected to {moto_server.endpoint}")
    finally:
        session.close()


# -- a load costs one first-block GET (counted at the server) --------------------------------


def test_a_load_costs_one_first_block_get(moto_server, credentials, demo):
    from faultproxy import FaultProxy

    from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY

    with FaultProxy(moto_server.endpoint) as proxy:
        session = Session(Settings(endpoint=proxy.endpoint), credentials=credentials)
        try:
            assert session.wait(60)
            session.browser.bucket = DEMO_BUCKET
            session.browser.selection = [NEXUS_KEY]
            assert session.wait(60)  # Inspect fills on selection …
            assert session.viewer.tree["url"] == f"s3://{DEMO_BUCKET}/{NEXUS_KEY}"
            session.viewer.load = True  # … and Load takes over the same Source
            assert session.wait(60)
            v = session.viewer
            assert v.stack is not None and v.wait_for_frame(0)
            first = f"bytes=0-{FIRST_BLOCK - 1}"
            firsts = [r for r in proxy.ranges
                      if r[0] == "GET" and NEXUS_KEY in r[1] and r[2] == first]
            assert len(firsts) == 1, firsts
        finally:
            session.close()


def test_output_files_get_the_mode_the_umask_gives(tmp_path):
    import os

    from dashboard.processing.export import open_output

    old = os.umask(0o027)
    try:
        output = open_output(str(tmp_path / "out"))
        output.write("x.npy", b"data")
    finally:
        os.umask(old)
    mode = (Path(tmp_path / "out" / "x.npy").stat().st_mode) & 0o777
    assert mode == 0o640


def test_browser_errors_are_marked_and_the_next_action_replaces_them(files):
    session, _provider = memory_session(files)
    b = session.browser
    try:
        assert not b.failed
        b.selection = []
        b.view_last_frame = True
        assert b.failed and b.status == "Select an .h5 file in the browser first."
        b.selection = ["a.h5"]
        b.view_last_frame = True
        assert session.wait(30)
        assert not b.failed and b.status.startswith("Last frame of s3://beamline/a.h5 shown")
        b.download_dir = ""
        b.download = True
        assert b.download_failed and b.download_status == "Give a download folder first."
    finally:
        session.close()


# -- found in review ---------------------------------------------------------------------------


def scalar_bytes() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["/entry/energy"] = 12.4
    return buffer.getvalue()


def test_view_last_frame_of_a_file_without_a_stack_says_why(files):
    files = {**files, "scalar.h5": (scalar_bytes(), None)}
    session, provider = memory_session(files)
    browser = session.browser
    browser.selection = ["scalar.h5"]
    assert session.wait(60)  # Inspect described it (and keeps its file for a Load)
    opened_before = provider.opened.get(f"s3://{BUCKET}/scalar.h5", 0)
    browser.view_last_frame = True
    assert session.wait(60)
    assert "contains no image stack" in browser.status and browser.failed
    assert "TypeError" not in browser.status and browser.thumbnail is None
    # Its own handle: the file Inspect keeps for the Load is still there.
    assert provider.opened[f"s3://{BUCKET}/scalar.h5"] == opened_before + 1
    assert provider._kept is not None and provider._kept[0] == f"s3://{BUCKET}/scalar.h5"
    session.close()


def test_a_job_never_reopens_a_file_through_another_endpoint(files):
    from dashboard.errors import EchoError
    from dashboard.hdf5.stack import StackSpec

    provider = MemoryProvider({BUCKET: {"a.h5": files["a.h5"][0]}})
    spec = StackSpec(f"s3://{BUCKET}/a.h5", DATASET, endpoint="https://elsewhere.example.org")
    provider.endpoint = "https://s3.echo.stfc.ac.uk"
    with pytest.raises(EchoError, match=r"now connected to https://s3\.echo\.stfc\.ac\.uk: "
                                        r"load the file again\.$"):
        provider.reopen(spec)
    with provider.reopen(StackSpec(f"s3://{BUCKET}/a.h5", DATASET)) as stack:
        assert len(stack) == 40


def test_a_describe_finishing_after_close_keeps_nothing(files):
    provider = MemoryProvider({BUCKET: {"a.h5": files["a.h5"][0]}})
    provider.close()
    provider.inspect(f"s3://{BUCKET}/a.h5")  # a worker that was already running
    assert provider._kept is None
