"""Sessions of logged-in users (state level, moto over HTTP): areas, browser downloads, outputs.

``Session(user=...)`` is what a served page of a logged-in user builds. With ``user_root`` the
download and output folders are relative paths inside the user's area; without it there are
no server folders at all (downloads are offered to the browser, outputs go to ``s3://``).
Without a user (no login) nothing changes: see test_state_browser.py.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from served_sessions import until

from dashboard.config import Settings
from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY, SHORT_KEY
from dashboard.processing.export import S3_ONLY
from dashboard.state.deliveries import ROUTE, Deliveries
from dashboard.state.session import Session
from dashboard.storage.stream import StreamStopped


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def make(moto_server, credentials, demo, tmp_path):
    made = []

    def make(user="alice", user_root="AREAS", deliveries=None, **settings):
        if user_root == "AREAS":
            user_root = str(tmp_path / "srv" / "{user}")
        session = Session(Settings(endpoint=moto_server.endpoint, user_root=user_root,
                                   **settings),
                          credentials=credentials, user=user, deliveries=deliveries)
        made.append(session)
        assert session.wait(60) and session.browser.connected
        b = session.browser
        b.bucket = DEMO_BUCKET
        b.list_objects = True
        assert session.wait(60)
        return session

    yield make
    for session in made:
        session.close()


def test_each_user_downloads_into_their_own_area(make, tmp_path, demo):
    alice = make("alice")
    b = alice.browser
    assert b.download_dir == "downloads" and b.param.download_dir.label.endswith("in your area)")
    b.selection = [SHORT_KEY]
    b.download = True
    assert alice.wait(60)
    assert (tmp_path / "srv" / "alice" / "downloads" / SHORT_KEY).read_bytes() == \
        demo.path(SHORT_KEY).read_bytes()
    assert b.download_status.endswith("Files are in downloads (in your area)")
    assert str(tmp_path) not in b.download_status  # the server's path is not the user's


@pytest.mark.parametrize("folder", ["HOME", "~", "../bob", "/etc"])
def test_a_download_folder_outside_the_area_is_refused_at_once(make, tmp_path, folder):
    alice = make("alice")
    before = tree(tmp_path)
    b = alice.browser
    b.selection = [SHORT_KEY]
    b.download_dir = str(tmp_path) if folder == "HOME" else folder
    b.download = True
    assert b.download_failed and not b.downloading
    assert "must be a relative path inside your area" in b.download_status
    assert alice.wait(30) and tree(tmp_path) == before


def test_output_folders_follow_the_area_rules(make, tmp_path):
    alice = make("alice")
    p = alice.processor
    assert p.output == "processed" and "in your area" in p.param.output.label
    assert p._output_problem("runs/one") == ""
    assert "must be a relative path inside your area" in p._output_problem(str(tmp_path))
    assert "contains a '..' segment" in p._output_problem("../bob/processed")
    assert p._output_problem("s3://bucket/prefix") == ""


def test_without_areas_a_login_gets_no_server_folders(make, tmp_path):
    bob = make("bob", user_root=None, deliveries=Deliveries())
    b, p = bob.browser, bob.processor
    assert not b.server_folders and b.download_dir == ""
    assert p.output == "" and not p.local_outputs
    assert p._output_problem(str(tmp_path / "x")) == S3_ONLY
    assert p._output_problem("s3://bucket/x") == ""


def _fetch(deliveries, url, user):
    """What the page's fetch of ``url`` receives, as the server's handler streams it."""
    delivery = deliveries.take(url.rsplit("/", 1)[1], user)
    size, chunks = delivery.open()
    data = b"".join(chunks)
    delivery.finished(None)
    return delivery, size, data


def test_downloads_to_the_browser_one_file_and_a_zip(make, demo):
    deliveries = Deliveries()
    bob = make("bob", user_root=None, deliveries=deliveries)
    b = bob.browser
    b.selection = [SHORT_KEY]
    b.download = True
    assert b.downloading and b.delivery.startswith(f"{ROUTE}/")
    assert deliveries.take(b.delivery.rsplit("/", 1)[1], "alice") is None  # not hers
    delivery, size, data = _fetch(deliveries, b.delivery, "bob")
    assert delivery.name == SHORT_KEY.rsplit("/", 1)[1] and size == len(data)
    assert data == demo.path(SHORT_KEY).read_bytes()
    assert not b.downloading and b.download_status.startswith("Download finished: your browser")
    assert deliveries.take(b.delivery.rsplit("/", 1)[1], "bob") is None  # one use

    b.selection = [SHORT_KEY, NEXUS_KEY]
    b.download = True
    delivery, size, data = _fetch(deliveries, b.delivery, "bob")
    assert size is None and delivery.name.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted([SHORT_KEY, NEXUS_KEY])
        for key in (SHORT_KEY, NEXUS_KEY):
            assert archive.read(key) == demo.path(key).read_bytes()


def test_a_cancelled_browser_download_stops_and_is_withdrawn(make):
    deliveries = Deliveries()
    bob = make("bob", user_root=None, deliveries=deliveries)
    b = bob.browser
    b.selection = [SHORT_KEY, NEXUS_KEY]
    b.download = True
    b.cancel_download = True  # before the browser asked: withdrawn
    assert not b.downloading and len(deliveries) == 0
    b.download = True
    delivery = deliveries.take(b.delivery.rsplit("/", 1)[1], "bob")
    _size, chunks = delivery.open()
    next(chunks)
    b.cancel_download = True  # while streaming: the next chunk stops it
    with pytest.raises(StreamStopped, match="cancelled"):
        b"".join(chunks)


def test_a_closed_session_withdraws_its_offers(make):
    deliveries = Deliveries()
    bob = make("bob", user_root=None, deliveries=deliveries)
    bob.browser.selection = [SHORT_KEY]
    bob.browser.download = True
    assert len(deliveries) == 1
    bob.close()
    assert len(deliveries) == 0


# -- the handler that streams an offer (a server without a login: any user) -------------------


@pytest.fixture(scope="module")
def plain_server(moto_server):
    from dashboard.app import RunningServer

    with RunningServer(Settings(endpoint=moto_server.endpoint)) as server:
        yield server


def _offer(server, chunks, *, size=None, fail_open=None):
    from dashboard.errors import EchoError
    from dashboard.state.deliveries import Delivery

    outcome = []

    def open_():
        if fail_open:
            raise EchoError(fail_open)
        return size, chunks

    delivery = Delivery(name="ünï data.bin", media_type="application/octet-stream", open=open_,
                        finished=outcome.append)
    return server.url + server.deliveries.offer(delivery), outcome


def _get(url):
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except http.client.IncompleteRead as exc:
        return "cut", {}, exc.partial


def test_the_handler_streams_an_offer_once(plain_server):
    url, outcome = _offer(plain_server, (c for c in [b"abc", b"def"]), size=6)
    code, headers, body = _get(url)
    until(lambda: outcome, what="the end of the download reported")
    assert (code, body) == (200, b"abcdef") and outcome == [None]
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''%C3%BCn%C3%AF%20data.bin"
    assert headers["Cache-Control"] == "no-store" and headers["Content-Length"] == "6"
    assert _get(url)[0] == 404  # one use
    assert _get(plain_server.url + "echo-download/" + "x" * 43)[0] == 404


def test_a_failure_mid_stream_cuts_the_connection(plain_server):
    def broken():
        yield b"first chunk"
        raise StreamStopped("raw/a.h5 changed or arrived damaged; nothing more saved.")

    for size in (None, 100):  # chunked (a zip) and with a length (one file)
        url, outcome = _offer(plain_server, broken(), size=size)
        code, _headers, body = _get(url)
        until(lambda outcome=outcome: outcome, what="the end of the download reported")
        assert code == "cut" and body.startswith(b"first chunk"[:len(body)])
        assert outcome == ["raw/a.h5 changed or arrived damaged; nothing more saved."]


def test_an_object_that_cannot_be_read_is_one_sentence(plain_server):
    url, outcome = _offer(plain_server, None, fail_open="s3://b/k does not exist.")
    code, headers, body = _get(url)
    assert code == 502 and body.decode() == "s3://b/k does not exist."
    assert headers["Content-Type"].startswith("text/plain") and outcome == [body.decode()]


def test_batches_run_only_where_the_operator_says(make):
    """Logged in, the Dask scheduler is the operator's (DASK_SCHEDULER_ADDRESS), fixed; without
    one, batches run on the server's threads only. Alone, any address may be typed."""
    operator = "tcp://10.1.2.3:8786"
    fixed = make("alice", scheduler=operator).processor
    threads_only = make("bob").processor
    alone = make(None, user_root=None).processor
    assert list(threads_only.param.run_on.objects.values()) == ["threads"]
    assert list(fixed.param.run_on.objects.values()) == ["threads", "dask"]
    assert fixed.scheduler == operator and fixed.schedulers == [operator]
    for session_state in (fixed, threads_only, alone):
        session_state.viewer.browser.selection = [NEXUS_KEY]
        session_state.viewer.load = True
        assert session_state.viewer.browser.tasks.wait(60)
        session_state.output = f"s3://{DEMO_BUCKET}/processed/"
    fixed.run_on = "dask"
    assert fixed.check().endswith(f"on the Dask scheduler at {operator}.")
    fixed.scheduler = "tcp://attacker.example:8786"  # a crafted page message: still refused
    assert fixed.check() == ("This server runs batches only on its own threads or on the "
                             "schedulers it offers.") and fixed.batch_disabled()
    with pytest.raises(ValueError):
        threads_only.run_on = "dask"
    alone.param.update(run_on="dask", scheduler="tcp://my-laptop:8786")
    assert alone.check().endswith("on the Dask scheduler at tcp://my-laptop:8786.")
