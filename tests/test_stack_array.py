"""The stack as an array: ``stack[...]`` equals h5py (numpy semantics) on every layout the tests
know and reads only the chunks it touches; ``to_dask()`` is lazy, one block per chunk, and
computes what numpy computes on local threads and on a ``distributed`` cluster of worker
programs; ``to_xarray()`` carries the file's axes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hdf5_files import VARIANTS, write_variant

from dashboard.demo.store import DEMO_BUCKET, DXCHANGE_KEY, NEXUS_KEY
from dashboard.hdf5.stack import open_stack

KEYS = [
    np.s_[2:5, 10:40, 5:60], np.s_[::2, ::3, ::-5], np.s_[-1], np.s_[-2:, -10:, :7],
    np.s_[1, 3], np.s_[..., 4], np.s_[:, 0, 0], np.s_[5:1:-2, 60:2:-7], np.s_[3, ::-1, -1],
    np.s_[2:2], np.s_[:, 10:10], np.s_[()],
]


def frames_of(path) -> np.ndarray:
    """The file's frames as (frames, rows, columns), read with plain h5py."""
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
    return data.reshape(-1, *data.shape[-2:])


@pytest.mark.parametrize("layout", sorted(VARIANTS))
def test_indexing_equals_h5py_on_every_layout(layout, tmp_path):
    path = write_variant(tmp_path / f"{layout}.h5", layout)
    expected = frames_of(path)
    with open_stack(str(path), "/entry/data/data") as stack:
        assert stack.array_shape == expected.shape
        for key in KEYS:
            try:
                want = expected[key]
            except IndexError:  # out of range for numpy (a one-frame file): for the stack too
                with pytest.raises(IndexError):
                    stack[key]
                continue
            got = stack[key]
            np.testing.assert_array_equal(got, want, err_msg=str(key))
            assert got.dtype == want.dtype and got.shape == want.shape
        with pytest.raises(IndexError):
            stack[len(expected)]
        with pytest.raises(IndexError):
            stack[0, 0, 0, 0]
        with pytest.raises(TypeError):
            stack[[0, 1]]


def test_a_tiled_file_reads_only_the_tiles_touched(s3, bucket, tmp_path):
    """(4, 32, 32) tiles over 64 × 96 frames: a 10 × 10 corner of a frame is one tile's read,
    the whole frame six."""
    path = write_variant(tmp_path / "tiled.h5", "tiled_chunks")
    s3.client.upload_file(str(path), bucket, "tiled.h5")
    with open_stack(f"s3://{bucket}/tiled.h5", s3=s3, prefetch=False) as stack:
        corner = stack[1, :10, :10]
        one = stack.stats["last_region"]
        whole = stack[5]  # in the other chunk of frames (the corner's tile is cached)
        frame = stack.stats["last_region"]
        np.testing.assert_array_equal(corner, frames_of(path)[1, :10, :10])
        np.testing.assert_array_equal(whole, frames_of(path)[5])
    tile = 4 * 32 * 32 * 2
    assert one["path"] == "direct" and one["requests"] == 1 and one["bytes"] == tile
    assert frame["bytes"] == 6 * tile  # (adjacent tiles may share one ranged GET)


def test_to_dask_is_lazy_one_block_per_chunk_and_computes_numpys_mean(s3, bucket, tmp_path):
    path = write_variant(tmp_path / "tiled.h5", "tiled_chunks")
    s3.client.upload_file(str(path), bucket, "tiled.h5")
    expected = frames_of(path)
    with open_stack(f"s3://{bucket}/tiled.h5", s3=s3, prefetch=False) as stack:
        array = stack.to_dask()
        assert stack.stats["regions_read"] == 0  # nothing read yet
        assert array.shape == expected.shape and array.chunksize == (4, 32, 32)
        assert array.numblocks == (2, 2, 3) and array.name.startswith("echo-stack-")
        np.testing.assert_allclose(array.mean(axis=0).compute(scheduler="threads"),
                                   expected.mean(axis=0))
        np.testing.assert_array_equal(array[1:5, 3:50:2, -7:].compute(),
                                      expected[1:5, 3:50:2, -7:])


@pytest.mark.slow
def test_to_dask_on_a_distributed_cluster_of_worker_programs(s3, bucket, tmp_path):
    """Workers open the file themselves from the stack's spec (keys travel in the graph's
    data, never in its keys) and compute numpy's mean."""
    import distributed
    from conftest import ACCESS_KEY, SECRET_KEY
    from dask_processes import DaskProcesses

    path = write_variant(tmp_path / "frames.h5", "bitshuffle_lz4")
    s3.client.upload_file(str(path), bucket, "frames.h5")
    processes = DaskProcesses(tmp_path / "dask", workers=1)
    try:
        with open_stack(f"s3://{bucket}/frames.h5", s3=s3, prefetch=False) as stack, \
                distributed.Client(processes.address, set_as_default=False) as client:
            array = stack.to_dask()
            mean = client.compute(array.mean(axis=(1, 2))).result()
            keys = [str(k) for k in array.__dask_keys__()]
            reads = stack.stats["regions_read"]
    finally:
        processes.stop()
    np.testing.assert_allclose(mean, frames_of(path).mean(axis=(1, 2)))
    assert reads == 0  # the workers read, not this process
    for text in [*keys, processes.logs()]:
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_to_xarray_has_the_files_axes_as_coordinates(demo, moto_server, credentials):
    from dashboard.storage.s3 import S3

    s3 = S3(moto_server.endpoint, credentials)
    with open_stack(f"s3://{DEMO_BUCKET}/{NEXUS_KEY}", s3=s3, prefetch=False) as stack:
        nexus = stack.to_xarray()
    with h5py.File(demo.path(NEXUS_KEY)) as f:
        times = f["/entry/data/time"][()]
    assert nexus.dims == ("frame", "row", "column") and nexus.name == "data"
    np.testing.assert_array_equal(nexus["time"].values, times)
    assert nexus["time"].dims == ("frame",)
    with open_stack(f"s3://{DEMO_BUCKET}/{DXCHANGE_KEY}", s3=s3, prefetch=False) as stack:
        exchange = stack.to_xarray()
        first = exchange.isel(frame=0).values
        np.testing.assert_array_equal(first, stack[0])
    assert exchange["theta"].values[0] == 0.0 and exchange["theta"].values[-1] == 180.0


def test_frames_sharing_a_chunk_fail_together_when_its_fetch_fails(s3, bucket, tmp_path,
                                                                     moto_server, credentials):
    """Four frames of one (4, 32, 32) chunk read ahead in parallel wait for one fetch; when
    the store goes away that fetch fails, and so does every frame waiting for it: an error,
    never a wait without end."""
    import threading

    from faultproxy import FaultProxy

    from dashboard.errors import EchoError
    from dashboard.storage.s3 import S3

    path = write_variant(tmp_path / "tiled.h5", "tiled_chunks")
    s3.client.upload_file(str(path), bucket, "tiled.h5")
    with FaultProxy(moto_server.endpoint) as proxy:
        through = S3(proxy.endpoint, credentials)
        with open_stack(f"s3://{bucket}/tiled.h5", s3=through, prefetch=False) as stack:
            stack.region_cost(range(len(stack)), (0, 10), None)  # builds the chunk index
            proxy.go_down()
            outcome = []

            def read() -> None:
                try:
                    list(stack.regions(range(4), (0, 10), None))
                    outcome.append("read")
                except EchoError as exc:
                    outcome.append(exc)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(120)
            assert not reader.is_alive(), "the frames waiting for the shared chunk hang"
    assert len(outcome) == 1 and isinstance(outcome[0], EchoError), outcome
