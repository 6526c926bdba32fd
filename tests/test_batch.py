"""Batch runs end to end against moto over HTTP: outputs, provenance, cancel/resume, validation,
memory. (The LocalCluster run lives in test_batch_dask.py.)"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import tracemalloc
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.processing import batch as batch_module
from dashboard.processing.batch import (
    BatchFailed,
    BatchProgress,
    InvalidBatch,
    plan_batch,
    resolve_scheduler,
    run_batch,
)
from dashboard.processing.plan import BatchError
from dashboard.processing.export import decode, is_complete, tiff_description
from dashboard.processing.pipeline import normalize, process, to_uint8

DATASET = "/entry/data/data"


def write_stack(path: Path, n: int = 40, shape=(64, 64), seed: int = 0, chunks=True) -> Path:
    """Synthetic radiographs (beam × sample × noise), Bitshuffle-LZ4, one frame per chunk."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    beam = 30000 + 15000 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2)
                                  / (0.2 * shape[0] * shape[1]))
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(DATASET, shape=(n, *shape), dtype=np.uint16,
                                chunks=(1, *shape) if chunks else None,
                                **(hdf5plugin.Bitshuffle(cname="lz4") if chunks else {}))
        for i in range(n):
            sample = 1.0 if i < 20 else 0.55 + 0.35 * np.sin((xx + 3 * i) / 6.0) * np.cos(yy / 9.0)
            frame = beam * sample + rng.normal(0, 400, shape)
            dset[i] = np.clip(frame, 0, 65535).astype(np.uint16)
    return path


def reference_outputs(path: Path, indices, sigma: float):
    """The in-memory pipeline on frames read with plain h5py (independent of FrameStack)."""
    with h5py.File(path, "r") as f:
        dset = f[DATASET]
        start = indices[0]
        flat = np.mean([normalize(dset[j]) for j in range(start - 20, start)], axis=0,
                       dtype=np.float64).astype(np.float32)
        return {i: process(dset[i], flat, sigma, all_stages=False) for i in indices}


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory) -> Path:
    return write_stack(tmp_path_factory.mktemp("stacks") / "scan_0001.h5")


@pytest.fixture
def source(s3, bucket, stack_file) -> str:
    s3.client.upload_file(str(stack_file), bucket, "raw/scan_0001.h5")
    return f"s3://{bucket}/raw/scan_0001.h5"


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def assert_no_secrets(text: str) -> None:
    assert ACCESS_KEY not in text and SECRET_KEY not in text


# -- end to end --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "tiff", "npy"])
def test_end_to_end_outputs_equal_in_memory_pipeline(fmt, s3, source, stack_file, tmp_path):
    out = tmp_path / "out"
    updates: list[BatchProgress] = []
    plan = plan_batch(source, start=22, end=37, step=3, sigma=2.5, fmt=fmt, out=str(out), s3=s3)
    assert list(plan.indices) == [22, 25, 28, 31, 34, 37] and plan.last == 37
    result = run_batch(plan, progress=updates.append, workers=2)
    plan.close()
    assert result.ok and result.status == "complete"
    assert result.written == [22, 25, 28, 31, 34, 37] and result.skipped == 0
    assert updates[-1].done == updates[-1].total == 6 and updates[-1].eta_s == 0.0

    names = sorted(os.listdir(out))
    assert names == sorted([f"scan_0001_{i:06d}.{fmt}" for i in plan.indices]
                           + ["scan_0001_processing.json"])
    expected = reference_outputs(stack_file, list(plan.indices), 2.5)
    for i, image in expected.items():
        decoded = decode((out / f"scan_0001_{i:06d}.{fmt}").read_bytes(), fmt)
        if fmt == "png":
            np.testing.assert_array_equal(decoded, to_uint8(image))
        else:
            assert decoded.dtype == np.float32
            np.testing.assert_array_equal(decoded, image)
    if fmt == "tiff":
        description = json.loads(tiff_description(out / "scan_0001_000025.tiff"))
        assert description["frame"] == 25 and description["sigma"] == 2.5
        assert description["flat"] == [2, 21] and description["source"] == source

    text = (out / "scan_0001_processing.json").read_text()
    assert_no_secrets(text)
    record = json.loads(text)
    head = s3.head(source[5:].split("/", 1)[0], "raw/scan_0001.h5")
    assert record["status"] == "complete"
    assert record["source"] == {"url": source, "dataset": DATASET, "etag": head.etag,
                                "size": head.size, "frames": 40, "frame_shape": [64, 64],
                                "dtype": "uint16"}
    assert record["frames"] == {"start": 22, "end": 37, "step": 3, "last": 37, "count": 6,
                                "numbering": "frames"}
    assert record["flat"]["start"] == 2 and record["flat"]["end"] == 21
    assert record["parameters"]["sigma"] == 2.5 and record["format"] == fmt
    assert record["version"] and record["started"] <= record["finished"]
    assert record["frames_written"] == [22, 25, 28, 31, 34, 37]


def test_s3_output_equals_local_output(s3, bucket, source, tmp_path):
    local = tmp_path / "local"
    plan = plan_batch(source, start=20, end=27, fmt="png", out=str(local), s3=s3)
    run_batch(plan)
    plan.close()
    plan = plan_batch(source, start=20, end=27, fmt="png", out=f"s3://{bucket}/results/run1", s3=s3)
    result = run_batch(plan)
    plan.close()
    assert result.ok and result.output == f"s3://{bucket}/results/run1/"
    keys = {o.key for o in s3.list_objects(bucket, "results/").objects}
    assert keys == {f"results/run1/{name}" for name in files(local)}
    for name, data in files(local).items():
        body = s3.client.get_object(Bucket=bucket, Key=f"results/run1/{name}")["Body"].read()
        if name.endswith(".png"):
            assert body == data
        else:
            record = json.loads(body)
            assert record["status"] == "complete"
            assert record["frames_written"] == list(range(20, 28))
            assert record["output"]["location"] == f"s3://{bucket}/results/run1/"
            assert_no_secrets(body.decode())


def test_default_end_is_the_last_frame_and_local_source(stack_file, tmp_path):
    with plan_batch(stack_file, start=38, fmt="npy", out=tmp_path / "o") as plan:
        assert list(plan.indices) == [38, 39]
        assert run_batch(plan).written == [38, 39]
    with pytest.raises(Exception, match="closed"):
        plan.stack.frame(38)


# -- cancel and resume -------------------------------------------------------------------------

def test_cancel_leaves_only_complete_files_and_resume_completes_identically(
        s3, source, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "PROGRESS_INTERVAL_S", 0.0)
    reference = tmp_path / "reference"
    plan = plan_batch(source, start=20, end=39, fmt="tiff", out=str(reference), s3=s3)
    run_batch(plan, workers=2)
    plan.close()

    out = tmp_path / "out"
    cancel = threading.Event()
    seen: list[int] = []

    def progress(p: BatchProgress) -> None:
        seen.append(p.done)
        if p.done >= 4:
            cancel.set()

    plan = plan_batch(source, start=20, end=39, fmt="tiff", out=str(out), s3=s3)
    result = run_batch(plan, progress=progress, cancel=cancel, workers=2)
    plan.close()
    assert result.status == "incomplete" and not result.ok
    assert "resume" in result.summary
    written = result.written
    # stops within about one frame: only frames already in flight finish (workers + 2 queued)
    assert 4 <= len(written) <= 4 + 2 + 2
    on_disk = sorted(p.name for p in out.iterdir())
    assert on_disk == sorted([f"scan_0001_{i:06d}.tiff" for i in written]
                             + ["scan_0001_processing.json"])  # no temporary or partial file
    for name in on_disk[:-1]:
        assert is_complete(out / name, "tiff", (64, 64))
    record = json.loads((out / "scan_0001_processing.json").read_text())
    assert record["status"] == "incomplete" and record["frames_written"] == written

    # Resume is the default when the provenance says incomplete.
    plan = plan_batch(source, start=20, end=39, fmt="tiff", out=str(out), s3=s3)
    assert plan.resume and plan.done == frozenset(written)
    result = run_batch(plan, workers=2)
    plan.close()
    assert result.ok and result.skipped == len(written)
    assert sorted(result.written) == sorted(set(range(20, 40)) - set(written))
    assert files(out).keys() == files(reference).keys()
    for name, data in files(reference).items():
        if name.endswith(".tiff"):
            assert files(out)[name] == data, name
    record = json.loads((out / "scan_0001_processing.json").read_text())
    assert record["status"] == "complete" and record["frames_written"] == list(range(20, 40))


def test_ctrl_c_records_an_incomplete_run_and_reraises(s3, source, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_module, "PROGRESS_INTERVAL_S", 0.0)
    out = tmp_path / "out"

    pressed = []

    def progress(p: BatchProgress) -> None:
        if p.done >= 3 and not pressed:
            pressed.append(p.done)
            raise KeyboardInterrupt  # Ctrl-C arrives in the main thread, which runs this

    plan = plan_batch(source, start=20, end=39, fmt="npy", out=str(out), s3=s3)
    with pytest.raises(KeyboardInterrupt):
        run_batch(plan, progress=progress, workers=2)
    plan.close()
    record = json.loads((out / "scan_0001_processing.json").read_text())
    assert record["status"] == "incomplete" and 3 <= len(record["frames_written"]) < 20
    names = sorted(p.name for p in out.iterdir() if p.suffix == ".npy")
    assert names == [f"scan_0001_{i:06d}.npy" for i in record["frames_written"]]
    assert all(is_complete(out / name, "npy", (64, 64)) for name in names)


def test_explicit_resume_skips_complete_outputs_and_redoes_broken_ones(s3, source, tmp_path):
    out = tmp_path / "out"
    plan = plan_batch(source, start=20, end=25, fmt="npy", out=str(out), s3=s3)
    run_batch(plan)
    plan.close()
    original = files(out)
    (out / "scan_0001_000021.npy").write_bytes(original["scan_0001_000021.npy"][:100])  # broken
    (out / "scan_0001_000023.npy").unlink()
    plan = plan_batch(source, start=20, end=25, fmt="npy", out=str(out), s3=s3, resume=True)
    assert plan.done == frozenset({20, 22, 24, 25})
    result = run_batch(plan)
    plan.close()
    assert result.written == [21, 23] and result.skipped == 4
    for name, data in original.items():
        if name.endswith(".npy"):
            assert files(out)[name] == data
    # A complete run is redone from scratch when run again without --resume.
    plan = plan_batch(source, start=20, end=25, fmt="npy", out=str(out), s3=s3)
    assert not plan.resume and len(plan.todo) == 6
    plan.close()


def test_resume_refuses_a_different_run(s3, source, tmp_path):
    out = tmp_path / "out"
    plan = plan_batch(source, start=20, end=22, sigma=4.0, fmt="png", out=str(out), s3=s3)
    run_batch(plan)
    plan.close()
    before = files(out)
    with pytest.raises(InvalidBatch, match=r"Cannot resume: the run recorded in .* used sigma 4\.0 "
                                           r"\(now 2\.0\)"):
        plan_batch(source, start=20, end=22, sigma=2.0, fmt="png", out=str(out), s3=s3,
                   resume=True)
    assert files(out) == before


# -- validation --------------------------------------------------------------------------------

CASES = [
    (dict(start=19), "The start frame must be at least 20, because the flat field is the mean of "
                     "the 20 frames before it (got 19)."),
    (dict(start=25, end=24), "The end frame (24) must not be before the start frame (25)."),
    (dict(end=40), "The end frame (40) must be less than the number of frames in the stack (40)."),
    (dict(step=0), "The step must be a whole number of at least 1 (got 0)."),
    (dict(sigma=0.0), "Sigma must be a number from 0.01 to 100 pixels (got 0.0)."),
    (dict(sigma=-1.0), "Sigma must be a number from 0.01 to 100 pixels (got -1.0)."),
    (dict(sigma=math.nan), "Sigma must be a number from 0.01 to 100 pixels (got nan)."),
    (dict(sigma=1e-300), "Sigma must be a number from 0.01 to 100 pixels (got 1e-300)."),
    (dict(sigma=math.inf), "Sigma must be a number from 0.01 to 100 pixels (got inf)."),
    (dict(sigma=100.5), "Sigma must be a number from 0.01 to 100 pixels (got 100.5)."),
    (dict(fmt="jpg"), "The output format must be one of png, tiff, npy (got 'jpg')."),
    (dict(png_level=11), "The PNG compression level must be 0 to 9 (got 11)."),
]


@pytest.mark.parametrize(("kwargs", "message"), CASES)
def test_each_validation_failure_is_one_sentence_and_writes_nothing(
        s3, source, tmp_path, kwargs, message):
    out = tmp_path / "out"
    params = dict(start=20, end=30, out=str(out), s3=s3) | kwargs
    with pytest.raises(InvalidBatch) as info:
        plan_batch(source, **params)
    assert str(info.value) == message
    assert not out.exists()


def test_short_stack_and_unwritable_output_are_refused(s3, bucket, tmp_path):
    short = write_stack(tmp_path / "short.h5", n=15, shape=(16, 16))
    s3.client.upload_file(str(short), bucket, "short.h5")
    out = tmp_path / "out"
    with pytest.raises(InvalidBatch) as info:
        plan_batch(f"s3://{bucket}/short.h5", start=20, end=20, out=str(out), s3=s3)
    assert str(info.value) == (f"The stack {DATASET} has 15 frames; a batch needs at least 21 "
                               "(20 for the flat field and one to process).")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ok = write_stack(tmp_path / "ok.h5", n=21, shape=(16, 16))
    with pytest.raises(InvalidBatch,
                       match=r"^The output path .*file exists and is not a folder\.$"):
        plan_batch(ok, start=20, out=blocker)
    with pytest.raises(InvalidBatch,
                       match=r"^The output s3://.*-nope/x/ is not writable: .*\(404\)\.$"):
        plan_batch(ok, start=20, out=f"s3://{bucket}-nope/x", s3=s3)
    assert sorted(os.listdir(tmp_path)) == ["file", "ok.h5", "short.h5"]
    assert {o.key for o in s3.list_objects(bucket).objects} == {"short.h5"}


def test_failure_mid_run_is_reported_and_recorded(s3, source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    plan = plan_batch(source, start=20, end=39, fmt="png", out=str(out), s3=s3)
    real_write = plan.output.write
    calls = []

    def write(name, data):
        if name.endswith(".png"):
            calls.append(name)
            if len(calls) == 5:
                raise batch_module.OutputError(
                    f"Could not write {out / name}: No space left on device.")
        real_write(name, data)

    monkeypatch.setattr(plan.output, "write", write)
    with pytest.raises(BatchFailed, match="No space left on device") as info:
        run_batch(plan, workers=2)
    plan.close()
    assert "\n" not in str(info.value)
    result = info.value.result
    assert result.status == "failed" and not result.ok and len(result.written) >= 4
    record = json.loads((out / "scan_0001_processing.json").read_text())
    assert record["status"] == "failed" and "No space left" in record["error"]
    assert record["frames_written"] == result.written
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_workers_must_be_positive_and_scheduler_from_env(s3, source, tmp_path):
    plan = plan_batch(source, start=20, end=20, out=str(tmp_path / "o"), s3=s3)
    with pytest.raises(InvalidBatch,
                       match=r"^The number of workers must be at least 1 \(got 0\)\.$"):
        run_batch(plan, workers=0)
    plan.close()
    assert not (tmp_path / "o").exists()
    assert resolve_scheduler(None, {}) is None
    assert resolve_scheduler(None, {"DASK_SCHEDULER_ADDRESS": "tcp://h:8786"}) == "tcp://h:8786"
    assert resolve_scheduler("local", {"DASK_SCHEDULER_ADDRESS": "tcp://h:8786"}) == "local"


def test_a_cluster_run_without_the_cluster_extra_says_what_to_install(
        s3, source, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: import fails
    plan = plan_batch(source, start=20, end=21, out=str(tmp_path / "o"), s3=s3)
    with pytest.raises(BatchError) as info:
        run_batch(plan, scheduler="tcp://127.0.0.1:1")
    plan.close()
    assert str(info.value) == ('Running on a Dask cluster needs dask and distributed: '
                               'pip install "echo-s3-viewer[cluster]"; nothing was written.')
    assert not (tmp_path / "o").exists()


# -- memory ------------------------------------------------------------------------------------

def test_peak_memory_is_independent_of_the_number_of_frames(tmp_path):
    shape = (256, 256)
    path = write_stack(tmp_path / "long.h5", n=120, shape=shape)
    frame_bytes = shape[0] * shape[1] * 4  # one float32 frame

    def peak(end: int) -> int:
        plan = plan_batch(path, start=20, end=end, fmt="png", out=tmp_path / f"out{end}")
        tracemalloc.start()
        try:
            result = run_batch(plan, workers=2)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            plan.close()
            assert result.ok

    short, long = peak(39), peak(119)
    print("PEAK", short / frame_bytes, long / frame_bytes)
    assert long < 16 * frame_bytes, (long / frame_bytes, short / frame_bytes)
    assert long <= 1.2 * short, (long / frame_bytes, short / frame_bytes)
