"""Batches on a Dask cluster started as separate programs (``dask scheduler``, ``dask worker``):
from the Process step's state, byte-identical to threads, to a local folder and to ``s3://``;
a worker killed mid-run loses nothing; a scheduler that dies gives one sentence, and a re-run
resumes. (The browser's run is in test_browser_cluster.py.)"""

from __future__ import annotations

import json
import uuid

import distributed
import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from dask_processes import DaskProcesses
from test_batch import files, write_stack

from dashboard.config import Settings
from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY
from dashboard.processing import batch as batch_module
from dashboard.processing.batch import BatchFailed, plan_batch, run_batch
from dashboard.state.session import Session
from dashboard.state.tasks import user_message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    processes = DaskProcesses(tmp_path_factory.mktemp("dask"), workers=2)
    yield processes
    processes.stop()


@pytest.fixture
def session(moto_server, credentials, demo):
    s = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert s.wait(60)
    s.browser.bucket = DEMO_BUCKET
    s.browser.selection = [NEXUS_KEY]
    s.viewer.load = True
    assert s.wait(60)
    yield s
    s.close()


def s3_files(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    listed = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix):]: s3.client.get_object(Bucket=bucket, Key=item["Key"])
            ["Body"].read() for item in listed}


def test_process_step_runs_on_a_separately_started_cluster(session, cluster, s3, bucket,
                                                           tmp_path):
    p = session.processor
    assert p.param.run_on.objects == {"This server (threads)": "threads",
                                      "A Dask scheduler": "dask"}

    def batch(output: str) -> None:
        p.param.update(output=output)
        assert not p.batch_disabled(), p.check()
        p.batch = True
        assert session.wait(120)

    p.param.update(start=20, end=27, format="PNG")
    batch(str(tmp_path / "threads"))
    assert p.status == "Batch finished."
    threads = files(tmp_path / "threads")

    p.run_on = "dask"
    assert p.check().startswith("Give the Dask scheduler's address")
    p.scheduler = "scheduler-host:8786"
    assert "is not a Dask scheduler address" in p.check() and p.batch_disabled()
    p.scheduler = cluster.address
    assert p.check() == ("8 frames will be written as PNG on the Dask scheduler at "
                         f"{cluster.address}.")
    prefix = f"cluster-{uuid.uuid4().hex[:8]}/"
    with distributed.Client(cluster.address, set_as_default=False) as observer, \
            distributed.get_task_stream(observer) as stream:
        batch(str(tmp_path / "dask"))
        assert p.status == (f"Batch finished on the Dask scheduler at {cluster.address}: "
                            "2 workers, 2 threads.")
        batch(f"s3://{bucket}/{prefix}")  # (never into the demo bucket: others count it)
        assert p.status.startswith("Batch finished on the Dask scheduler") and not p.failed
    keys = [str(task["key"]) for task in stream.data]  # filled as the block ends
    with distributed.Client(cluster.address, set_as_default=False) as observer:
        cluster_logs = json.dumps([observer.get_worker_logs(), observer.get_scheduler_logs()],
                                  default=str)

    on_dask, on_s3 = files(tmp_path / "dask"), s3_files(s3, bucket, prefix)
    images = sorted(name for name in threads if name.endswith(".png"))
    assert len(images) == 8
    for name in images:
        assert on_dask[name] == threads[name] == on_s3[name], name
    record = json.loads(on_dask["scan_0001_processing.json"])
    assert record["status"] == "complete" and record["scheduler"] == cluster.address
    assert keys and all(k.startswith("echo-process-") for k in keys)
    for text in [*keys, cluster_logs, cluster.logs(), json.dumps(record), p.status]:
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_a_scheduler_without_workers_is_refused_before_anything_is_written(tmp_path, s3, bucket,
                                                                          monkeypatch):
    from dashboard.processing import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "WORKERS_TIMEOUT_S", 1)
    empty = DaskProcesses(tmp_path / "empty", workers=0)
    try:
        path = write_stack(tmp_path / "scan.h5", n=24, shape=(16, 16))
        s3.client.upload_file(str(path), bucket, "scan.h5")
        with plan_batch(f"s3://{bucket}/scan.h5", start=20, end=23, fmt="npy",
                        out=str(tmp_path / "out"), s3=s3) as plan:
            with pytest.raises(batch_module.BatchError) as caught:
                run_batch(plan, scheduler=empty.address)
    finally:
        empty.stop()
    assert str(caught.value) == (
        f"The Dask scheduler at {empty.address} has no workers (none joined within 1 s): "
        f"start `dask worker {empty.address}`; nothing was written.")
    assert not (tmp_path / "out").exists()


def _scan(tmp_path, s3, bucket, fmt: str):
    """A 60-frame stack in S3, the batch's parameters (frames 20–59) and the threads' output."""
    path = write_stack(tmp_path / "scan.h5", n=60, shape=(32, 32))
    s3.client.upload_file(str(path), bucket, "scan.h5")
    source, params = f"s3://{bucket}/scan.h5", dict(start=20, end=59, fmt=fmt)
    with plan_batch(source, out=str(tmp_path / "threads"), s3=s3, **params) as plan:
        assert run_batch(plan).ok
    return source, params, files(tmp_path / "threads")


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, s3, bucket, monkeypatch):
    """Kill one of two workers (SIGKILL, no nanny) after the first frames: the scheduler runs
    its blocks on the other; every S3 object is whole and equal to the threads' output."""
    monkeypatch.setattr(batch_module, "PROGRESS_INTERVAL_S", 0.0)
    source, params, reference = _scan(tmp_path, s3, bucket, "png")
    processes = DaskProcesses(tmp_path / "dask", workers=2)
    killed = []

    def progress(p) -> None:  # called in run_batch's thread: no new block goes out meanwhile
        if p.done and not killed:
            victim = processes.workers[0]
            victim.kill()
            victim.wait(10)
            processes.wait_for_workers(1)
            killed.append(p.done)

    try:
        with plan_batch(source, out=f"s3://{bucket}/killed/", s3=s3, **params) as plan:
            result = run_batch(plan, progress=progress, scheduler=processes.address)
    finally:
        processes.stop()
    assert killed and killed[0] < 40  # the worker died mid-run
    assert result.ok and sorted(result.written) == list(range(20, 60))
    written = s3_files(s3, bucket, "killed/")
    for name, data in reference.items():
        if name.endswith(".png"):
            assert written[name] == data, name
    assert json.loads(written["scan_processing.json"])["status"] == "complete"


def test_a_dead_scheduler_gives_one_sentence_and_a_rerun_resumes(tmp_path, s3, bucket,
                                                                 monkeypatch):
    monkeypatch.setattr(batch_module, "PROGRESS_INTERVAL_S", 0.0)
    source, params, reference = _scan(tmp_path, s3, bucket, "npy")
    processes = DaskProcesses(tmp_path / "dask", workers=1)

    def progress(p) -> None:
        if p.done and processes.scheduler.poll() is None:
            processes.scheduler.kill()
            processes.scheduler.wait(10)

    out = tmp_path / "out"
    try:
        with plan_batch(source, out=str(out), s3=s3, **params) as plan:
            with pytest.raises(BatchFailed) as caught:
                run_batch(plan, progress=progress, scheduler=processes.address)
    finally:
        processes.stop()
    written = caught.value.result.written
    assert 0 < len(written) < 40
    message = user_message(caught.value, "run the batch")
    assert message == (
        f"Lost the Dask scheduler at {processes.address} after {len(written)} frame"
        f"{'s' if len(written) != 1 else ''}: the frames written are kept, and running the "
        "batch again resumes from there.")
    assert json.loads((out / "scan_processing.json").read_text())["status"] == "failed"

    with plan_batch(source, out=str(out), s3=s3, **params) as plan:
        assert plan.resume and set(written) <= plan.done
        assert run_batch(plan).ok  # on threads
    assert files(out).keys() == reference.keys()
    for name, data in reference.items():
        if name.endswith(".npy"):
            assert files(out)[name] == data, name
