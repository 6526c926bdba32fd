"""One LocalCluster run (worker processes) against moto: byte-identical to local threads, and no
credentials in task keys or cluster logs. Kept to one test: a cluster takes seconds to start."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from test_batch import files, write_stack

from dashboard.processing.batch import plan_batch, run_batch

pytestmark = pytest.mark.slow


def test_local_cluster_with_worker_processes_is_byte_identical(s3, bucket, tmp_path):
    import distributed
    path = write_stack(tmp_path / "scan_dask.h5", n=30, shape=(32, 48))
    s3.client.upload_file(str(path), bucket, "raw/scan_dask.h5")
    source = f"s3://{bucket}/raw/scan_dask.h5"

    def run(out, scheduler=None):
        plan = plan_batch(source, start=20, end=29, fmt="png", out=out, s3=s3)
        try:
            return run_batch(plan, scheduler=scheduler, workers=2)
        finally:
            plan.close()

    threads = run(str(tmp_path / "threads"))
    assert threads.ok

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        # 1. by address; results come back to this process, which writes the local folder
        by_address = run(str(tmp_path / "dask"), scheduler=cluster.scheduler_address)
        # 2. through a Client, writing to S3 from the workers themselves
        with distributed.get_task_stream(client) as stream:
            to_s3 = run(f"s3://{bucket}/out", scheduler=client)
        keys = [str(task["key"]) for task in stream.data]
        pids = client.run(lambda: __import__("os").getpid())
        logs = json.dumps([client.get_worker_logs(), client.get_scheduler_logs()], default=str)

    assert by_address.ok and to_s3.ok
    assert by_address.written == to_s3.written == list(range(20, 30))
    assert len(set(pids.values())) == 2  # two worker processes did the work
    local, remote = files(tmp_path / "threads"), files(tmp_path / "dask")
    assert local.keys() == remote.keys()
    for name, data in local.items():
        if name.endswith(".png"):
            assert remote[name] == data, name
            body = s3.client.get_object(Bucket=bucket, Key=f"out/{name}")["Body"].read()
            assert body == data, name
    record = json.loads(remote["scan_dask_processing.json"])
    assert record["status"] == "complete" and record["scheduler"] == cluster.scheduler_address

    assert keys and all(k.startswith("echo-process-") for k in keys)
    for text in keys + [logs, repr(record)]:
        assert ACCESS_KEY not in text and SECRET_KEY not in text


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
