"""Opening, describing and reading frames of a Bitshuffle-LZ4 stack through injected S3 faults."""

from __future__ import annotations

import time
import uuid

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
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
from dashboard.hdf5.chunks import LRUBytes
from dashboard.hdf5.stack import open_stack
from dashboard.hdf5.describe import describe
from dashboard.storage.s3 import S3

pytestmark = pytest.mark.timeout(120)



@pytest.fixture(scope="module")
def stack_object(moto_server, credentials, tmp_path_factory):
    path = tmp_path_factory.mktemp("faults-hdf5") / "bslz4.h5"
    data = write_stack(path, n=30)
    with h5py.File(path) as f:  # the local reference is what h5py reads, not what we wrote
        reference = f["/entry/data/data"][()]
    assert np.array_equal(reference, data)
    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"faults-h5-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)
    s3.client.upload_file(str(path), bucket, "scan/bslz4.h5")
    return {"url": f"s3://{bucket}/scan/bslz4.h5", "frames": reference, "path": path}


@pytest.fixture
def proxy(moto_server):
    with FaultProxy(moto_server.endpoint, seed=11, max_lifetime=110) as proxy:
        yield proxy


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_frame_exact_at_10_percent_faults(proxy, credentials, stack_object, kind):
    s3 = S3(proxy.endpoint, credentials, read_timeout=5)
    proxy.inject(kind, count=1, delay=0.2)  # the first GET faulted for sure, then 10%
    proxy.inject(kind, rate=0.1, delay=0.2)
    with open_stack(stack_object["url"], s3=s3, prefetch=False, cache=LRUBytes(0)) as stack:
        assert stack.dataset == "/entry/data/data"
        for i in range(len(stack)):
            assert np.array_equal(stack.frame(i), stack_object["frames"][i]), i
        frames = list(stack.frames(range(5, 25, 3)))  # the read-ahead path
        assert all(np.array_equal(f, stack_object["frames"][i])
                   for f, i in zip(frames, range(5, 25, 3), strict=True))
    assert proxy.faults[kind] >= 2


@pytest.mark.parametrize("kind", KINDS)
def test_describe_at_10_percent_faults_equals_fault_free(proxy, s3, credentials, stack_object,
                                                         kind):
    expected = describe(stack_object["url"], s3=s3)
    faulty = S3(proxy.endpoint, credentials, read_timeout=5)
    proxy.inject(kind, count=1, delay=0.2)
    proxy.inject(kind, rate=0.1, delay=0.2)
    for _ in range(3):
        assert describe(stack_object["url"], s3=faulty) == expected
    assert proxy.faults[kind] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_open_with_every_request_failing_ends_with_one_clear_message(proxy, credentials,
                                                                      stack_object, kind):
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    delay = 1.5
    proxy.inject(kind, rate=1.0, delay=delay)
    t0 = time.monotonic()
    with pytest.raises(EchoError) as info:
        open_stack(stack_object["url"], s3=s3, prefetch=False)
    assert_clear_message(info.value, SECRET_KEY, ACCESS_KEY)
    assert time.monotonic() - t0 < failure_bound(**FAST_FAIL, delay=delay)


@pytest.mark.parametrize("kind", KINDS)
def test_frame_read_fails_cleanly_then_the_stack_recovers(proxy, credentials, stack_object,
                                                          kind):
    """An open stack meets a dead store (one clear error), then reads right once it is back."""
    s3 = S3(proxy.endpoint, credentials, **FAST_FAIL)
    with open_stack(stack_object["url"], s3=s3, prefetch=False, cache=LRUBytes(0)) as stack:
        assert np.array_equal(stack.frame(0), stack_object["frames"][0])
        delay = 1.5
        proxy.inject(kind, rate=1.0, delay=delay)
        t0 = time.monotonic()
        with pytest.raises(EchoError) as info:
            stack.frame(7)
        assert_clear_message(info.value, SECRET_KEY, ACCESS_KEY)
        assert stack_object["url"] in str(info.value) or s3.endpoint in str(info.value)
        assert time.monotonic() - t0 < failure_bound(**FAST_FAIL, delay=delay, requests=2)
        proxy.clear()
        assert np.array_equal(stack.frame(7), stack_object["frames"][7])
        assert np.array_equal(stack.frame(29), stack_object["frames"][29])
