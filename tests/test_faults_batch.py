"""Batch runs under S3 faults, a store that dies mid-run, and an output disk that fills up.

Every run's frame outputs are compared byte for byte with one fault-free run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import (
    FAST_FAIL,
    KINDS,
    FaultProxy,
    assert_clear_message,
    failure_bound,
    write_stack,
)

from dashboard.errors import EchoError
from dashboard.processing.batch import BatchFailed, plan_batch, run_batch
from dashboard.storage.s3 import S3

pytestmark = pytest.mark.timeout(150)

N_FRAMES = 40
STEM = "scan_0042"
ROOT = Path(__file__).resolve().parent.parent


def outputs(folder: Path) -> dict[str, bytes]:
    """Frame outputs (final names only) of a run folder."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{STEM}_0*"))}


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files: anything not a final frame name or the provenance."""
    return [p.name for p in folder.iterdir()
            if not (p.name.startswith(f"{STEM}_0") or p.name == f"{STEM}_processing.json")]


@pytest.fixture(scope="module")
def source(moto_server, credentials, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults-batch")
    path = folder / f"{STEM}.h5"
    write_stack(path, n=N_FRAMES, h=48, w=64, seed=3)
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"faults-batch-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)
    s3.client.upload_file(str(path), bucket, f"raw/{STEM}.h5")
    url = f"s3://{bucket}/raw/{STEM}.h5"
    reference = {}
    for fmt in ("png", "npy"):
        out = folder / f"reference-{fmt}"
        plan = plan_batch(url, s3=s3, out=out, fmt=fmt, sigma=2.0)
        try:
            assert run_batch(plan, workers=2).ok
        finally:
            plan.close()
        reference[fmt] = outputs(out)
        assert len(reference[fmt]) == N_FRAMES - 20
    return {"url": url, "path": path, "reference": reference}


@pytest.fixture
def proxy(moto_server):
    with FaultProxy(moto_server.endpoint, seed=5, max_lifetime=140) as proxy:
        yield proxy


def _run(url, s3, out, **kw):
    plan = plan_batch(url, s3=s3, out=out, fmt=kw.pop("fmt", "png"), sigma=2.0, **kw)
    try:
        return plan, run_batch(plan, workers=2)
    finally:
        plan.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_batch_at_10_percent_faults_equals_fault_free_run(proxy, credentials, source, kind,
                                                          tmp_path):
    s3 = S3(proxy.endpoint, credentials, read_timeout=5)
    proxy.inject(kind, count=1, method="GET", delay=0.2)
    proxy.inject(kind, rate=0.1, delay=0.2)
    _plan, result = _run(source["url"], s3, tmp_path)
    assert result.ok, result.summary
    assert outputs(tmp_path) == source["reference"]["png"]
    assert leftovers(tmp_path) == []
    assert proxy.faults[kind] >= 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_batch_with_every_request_failing_ends_with_one_clear_message(proxy, credentials,
                                                                      source, kind, tmp_path):
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    plan = plan_batch(source["url"], s3=s3, out=tmp_path, fmt="png", sigma=2.0)
    delay = 1.5
    proxy.inject(kind, rate=1.0, delay=delay)
    t0 = time.monotonic()
    try:
        with pytest.raises(BatchFailed) as info:
            run_batch(plan, workers=2)
    finally:
        plan.close()
    # The read-ahead keeps up to 4 GETs in flight; a few waves of failing requests at most.
    assert time.monotonic() - t0 < failure_bound(**FAST_FAIL, delay=delay, requests=4)
    assert_clear_message(info.value, SECRET_KEY, ACCESS_KEY)
    assert info.value.result.status == "failed"
    assert outputs(tmp_path) == {}
    assert leftovers(tmp_path) == []
    record = json.loads((tmp_path / f"{STEM}_processing.json").read_text())
    assert record["status"] == "failed"
    # Planning against the dead store fails the same way.
    with pytest.raises(EchoError) as info:
        plan_batch(source["url"], s3=s3, out=tmp_path / "again", fmt="png")
    assert_clear_message(info.value, SECRET_KEY, ACCESS_KEY)
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


def test_store_stops_mid_batch_then_resume_is_identical(proxy, credentials, source, tmp_path):
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    plan = plan_batch(source["url"], s3=s3, out=tmp_path, fmt="png", sigma=2.0)
    # 20 flat frames + 8 more, then the store is gone (connections refused).
    proxy.go_down_after(28)
    try:
        with pytest.raises(BatchFailed) as info:
            run_batch(plan, workers=2)
    finally:
        plan.close()
    assert "Cannot reach" in assert_clear_message(info.value, SECRET_KEY, ACCESS_KEY)
    written = info.value.result.written
    assert 0 < len(written) < N_FRAMES - 20
    partial = outputs(tmp_path)
    assert sorted(partial) == sorted(f"{STEM}_{i:06d}.png" for i in written)
    for name, data in partial.items():  # what is there is complete and right
        assert data == source["reference"]["png"][name]
    assert leftovers(tmp_path) == []
    assert json.loads((tmp_path / f"{STEM}_processing.json").read_text())["status"] == "failed"

    proxy.come_back()
    plan, result = _run(source["url"], s3, tmp_path)  # resumes by default after a failure
    assert plan.resume and plan.done == frozenset(written)
    assert result.ok and result.skipped == len(written)
    assert sorted(result.written) == sorted(set(range(20, N_FRAMES)) - set(written))
    assert outputs(tmp_path) == source["reference"]["png"]
    assert leftovers(tmp_path) == []


# -- the output disk fills -----------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    from dashboard.processing.batch import BatchFailed, plan_batch, run_batch
    src, out, resume = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "resume"
    report = {}
    try:
        plan = plan_batch(src, out=out, fmt="npy", sigma=2.0, resume=resume or None)
        result = run_batch(plan, workers=2)
        report["status"] = result.status
    except BatchFailed as exc:
        report.update(status="failed", error=str(exc), written=exc.result.written)
    except Exception as exc:
        report.update(status="raised", error=f"{type(exc).__name__}: {exc}")
    report["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in sorted(out.iterdir()) if p.is_file()}
    print(json.dumps(report))
""")


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _child(args, *, preexec_fn=None, prefix=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD, *args], capture_output=True,
                          text=True, timeout=90, env=env, preexec_fn=preexec_fn)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_disk_full(report, reference, *, before=()):
    assert report["status"] == "failed", report
    text = report["error"]
    assert "\n" not in text and "Traceback" not in text, text
    assert "space" in text.lower() or "too large" in text.lower(), text
    frames = {n: h for n, h in report["files"].items() if n.startswith(f"{STEM}_0")}
    others = set(report["files"]) - set(frames) - {f"{STEM}_processing.json"}
    assert others == set(), others  # no temporary/partial file left behind
    for name, digest in frames.items():  # nothing at a final name is partial
        assert digest == _sha(reference[name]), name
    for name in before:  # nothing written before was lost
        assert frames.get(name) == _sha(reference[name]), name
    for index in report["written"]:
        assert f"{STEM}_{index:06d}.npy" in frames
    return frames


def test_output_disk_fills_on_a_tiny_tmpfs(source, tmp_path):
    """A 96 KiB tmpfs (private mount namespace): a few frames fit, then ENOSPC."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("no unshare/user namespaces here: see the RLIMIT_FSIZE test")
    out = tmp_path / "tiny"
    out.mkdir()
    frame = len(next(iter(source["reference"]["npy"].values())))
    size_k = 96
    assert frame * 3 < size_k * 1024 < frame * (N_FRAMES - 20)
    report = _child(
        [str(source["path"]), str(out), "fresh"],
        prefix=["unshare", "-rm", "sh", "-c",
                f'mount -t tmpfs -o size={size_k}k tmpfs "$0" && exec "$@"', str(out)])
    frames = _check_disk_full(report, source["reference"]["npy"])
    assert 0 < len(frames) < N_FRAMES - 20


def test_output_file_limit_keeps_earlier_outputs(source, tmp_path):
    """RLIMIT_FSIZE below one frame: the resumed run fails cleanly, earlier frames intact."""
    import resource
    import signal

    reference = source["reference"]["npy"]
    plan = plan_batch(source["path"], out=tmp_path, fmt="npy", sigma=2.0)
    try:
        assert run_batch(plan, workers=2).ok
    finally:
        plan.close()
    kept = sorted(reference)[:10]
    for name in sorted(reference)[10:]:
        (tmp_path / name).unlink()
    limit = len(reference[kept[0]]) - 1
    assert (tmp_path / f"{STEM}_processing.json").stat().st_size < limit

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    report = _child([str(source["path"]), str(tmp_path), "resume"], preexec_fn=limit_file_size)
    frames = _check_disk_full(report, reference, before=kept)
    assert sorted(frames) == kept


def test_s3_output_provenance_read_survives_a_cut_body(proxy, credentials, source, moto_server):
    """A run to s3://…, then a re-plan whose provenance GET is cut short: it still resumes."""
    direct = S3(moto_server.endpoint, credentials)
    bucket = source["url"].split("/")[2]
    out = f"s3://{bucket}/processed-{uuid.uuid4().hex[:6]}/"
    s3 = S3(proxy.endpoint, credentials, read_timeout=5)
    plan = plan_batch(source["url"], s3=s3, out=out, fmt="png", sigma=2.0, end=24)
    try:
        assert run_batch(plan, workers=2).ok
    finally:
        plan.close()
    proxy.inject("truncate", count=1, method="GET", path=r"_processing\.json")
    plan = plan_batch(source["url"], s3=s3, out=out, fmt="png", sigma=2.0, end=24, resume=True)
    try:
        assert plan.resume and plan.done == frozenset(range(20, 25))
    finally:
        plan.close()
    assert proxy.faults["truncate"] == 1
    prefix = out.split("/", 3)[3]
    for i in range(20, 25):
        name = f"{STEM}_{i:06d}.png"
        body = direct.get_range(bucket, prefix + name, 0, len(source["reference"]["png"][name]))
        assert body == source["reference"]["png"][name]
