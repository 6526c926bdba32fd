"""``scheduler="local"`` (a LocalCluster of worker processes, as ``process --scheduler local``
starts) and cancel/resume on Dask. Separately started clusters: test_dask_processes.py."""

from __future__ import annotations

import json
import threading

import pytest
from test_batch import files, write_stack

from dashboard.processing.batch import plan_batch, run_batch

pytestmark = pytest.mark.slow


def test_a_local_cluster_of_worker_processes_is_byte_identical(s3, bucket, tmp_path):
    path = write_stack(tmp_path / "scan_dask.h5", n=30, shape=(32, 48))
    s3.client.upload_file(str(path), bucket, "raw/scan_dask.h5")
    source = f"s3://{bucket}/raw/scan_dask.h5"

    def run(out, scheduler=None):
        with plan_batch(source, start=20, end=29, fmt="png", out=out, s3=s3) as plan:
            return run_batch(plan, scheduler=scheduler, workers=2)

    threads = run(str(tmp_path / "threads"))
    local = run(str(tmp_path / "dask"), scheduler="local")
    assert threads.ok and local.ok and local.written == list(range(20, 30))
    reference, remote = files(tmp_path / "threads"), files(tmp_path / "dask")
    assert reference.keys() == remote.keys()
    for name, data in reference.items():
        if name.endswith(".png"):
            assert remote[name] == data, name
    record = json.loads(remote["scan_dask_processing.json"])
    assert record["status"] == "complete" and record["scheduler"] == "local"


def test_dask_cancel_drops_queued_tasks_and_resume_completes(s3, bucket, tmp_path, monkeypatch):
    """Cancel on Dask (an in-process cluster of threads: starts in a second), then resume."""
    import distributed

    from dashboard.processing import batch as batch_module
    from dashboard.processing import cluster as cluster_module

    monkeypatch.setattr(batch_module, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(cluster_module, "FRAMES_PER_TASK", 1)
    path = write_stack(tmp_path / "scan_cancel.h5", n=60, shape=(32, 32))
    s3.client.upload_file(str(path), bucket, "scan_cancel.h5")
    source = f"s3://{bucket}/scan_cancel.h5"
    cancel = threading.Event()

    def progress(p) -> None:
        if p.done >= 3:
            cancel.set()

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with plan_batch(source, start=20, end=59, fmt="npy", out=str(tmp_path / "out"),
                        s3=s3) as plan:
            first = run_batch(plan, progress=progress, cancel=cancel, scheduler=client)
        assert first.status == "incomplete" and 3 <= len(first.written) < 40
        with plan_batch(source, start=20, end=59, fmt="npy", out=str(tmp_path / "out"),
                        s3=s3) as plan:
            assert plan.resume and set(first.written) <= plan.done
            second = run_batch(plan, scheduler=client)
    assert second.ok and set(second.written) | plan.done == set(range(20, 60))
    with plan_batch(source, start=20, end=59, fmt="npy", out=str(tmp_path / "ref"),
                    s3=s3) as plan:
        run_batch(plan)
    assert files(tmp_path / "out").keys() == files(tmp_path / "ref").keys()
    for name, data in files(tmp_path / "ref").items():
        if name.endswith(".npy"):
            assert files(tmp_path / "out")[name] == data, name
