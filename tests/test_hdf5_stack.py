"""FrameStack against a real S3 endpoint (moto over HTTP) and local files: pixel-exact frames,
the direct path's request counts, cache, prefetch, threads, mean, Dask spec."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import threading
import uuid
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hdf5_files  # noqa: E402

from dashboard import open_stack  # noqa: E402
from dashboard.hdf5.chunks import LRUBytes  # noqa: E402
from dashboard.hdf5.stack import FrameStack, StackSpec  # noqa: E402
from dashboard.storage.s3 import S3  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

TESTDATA = ROOT / "tests" / "data" / "third_party"
TESTDATA_STACKS = {k: v for k, v in hdf5_files.SHARED_STACKS.items() if v is not None}


def _load_benchmark_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(moto_server, credentials, tmp_path_factory):
    """One bucket holding the synthetic variants and the real third-party test files."""
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"hdf5-{uuid.uuid4().hex[:10]}"
    s3.client.create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("h5")
    local = {}
    for name in hdf5_files.VARIANTS:
        local[f"syn_{name}.h5"] = hdf5_files.write_variant(folder / f"syn_{name}.h5", name)
    local["userblock.h5"] = hdf5_files.write_userblock(folder / "userblock.h5")
    local["partial.h5"] = hdf5_files.write_partial(folder / "partial.h5")
    for name in TESTDATA_STACKS:
        local[name] = TESTDATA / name
    for key, path in local.items():
        s3.client.upload_file(str(path), bucket, key)
    return {"s3": s3, "bucket": bucket, "local": local}


def expected(path: Path, dataset: str, i: int) -> np.ndarray:
    with h5py.File(path, "r") as f:
        d = f[dataset]
        return d[np.unravel_index(i, d.shape[:-2])] if d.ndim > 2 else d[()]


def _indices(n: int) -> list[int]:
    return sorted({0, 1 % n, n // 2, n - 1, max(0, n - 2)})


@pytest.mark.parametrize("name", list(hdf5_files.VARIANTS))
def test_synthetic_variants_equal_h5py(store, name):
    url = f"s3://{store['bucket']}/syn_{name}.h5"
    path = store["local"][f"syn_{name}.h5"]
    with h5py.File(path) as f:
        d = f["/entry/data/data"]
        truth = d[()].reshape((-1, *d.shape[-2:]))
    with open_stack(url, s3=store["s3"], cache=LRUBytes(1 << 26), prefetch=False) as stack:
        assert stack.dataset == "/entry/data/data"
        assert stack.dtype == truth.dtype
        assert len(stack) == truth.shape[0]
        assert stack.direct, "every variant here should take the direct path"
        for i in range(len(stack)):
            frame = stack.frame(i)
            assert frame.shape == truth.shape[1:] and frame.dtype == truth.dtype
            np.testing.assert_array_equal(frame, truth[i])
        assert stack.stats["direct_frames"] == len(stack)
        assert stack.stats["h5py_frames"] == 0


@pytest.mark.parametrize("name", list(TESTDATA_STACKS))
def test_shared_testdata_stacks_equal_h5py(store, name):
    url = f"s3://{store['bucket']}/{name}"
    path = store["local"][name]
    with open_stack(url, s3=store["s3"], cache=LRUBytes(1 << 26), prefetch=False) as stack:
        assert stack.dataset == TESTDATA_STACKS[name]
        for i in _indices(len(stack)):
            np.testing.assert_array_equal(stack.frame(i), expected(path, stack.dataset, i))
        # blosc2's frames are not decoded here: h5py's path must have been used instead
        assert stack.direct == (name != "blosc2.h5")


def test_eiger_gap_pixels_survive(store):
    with open_stack(f"s3://{store['bucket']}/eiger_bitshuffle_lz4.h5", s3=store["s3"]) as stack:
        frame = stack.frame(0)
    assert frame.dtype == np.uint32
    assert (frame == 0xFFFFFFFF).sum() > 1000  # the detector's module gaps


def test_frames_spanning_chunk_boundaries(store):
    """dataexchange_example5: chunks of 23 frames x 32 x 32; frames 22/23 sit on a boundary."""
    name = "dataexchange_example5.h5"
    with open_stack(f"s3://{store['bucket']}/{name}", s3=store["s3"], cache=LRUBytes(1 << 26),
                    prefetch=False) as stack:
        for i in (21, 22, 23, 24, 179):
            np.testing.assert_array_equal(stack.frame(i), expected(store["local"][name], stack.dataset, i))


def test_local_paths_and_userblock(store):
    path = store["local"]["userblock.h5"]
    assert path.read_bytes()[:9] == b"userblock"
    with open_stack(path) as stack:
        assert stack.dataset == "/exchange/data"
        np.testing.assert_array_equal(stack.frame(3), expected(path, "/exchange/data", 3))
    with open_stack(f"s3://{store['bucket']}/userblock.h5", s3=store["s3"]) as stack:
        np.testing.assert_array_equal(stack.frame(-1), expected(path, "/exchange/data", 5))


def test_unwritten_chunks_read_as_fill_value(store):
    path = store["local"]["partial.h5"]
    with open_stack(f"s3://{store['bucket']}/partial.h5", s3=store["s3"], prefetch=False,
                    cache=LRUBytes(1 << 24)) as stack:
        for i in range(4):
            np.testing.assert_array_equal(stack.frame(i), expected(path, "/data", i))
        assert (stack.frame(1) == 7).all()


def test_one_get_per_frame_and_bytes_close_to_chunk(store):
    """After the background index is built, a one-chunk frame costs exactly one ranged GET."""
    name = "syn_bitshuffle_lz4.h5"
    with h5py.File(store["local"][name]) as f:
        d = f["/entry/data/data"]
        stored = {i: d.id.get_chunk_info_by_coord((i, 0, 0)).size for i in range(d.shape[0])}
    with open_stack(f"s3://{store['bucket']}/{name}", s3=store["s3"], prefetch=False,
                    cache=LRUBytes(1 << 24)) as stack:
        stack.frame(0)
        assert stack.wait_index(30)
        for i in (4, 2, 5):
            before = stack.stats
            stack.frame(i)
            after = stack.stats
            assert after["data_requests"] - before["data_requests"] == 1
            assert after["metadata_requests"] == before["metadata_requests"]
            fetched = after["data_bytes"] - before["data_bytes"]
            assert stored[i] <= fetched <= 1.2 * stored[i]
            assert after["last_frame"]["requests"] == 1
            assert after["last_frame"]["stored_bytes"] == stored[i]


def test_requests_counted_at_the_wire(moto_server, store):
    """Cross-check through a counting proxy: one GET with a Range header per uncached frame."""
    proxy_mod = _load_benchmark_module("latency_proxy")
    with proxy_mod.LatencyProxy(moto_server.endpoint, delay=0) as proxy:
        s3 = S3(proxy.endpoint, store["s3"].credentials)
        with open_stack(f"s3://{store['bucket']}/syn_gzip_shuffle.h5", s3=s3, prefetch=False,
                        cache=LRUBytes(1 << 24)) as stack:
            stack.frame(0)
            assert stack.wait_index(30)
            start = len(proxy.requests)
            for i in (3, 1, 5):
                stack.frame(i)
            new = proxy.requests[start:]
            assert [m for m, _p, _r in new] == ["GET"] * 3
            assert all(r and r.startswith("bytes=") for _m, _p, r in new)
            assert stack.stats["data_requests"] == 4


def test_prefetch_makes_next_frame_a_cache_hit(store):
    with open_stack(f"s3://{store['bucket']}/syn_one_frame_chunks.h5", s3=store["s3"],
                    cache=LRUBytes(1 << 26)) as stack:
        stack.frame(2)
        assert stack.wait_prefetch(30)
        for j in (0, 1, 3, 4):
            assert stack.is_cached(j)
        requests = stack.stats["data_requests"]
        hits = stack.stats["cache_hits"]
        frame = stack.frame(3)
        assert stack.stats["cache_hits"] == hits + 1
        assert stack.stats["data_requests"] == requests  # no GET for a prefetched frame
        assert stack.stats["last_frame"]["path"] == "cache"
        np.testing.assert_array_equal(frame, expected(store["local"]["syn_one_frame_chunks.h5"], "/entry/data/data", 3))
        assert stack.stats["prefetched"] >= 4


def test_concurrent_frame_calls_are_exact(store):
    name = "syn_tiled_chunks.h5"
    with h5py.File(store["local"][name]) as f:
        truth = f["/entry/data/data"][()]
    errors: list = []
    with open_stack(f"s3://{store['bucket']}/{name}", s3=store["s3"], cache=LRUBytes(1 << 20)) as stack:
        def worker(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for i in rng.integers(0, len(stack), 15):
                    if not np.array_equal(stack.frame(int(i)), truth[i]):
                        errors.append(f"frame {i} differs")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors


def test_frames_and_streaming_mean(store):
    name = "syn_gzip_shuffle_f32_tiled.h5"
    with h5py.File(store["local"][name]) as f:
        truth = f["/entry/data/data"][()]
    with open_stack(f"s3://{store['bucket']}/{name}", s3=store["s3"]) as stack:
        order = [5, 0, 3, 3]
        got = list(stack.frames(order))
        for frame, i in zip(got, order):
            np.testing.assert_array_equal(frame, truth[i])
        mean = stack.mean([1, 2, 4])
        assert mean.dtype == np.float64
        np.testing.assert_allclose(mean, truth[[1, 2, 4]].astype(np.float64).mean(axis=0), rtol=0, atol=1e-9)
        np.testing.assert_allclose(stack.mean(), truth.astype(np.float64).mean(axis=0), atol=1e-9)
        with pytest.raises(ValueError):
            stack.mean([])
        with pytest.raises(IndexError):
            stack.frame(len(stack))
        np.testing.assert_array_equal(stack.last_frame(), truth[-1])


def test_spec_pickles_and_reopens(store):
    with open_stack(f"s3://{store['bucket']}/syn_lz4.h5", s3=store["s3"]) as stack:
        spec = stack.spec()
        truth = stack.frame(2)
        with pytest.raises(TypeError):
            pickle.dumps(stack)
    clone = pickle.loads(pickle.dumps(spec))
    assert isinstance(clone, StackSpec) and clone.dataset == "/entry/data/data"
    assert "secret" not in repr(clone).lower()
    with clone.open() as reopened:
        assert isinstance(reopened, FrameStack)
        np.testing.assert_array_equal(reopened.frame(2), truth)


def test_four_d_flattens_leading_axes(store):
    path = store["local"]["syn_four_d.h5"]
    with open_stack(f"s3://{store['bucket']}/syn_four_d.h5", s3=store["s3"]) as stack:
        assert len(stack) == 6 and stack.frame_shape == (hdf5_files.H, hdf5_files.W)
        with h5py.File(path) as f:
            np.testing.assert_array_equal(stack.frame(4), f["/entry/data/data"][1, 1])


def test_frames_are_read_only_and_candidates_listed(store):
    with open_stack(f"s3://{store['bucket']}/dataexchange_example5.h5", s3=store["s3"]) as stack:
        frame = stack.frame(0)
        with pytest.raises(ValueError):
            frame[0, 0] = 1
        paths = [c.path for c in stack.candidates]
        assert "/exchange/data" in paths and "/exchange/data_dark" in paths
        assert "/exchange/theta" not in paths


def test_stale_prefetch_is_skipped_and_describe_reuses_the_open_stack(store):
    from dashboard.hdf5.describe import describe

    with open_stack(f"s3://{store['bucket']}/syn_one_frame_chunks.h5", s3=store["s3"],
                    cache=LRUBytes(1 << 26)) as stack:
        stack.frame(5)
        assert stack.wait_prefetch(30)
        before = stack.stats
        assert stack._prefetch(0) is None  # |0 - 5| > 2: the user has moved on
        after = stack.stats
        assert after["prefetch_cancelled"] == before["prefetch_cancelled"] + 1
        assert after["data_requests"] == before["data_requests"]
        doc = describe(stack)
        assert doc["default_stack"] == "/entry/data/data"
        assert stack.stats["get_requests"] == after["get_requests"]  # metadata already cached


def test_filter_mask_skips_filters_per_chunk(store, tmp_path):
    path, frames = hdf5_files.write_filter_mask(tmp_path / "mask.h5")
    with h5py.File(path) as f:
        assert f["/data"].id.get_chunk_info_by_coord((1, 0, 0)).filter_mask == 0b10
        np.testing.assert_array_equal(f["/data"][()], frames)  # HDF5 itself agrees
    store["s3"].client.upload_file(str(path), store["bucket"], "mask.h5")
    with open_stack(f"s3://{store['bucket']}/mask.h5", s3=store["s3"], prefetch=False,
                    cache=LRUBytes(1 << 24)) as stack:
        assert stack.direct
        for i in range(3):
            np.testing.assert_array_equal(stack.frame(i), frames[i])
        assert stack.stats["direct_frames"] == 3


def test_background_index_is_complete_while_frames_are_read(store):
    """The chunk-index walk steps aside for frame lookups and still ends with every chunk."""
    name = "diamond_k11_diad_imaging.h5"
    with h5py.File(store["local"][name]) as f:
        d = f[TESTDATA_STACKS[name]]
        truth = {tuple(i.chunk_offset): (i.byte_offset, i.size) for i in
                 (d.id.get_chunk_info(k) for k in range(d.id.get_num_chunks()))}
    with open_stack(f"s3://{store['bucket']}/{name}", s3=store["s3"], prefetch=False,
                    cache=LRUBytes(1 << 24)) as stack:
        stack.frame(0)  # starts the background walk
        for i in (3000, 1500, 2999, 17):
            np.testing.assert_array_equal(stack.frame(i), expected(store["local"][name], stack.dataset, i))
        assert stack.wait_index(60)
        index = stack._direct._index
        assert {k: v[:2] for k, v in index.items() if v is not None} == truth


def test_open_stack_with_a_key_file_and_endpoint(store, tmp_path, moto_server):
    import json

    from conftest import ACCESS_KEY, SECRET_KEY

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}))
    keys.chmod(0o600)
    url = f"s3://{store['bucket']}/zstd_uint8.h5"
    with open_stack(url, endpoint=moto_server.endpoint, credentials=str(keys)) as stack:
        assert stack.dataset == "/DS1" and stack.etag and stack.size == store["local"]["zstd_uint8.h5"].stat().st_size
        np.testing.assert_array_equal(stack.frame(1), expected(store["local"]["zstd_uint8.h5"], "/DS1", 1))
        spec = stack.spec()
    assert spec.endpoint == moto_server.endpoint and spec.credentials.access_key == ACCESS_KEY
