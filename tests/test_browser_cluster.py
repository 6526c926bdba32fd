"""End to end in Chromium: the Process step sends a batch to a separately started Dask
scheduler (``dask scheduler`` + two ``dask worker`` programs), names it and its workers, and
writes what the server's own threads write."""

from __future__ import annotations

import uuid

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, open_in_frames, shot, status, tab
from dask_processes import DaskProcesses
from test_batch import files, write_stack
from test_browser_dashboard import _keys, choose, expect, field, type_in

from dashboard.processing.batch import plan_batch, run_batch
from dashboard.storage.s3 import S3

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_batch_on_a_dask_scheduler_from_the_page(page, moto_server, credentials, tmp_path):
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"cluster-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)
    write_stack(tmp_path / "scan.h5", n=30, shape=(48, 64))
    s3.client.upload_file(str(tmp_path / "scan.h5"), bucket, "scan.h5")
    with plan_batch(f"s3://{bucket}/scan.h5", start=20, end=29, fmt="tiff",
                    out=str(tmp_path / "threads"), s3=s3) as plan:
        assert run_batch(plan).ok
    processes = DaskProcesses(tmp_path / "dask", workers=2)
    try:
        open_in_frames(page, endpoint=moto_server.endpoint, credentials=_keys(),
                       bucket=bucket, key="scan.h5")
        expect(status(page, "echo-frame-label")).to_have_text("Frame 0 of 29")
        tab(page, "Process")
        expect(field(page, "Dask scheduler address")).to_be_hidden()
        choose(page, "Run on", "A Dask scheduler")
        expect(status(page, "echo-process-check")).to_contain_text(
            "Give the Dask scheduler's address")
        type_in(page, "Dask scheduler address", processes.address)
        type_in(page, "Output folder", str(tmp_path / "page"))
        choose(page, "Format", "TIFF")
        expect(status(page, "echo-process-check")).to_have_text(
            f"10 frames will be written as TIFF on the Dask scheduler at {processes.address}.")
        click(page, "Batch Process & Save")
        expect(status(page, "echo-process-status")).to_have_text(
            f"Batch finished on the Dask scheduler at {processes.address}: 2 workers, "
            "2 threads.")
        expect(status(page, "echo-batch-summary")).to_contain_text("Processed 10 of 10 frames")
        shot(page, "45-process-on-a-dask-cluster")
        assert "Traceback" not in page.content()
    finally:
        processes.stop()
    threads, from_page = files(tmp_path / "threads"), files(tmp_path / "page")
    images = [name for name in threads if name.endswith(".tiff")]
    assert len(images) == 10
    for name in images:
        assert from_page[name] == threads[name], name
