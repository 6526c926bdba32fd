"""Messages never echo a reply body: an endpoint that is not S3 (an internal service reached
through the Endpoint field), or an S3 endpoint that answers with markup or secrets in its error
message, gives our own sentence with the S3 error code and HTTP status only.

The endpoint is a tiny local HTTP server (``tests/http_reply.py``) that answers every request
at once with the reply the test sets; ``max_attempts=1``, so no retry waits.
"""

from __future__ import annotations

import json

import pytest
from http_reply import ReplyServer

from dashboard.errors import EchoError
from dashboard.storage.credentials import Credentials
from dashboard.storage.s3 import S3

#: Strings only the reply holds: none may reach a message.
SECRETS = ("hello", "internal-token-7731", "onerror", "<script", "secret page", "teapot body")

REPLIES = {
    "json 400": (400, "application/json", json.dumps({"b": "hello"}).encode()),
    "json 200": (200, "application/json", json.dumps({"b": "internal-token-7731"}).encode()),
    "html 500": (500, "text/html",
                 b"<html><script>alert(1)</script>secret page internal-token-7731</html>"),
    "html 200": (200, "text/html", b"<html><body>secret page <img src=x onerror=alert(1)>"),
    "xml nested message": (400, "application/xml",
                           b"<Error><Code>Bad</Code><Message><b>hello</b></Message></Error>"),
    "xml markup code": (400, "application/xml",
                        (b"<Error><Code>&lt;img src=x onerror=alert(1)&gt;</Code>"
                         b"<Message>internal-token-7731</Message></Error>")),
    "xml slowdown": (503, "application/xml",
                     b"<Error><Code>SlowDown</Code><Message>internal-token-7731</Message></Error>"),
    "xml teapot": (418, "application/xml",
                   b"<Error><Code>Teapot</Code><Message>teapot body</Message></Error>"),
    "not xml": (200, "application/xml", b"<notxml internal-token-7731"),
    "text 403": (403, "text/plain", b"secret page internal-token-7731"),
}


@pytest.fixture(scope="module")
def service():
    """An HTTP service on 127.0.0.1 whose reply each test sets (``service.reply = ...``)."""
    with ReplyServer() as server:
        yield server


def _keys() -> Credentials:
    return Credentials(access_key="AKIAREPLYTEST0001", secret_key="reply-test-secret-0001")


def _messages(service) -> list[str]:
    s3 = S3(service.endpoint, _keys(), max_attempts=1, read_timeout=5)
    found = []
    for call in (s3.list_buckets, lambda: s3.list_objects("bucket"),
                 lambda: s3.head("bucket", "a.h5"), lambda: s3.get_range("bucket", "a.h5", 0, 8)):
        try:
            call()
        except EchoError as exc:
            found.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - what the state would show
            from dashboard.state.tasks import user_message

            found.append(user_message(exc, "read"))
    return found


@pytest.mark.parametrize("name", list(REPLIES))
def test_no_message_repeats_the_reply(service, name):
    service.reply = REPLIES[name]
    messages = _messages(service)
    assert messages, "every call against a non-S3 reply should fail"
    for message in messages:
        assert not any(s in message for s in SECRETS), message
        assert "\n" not in message and len(message) < 400 and "unexpected" not in message


def test_the_message_names_the_code_and_the_status(service):
    service.reply = REPLIES["xml slowdown"]
    message = _messages(service)[0]
    assert message == (f"S3 error while trying to list buckets at {service.endpoint}: the "
                       "endpoint is busy; try again later (SlowDown, HTTP 503).")
    service.reply = REPLIES["xml teapot"]
    assert "(Teapot, HTTP 418)" in _messages(service)[0]
    service.reply = REPLIES["xml markup code"]
    message = _messages(service)[0]
    assert message.endswith("the endpoint refused the request (HTTP 400).")  # code not repeated
    service.reply = REPLIES["json 400"]
    assert _messages(service)[0].endswith("the endpoint refused the request (HTTP 400).")
    service.reply = REPLIES["html 200"]  # a HEAD answered without S3's headers
    assert _messages(service)[2] == (f"The reply of {service.endpoint} to read s3://bucket/a.h5 "
                                     "is not an S3 reply (is this an S3 endpoint?).")


def test_the_connect_status_shows_no_reply(service):
    from dashboard.state.browser import BrowserState

    service.reply = REPLIES["xml nested message"]
    browser = BrowserState(endpoint=service.endpoint, server_keys=False)
    browser.credentials_text = json.dumps({"access_key": "AKIAREPLYTEST0001",
                                           "secret_key": "reply-test-secret-0001"})
    browser.connect = True
    assert browser.tasks.wait(60)
    assert browser.status.startswith("Not connected: S3 error while trying to list buckets")
    assert not any(s in browser.status for s in SECRETS) and "{'b'" not in browser.status
    browser.close()
    browser.tasks.shutdown()


def test_the_cli_shows_no_reply(service, monkeypatch, capsys):
    from dashboard.cli import main

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREPLYTEST0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "reply-test-secret-0001")
    service.reply = REPLIES["html 500"]
    assert main(["ls", "--endpoint", service.endpoint]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and not any(s in err for s in SECRETS)
