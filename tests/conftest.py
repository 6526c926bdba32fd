"""Shared fixtures: a real S3 endpoint over HTTP (moto's ThreadedMotoServer on 127.0.0.1)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dashboard.demo.server import MotoS3Server
from dashboard.storage.credentials import Credentials
from dashboard.storage.s3 import S3

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT.parent / "shared" / "testdata"

# Distinctive strings so that leak tests can grep for them.
ACCESS_KEY = "AKIATESTACCESS7Q4Z"
SECRET_KEY = "s3cr3t-TEST-k3y-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch, tmp_path_factory):
    """No test ever sees the developer's real AWS keys, profiles or config."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "ECHO_S3_ENDPOINT", "ECHO_S3_CREDENTIALS",
                 "ECHO_S3_MAX_OBJECTS", "DASK_SCHEDULER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path_factory.getbasetemp() / "no-aws"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))


@pytest.fixture(scope="session")
def moto_server():
    """One moto S3 server for the whole run (state is per process anyway)."""
    with MotoS3Server() as server:
        yield server


@pytest.fixture(scope="session")
def credentials() -> Credentials:
    return Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY, source="test keys")


@pytest.fixture
def s3(moto_server, credentials) -> S3:
    """A connection to the moto server, as production builds it."""
    return S3(moto_server.endpoint, credentials)


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket with a unique name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def testdata() -> Path:
    """The real third-party HDF5 files in ../shared/testdata."""
    if not TESTDATA.is_dir():
        pytest.fail(f"{TESTDATA} is missing: the shared test data must sit beside the checkout")
    return TESTDATA
