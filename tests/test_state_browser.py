"""BrowserState and Session against a real S3 endpoint (moto over HTTP): set, trigger, assert."""

from __future__ import annotations

import json
import uuid

import pytest
from auth_moto import auth_moto_server
from conftest import ACCESS_KEY, SECRET_KEY

from dashboard.config import Settings
from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY, SHORT_KEY
from dashboard.state.session import Session


@pytest.fixture
def session(moto_server, credentials, demo):
    s = Session(Settings(endpoint=moto_server.endpoint), credentials=credentials)
    assert s.wait(60)
    yield s
    s.close()


def listed(session):
    b = session.browser
    b.bucket = DEMO_BUCKET
    b.list_objects = True
    assert session.wait(60)
    return b


def test_connect_with_pasted_keys_clears_them_and_lists_buckets(moto_server, demo):
    s = Session(Settings(endpoint=moto_server.endpoint), connect=False)
    b = s.browser
    assert not b.connected and "Not connected" in b.status
    b.credentials_text = json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
    b.connect = True
    assert b.credentials_text == ""  # read once, then gone
    assert s.wait(30)
    assert b.connected
    assert DEMO_BUCKET in b.param.bucket.objects and b.bucket in b.param.bucket.objects
    assert b.status.startswith(f"Connected to {moto_server.endpoint}")
    for text in (b.status, b.connection, repr(b.s3)):
        assert SECRET_KEY not in text and ACCESS_KEY not in text
    s.close()


def test_connect_with_a_key_file(moto_server, demo, tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}))
    path.chmod(0o600)
    s = Session(Settings(endpoint=moto_server.endpoint, credentials_path=path))  # connects at start
    assert s.wait(30)
    assert s.browser.connected and DEMO_BUCKET in s.browser.param.bucket.objects
    s.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{not json", "not valid JSON"),
     (json.dumps({"access_key": ACCESS_KEY}), "missing 'secret_key'")],
)
def test_bad_pasted_keys_say_why_without_echoing_them(moto_server, text, expected):
    s = Session(Settings(endpoint=moto_server.endpoint), connect=False)
    s.browser.credentials_text = text
    s.browser.connect = True
    assert s.wait(30)
    assert not s.browser.connected
    assert expected in s.browser.status and ACCESS_KEY not in s.browser.status
    s.close()


@pytest.mark.slow
def test_unreachable_endpoint_and_bad_endpoint_are_messages(credentials):
    from dashboard.demo.server import free_port

    s = Session(Settings(endpoint=f"http://127.0.0.1:{free_port()}"), credentials=credentials)
    assert s.wait(60)
    assert not s.browser.connected and "Cannot reach the S3 endpoint" in s.browser.status
    s.browser.endpoint = "ftp://nowhere"
    s.browser.credentials_text = json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
    s.browser.connect = True
    assert s.wait(30)
    assert "Endpoint must be an http:// or https:// URL" in s.browser.status
    assert "Traceback" not in s.browser.status
    s.close()


def test_actions_before_connecting_say_connect_first(moto_server):
    s = Session(Settings(endpoint=moto_server.endpoint), connect=False)
    s.browser.list_objects = True
    assert s.browser.status.startswith("Connect first")
    s.browser.view_last_frame = True
    assert s.browser.status.startswith("Connect first")
    s.viewer.load = True
    assert s.viewer.status.startswith("Connect first")
    s.close()


def test_list_filter_sort(session, demo):
    b = listed(session)
    n_all = len(b.listing)
    assert set(demo.keys) <= {o.key for o in b.listing}
    assert b.truncated_notice == ""
    assert "beamline/2026-11/" in b.param.directory.objects.values()
    assert all(o.is_hdf5 for o in b.objects())
    assert b.count_text() == f"{len(b.objects())} of {n_all} objects shown"
    b.selection = [NEXUS_KEY]
    assert b.count_text() == f"{len(b.objects())} of {n_all} objects shown, 1 selected"
    b.selection = []

    b.directory = "beamline/2026-11/"
    keys = [o.key for o in b.objects()]
    assert NEXUS_KEY in keys and all(k.startswith("beamline/2026-11/") for k in keys)

    b.keyword = "SCAN_0001.NXS"  # case-insensitive
    assert [o.key for o in b.objects()] == [NEXUS_KEY]

    b.param.update(directory="", keyword="", sort_by="size", descending=True)
    sizes = [o.size for o in b.objects()]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) > 3
    b.sort_by = "name"
    b.descending = False
    names = [o.key for o in b.objects()]
    assert names == sorted(names, key=str.casefold)

    b.hdf5_only = False
    assert len(b.objects()) == n_all


def test_listing_limit_gives_truncation_notice(session):
    b = session.browser
    b.max_objects = 10
    listed(session)
    assert len(b.listing) == 10
    assert b.truncated_notice == "first 10 objects shown; more exist"
    assert "more exist" in b.count_text() and "more exist" in b.status


def test_new_bucket_clears_listing_and_selection(session):
    b = listed(session)
    b.selection = [NEXUS_KEY]
    b.bucket = next(x for x in b.param.bucket.objects if x != DEMO_BUCKET)
    assert b.listing == [] and b.selection == []


def test_download_selected(session, demo, tmp_path):
    b = listed(session)
    b.selection = [NEXUS_KEY, SHORT_KEY]
    b.download_dir = str(tmp_path / "out")
    b.download = True
    assert session.wait(60)
    for key in (NEXUS_KEY, SHORT_KEY):
        local = tmp_path / "out" / key
        assert local.read_bytes() == demo.path(key).read_bytes()
    assert b.download_progress == 100 and not b.downloading
    assert b.download_status.startswith("Download finished: 2 downloaded")
    assert str(tmp_path / "out") in b.download_status


@pytest.mark.parametrize("folder, words", [
    ("s3://echo-demo/copies", "not an s3:// address"),
    ("out\x00put", "contains a NUL character"),
    ("x" * 300, "longer than 255 bytes"),
])
def test_download_to_an_unusable_folder_says_why_and_writes_nothing(session, tmp_path,
                                                                  monkeypatch, folder, words):
    monkeypatch.chdir(tmp_path)
    b = listed(session)
    b.selection = [SHORT_KEY]
    b.download_dir = folder
    b.download = True
    assert words in b.download_status and not b.downloading
    assert session.wait(30) and list(tmp_path.iterdir()) == []


def test_download_needs_a_selection(session):
    b = listed(session)
    b.download = True
    assert b.download_status == "Tick one or more objects in the table first."


def test_view_last_frame(session, demo):
    import h5py

    b = listed(session)
    b.view_last_frame = True
    assert b.status == "Select an .h5 file in the browser first."
    b.selection = ["README.txt", NEXUS_KEY]  # the first HDF5 key of the selection is shown
    b.view_last_frame = True
    assert session.wait(30)
    with h5py.File(demo.path(NEXUS_KEY)) as f:
        expected = f["/entry/data/data"][-1]
    assert (b.thumbnail == expected).all()
    assert "scan_0001.nxs" in b.thumbnail_title and b.status.startswith("Last frame of")


@pytest.mark.slow
def test_two_sessions_with_different_keys_are_isolated():
    """moto scopes ListBuckets by the IAM user's account (see tests/auth_moto.py)."""
    alice_bucket, bob_bucket = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    with auth_moto_server({"alice": [alice_bucket], "bob": [bob_bucket]}) as server:
        server.s3("alice").client.put_object(Bucket=alice_bucket, Key="a/secret.h5", Body=b"x")
        settings = Settings(endpoint=server.endpoint)
        alice = Session(settings, credentials=server.credentials("alice"))
        bob = Session(settings, credentials=server.credentials("bob"))
        assert alice.wait(30) and bob.wait(30)
        assert alice.browser.param.bucket.objects == [alice_bucket]
        assert bob.browser.param.bucket.objects == [bob_bucket]
        assert alice.tasks is not bob.tasks and alice.browser.s3 is not bob.browser.s3

        # Bob cannot list Alice's bucket even when he names it.
        bob.browser.param.bucket.objects = [bob_bucket, alice_bucket]
        bob.browser.bucket = alice_bucket
        bob.browser.list_objects = True
        assert bob.wait(30)
        assert bob.browser.listing == [] and "Permission denied" in bob.browser.status

        # Wrong keys are rejected with a plain sentence.
        wrong = Session(settings, connect=False)
        wrong.browser.credentials_text = json.dumps(
            {"access_key": server.credentials("alice").access_key, "secret_key": "wrong-secret"})
        wrong.browser.connect = True
        assert wrong.wait(30)
        assert not wrong.browser.connected
        assert "keys were rejected" in wrong.browser.status
        assert "wrong-secret" not in wrong.browser.status
        for s in (alice, bob, wrong):
            s.close()


def test_download_summary_says_failed_when_nothing_arrived(tmp_path):
    from dashboard.state.browser import _download_summary
    from dashboard.storage.download import DOWNLOADED, FAILED, DownloadReport, FileResult

    bad = FileResult("a.h5", FAILED, message="S3 answered 500 (Internal Server Error)")
    none = DownloadReport(tmp_path, (bad,))
    assert _download_summary(none, tmp_path, False) == (
        "Download failed: 0 downloaded, 1 failed (0 B in 0.0 s). "
        "First failure: S3 answered 500 (Internal Server Error).")
    some = DownloadReport(tmp_path, (FileResult("b.h5", DOWNLOADED, size=3), bad))
    assert _download_summary(some, tmp_path, False).startswith("Download finished: 1 downloaded")
    assert _download_summary(some, tmp_path, False).endswith(f"Files are in {tmp_path}")
