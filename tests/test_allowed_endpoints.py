"""Endpoints the operator allows: on a shared server (a login) a session connects only to the
operator's endpoints, offered as a choice; a session, a deep link or a key file asking for
another is refused with one sentence and no request is sent there. Without a login nothing
changes: the endpoint is typed freely.

The "internal service" is a local HTTP server that counts the requests it receives: the
refusals must leave it at zero.
"""

from __future__ import annotations

import json

import pytest
from http_reply import ReplyServer

from dashboard.config import Settings, allowed_endpoint, endpoint_list
from dashboard.errors import ConfigError
from dashboard.state.session import Session
from dashboard.storage.credentials import Credentials


@pytest.fixture(scope="module")
def internal():
    """A service only the server can reach (``internal.url``), counting its requests."""
    with ReplyServer() as server:
        server.url = f"{server.endpoint}/some/internal/path"
        yield server


def keys_text(credentials, **extra) -> str:
    return json.dumps({"access_key": credentials.access_key,
                       "secret_key": credentials.secret_key, **extra})


# -- settings ---------------------------------------------------------------------------------


def test_the_allowed_list_is_normalised_and_holds_the_endpoint():
    s = Settings(allowed_endpoints=["https://a.example.org/", "https://b.example.org",
                                    "https://a.example.org"])
    assert s.allowed_endpoints == ("https://a.example.org", "https://b.example.org")
    assert s.endpoint == "https://a.example.org" and s.endpoint_given  # the first, chosen
    s = Settings(endpoint="https://b.example.org", allowed_endpoints=["https://a.example.org",
                                                                     "https://b.example.org"])
    assert s.endpoint == "https://b.example.org"
    env = {"ECHO_S3_ALLOWED_ENDPOINTS": "https://a.example.org, https://b.example.org/"}
    assert Settings.from_env(env).allowed_endpoints == ("https://a.example.org",
                                                        "https://b.example.org")
    assert Settings().allowed_endpoints is None  # no list: typed freely
    with pytest.raises(ConfigError, match="The endpoint https://c.example.org is not one of the "
                                          "allowed endpoints"):
        Settings.from_env({"ECHO_S3_ENDPOINT": "https://c.example.org", **env})


@pytest.mark.parametrize("value, message", [
    ("", "lists no endpoint"), (" , ", "lists no endpoint"), ("a.example.org", "Endpoint must be"),
])
def test_a_bad_list_is_a_clear_error(value, message):
    with pytest.raises(ConfigError, match=message):
        endpoint_list(value)


def test_allowed_endpoint_refuses_other_endpoints_and_other_key_files():
    allowed = ("https://s3.example.org",)
    keys = Credentials(access_key="AKIAX0000000", secret_key="x" * 20)
    assert allowed_endpoint("https://s3.example.org/", keys, allowed) == "https://s3.example.org"
    with pytest.raises(ConfigError) as info:
        allowed_endpoint("http://127.0.0.1:9/some/internal/path", keys, allowed)
    assert str(info.value) == ("This server does not connect to http://127.0.0.1:9/some/"
                               "internal/path: choose one of the endpoints it offers.")
    other = Credentials(access_key="AKIAX0000000", secret_key="x" * 20,
                        endpoint="http://10.0.0.1:8080")
    with pytest.raises(ConfigError, match="The keys are for the endpoint http://10.0.0.1:8080, "
                                          "which this server does not connect to."):
        allowed_endpoint("https://s3.example.org", other, allowed)
    with pytest.raises(ConfigError, match="does not connect to http://10.0.0.1:8080"):
        allowed_endpoint(None, other, allowed)  # nothing chosen: the keys' is not allowed either
    assert allowed_endpoint("http://10.0.0.1:8080", keys, None) == "http://10.0.0.1:8080"


# -- the session ------------------------------------------------------------------------------


@pytest.fixture
def shared(moto_server):
    """A session of a shared server whose operator allows only the test S3 server."""
    session = Session(Settings(endpoint=moto_server.endpoint, server_keys=False,
                               allowed_endpoints=[moto_server.endpoint]))
    try:
        yield session
    finally:
        session.close()


def test_a_typed_endpoint_is_refused_and_nothing_is_sent(shared, internal, credentials,
                                                         moto_server):
    b = shared.browser
    assert b.allowed_endpoints == [moto_server.endpoint] and b.endpoint == moto_server.endpoint
    before = internal.requests
    b.endpoint = internal.url  # a tampered page: the choice sent another value
    b.credentials_text = keys_text(credentials)
    b.connect = True
    assert shared.wait(30) and not b.connected and b.failed
    assert b.status == (f"Not connected: This server does not connect to {internal.url}: "
                        "choose one of the endpoints it offers.")
    assert internal.requests == before
    assert b.credentials_text == ""  # the pasted keys are gone all the same
    b.endpoint = moto_server.endpoint  # the allowed one works
    b.credentials_text = keys_text(credentials)
    b.connect = True
    assert shared.wait(30) and b.connected, b.status


def test_a_key_file_naming_another_endpoint_is_refused(shared, internal, credentials):
    b = shared.browser
    before = internal.requests
    b.credentials_text = keys_text(credentials, endpoint=internal.url)
    b.connect = True
    assert shared.wait(30) and not b.connected
    assert b.status == (f"Not connected: The keys are for the endpoint {internal.url}, which "
                        "this server does not connect to.")
    assert internal.requests == before


def test_a_link_to_another_endpoint_is_refused(shared, internal, credentials, moto_server):
    b = shared.browser
    b.credentials_text = keys_text(credentials)
    b.connect = True
    assert shared.wait(30) and b.connected
    before = internal.requests
    shared.restore({"endpoint": [internal.url.encode()], "bucket": [b"any"],
                    "colormap": [b"magma"]})
    assert not shared.restoring
    assert shared.link_status == (f"This link is for the endpoint {internal.url}, which this "
                                  "server does not connect to: it was not opened.")
    assert shared.viewer.colormap == "gray"  # nothing of the link applied
    assert b.provider.endpoint == moto_server.endpoint and internal.requests == before


def test_without_a_list_the_endpoint_is_typed_freely(moto_server, credentials):
    session = Session(Settings(endpoint=moto_server.endpoint))
    try:
        b = session.browser
        assert b.allowed_endpoints == []
        b.endpoint = moto_server.endpoint.replace("127.0.0.1", "localhost")  # any endpoint
        b.credentials_text = keys_text(credentials)
        b.connect = True
        assert session.wait(30) and b.connected, b.status
    finally:
        session.close()


# -- the server and the command line ----------------------------------------------------------


def test_a_login_server_allows_the_configured_endpoint_only(tmp_path, credentials):
    from dashboard.app import login_settings

    s = login_settings(Settings(endpoint="https://s3.example.org"))
    assert s.allowed_endpoints == ("https://s3.example.org",)
    assert login_settings(Settings()).allowed_endpoints == ("https://s3.echo.stfc.ac.uk",)
    keys = tmp_path / "keys.json"
    keys.write_text(keys_text(credentials, endpoint="https://keys.example.org"))
    s = login_settings(Settings(credentials_path=keys))  # the server's key file names it
    assert s.allowed_endpoints == ("https://keys.example.org",)
    listed = Settings(allowed_endpoints=["https://a.example.org", "https://b.example.org"])
    assert login_settings(listed) is listed


COOKIE = "cookie-secret-0123456789abcdef-0123456789abcdef"


@pytest.fixture
def no_serve(monkeypatch):
    import dashboard.app

    calls = []
    monkeypatch.setattr(dashboard.app, "serve", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("ECHO_S3_COOKIE_SECRET", COOKIE)
    return calls


@pytest.mark.parametrize("argv, allowed", [
    (["--basic-auth", "pw-123456", "--endpoint", "https://a.example.org",
      "--endpoint", "https://b.example.org/"], ("https://a.example.org", "https://b.example.org")),
    (["--basic-auth", "pw-123456", "--endpoint", "https://a.example.org"],
     ("https://a.example.org",)),
    (["--basic-auth", "pw-123456", "--allowed-endpoints", "https://a.example.org,https://b.x"],
     ("https://a.example.org", "https://b.x")),
    (["--basic-auth", "pw-123456"], None),  # the app allows the configured one (above)
    (["--allowed-endpoints", "https://a.example.org"], ("https://a.example.org",)),
    (["--endpoint", "https://a.example.org", "--endpoint", "https://b.x"],
     ("https://a.example.org", "https://b.x")),
    (["--endpoint", "https://a.example.org"], None),  # no login: typed freely, as before
    ([], None),
])
def test_serve_takes_the_operators_list(argv, allowed, no_serve, capsys):
    from dashboard.cli import main

    assert main(["serve", *argv]) == 0, capsys.readouterr().err
    settings = no_serve[-1]["settings"]
    assert settings.allowed_endpoints == allowed
    if allowed:
        assert settings.endpoint == allowed[0]


@pytest.mark.parametrize("argv, message", [
    (["serve", "--allowed-endpoints", ","], "--allowed-endpoints lists no endpoint."),
    (["serve", "--allowed-endpoints", "s3.example.org"], "Endpoint must be"),
    (["ls", "--endpoint", "https://a.example.org", "--endpoint", "https://b.x"],
     "give --endpoint once"),
    (["serve", "--demo", "--allowed-endpoints", "https://a.example.org"], "--demo uses"),
])
def test_bad_endpoint_options_are_usage_errors(argv, message, no_serve, capsys):
    from dashboard.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and no_serve == []


def test_the_connect_view_offers_a_choice_only_with_a_list(moto_server):
    import panel as pn

    from dashboard.state.browser import BrowserState
    from dashboard.ui.browser import ConnectView

    free = ConnectView(BrowserState())
    assert next(w.label for w in free._layout.select(pn.widgets.TextInput)) == "Endpoint"
    state = BrowserState(allowed_endpoints=["https://a.example.org", "https://b.x"],
                         endpoint="https://a.example.org")
    view = ConnectView(state)
    select = next(w for w in view._layout.select(pn.widgets.Select) if w.label == "Endpoint")
    assert select.options == ["https://a.example.org", "https://b.x"]
    assert not [w for w in view._layout.select(pn.widgets.TextInput) if w.label == "Endpoint"]
    select.value = "https://b.x"
    assert state.endpoint == "https://b.x"
    state.endpoint = "https://a.example.org"
    assert select.value == "https://a.example.org"
