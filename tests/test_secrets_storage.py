"""Keys never appear in DEBUG logs, exception messages or reprs of the storage layer."""

from __future__ import annotations

import logging
import threading

import pytest
import urllib3
from auth_moto import auth_moto_server
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.storage.credentials import Credentials
from dashboard.storage.download import download_objects, safe_local_path
from dashboard.storage.redact import (
    LIBRARY_LOGGERS,
    RedactingHandler,
    install_log_redaction,
    redact,
)
from dashboard.storage.s3 import S3, StorageError

TOKEN = "FQoGZXIvYXdzEJr-SESSION-TOKEN-7f7f7f"
LOGGERS = ("", "botocore", "s3fs", "urllib3", "aiobotocore", "fsspec", "dashboard")


@pytest.fixture
def debug_logs(caplog):
    """Capture everything at DEBUG; return a function giving all text seen so far."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)

    def text() -> str:
        records = caplog.records
        assert records, "nothing was logged: the leak check would be vacuous"
        return "\n".join([caplog.text, *(r.getMessage() for r in records)])

    return text


def assert_clean(text: str, *secrets: str) -> None:
    for secret in (ACCESS_KEY, SECRET_KEY, *secrets):
        assert secret not in text, f"{secret[:4]}… leaked"


def exercise(s3: S3, bucket: str, tmp_path) -> list[str]:
    """Listing, reading, downloading and failing; returns every message/repr produced."""
    texts: list[str] = [repr(s3), str(s3), repr(s3.credentials)]
    s3.client.put_object(Bucket=bucket, Key="d/a.h5", Body=b"a" * 3000)
    s3.client.put_object(Bucket=bucket, Key="d/b.h5", Body=b"b" * 10)
    s3.list_buckets()
    listing = s3.list_objects(bucket, limit=1)
    texts += [repr(listing), listing.notice, repr(s3.list_directories(bucket))]
    texts.append(repr(s3.head(bucket, "d/a.h5")))
    s3.get_range(bucket, "d/a.h5", 0, 10)
    s3.client.get_object(Bucket=bucket, Key="d/b.h5")["Body"].read()
    report = download_objects(s3, bucket, ["d/a.h5", "d/b.h5", "d/missing.h5", "../x.h5"],
                              tmp_path, progress=lambda p: texts.append(repr(p)),
                              progress_interval=0)
    texts += [repr(report), report.summary(), *(r.message for r in report.results)]
    for failing in (lambda: s3.list_objects("no-such-bucket-secrets"),
                    lambda: s3.head(bucket, "nope.h5"),
                    lambda: s3.get_range(bucket, "d/b.h5", 100, 5),
                    lambda: s3.client.get_object(Bucket=bucket, Key="nope.h5"),
                    lambda: safe_local_path(tmp_path, "/abs.h5")):
        try:
            failing()
        except Exception as exc:  # noqa: BLE001 - every kind must be clean
            error = s3.translate(exc, bucket=bucket) if not isinstance(exc, StorageError) else exc
            texts += [str(exc), repr(exc), str(error), repr(error)]
        else:
            pytest.fail("expected a failure")
    return texts


def test_listing_download_and_errors_leak_nothing(s3, bucket, tmp_path, debug_logs):
    texts = exercise(s3, bucket, tmp_path)
    assert len(texts) > 10
    assert_clean("\n".join(texts))
    logs = debug_logs()
    assert "Sending http request" in logs  # botocore really logged its request headers ...
    assert "Credential=***/" in logs       # ... and the access key in them was masked
    assert_clean(logs)


def test_session_tokens_and_presigned_urls_are_masked(moto_server, bucket, tmp_path, debug_logs):
    creds = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY, session_token=TOKEN)
    s3 = S3(moto_server.endpoint, creds)
    s3.client.put_object(Bucket=bucket, Key="t.h5", Body=b"t")
    s3.client.get_object(Bucket=bucket, Key="t.h5")["Body"].read()
    url = s3.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "t.h5"})
    assert ACCESS_KEY in url  # a presigned URL necessarily carries the access key ...
    with urllib3.PoolManager() as http:  # ... and urllib3 logs the URL it fetches
        assert http.request("GET", url).data == b"t"
    logs = debug_logs()
    assert "X-Amz-Credential=***" in logs
    assert_clean(logs, TOKEN)
    assert_clean(repr(creds) + repr(s3), TOKEN)


@pytest.mark.slow
def test_wrong_keys_leak_nothing(tmp_path, debug_logs):
    with auth_moto_server({"owner": ["owner-secret-test"]}) as server:
        real_access = server.credentials("owner").access_key
        real_secret = server.credentials("owner").secret_key
        texts = []
        for access in (ACCESS_KEY, real_access):  # unknown key; known key with wrong secret
            s3 = S3(server.endpoint, Credentials(access_key=access, secret_key=SECRET_KEY))
            for attempt in (s3.list_buckets, lambda: s3.list_objects("owner-secret-test"),
                            lambda: s3.client.get_object(Bucket="owner-secret-test", Key="x.h5")):
                with pytest.raises(Exception) as info:  # noqa: PT011 - any kind, checked below
                    attempt()
                error = s3.translate(info.value, bucket="owner-secret-test")
                texts += [str(info.value), repr(info.value), str(error), repr(error)]
            report = download_objects(s3, "owner-secret-test", ["x.h5"], tmp_path)
            texts += [r.message for r in report.results]
    logs = debug_logs()
    assert "SignatureDoesNotMatch" in logs and "InvalidAccessKeyId" in logs
    assert_clean("\n".join(texts), real_access, real_secret)
    assert_clean(logs, real_access, real_secret)


def test_without_redaction_the_check_would_catch_botocore_leaking(s3, bucket, monkeypatch,
                                                                  debug_logs):
    """Proof that the leak check above is not vacuous: botocore logs the key if unfiltered."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers",
                            [h for h in logger.handlers if not isinstance(h, RedactingHandler)])
    s3.list_objects(bucket)
    assert f"Credential={ACCESS_KEY}/" in debug_logs()


def test_redaction_is_installed_once_per_library_logger(s3):
    install_log_redaction()
    threads = [threading.Thread(target=install_log_redaction) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in LIBRARY_LOGGERS:
        handlers = logging.getLogger(name).handlers
        assert sum(isinstance(h, RedactingHandler) for h in handlers) == 1, name
        assert isinstance(handlers[0], RedactingHandler), name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAABCDEF123456/20260101/us-east-1/s3/"
         "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "ab12" * 16 + "'",
         "Authorization': b'AWS4-HMAC-SHA256 Credential=***/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host;x-amz-date, Signature=***'"),
        ("GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAXYZ%2F20260101%2Fus"
         "&X-Amz-Signature=" + "0f" * 32 + "&X-Amz-Security-Token=tok%2Bx HTTP/1.1",
         "GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***%2F20260101%2Fus"
         "&X-Amz-Signature=***&X-Amz-Security-Token=*** HTTP/1.1"),
        ("'X-Amz-Security-Token': b'FQoGZXIvYXdz+/=='", "'X-Amz-Security-Token': b'***'"),
        ("x-amz-security-token:FQoGZXIvYXdz\nhost:x", "x-amz-security-token:***\nhost:x"),
        ("Signature:\n" + "9" * 64, "Signature:\n***"),
        ("<AWSAccessKeyId>AKIAQQQ</AWSAccessKeyId>", "<AWSAccessKeyId>***</AWSAccessKeyId>"),
        ("?AWSAccessKeyId=AKIAQQQ&Expires=1", "?AWSAccessKeyId=***&Expires=1"),
        ("{'AWSAccessKeyId': 'AKIAQQQ'}", "{'AWSAccessKeyId': '***'}"),
        ("Authorization: AWS AKIAQQQ:c2lnbmF0dXJl", "Authorization: AWS ***"),
        ("<AccessKeyId>ASIAQQ</AccessKeyId><SecretAccessKey>wJal+r/x</SecretAccessKey>"
         "<SessionToken>IQo/b3+=</SessionToken>",
         "<AccessKeyId>***</AccessKeyId><SecretAccessKey>***</SecretAccessKey>"
         "<SessionToken>***</SessionToken>"),
        ('{"AccessKeyId": "ASIAQQ", "SecretAccessKey": "wJal+r/x", "Token": "IQo", "X": 1}',
         '{"AccessKeyId": "***", "SecretAccessKey": "***", "Token": "***", "X": 1}'),
        ("nothing secret here: Signature=short", "nothing secret here: Signature=short"),
    ],
)
def test_redact_patterns(text, expected):
    assert redact(text) == expected


def test_redaction_covers_exception_tracebacks(caplog):
    install_log_redaction()
    logger = logging.getLogger("botocore.test-child")
    with caplog.at_level(logging.DEBUG, logger="botocore"):
        try:
            raise RuntimeError(f"bad request Credential={ACCESS_KEY}/x")
        except RuntimeError:
            logger.exception("failed with %s", f"Credential={ACCESS_KEY}/y")
    assert "Credential=***/x" in caplog.text and "Credential=***/y" in caplog.text
    assert_clean(caplog.text)
