"""The S3 layer against moto over HTTP: big listings, limits, directories, errors, client config."""

from __future__ import annotations

import threading
import uuid

import pytest
from auth_moto import auth_moto_server
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.demo.server import free_port
from dashboard.storage.credentials import Credentials
from dashboard.storage.listing import directories, filter_objects, sort_objects
from dashboard.storage.s3 import (
    S3,
    AccessDenied,
    EndpointUnreachable,
    NotFound,
    StorageError,
    parse_s3_url,
)

# 12,000 objects under several prefixes and depths (name pattern, count).
LAYOUT = [
    ("raw/2024/scan_a/frame_{:05d}.h5", 4000),
    ("raw/2024/scan_b/frame_{:05d}.nxs", 3000),
    ("raw/2025/frame_{:05d}.hdf5", 2000),
    ("processed/run1/out_{:05d}.tif", 2000),
    ("notes/readme_{:04d}.txt", 999),
    ("top.h5", 1),
]
TOTAL = sum(n for _pattern, n in LAYOUT)
assert TOTAL == 12_000
ALL_KEYS = sorted(pattern.format(i) for pattern, n in LAYOUT for i in range(n))
VIA_HTTP = 200  # of them uploaded with real PUTs; the rest through moto's backend (see below)


def size_of(key: str) -> int:
    return len(key) % 7


@pytest.fixture(scope="module")
def big(moto_server, credentials) -> tuple[S3, str]:
    """A bucket holding the 12,000 objects, built once per module.

    Measured on the 2-core test machine: a pool of 8 threads doing ``put_object`` over HTTP
    manages ~310 objects/s (~38 s for 12,000), while moto's own backend ``put_object`` in this
    process (the server is a thread of it and shares its state) stores 12,000 in ~0.5 s. So
    200 keys go through HTTP PUTs (proving that path) and the rest straight into the backend;
    every listing below still runs over HTTP through boto3 as in production.
    """
    from moto.s3.models import s3_backends

    s3 = S3(moto_server.endpoint, credentials)
    bucket = f"big-{uuid.uuid4().hex[:10]}"
    s3.client.create_bucket(Bucket=bucket)
    for key in ALL_KEYS[:VIA_HTTP]:
        s3.client.put_object(Bucket=bucket, Key=key, Body=b"x" * size_of(key))
    partition, account = s3_backends.bucket_accounts[bucket]
    backend = s3_backends[account][partition]
    for key in ALL_KEYS[VIA_HTTP:]:
        backend.put_object(bucket, key, b"x" * size_of(key))
    return s3, bucket


def count_requests(s3: S3, operation: str) -> list[str]:
    """Record the URL of every HTTP attempt of ``operation`` made by ``s3.client``."""
    urls: list[str] = []
    s3.client.meta.events.register(
        f"before-send.s3.{operation}", lambda request, **_: urls.append(request.url)
    )
    return urls


# -- listing -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_listing(big):
    """The whole big bucket listed once, and the URLs of the ListObjectsV2 pages it took."""
    s3, bucket = big
    s3 = S3(s3.endpoint, s3.credentials)
    pages = count_requests(s3, "ListObjectsV2")
    return s3.list_objects(bucket, limit=20_000), pages


@pytest.mark.slow
def test_12000_objects_listed_completely_over_many_pages(full_listing):
    listing, pages = full_listing
    assert [o.key for o in listing.objects] == ALL_KEYS
    assert not listing.truncated and listing.notice == ""
    assert len(pages) == 12  # 1000 keys per page: pagination past 1000 really happened
    assert all(o.size == size_of(o.key) for o in listing.objects)
    assert all(len(o.etag) == 32 and '"' not in o.etag for o in listing.objects)


@pytest.mark.slow
def test_limit_equal_to_the_count_is_not_truncated(big):
    s3, bucket = big
    listing = s3.list_objects(bucket, limit=TOTAL)
    assert len(listing.objects) == TOTAL and not listing.truncated


@pytest.mark.slow
def test_default_limit_cuts_at_5000_and_says_so(big):
    s3, bucket = big
    listing = s3.list_objects(bucket)
    assert listing.limit == 5000
    assert [o.key for o in listing.objects] == ALL_KEYS[:5000]
    assert listing.truncated
    assert listing.notice == "first 5000 objects shown; more exist"


def test_small_limit_uses_one_small_page(big):
    s3, bucket = big
    pages = count_requests(s3, "ListObjectsV2")
    listing = s3.list_objects(bucket, limit=7)
    assert [o.key for o in listing.objects] == ALL_KEYS[:7]
    assert listing.truncated and listing.notice == "first 7 objects shown; more exist"
    assert len(pages) == 1


def test_listing_under_a_prefix(big):
    s3, bucket = big
    listing = s3.list_objects(bucket, "raw/2024/scan_b/", limit=5000)
    assert [o.key for o in listing.objects] == [k for k in ALL_KEYS if k.startswith("raw/2024/scan_b/")]
    assert len(listing.objects) == 3000 and not listing.truncated


def test_cancel_stops_listing_after_the_current_page(big):
    s3, bucket = big
    cancel = threading.Event()
    cancel.set()
    listing = s3.list_objects(bucket, limit=20_000, cancel=cancel)
    assert len(listing.objects) == 1000


@pytest.mark.slow
def test_filters_sorts_and_directories_on_the_real_listing(full_listing):
    objects = full_listing[0].objects
    assert len(filter_objects(objects)) == 4000 + 3000 + 2000 + 1
    assert len(filter_objects(objects, hdf5_only=False)) == TOTAL
    assert len(filter_objects(objects, directory="raw/2024/")) == 7000
    assert len(filter_objects(objects, keyword="SCAN_B")) == 3000
    assert [o.key for o in filter_objects(objects, directory="raw/2025", keyword="01999")] == [
        "raw/2025/frame_01999.hdf5"]
    assert directories(objects) == [
        "notes/", "processed/", "processed/run1/", "raw/", "raw/2024/", "raw/2024/scan_a/",
        "raw/2024/scan_b/", "raw/2025/",
    ]
    by_size = sort_objects(objects, by="size", descending=True)
    assert [o.size for o in by_size] == sorted((o.size for o in objects), reverse=True)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ["notes/", "processed/", "raw/"]),
        ("raw", ["raw/2024/", "raw/2025/"]),
        ("raw/", ["raw/2024/", "raw/2025/"]),
        ("raw/2024/", ["raw/2024/scan_a/", "raw/2024/scan_b/"]),
        ("raw/2024/scan_a/", []),
        ("nothing/", []),
    ],
)
def test_list_directories_at_several_depths(big, prefix, expected):
    s3, bucket = big
    assert s3.list_directories(bucket, prefix) == expected


def test_empty_bucket(s3, bucket):
    listing = s3.list_objects(bucket)
    assert listing.objects == [] and not listing.truncated and listing.notice == ""
    assert s3.list_directories(bucket) == []
    assert bucket in s3.list_buckets()


def test_missing_bucket_is_a_clear_not_found(s3):
    with pytest.raises(NotFound) as info:
        s3.list_objects("no-such-bucket-xyz")
    assert str(info.value) == f"Bucket 'no-such-bucket-xyz' does not exist at {s3.endpoint}."
    with pytest.raises(NotFound, match="does not exist"):
        s3.list_directories("no-such-bucket-xyz", "a/")


def test_missing_object_is_not_found(s3, bucket):
    with pytest.raises(NotFound) as info:
        s3.head(bucket, "nope.h5")
    assert str(info.value) == f"Not found at {s3.endpoint}: s3://{bucket}/nope.h5 (404)."


def test_head_and_ranged_get(s3, bucket):
    s3.client.put_object(Bucket=bucket, Key="d/x.h5", Body=b"0123456789")
    info = s3.head(bucket, "d/x.h5")
    assert (info.key, info.size, info.name, info.is_hdf5) == ("d/x.h5", 10, "x.h5", True)
    assert s3.get_range(bucket, "d/x.h5", 3, 4) == b"3456"
    assert parse_s3_url(f"s3://{bucket}/d/x.h5") == (bucket, "d/x.h5")


# -- wrong keys and separated users (a second moto server that enforces auth) ------------


@pytest.fixture(scope="module")
def auth_server():
    with auth_moto_server({"alice": ["alice-data"], "bob": ["bob-data", "bob-more"]}) as server:
        server.s3("alice").client.put_object(Bucket="alice-data", Key="scan.h5", Body=b"data")
        yield server


def test_valid_iam_keys_work_and_users_see_only_their_buckets(auth_server):
    alice, bob = auth_server.s3("alice"), auth_server.s3("bob")
    assert alice.list_buckets() == ["alice-data"]
    assert bob.list_buckets() == ["bob-data", "bob-more"]
    assert [o.key for o in alice.list_objects("alice-data").objects] == ["scan.h5"]
    assert alice.client.get_object(Bucket="alice-data", Key="scan.h5")["Body"].read() == b"data"
    assert auth_server.users["alice"].account_id != auth_server.users["bob"].account_id
    with pytest.raises(AccessDenied) as info:
        bob.list_objects("alice-data")
    assert str(info.value) == (
        f"Permission denied to list objects in bucket 'alice-data' at {auth_server.endpoint} (403)."
    )
    with pytest.raises(AccessDenied):
        bob.get_range("alice-data", "scan.h5", 0, 1)


@pytest.mark.parametrize("which", ["unknown key", "wrong secret"])
def test_wrong_keys_are_access_denied_naming_the_endpoint_not_the_secret(auth_server, which):
    access = ACCESS_KEY if which == "unknown key" else auth_server.credentials("alice").access_key
    code = "InvalidAccessKeyId" if which == "unknown key" else "SignatureDoesNotMatch"
    s3 = S3(auth_server.endpoint, Credentials(access_key=access, secret_key=SECRET_KEY))
    rejected = (f"The S3 keys were rejected by {auth_server.endpoint} ({code}): "
                "check the access and secret key.")
    attempts = [
        (s3.list_buckets, rejected),
        (lambda: s3.list_objects("alice-data"), rejected),
        # A HEAD response has no body, so only the status (403) is known.
        (lambda: s3.head("alice-data", "scan.h5"),
         f"Permission denied to read s3://alice-data/scan.h5 at {auth_server.endpoint} (403)."),
    ]
    for attempt, expected in attempts:
        with pytest.raises(AccessDenied) as info:
            attempt()
        message = str(info.value)
        assert message == expected
        assert SECRET_KEY not in message and access not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__


# -- client configuration ----------------------------------------------------------------


def test_requests_use_path_style_urls(s3, bucket):
    assert s3.client.meta.config.s3 == {"addressing_style": "path"}
    s3.client.put_object(Bucket=bucket, Key="p/q.h5", Body=b"1")
    urls = count_requests(s3, "GetObject")
    s3.get_range(bucket, "p/q.h5", 0, 1)
    assert urls == [f"{s3.endpoint}/{bucket}/p/q.h5"]
    presigned = s3.client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "p/q.h5"})
    assert presigned.startswith(f"{s3.endpoint}/{bucket}/p/q.h5?")
    assert SECRET_KEY not in presigned


def test_botocore_standard_retries_timeouts_and_checksums(s3):
    config = s3.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert (config.connect_timeout, config.read_timeout) == (5.0, 30.0)


def test_unreachable_endpoint_is_tried_exactly_max_attempts_times(credentials):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    s3 = S3(endpoint, credentials, max_attempts=2, connect_timeout=1)
    attempts = count_requests(s3, "ListObjectsV2")
    with pytest.raises(EndpointUnreachable) as info:
        s3.list_objects("any-bucket")
    assert len(attempts) == 2
    assert str(info.value) == (
        f"Cannot reach the S3 endpoint {endpoint} (EndpointConnectionError).")
    assert isinstance(info.value, StorageError)


def test_parse_s3_url_is_the_one_parser_and_keeps_odd_keys():
    from dashboard.storage.s3 import StorageError, is_s3_url, parse_s3_url

    assert parse_s3_url("s3://b/dir/scan?v=2#x.h5") == ("b", "dir/scan?v=2#x.h5")
    assert parse_s3_url("s3://b") == ("b", "")
    assert is_s3_url("s3://b/k") and not is_s3_url("/data/s3://x") and not is_s3_url(None)
    for bad in ("s3://", "http://b/k", "b/k"):
        with pytest.raises(StorageError):
            parse_s3_url(bad)
