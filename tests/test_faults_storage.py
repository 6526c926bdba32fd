"""Listing, ranged reads and downloads through a fault-injecting proxy in front of moto.

At a 10% rate of each fault the results are exactly right; when every request fails, each
action ends within a bounded time with one clear :class:`EchoError` sentence.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import FAST_FAIL, KINDS, FaultProxy, assert_clear_message, failure_bound

from dashboard.errors import EchoError
from dashboard.storage.download import FAILED, download_objects
from dashboard.storage.s3 import S3

pytestmark = pytest.mark.timeout(120)

N_LISTED = 3000


def _bucket(s3, keys) -> str:
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    s3.client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.client.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    return bucket


def _keys(n: int) -> list[str]:
    return sorted(f"dir{i % 3}/sub{i % 7}/obj{i:05d}.h5" for i in range(n))


@pytest.fixture(scope="module")
def store(moto_server, credentials):
    """A bucket with 21 tiny objects under 3 prefixes and 8 random 200 KB files."""
    s3 = S3(moto_server.endpoint, credentials)
    bucket = _bucket(s3, _keys(21))
    files = {}
    for i in range(8):
        data = os.urandom(200_000 + 1000 * i)
        key = f"files/blob{i}.h5"
        s3.client.put_object(Bucket=bucket, Key=f"files/blob{i}.h5", Body=data)
        files[key] = data
    return {"bucket": bucket, "files": files}


@pytest.fixture(scope="module")
def listed(moto_server, credentials):
    """A bucket with 3000 tiny objects under 3 prefixes: three pages of a listing (the slow
    tier's; the other tests need no 3000 PUTs)."""
    keys = _keys(N_LISTED)
    return {"bucket": _bucket(S3(moto_server.endpoint, credentials), keys), "keys": keys}


@pytest.fixture
def proxy(moto_server):
    with FaultProxy(moto_server.endpoint, seed=6, max_lifetime=110) as proxy:
        yield proxy


def _rule(proxy: FaultProxy, kind: str, **kw):
    """The first matching request faulted for sure, then 10% of them (seeded).

    The delay makes latency slow but not a timeout (read_timeout 5 s).
    """
    proxy.inject(kind, count=1, delay=0.2, method=kw.get("method"))
    return proxy.inject(kind, delay=0.2, **kw)


# -- 10% of each fault: correct results ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_listing_at_10_percent_faults_is_complete(proxy, credentials, listed, kind):
    s3 = S3(proxy.endpoint, credentials, read_timeout=5)
    _rule(proxy, kind, rate=0.1)
    for _ in range(3):  # 3 listings x 3 pages
        listing = s3.list_objects(listed["bucket"], "dir", limit=5000)
        assert not listing.truncated
        assert [o.key for o in listing.objects] == listed["keys"]
        assert all(o.size == len(o.key) for o in listing.objects)
    assert proxy.faults[kind] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_ranged_reads_at_10_percent_faults_are_exact(proxy, credentials, store, kind):
    s3 = S3(proxy.endpoint, credentials, read_timeout=5)
    key, data = next(iter(store["files"].items()))
    _rule(proxy, kind, rate=0.1)
    for i in range(24):
        start, length = (i * 7919) % (len(data) - 20_000), 1000 + 661 * i
        assert s3.get_range(store["bucket"], key, start, length) == data[start:start + length]
    assert proxy.faults[kind] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_downloads_at_10_percent_faults_are_identical(proxy, credentials, store, kind, tmp_path):
    s3 = S3(proxy.endpoint, credentials, read_timeout=5)
    # Two passes of 8 files (16 HEAD + 16 GET): certain to meet faults.
    _rule(proxy, kind, rate=0.1, method="GET" if kind == "truncate" else None)
    for attempt in range(2):
        out = tmp_path / f"pass{attempt}"
        report = download_objects(s3, store["bucket"], list(store["files"]), out, max_workers=3)
        assert report.ok, [r.message for r in report.failed]
        for key, data in store["files"].items():
            assert (out / key).read_bytes() == data
        assert not [p for p in out.rglob("*") if ".part-" in p.name]
    assert proxy.faults[kind] >= 1


# -- 100% failure: bounded time, one clear message ----------------------------------------------


def _list(s3, store):
    return s3.list_objects(store["bucket"], "dir0/")


def _head(s3, store):
    return s3.head(store["bucket"], "files/blob0.h5")


def _range(s3, store):
    return s3.get_range(store["bucket"], "files/blob0.h5", 100, 5000)


def _buckets(s3, store):
    return s3.list_buckets()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", [_list, _head, _range, _buckets])
def test_every_request_failing_ends_with_one_clear_message(proxy, credentials, store, kind,
                                                           action):
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    delay = 1.5  # latency beyond the 1 s read timeout: every attempt times out
    proxy.inject(kind, rate=1.0, delay=delay)
    t0 = time.monotonic()
    if kind == "truncate" and action in (_head,):
        action(s3, store)  # a HEAD has no body to cut: it simply works
        return
    with pytest.raises(EchoError) as info:
        action(s3, store)
    elapsed = time.monotonic() - t0
    text = assert_clear_message(info.value, SECRET_KEY, ACCESS_KEY)
    assert s3.endpoint in text or "s3://" in text or store["bucket"] in text, text
    assert elapsed < failure_bound(**FAST_FAIL, delay=delay), elapsed
    assert proxy.faults[kind] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_download_with_every_request_failing_reports_each_file(proxy, credentials, store,
                                                               kind, tmp_path):
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    delay = 1.5
    proxy.inject(kind, rate=1.0, delay=delay)
    keys = list(store["files"])[:3]
    t0 = time.monotonic()
    report = download_objects(s3, store["bucket"], keys, tmp_path, max_workers=3)
    elapsed = time.monotonic() - t0
    assert [r.status for r in report.results] == [FAILED] * 3
    for result in report.results:
        text = result.message
        assert text and "\n" not in text and "Traceback" not in text
        assert SECRET_KEY not in text and ACCESS_KEY not in text
        assert result.key in text or s3.endpoint in text, text
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing partial left
    # HEAD then GET per file, three files in parallel.
    assert elapsed < failure_bound(**FAST_FAIL, delay=delay, requests=2), elapsed


def test_proxy_counts_and_stops_itself(moto_server, credentials):
    """The proxy is bounded: after max_requests it refuses connections."""
    with FaultProxy(moto_server.endpoint, max_requests=3) as proxy:
        # One attempt each and patient timeouts: a retry after a slow answer on a busy
        # machine would count as a request of its own.
        s3 = S3(proxy.endpoint, credentials, connect_timeout=5.0, read_timeout=30.0,
                max_attempts=1)
        s3.list_buckets()
        s3.list_buckets()
        s3.list_buckets()
        assert proxy.stopped.wait(10)
        with pytest.raises(EchoError):
            s3.list_buckets()
        assert proxy.requests == 3


def test_server_gone_and_back(proxy, credentials, store):
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    assert s3.list_directories(store["bucket"]) == ["dir0/", "dir1/", "dir2/", "files/"]
    proxy.go_down()
    with pytest.raises(EchoError) as info:
        s3.list_directories(store["bucket"])
    assert "Cannot reach" in assert_clear_message(info.value, SECRET_KEY)
    proxy.come_back()
    assert s3.list_directories(store["bucket"]) == ["dir0/", "dir1/", "dir2/", "files/"]
    digest = hashlib.sha256(s3.get_range(store["bucket"], "files/blob1.h5", 0, 201_000))
    assert digest.hexdigest() == hashlib.sha256(store["files"]["files/blob1.h5"]).hexdigest()
