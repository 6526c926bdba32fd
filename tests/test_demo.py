"""The embedded demo store: synthetic radiographs, the on-disk cache, the upload, fast ranges.

Buckets: the shared ``echo-demo`` bucket is filled once per process through
:func:`dashboard.demo.store.ensure_populated` (the same call other test modules use), so the
real bucket names are used only once; tests that need their own copy use unique bucket names.
Cache behaviour (reuse, crash safety) is tested in temporary cache directories.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import h5py
import numpy as np
import pytest

from dashboard.demo import fastrange, store
from dashboard.demo.store import (
    DEMO_BUCKET,
    DXCHANGE_KEY,
    EMPTY_BUCKET,
    IMAGE2D_KEY,
    MIN_FRAMES,
    NEXUS_KEY,
    NOT_HDF5_KEY,
    README_KEY,
    SHORT_KEY,
    build_cache,
    ensure_populated,
)
from dashboard.demo.synthetic import RadiographSimulator

ROOT = Path(__file__).resolve().parent.parent
BITSHUFFLE_FILTER = 32008
ZSTD_FILTER = 32015
BSHUF_LZ4 = 2


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A session cache directory for the small demo (the developer's own cache is untouched)."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture
def demo(demo_cache, s3, monkeypatch):
    """The shared demo bucket, populated once per process at the small scale."""
    monkeypatch.setenv(store.CACHE_ENV, str(demo_cache))
    return ensure_populated(s3, scale="small")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# -- the generator ------------------------------------------------------------------------------


def test_generator_is_deterministic_per_seed_and_order_free():
    a = RadiographSimulator(30, 64, 80, seed=7)
    b = RadiographSimulator(30, 64, 80, seed=7)
    later_first = [b.frame(i) for i in (29, 3, 0)]
    for got, i in zip(later_first, (29, 3, 0)):
        np.testing.assert_array_equal(a.frame(i), got)
    np.testing.assert_array_equal(a.white(2), b.white(2))
    np.testing.assert_array_equal(a.dark(1), b.dark(1))
    other = RadiographSimulator(30, 64, 80, seed=8)
    assert not np.array_equal(a.frame(3), other.frame(3))
    frames = list(a.frames_iter(0, 4))
    assert len(frames) == 4 and all(f.shape == (64, 80) and f.dtype == np.uint16 for f in frames)
    with pytest.raises(IndexError):
        a.frame(30)


def test_frames_look_like_radiographs():
    sim = RadiographSimulator(40, 256, 256, seed=1)
    first, mid, last = sim.frame(0), sim.frame(20), sim.frame(39)
    for frame in (first, mid, last):
        assert frame.dtype == np.uint16 and frame.shape == (256, 256)
        assert np.mean(frame == 65535) < 1e-4  # no saturation flood
        assert np.mean(frame == 0) < 1e-4  # the dark offset keeps counts above zero
        centre = frame[96:160, 96:160].mean()
        corners = np.mean([frame[:24, :24].mean(), frame[:24, -24:].mean(),
                           frame[-24:, :24].mean(), frame[-24:, -24:].mean()])
        assert centre > 2.0 * corners  # beam profile with vignetting

    # The scene evolves: consecutive frames differ by more than noise, far frames by more.
    def change(x, y):
        return np.abs(x.astype(np.float64) - y.astype(np.float64)).mean()

    assert change(first, sim.frame(1)) > 0
    assert change(first, last) > 1.5 * change(first, sim.frame(1))

    # Shot noise: two open-beam frames differ by noise of variance ~ 2 * gain * counts.
    w1, w2 = sim.white(0).astype(np.float64), sim.white(1).astype(np.float64)
    box = (slice(112, 144), slice(112, 144))
    ratio = w1[box].mean() / w2[box].mean()  # remove the ring-current jitter between frames
    diff = w1[box] - ratio * w2[box]
    expected = np.sqrt(2 * sim.gain * w1[box].mean())
    assert 0.7 * expected < diff.std() < 1.4 * expected

    dark = sim.dark(0).astype(np.float64)
    assert abs(dark.mean() - sim.dark_level) < 10 and dark.std() < 50
    assert w1[box].mean() > 20 * dark.mean()


def test_full_scale_generation_is_frame_by_frame():
    """A 1024 x 1024 frame comes out alone, in milliseconds-class time (no stack in memory)."""
    sim = RadiographSimulator(200, 1024, 1024, seed=1)
    frame = sim.frame(199)
    assert frame.shape == (1024, 1024) and frame.dtype == np.uint16
    assert store.SHAPES["full"].nexus[0] >= 200 and store.SHAPES["full"].nexus[1:] == (1024,
                                                                                          1024)
    for scale in store.SCALES:
        shapes = store.SHAPES[scale]
        assert shapes.nexus[0] >= MIN_FRAMES and shapes.dxchange[0] >= MIN_FRAMES
        assert shapes.short[0] < MIN_FRAMES


# -- the bucket ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_object_is_in_the_demo_bucket(demo, s3):
    listing = s3.list_objects(DEMO_BUCKET, limit=10_000)
    sizes = {o.key: o.size for o in listing.objects}
    assert not listing.truncated
    assert set(sizes) == set(demo.keys)
    for key in demo.keys:
        assert sizes[key] == demo.path(key).stat().st_size, key
    for key in (NEXUS_KEY, DXCHANGE_KEY, SHORT_KEY, IMAGE2D_KEY, NOT_HDF5_KEY):
        assert key in sizes
    assert s3.list_objects(EMPTY_BUCKET).objects == []
    assert {DEMO_BUCKET, EMPTY_BUCKET} <= set(s3.list_buckets())

    # Something for filters and sorts: hundreds of objects, nested dirs, suffixes, sizes.
    assert len(sizes) >= 300
    assert len({k.split("/", 1)[0] for k in sizes if "/" in k}) >= 5
    assert max(k.count("/") for k in sizes) >= 5
    suffixes = {Path(k).suffix for k in sizes}
    assert {".h5", ".nxs", ".hdf5", ".txt", ".json", ".tif", ".log"} <= suffixes
    small = [s for s in sizes.values() if s < 2_000]
    large = [s for s in sizes.values() if s > 100_000]
    assert len(small) >= 20 and len(large) >= 20

    # Realistic dates (the server is moto in this process), so sorting by date means something.
    dates = {o.key: o.last_modified for o in listing.objects}
    assert dates[NEXUS_KEY] == store.demo_date(NEXUS_KEY) == datetime(2026, 11, 17, 14, 10,
                                                                       tzinfo=timezone.utc)
    september = [d for k, d in dates.items() if k.startswith("beamline/2026-09/")]
    assert september and all((d.year, d.month) == (2026, 9) for d in september)
    archive = [d for k, d in dates.items() if k.startswith("archive/2025/q4/week_47/")]
    assert archive and all(d.isocalendar()[:2] == (2025, 47) for d in archive)
    by_date = [k for k, _ in sorted(dates.items(), key=lambda item: (item[1], item[0]))]
    assert by_date != sorted(dates) and len(set(dates.values())) > 0.9 * len(dates)


def test_objects_match_the_cache_and_ranges_read_right(demo, s3):
    for key in (README_KEY, NOT_HDF5_KEY, IMAGE2D_KEY):
        body = s3.client.get_object(Bucket=DEMO_BUCKET, Key=key)["Body"].read()
        assert body == demo.path(key).read_bytes()
    local = demo.path(NEXUS_KEY).read_bytes()
    info = s3.head(DEMO_BUCKET, NEXUS_KEY)
    assert info.etag == hashlib.md5(local, usedforsecurity=False).hexdigest()
    for start, length in ((0, 8), (4096, 65536), (len(local) - 100, 100)):
        assert s3.get_range(DEMO_BUCKET, NEXUS_KEY, start, length) == local[start:start + length]


def test_ensure_populated_is_idempotent(demo, s3):
    before = s3.head(DEMO_BUCKET, NEXUS_KEY)
    readme = s3.head(DEMO_BUCKET, README_KEY)
    again = ensure_populated(s3, scale="small")
    assert again.generated == []
    assert s3.head(DEMO_BUCKET, NEXUS_KEY).last_modified == before.last_modified
    assert s3.head(DEMO_BUCKET, README_KEY).last_modified == readme.last_modified
    with pytest.raises(RuntimeError, match="other demo data"):
        ensure_populated(s3, scale="full")


@pytest.mark.slow
def test_populate_into_a_unique_bucket(demo_cache, s3, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV, str(demo_cache))
    name = f"demo-{uuid.uuid4().hex[:10]}"
    report = store.populate(s3, scale="small", bucket=name, empty_bucket=None)
    keys = {o.key for o in s3.list_objects(name, limit=10_000).objects}
    assert keys == set(report.keys)


# -- file layouts (checked on the cached local files) --------------------------------------------


def test_nexus_layout_filters_chunks_and_metadata(demo):
    with h5py.File(demo.path(NEXUS_KEY), "r") as f:
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry" and entry.attrs["default"] == "data"
        data = entry["data"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "data"
        dset = f[store.NEXUS_DATASET]
        frames, height, width = store.SHAPES["small"].nexus
        assert dset.shape == (frames, height, width) and frames >= MIN_FRAMES
        assert dset.dtype == np.uint16
        assert dset.chunks == (1, height, width)
        filters = dset.id.get_create_plist().get_nfilters()
        ids = [dset.id.get_create_plist().get_filter(i)[0] for i in range(filters)]
        assert ids == [BITSHUFFLE_FILTER]
        options = dset.id.get_create_plist().get_filter(0)[2]
        assert options[-1] == BSHUF_LZ4
        assert dset.id.get_num_chunks() == frames
        assert dset.id.get_chunk_info(0).chunk_offset == (0, 0, 0)
        assert f["entry/instrument/monochromator/energy"][()] == 25.0
        assert f["entry/instrument/monochromator/energy"].attrs["units"] == "keV"
        assert f["entry/instrument/detector/count_time"].attrs["units"] == "s"
        assert f["entry/sample/name"][()].decode().startswith("aqueous foam")
        assert f["entry/start_time"][()].decode() < f["entry/end_time"][()].decode()
        assert f["entry/data/time"].shape == (frames,)
        assert f["entry/instrument/detector/data"] == dset  # the beamline-style hard link
        frame = dset[frames - 1]
        assert frame[height // 2 - 8:height // 2 + 8, width // 2 - 8:width // 2 + 8].mean() > \
            2 * frame[:16, :16].mean()
        np.testing.assert_array_equal(frame, RadiographSimulator(frames, height, width,
                                                                 seed=1).frame(frames - 1))


def test_dxchange_short_2d_and_not_hdf5_files(demo):
    shapes = store.SHAPES["small"]
    with h5py.File(demo.path(DXCHANGE_KEY), "r") as f:
        data, white, dark = (f[f"exchange/{n}"] for n in ("data", "data_white", "data_dark"))
        assert data.shape == shapes.dxchange and data.dtype == np.uint16
        assert white.shape == dark.shape == (shapes.flats, *shapes.dxchange[1:])
        for dset in (data, white, dark):
            assert dset.compression == "gzip" and dset.shuffle
            assert dset.chunks == (1, *shapes.dxchange[1:])
        assert white[0].mean() > data[0].mean() > 10 * dark[0].mean()
    with h5py.File(demo.path(SHORT_KEY), "r") as f:
        dset = f[store.SHORT_DATASET]
        assert dset.ndim == 3 and 1 < dset.shape[0] < MIN_FRAMES
        assert f["entry"].attrs["default"] == "data"
        plist = dset.id.get_create_plist()
        assert plist.get_filter(0)[0] == ZSTD_FILTER
        assert dset[0].mean() > 0
    with h5py.File(demo.path(IMAGE2D_KEY), "r") as f:
        image = f[store.IMAGE2D_DATASET]
        assert image.ndim == 2 and image.shape == shapes.image2d and image.dtype == np.uint16
    not_hdf5 = demo.path(NOT_HDF5_KEY)
    assert NOT_HDF5_KEY.endswith(".h5") and not h5py.is_hdf5(not_hdf5)
    with pytest.raises(OSError):
        h5py.File(not_hdf5, "r")
    tiny = [k for k in demo.keys if k.endswith((".h5", ".hdf5", ".nxs"))
            and k not in (NEXUS_KEY, DXCHANGE_KEY, SHORT_KEY, IMAGE2D_KEY, NOT_HDF5_KEY)]
    assert len(tiny) >= 50
    for key in tiny[::10]:
        assert h5py.is_hdf5(demo.path(key)), key


# -- the cache ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cache_is_reused_without_regenerating(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path))
    first = build_cache("small")
    assert first.directory == tmp_path / f"demo-{store.GENERATOR_VERSION}.{store.LAYOUT_VERSION}" \
        / "small"
    assert sorted(first.generated) == sorted(first.keys)
    mtimes = {k: first.path(k).stat().st_mtime_ns for k in first.keys}

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(RadiographSimulator, "frame", fail)
    second = build_cache("small")
    assert second.generated == [] and sorted(second.reused) == sorted(first.keys)
    assert {k: second.path(k).stat().st_mtime_ns for k in second.keys} == mtimes

    # A file lost from the cache is regenerated alone; the others stay as they were.
    monkeypatch.undo()
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path))
    lost = first.path(SHORT_KEY)
    digest = _md5(lost)
    lost.unlink()
    third = build_cache("small")
    assert third.generated == [SHORT_KEY]
    assert _md5(lost) == digest  # deterministic: the same bytes again


def test_failure_mid_build_leaves_no_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path))
    calls = {"n": 0}
    original = RadiographSimulator.frame

    def failing(self, index):
        calls["n"] += 1
        if calls["n"] == 50:  # inside the Data Exchange file, after the NeXus one is complete
            raise RuntimeError("simulated crash")
        return original(self, index)

    monkeypatch.setattr(RadiographSimulator, "frame", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache("small")
    directory = store.cache_dir("small")
    assert not (directory / store.MANIFEST).exists()
    assert not store.object_path(directory, DXCHANGE_KEY).exists()
    assert list(directory.rglob("*.tmp-*")) == []
    with h5py.File(store.object_path(directory, NEXUS_KEY), "r") as f:
        assert f[store.NEXUS_DATASET].shape[0] == store.SHAPES["small"].nexus[0]

    monkeypatch.setattr(RadiographSimulator, "frame", original)
    report = build_cache("small")
    assert NEXUS_KEY in report.reused and DXCHANGE_KEY in report.generated
    assert (directory / store.MANIFEST).exists()


@pytest.mark.slow
def test_killed_build_leaves_only_complete_files(tmp_path, demo):
    """SIGKILL a build while it writes the Data Exchange file: no final file is corrupt."""
    env = {**os.environ, store.CACHE_ENV: str(tmp_path)}
    # The subprocess makes the Data Exchange frames slow (seed 2) so the kill lands inside it.
    script = textwrap.dedent("""
        import time
        from dashboard.demo import synthetic
        from dashboard.demo.store import build_cache
        frame = synthetic.RadiographSimulator.frame
        def slow(self, index):
            if self.seed == 2:
                time.sleep(0.05)
            return frame(self, index)
        synthetic.RadiographSimulator.frame = slow
        build_cache("small")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    directory = tmp_path / f"demo-{store.GENERATOR_VERSION}.{store.LAYOUT_VERSION}" / "small"
    target = store.object_path(directory, DXCHANGE_KEY)
    deadline = time.monotonic() + 60
    try:
        while not list(target.parent.glob(f".{target.name}.tmp-*")):
            assert proc.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (directory / store.MANIFEST).exists()
    assert not target.exists()
    assert list(directory.rglob(".*.tmp-*"))  # the half-written file, under a temporary name
    assert store.object_path(directory, NEXUS_KEY).exists()  # written before the kill

    report = build_cache("small", directory=directory)
    assert list(directory.rglob(".*.tmp-*")) == []  # stale temporaries of dead builds removed
    assert NEXUS_KEY in report.reused and DXCHANGE_KEY in report.generated
    for key in report.keys:  # what survived the kill is complete and identical to a clean build
        assert _md5(report.path(key)) == _md5(demo.path(key)), key


# -- fast ranged GETs (the demo server's patch) ----------------------------------------------------


def _raw_get(s3, bucket: str, key: str, headers: dict, **params) -> tuple:
    """A presigned GET with exactly ``headers`` (boto3 would normalise odd Range values)."""
    url = urlparse(s3.client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key, **params}))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", f"{url.path}?{url.query}", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        picked = {h: resp.getheader(h) for h in ("content-range", "content-length", "etag",
                                                 "accept-ranges", "content-type")}
        if resp.status >= 400:
            body = body.split(b"<RequestId>")[0]  # the request id differs per request
        return resp.status, picked, body
    finally:
        conn.close()


@pytest.fixture
def fast_ranges():
    was = fastrange.installed()
    fastrange.install()
    yield
    if not was:
        fastrange.uninstall()


def _whole_object_reads(s3, bucket, monkeypatch) -> int:
    """How often one ranged GET makes moto read a whole object (``FakeKey.value``)."""
    from moto.s3.models import FakeKey

    reads = []
    value = FakeKey.value

    def counted(self):
        reads.append(self.name)
        return value.fget(self)

    with monkeypatch.context() as mp:
        mp.setattr(FakeKey, "value", property(counted, value.fset))
        s3.get_range(bucket, "big.bin", 1000, 10)
    return len(reads)


def test_fast_ranges_answer_exactly_like_moto(s3, bucket, fast_ranges, monkeypatch):
    data = np.random.default_rng(5).integers(0, 256, 3_000_001, dtype=np.uint8).tobytes()
    s3.client.put_object(Bucket=bucket, Key="big.bin", Body=data)
    s3.client.put_object(Bucket=bucket, Key="empty.bin", Body=b"")
    etag = s3.head(bucket, "big.bin").etag
    n = len(data)
    cases = [
        ("big.bin", {"Range": r}) for r in (
            "bytes=0-0", "bytes=0-99", "bytes=100-", "bytes=-100", f"bytes={n - 1}-",
            f"bytes=0-{n + 100}", f"bytes={n}-", "bytes=-0", f"bytes=-{n + 5}", "bytes=5-2",
            "bytes=0-1,5-6", "bytes=abc", "bytes=-", "bytes=1000000-2000000")
    ] + [
        ("big.bin", {}),
        ("big.bin", {"Range": "bytes=10-20", "If-None-Match": f'"{etag}"'}),
        ("big.bin", {"Range": "bytes=10-20", "If-Match": '"nope"'}),
        ("missing.bin", {"Range": "bytes=0-9"}),
        ("empty.bin", {"Range": "bytes=0-0"}),
    ]
    part = ("big.bin", {"Range": "bytes=0-9"})

    def responses():
        got = [_raw_get(s3, bucket, key, h) for key, h in cases]
        return got + [_raw_get(s3, bucket, *part, PartNumber=1)]

    fast = responses()
    whole_reads_fast = _whole_object_reads(s3, bucket, monkeypatch)
    fastrange.uninstall()
    assert _whole_object_reads(s3, bucket, monkeypatch) == 1  # moto reads it all per range
    assert whole_reads_fast == 0  # the patch reads only the range
    assert not fastrange.installed()
    slow = responses()
    cases.append(part)
    for case, got, want in zip(cases, fast, slow):
        assert got == want, case
    statuses = {case[1].get("Range"): got[0] for case, got in zip(cases, fast)}
    assert statuses["bytes=0-99"] == 206 and statuses[f"bytes={n}-"] == 416
    assert fast[1][2] == data[:100] and fast[2][2] == data[100:] and fast[3][2] == data[-100:]


def test_partial_range_mirrors_moto_rules():
    assert fastrange.partial_range("bytes=0-9", 100)
    assert fastrange.partial_range("bytes=-5", 100)
    assert fastrange.partial_range("bytes=100-", 100)  # 416 from the length alone
    assert not fastrange.partial_range("bytes=9-0", 100)
    assert not fastrange.partial_range("bytes=0-1,3-4", 100)
    assert not fastrange.partial_range("bytes=x-y", 100)
    assert not fastrange.partial_range(None, 100)


# -- the demo store as the CLI starts it -----------------------------------------------------------


@pytest.mark.slow
def test_start_demo_store_serves_the_buckets_and_stops(demo_cache, demo):
    """In a fresh process (moto's state is per process): start, list, ranged read, stop."""
    script = textwrap.dedent("""
        import json, socket
        from urllib.parse import urlparse
        from dashboard.demo import fastrange
        from dashboard.demo.store import start_demo_store, DEMO_BUCKET, NEXUS_KEY
        with start_demo_store(scale="small") as demo:
            assert "secret" not in repr(demo) and "secret" not in repr(demo.credentials)
            out = {
                "buckets": sorted(demo.s3.list_buckets()),
                "count": len(demo.s3.list_objects(DEMO_BUCKET, limit=10000).objects),
                "head": demo.s3.get_range(DEMO_BUCKET, NEXUS_KEY, 0, 8).hex(),
                "fast": fastrange.installed(),
                "generated": demo.report.generated,
            }
            url = urlparse(demo.endpoint)
        with socket.socket() as sock:
            out["closed"] = sock.connect_ex((url.hostname, url.port)) != 0
        print(json.dumps(out))
    """)
    env = {**os.environ, store.CACHE_ENV: str(demo_cache)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["buckets"] == sorted([DEMO_BUCKET, EMPTY_BUCKET])
    assert out["count"] == len(demo.keys)
    assert bytes.fromhex(out["head"]) == b"\x89HDF\r\n\x1a\n"
    assert out["fast"] is True
    assert out["generated"] == []  # the session cache was reused
    assert out["closed"]
