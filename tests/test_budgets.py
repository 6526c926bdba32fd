"""Bounded work per session (issue 14, item 6), below the served page: the pixel budget, the
chunk budgets, metadata read within bounds, stopping a read, the line profile and the cap on a
session's long jobs. Files from ``hostile_files.py`` served by moto (or held in memory).
"""

from __future__ import annotations

import io
import threading
import tracemalloc

import h5py
import hostile_files
import numpy as np
import pytest
from scipy import ndimage

from dashboard.analysis.profile import profile_line
from dashboard.config import DEFAULT_MAX_FRAME_PIXELS, Settings, frame_budget
from dashboard.errors import ConfigError, EchoError
from dashboard.hdf5 import metadata, tree
from dashboard.hdf5.describe import describe, format_tree
from dashboard.hdf5.errors import HDF5Error, TooLarge
from dashboard.hdf5.source import open_source
from dashboard.hdf5.stack import open_stack
from dashboard.state.provider import MemoryProvider

SENTENCE = ("frame 40000×20000 is larger than this server displays; use the CLI on a machine "
            "with enough memory.")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return hostile_files.all_of(tmp_path_factory.mktemp("hostile"), groups=300)


@pytest.fixture
def url(s3, bucket, files):
    def put(name: str) -> str:
        s3.client.upload_file(str(files[name]), bucket, name)
        return f"s3://{bucket}/{name}"
    return put


def peak_mb(fn):
    """Run ``fn`` and return (its result or exception, the peak of Python/numpy allocations)."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            out = exc
        return out, tracemalloc.get_traced_memory()[1] / 1024**2
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["claim.h5", "bomb.h5"])
def test_frames_over_the_budget_are_refused_before_anything_is_read(s3, url, files, name):
    target = url(name)
    refused, peak = peak_mb(lambda: open_stack(target, s3=s3))
    assert isinstance(refused, TooLarge) and str(refused) == SENTENCE
    assert refused.what == "frame 40000×20000" and refused.limit == DEFAULT_MAX_FRAME_PIXELS
    assert peak < 20, f"{peak:.0f} MB allocated to refuse a {files[name].stat().st_size}-byte file"
    # The dashboard's path: the tree is shown, the stack refused with the same sentence.
    provider = MemoryProvider({"b": {name: files[name].read_bytes()}})
    opened = provider.open(f"s3://b/{name}")
    assert opened.stack is None and str(opened.error) == SENTENCE and opened.tree["nodes"]
    print(f"\n{name}: {files[name].stat().st_size} bytes refused; peak {peak:.1f} MB")


def test_the_budget_is_a_setting():
    assert frame_budget({}) == DEFAULT_MAX_FRAME_PIXELS == 8192 * 8192
    env = {"ECHO_S3_MAX_FRAME_PIXELS": "4096"}
    assert frame_budget(env) == Settings.from_env(env).max_frame_pixels == 4096
    assert Settings().with_overrides(max_frame_pixels=100).max_frame_pixels == 100
    for bad in ("0", "lots"):
        with pytest.raises(ConfigError, match="ECHO_S3_MAX_FRAME_PIXELS"):
            Settings.from_env({"ECHO_S3_MAX_FRAME_PIXELS": bad})


def test_budget_edges_and_chunk_budgets(files, tmp_path):
    data = (files["chunks.h5"]).read_bytes()
    provider = MemoryProvider({"b": {"c.h5": data}})
    provider.max_frame_pixels = 256 * 256  # the frame fits exactly
    with pytest.raises(TooLarge, match="4096 chunks .more than 1024.") as info:
        provider.stack("s3://b/c.h5")
    assert "\n" not in str(info.value)
    # Without a chunk limit (the CLI), the same file reads; one pixel less of budget refuses it.
    with open_stack(files["chunks.h5"], max_frame_pixels=256 * 256) as stack:
        assert stack.region(1, slice(0, 8), slice(0, 8))[3, 5] == (256 * 256 + 3 * 256 + 5) % 60000
    with pytest.raises(TooLarge, match="frame 256×256"):
        open_stack(files["chunks.h5"], max_frame_pixels=256 * 256 - 1)
    # Chunks larger than the budget (a chunk spanning frames) are refused too.
    path = tmp_path / "wide_chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", shape=(64, 32, 32), dtype="u1", chunks=(64, 32, 32))
    with pytest.raises(TooLarge, match="chunk of 64×32×32 values"):
        open_stack(path, max_frame_pixels=32 * 32 * 8)


def test_stop_ends_a_frame_between_its_chunks(files):
    provider = MemoryProvider({"b": {"c.h5": files["chunks.h5"].read_bytes()}})
    provider.max_frame_chunks = None
    stack = provider.stack("s3://b/c.h5", prefetch=False)
    started, go, calls = threading.Event(), threading.Event(), []
    lookup = stack._direct.lookup

    def gated(coord):  # the first of the frame's 4096 chunk lookups waits for the test
        calls.append(coord)
        if len(calls) == 1:
            started.set()
            assert go.wait(30)
        return lookup(coord)

    stack._direct.lookup = gated
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_try(lambda: stack.frame(0))))
    reader.start()
    assert started.wait(30)
    stack.stop()  # returns at once, while the read is in flight
    go.set()
    reader.join(60)
    assert isinstance(outcome[0], HDF5Error) and "closed" in str(outcome[0])
    assert len(calls) == 1, f"{len(calls)} chunk lookups of 4096, the first before stop"
    with pytest.raises(HDF5Error, match="closed"):
        stack.frame(1)
    stack.close()


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the test checks it
        return exc


def test_metadata_is_read_within_bounds(s3, url, files, monkeypatch):
    target = url("attrs.h5")
    with open_source(target, s3=s3) as source:
        doc = describe(source)
        fetched = source.stats.metadata_bytes
    # Dense attributes are listed only by reading every one: none is read, and it says so.
    attrs = next(n for n in doc["nodes"] if n["path"] == "/")["attrs"]
    assert attrs == {"…": "attributes not read: they hold more metadata than this viewer reads"}
    assert doc["default_stack"] == "/entry/data/data"
    assert fetched < 1024**2, f"{fetched} bytes of metadata fetched for a 4 MB file"
    # Each attribute over the limit is named with its size; at most 64 are read.
    monkeypatch.setattr(metadata, "ATTR_READ_BYTES", 1000)
    attrs = root_attrs(blob=np.zeros(4096, np.uint8), title="small and shown")
    assert attrs == {"blob": "<4096 bytes, not read>", "title": "small and shown"}
    attrs = root_attrs(**{f"a{k:02d}": k for k in range(70)})
    assert len(attrs) == metadata.ATTR_COUNT_LIMIT + 1 and attrs["a63"] == 63
    assert attrs["…"] == "only the first 64 attributes are read"

    monkeypatch.setattr(tree, "GROUP_MEMBER_LIMIT", 100)
    doc = describe(url("groups.h5"), s3=s3, limit=1000)
    members = [n["path"] for n in doc["nodes"] if n["path"].count("/") == 1 and n["path"] != "/"]
    assert doc["truncated"] and members == ["/entry"] + [f"/g{k:06d}" for k in range(99)]
    assert "/ has more than 100 members" in doc["notes"][0]
    assert doc["notes"][0] in format_tree(doc)
    monkeypatch.setattr(tree, "WALK_SECONDS", 0.0)
    doc = describe(url("groups.h5"), s3=s3)
    assert doc["truncated"] and any("stopped after 0 s" in n for n in doc["notes"])


def root_attrs(**attrs) -> dict:
    """The root's attributes as :func:`describe` shows them, for a file with ``attrs``."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs.update(attrs)
    with MemoryProvider({"b": {"h.h5": buffer.getvalue()}})._source("s3://b/h.h5") as source:
        return describe(source)["nodes"][0]["attrs"]


def test_the_line_profile_reads_only_next_to_the_line():
    rng = np.random.default_rng(3)
    small = rng.integers(0, 4000, (40, 60)).astype(np.uint16)
    src, dst = (2.3, 1.7), (37.9, 55.2)
    _, ours = profile_line(small, src, dst, num=80)
    rows = np.linspace(src[0], dst[0], 80)
    cols = np.linspace(src[1], dst[1], 80)
    reference = ndimage.map_coordinates(small.astype(np.float64), [rows, cols], order=1,
                                        mode="nearest")
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
    frame = np.zeros((8000, 8000), np.uint16)  # 128 MB; float64 of it would be 512 MB
    (_, values), peak = peak_mb(lambda: profile_line(frame, (0, 0), (7999, 7999)))
    assert values.shape == (11314,) and peak < 5, f"{peak:.1f} MB for a diagonal profile"


def test_a_session_runs_at_most_three_long_jobs(files):
    data = files["attrs.h5"].read_bytes()
    provider = MemoryProvider({"b": {"a.h5": data}})
    jobs = [provider.stack("s3://b/a.h5") for _ in range(provider.max_jobs)]
    with pytest.raises(EchoError, match="3 long jobs .* are running in this session"):
        provider.stack("s3://b/a.h5")
    jobs.pop().close()
    jobs.append(provider.stack("s3://b/a.h5"))
    viewer_stack = provider.open("s3://b/a.h5").stack  # the viewer's own is not a job
    provider.shutdown()  # the session ends: every handle it gave out is closed
    assert all(s._closed for s in [*jobs, viewer_stack])
    with pytest.raises(EchoError, match="session has ended"):
        provider.stack("s3://b/a.h5")


def test_the_served_budget_reaches_every_stack_of_a_session():
    """``serve --max-frame-pixels`` → Settings → the session's provider → each stack it opens."""
    from dashboard.cli import _settings, build_parser
    from dashboard.state.session import Session

    args = build_parser().parse_args(["serve", "--max-frame-pixels", "63"])
    settings = _settings(args)
    assert settings.max_frame_pixels == 63
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        hostile_files.normal_stack(f)  # 4 frames of 8×8: 64 pixels, one over the budget
    session = Session(settings, provider=MemoryProvider({"b": {"s.h5": buffer.getvalue()}}))
    try:
        assert session.wait(30) and session.browser.connected
        session.browser.param.trigger("list_objects")
        assert session.wait(30)
        session.browser.selection = ["s.h5"]
        session.viewer.param.trigger("load")
        assert session.wait(30)
        assert session.viewer.stack is None
        assert session.viewer.status == ("frame 8×8 is larger than this server displays; use "
                                         "the CLI on a machine with enough memory.")
        assert session.viewer.tree["default_stack"] == "/entry/data/data"  # the tree is shown
    finally:
        session.close()
        assert session.wait_released(30)
