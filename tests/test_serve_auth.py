"""Hosting outside JupyterHub: ``echo-s3-viewer serve`` with Panel's basic auth or OAuth.

A real dashboard server with a login: pages and the websocket need it, a wrong password is
refused, the right one (through the login form in Chromium) reaches a working dashboard.
Bad login settings are usage errors (exit 2) that never echo a secret. OAuth cannot be run
against a real provider offline: those tests check that the options reach Panel's server (its
OAuth login handler for the provider, the client id and redirect in the authorize redirect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import datetime as dt
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import click, shot, status
from conftest import ACCESS_KEY, SECRET_KEY
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

import dashboard.app
from dashboard.app import RunningServer, ServerAuth, _server_kwargs
from dashboard.cli import main
from dashboard.config import Settings
from dashboard.demo.store import DEMO_BUCKET
from dashboard.errors import ConfigError
from dashboard.storage.credentials import Credentials

PASSWORD = "correct-horse-battery-staple-7f3a"
COOKIE_SECRET = "cookie-secret-0123456789abcdef-0123456789abcdef"
OAUTH_SECRET = "oauth-client-secret-9d8c7b6a5f4e"
ENCRYPTION_KEY = "3Lh1Xr0hJ2cH8g7o1X8Wq0yq3oZ8lJt5XzYw6Vn2bFk="  # 32 url-safe base64 bytes
SECRETS = (PASSWORD, COOKIE_SECRET, OAUTH_SECRET, ENCRYPTION_KEY)
ENV = ("ECHO_S3_COOKIE_SECRET", "ECHO_S3_BASIC_AUTH", "PANEL_COOKIE_SECRET", "BOKEH_COOKIE_SECRET",
       "PANEL_OAUTH_PROVIDER", "PANEL_OAUTH_KEY", "PANEL_OAUTH_SECRET", "PANEL_OAUTH_REDIRECT_URI",
       "PANEL_OAUTH_EXTRA_PARAMS", "PANEL_OAUTH_ENCRYPTION", "PANEL_BASIC_AUTH")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_serve(monkeypatch):
    """Replace ``dashboard.app.serve``: records its arguments instead of serving forever."""
    calls = []
    monkeypatch.setattr(dashboard.app, "serve", lambda **kwargs: calls.append(kwargs))
    return calls


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


# -- the CLI checks the login settings before anything starts --------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--basic-auth", PASSWORD], "needs a cookie secret"),
    (["--basic-auth", PASSWORD, "--cookie-secret", "short"], "at least 32 characters"),
    (["--basic-auth", PASSWORD, "--cookie-secret", ""], "--cookie-secret is empty"),
    (["--basic-auth", "", "--cookie-secret", COOKIE_SECRET], "--basic-auth is empty"),
    (["--cookie-secret", COOKIE_SECRET], "needs --basic-auth or --oauth-provider"),
    (["--oauth-secret", OAUTH_SECRET], "needs --basic-auth or --oauth-provider"),
    (["--basic-auth", PASSWORD, "--oauth-provider", "github", "--cookie-secret", COOKIE_SECRET],
     "not both"),
    (["--oauth-provider", "nosuchprovider", "--oauth-key", "id", "--oauth-secret", OAUTH_SECRET,
      "--cookie-secret", COOKIE_SECRET], "Unknown OAuth provider 'nosuchprovider': choose one of"),
    (["--oauth-provider", "github", "--oauth-secret", OAUTH_SECRET,
      "--cookie-secret", COOKIE_SECRET], "needs --oauth-key"),
    (["--oauth-provider", "github", "--oauth-key", "id", "--cookie-secret", COOKIE_SECRET],
     "needs --oauth-secret"),
    (["--oauth-provider", "github", "--oauth-key", "id", "--oauth-secret", OAUTH_SECRET],
     "needs a cookie secret"),
    (["--oauth-provider", "azure", "--oauth-key", "id", "--oauth-secret", OAUTH_SECRET,
      "--cookie-secret", COOKIE_SECRET, "--oauth-extra-params", "tenant=x"], "JSON object"),
    (["--oauth-provider", "azure", "--oauth-key", "id", "--oauth-secret", OAUTH_SECRET,
      "--cookie-secret", COOKIE_SECRET, "--oauth-extra-params", "[1, 2]"], "JSON object"),
    (["--oauth-provider", "github", "--oauth-key", "id", "--oauth-secret", OAUTH_SECRET,
      "--cookie-secret", COOKIE_SECRET, "--oauth-redirect-uri", "viewer/login"], "http:// or https://"),
    (["--oauth-provider", "github", "--oauth-key", "id", "--oauth-secret", OAUTH_SECRET,
      "--cookie-secret", COOKIE_SECRET, "--oauth-encryption-key", "not-a-key"], "32 url-safe"),
    (["--basic-auth", "users.json", "--cookie-secret", COOKIE_SECRET], "no such file"),
    (["--basic-auth", PASSWORD, "--cookie-secret", COOKIE_SECRET, "--login-template", "/no/such.html"],
     "no such file"),
    (["--basic-auth", PASSWORD, "--cookie-secret", COOKIE_SECRET, "--ssl-keyfile", "/no/key.pem"],
     "--ssl-keyfile needs --ssl-certfile"),
    (["--basic-auth", PASSWORD, "--cookie-secret", COOKIE_SECRET, "--ssl-certfile", "/no/cert.pem"],
     "no such file"),
])
def test_bad_login_settings_are_usage_errors_without_secrets(argv, message, capsys, no_serve):
    code, output = run_cli(["serve", *argv], capsys)
    assert code == 2
    assert message in output
    assert len(output.strip().splitlines()) == 1, output
    assert not any(secret in output for secret in SECRETS + ("short",)), output
    assert "Traceback" not in output
    assert no_serve == []  # nothing was started


def test_a_secret_given_twice_with_different_values_is_refused(capsys, no_serve, monkeypatch):
    other = "another-cookie-secret-0123456789abcdef-xyz"
    monkeypatch.setenv("ECHO_S3_COOKIE_SECRET", other)
    code, output = run_cli(["serve", "--basic-auth", PASSWORD, "--cookie-secret", COOKIE_SECRET],
                           capsys)
    assert code == 2 and "--cookie-secret and ECHO_S3_COOKIE_SECRET differ" in output
    assert COOKIE_SECRET not in output and other not in output
    # Panel prefers PANEL_COOKIE_SECRET over a value set in code: a different one is refused too.
    monkeypatch.delenv("ECHO_S3_COOKIE_SECRET")
    monkeypatch.setenv("PANEL_COOKIE_SECRET", other)
    code, output = run_cli(["serve", "--basic-auth", PASSWORD, "--cookie-secret", COOKIE_SECRET],
                           capsys)
    assert code == 2 and "PANEL_COOKIE_SECRET differ" in output and other not in output
    assert no_serve == []


@pytest.mark.parametrize("content", ["{not json", "[]", "{}", '{"alice": ""}', '{"alice": 5}'])
def test_a_bad_user_file_is_refused_without_showing_it(content, tmp_path, capsys, no_serve):
    users = tmp_path / "users.json"
    users.write_text(content)
    code, output = run_cli(["serve", "--basic-auth", str(users), "--cookie-secret", COOKIE_SECRET],
                           capsys)
    assert code == 2 and str(users) in output and "--basic-auth file" in output
    assert no_serve == []


def test_secrets_from_the_environment_reach_serve(capsys, no_serve, monkeypatch, tmp_path):
    """Nothing secret needs to be on the command line (visible in ``ps``)."""
    monkeypatch.setenv("ECHO_S3_BASIC_AUTH", PASSWORD)
    monkeypatch.setenv("ECHO_S3_COOKIE_SECRET", COOKIE_SECRET)
    login = tmp_path / "login.html"
    login.write_text("<form>{{ errormessage }}</form>")
    code, output = run_cli(["serve", "--demo", "--port", "0", "--login-template", str(login)], capsys)
    assert code == 0 and output == ""
    (call,) = no_serve
    auth = call["auth"]
    assert auth.basic_auth == PASSWORD and auth.cookie_secret == COOKIE_SECRET
    assert auth.login_template == str(login) and auth.kind == "basic"
    assert not any(secret in repr(auth) for secret in SECRETS)
    kwargs = auth.server_kwargs()
    assert kwargs["basic_auth"] == PASSWORD and kwargs["cookie_secret"] == COOKIE_SECRET
    assert "oauth_provider" not in kwargs


def test_oauth_options_from_flags_and_environment(capsys, no_serve, monkeypatch):
    monkeypatch.setenv("PANEL_OAUTH_SECRET", OAUTH_SECRET)
    monkeypatch.setenv("ECHO_S3_COOKIE_SECRET", COOKIE_SECRET)
    code, _ = run_cli(["serve", "--oauth-provider", "AzureV2", "--oauth-key", "client-id",
                       "--oauth-redirect-uri", "https://viewer.example.org/login",
                       "--oauth-extra-params", '{"tenant": "stfc"}',
                       "--oauth-encryption-key", ENCRYPTION_KEY], capsys)
    assert code == 0
    auth = no_serve[0]["auth"]
    assert auth.kind == "oauth (azurev2)"
    assert auth.server_kwargs() == {
        "cookie_secret": COOKIE_SECRET, "login_template": None, "logout_template": None,
        "oauth_provider": "azurev2", "oauth_key": "client-id", "oauth_secret": OAUTH_SECRET,
        "oauth_redirect_uri": "https://viewer.example.org/login",
        "oauth_extra_params": {"tenant": "stfc"},
    }
    assert not any(secret in repr(auth) for secret in SECRETS)


def test_no_login_options_means_no_login(capsys, no_serve):
    assert run_cli(["serve", "--demo"], capsys)[0] == 0
    assert no_serve[0]["auth"] is None
    assert ServerAuth.from_options() is None


def test_login_over_plain_http_on_the_network_warns_once(caplog):
    auth = ServerAuth.from_options(basic_auth=PASSWORD, cookie_secret=COOKIE_SECRET)
    caplog.set_level(logging.WARNING, logger="dashboard")
    options = dict(port=0, allow_websocket_origin=None, prefix=None, auth=auth, ssl_keyfile=None)
    for address in ("127.0.0.1", "::1", "localhost"):
        _server_kwargs(address=address, ssl_certfile=None, **options)
    _server_kwargs(address="0.0.0.0", ssl_certfile="cert.pem", **options)
    assert caplog.records == []
    _server_kwargs(address="0.0.0.0", ssl_certfile=None, **options)
    (record,) = caplog.records
    assert "without HTTPS" in record.getMessage() and "0.0.0.0" in record.getMessage()
    assert PASSWORD not in record.getMessage() and COOKIE_SECRET not in record.getMessage()


# -- a real server with basic auth -----------------------------------------------------------


def _keys() -> Credentials:
    return Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY, source="test keys")


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "users.json"
    path.write_text(json.dumps({"alice": PASSWORD, "bob": "bobs-own-password-42"}))
    return path


@pytest.fixture(scope="module")
def login_server(moto_server, demo, users_file):
    auth = ServerAuth.from_options(basic_auth=str(users_file), cookie_secret=COOKIE_SECRET)
    with RunningServer(Settings(endpoint=moto_server.endpoint), credentials=_keys(),
                       auth=auth) as server:
        yield server


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _opener():
    jar = CookieJar()
    return urllib.request.build_opener(_NoRedirect, urllib.request.HTTPCookieProcessor(jar)), jar


def _fetch(opener, url, data=None):
    """(status, Location header, body) without following redirects."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(url, data=body, timeout=60) as response:
            return response.status, response.headers.get("Location"), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location"), exc.read().decode(errors="replace")


def to_login(location: str | None) -> bool:
    """A redirect to the login page (``/login`` or ``./login``)."""
    return location is not None and urllib.parse.urlsplit(location).path.endswith("/login")


def _ws_first_message(port: int, cookie: str | None) -> str | None:
    """Open Bokeh's websocket with a made-up session token, as a client that skipped the page
    would, and return the first message (``None``: the server closed it without a word)."""
    from bokeh.util.token import generate_jwt_token, generate_session_id

    async def attempt():
        headers = {"Origin": f"http://127.0.0.1:{port}"}
        if cookie:
            headers["Cookie"] = cookie
        token = generate_jwt_token(generate_session_id(), signed=False)
        try:
            connection = await websocket_connect(
                HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers=headers),
                subprotocols=["bokeh", token])
        except HTTPClientError:
            return None
        try:
            return await asyncio.wait_for(connection.read_message(), 60)
        finally:
            connection.close()

    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(attempt())).result()


@pytest.mark.slow
def test_pages_and_websocket_need_a_login(login_server, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    sessions = []
    create = dashboard.app.create_app
    monkeypatch.setattr(dashboard.app, "create_app",
                        lambda *a, **k: sessions.append(1) or create(*a, **k))
    opener, jar = _opener()
    code, location, _ = _fetch(opener, login_server.url)
    assert code == 302 and to_login(location)
    code, _, form = _fetch(opener, login_server.url + "login")
    assert code == 200 and 'name="password"' in form
    # The handshake completes, but Bokeh's open() needs a user: closed, no session made.
    assert _ws_first_message(login_server.port, None) is None
    assert sessions == []

    # A wrong password, a password of another user, an unknown user: refused, no cookie.
    for user, password in (("alice", "wrong"), ("alice", "bobs-own-password-42"),
                           ("mallory", PASSWORD), ("alice", "")):
        code, location, _ = _fetch(opener, login_server.url + "login",
                                   {"username": user, "password": password})
        assert code == 302 and "error=Invalid" in location
        assert not any(c.name == "user" for c in jar)
        assert _fetch(opener, login_server.url)[0] == 302

    code, location, _ = _fetch(opener, login_server.url + "login",
                               {"username": "alice", "password": PASSWORD})
    assert code == 302 and "error" not in location
    (cookie,) = [c for c in jar if c.name == "user"]
    code, _, page = _fetch(opener, login_server.url)
    assert code == 200 and "<title>ECHO S3 Viewer</title>" in page
    assert PASSWORD not in page and COOKIE_SECRET not in page
    assert "ACK" in _ws_first_message(login_server.port, f"user={cookie.value}")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert PASSWORD not in logged and COOKIE_SECRET not in logged


def test_a_forged_cookie_is_refused(login_server):
    opener, _ = _opener()
    request = urllib.request.Request(login_server.url, headers={"Cookie": "user=alice"})
    code, location, _ = _fetch(opener, request)
    assert code == 302 and to_login(location)


@pytest.mark.browser
def test_login_form_in_chromium_leads_to_a_working_dashboard(browser, login_server):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        page.goto(login_server.url)
        expect(page).to_have_url(re.compile(r"/login"))
        page.locator("input[name=username]").fill("alice")
        page.locator("input[name=password]").fill("not the password")
        page.locator("button[type=submit], input[type=submit]").first.click()
        expect(page.get_by_text("Invalid username or password")).to_be_visible()
        page.locator("input[name=username]").fill("alice")
        page.locator("input[name=password]").fill(PASSWORD)
        page.locator("button[type=submit], input[type=submit]").first.click()
        page.get_by_role("button", name="Connect").wait_for()
        # A round trip over the websocket: the session lists the demo bucket.
        expect(status(page, "echo-connect-status")).to_contain_text("Connected to")
        page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
            .select_option(DEMO_BUCKET)
        click(page, "List Objects")
        expect(status(page, "echo-count")).to_contain_text("objects shown")
        shot(page, "auth-01-logged-in")
        assert PASSWORD not in page.content()
    finally:
        context.close()


def test_https_with_a_login(moto_server, tmp_path, caplog):
    """``--ssl-certfile/--ssl-keyfile``: the login page over HTTPS (self-signed certificate)."""
    import ssl

    cert, key = _self_signed(tmp_path)
    auth = ServerAuth.from_options(basic_auth=PASSWORD, cookie_secret=COOKIE_SECRET)
    caplog.set_level(logging.WARNING, logger="dashboard")
    with RunningServer(Settings(endpoint=moto_server.endpoint), auth=auth,
                       ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
        code, location, _ = _fetch(opener, server.url)
        assert code == 302 and to_login(location)
        code, location, _ = _fetch(opener, server.url + "login",
                                   {"username": "anyone", "password": PASSWORD})
        assert code == 302 and "error" not in location
    assert not [r for r in caplog.records if "without HTTPS" in r.getMessage()]


def _self_signed(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# -- OAuth: the options reach Panel's server (no real provider offline) ----------------------


def test_oauth_options_reach_panels_server(moto_server):
    """The login handler is Panel's GitHub handler; /login redirects to GitHub's authorize URL
    with our client id and redirect URI (never the secret). Logging in at GitHub itself cannot
    be tested offline."""
    import panel as pn
    from panel.auth import GithubLoginHandler, OAuthProvider

    before = (pn.config.oauth_provider, pn.config.oauth_key, pn.config.cookie_secret)
    auth = ServerAuth.from_options(
        oauth_provider="github", oauth_key="client-id-123", oauth_secret=OAUTH_SECRET,
        cookie_secret=COOKIE_SECRET, oauth_redirect_uri="https://viewer.example.org/login",
        oauth_extra_params={"scope": "read:user"}, oauth_encryption_key=ENCRYPTION_KEY)
    with RunningServer(Settings(endpoint=moto_server.endpoint), auth=auth) as server:
        provider = server.server._tornado.auth_provider
        assert isinstance(provider, OAuthProvider)
        assert provider.login_handler is GithubLoginHandler
        assert pn.config.oauth_key == "client-id-123" and pn.config.oauth_secret == OAUTH_SECRET
        assert pn.config.oauth_extra_params == {"scope": "read:user"}
        assert pn.state.encryption is not None  # tokens in cookies are encrypted
        opener, _ = _opener()
        code, location, _ = _fetch(opener, server.url)
        assert code == 302 and to_login(location)
        code, location, _ = _fetch(opener, server.url + "login")
        assert code == 302
        target = urllib.parse.urlsplit(location)
        query = urllib.parse.parse_qs(target.query)
        assert (target.scheme, target.netloc, target.path) == (
            "https", "github.com", "/login/oauth/authorize")
        assert query["client_id"] == ["client-id-123"]
        assert query["redirect_uri"] == ["https://viewer.example.org/login"]
        assert OAUTH_SECRET not in location and COOKIE_SECRET not in location
        assert _ws_first_message(server.port, None) is None
    # RunningServer puts Panel's process-wide auth config back.
    assert (pn.config.oauth_provider, pn.config.oauth_key, pn.config.cookie_secret) == before
    assert pn.state.encryption is None


def test_unknown_provider_from_python_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown OAuth provider 'gihub': choose one of .*github"):
        ServerAuth.from_options(oauth_provider="gihub", oauth_key="k", oauth_secret=OAUTH_SECRET,
                                cookie_secret=COOKIE_SECRET)
    with pytest.raises(ConfigError) as info:  # a secret pasted into the wrong option is not shown
        ServerAuth.from_options(oauth_provider=OAUTH_SECRET + "/x", oauth_key="k",
                                oauth_secret="s", cookie_secret=COOKIE_SECRET)
    assert OAUTH_SECRET not in str(info.value)


@pytest.mark.slow
def test_the_real_command_serves_a_login(tmp_path):
    """``echo-s3-viewer serve --demo`` in a process of its own, secrets from the environment."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "ECHO_S3_BASIC_AUTH": PASSWORD, "ECHO_S3_COOKIE_SECRET": COOKIE_SECRET,
           "PYTHONUNBUFFERED": "1"}
    for name in ENV[2:]:
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard.cli", "serve", "--demo", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"Launching server at (http://\S+)", line)
            url = found.group(1).rstrip("/") + "/" if found else None
        assert url, "".join(lines)
        opener, jar = _opener()
        code, location, _ = _fetch(opener, url)
        assert code == 302 and to_login(location)
        code, location, _ = _fetch(opener, url + "login", {"username": "x", "password": "nope"})
        assert code == 302 and "error=Invalid" in location
        code, location, _ = _fetch(opener, url + "login", {"username": "x", "password": PASSWORD})
        assert code == 302 and "error" not in location and any(c.name == "user" for c in jar)
        code, _, page = _fetch(opener, url)
        assert code == 200 and "<title>ECHO S3 Viewer</title>" in page
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        lines.append(output)
    text = "".join(lines)
    assert PASSWORD not in text and COOKIE_SECRET not in text
    assert "without HTTPS" not in text  # 127.0.0.1: no warning


def test_a_login_template_is_served(moto_server, tmp_path, monkeypatch):
    from panel.auth import BasicLoginHandler, LogoutHandler

    # Panel keeps the templates on its handler classes: put them back after the test.
    monkeypatch.setattr(BasicLoginHandler, "_login_template", BasicLoginHandler._login_template)
    monkeypatch.setattr(LogoutHandler, "_logout_template", LogoutHandler._logout_template)
    login, logout = tmp_path / "login.html", tmp_path / "logout.html"
    login.write_text("<h1>ECHO S3 Viewer at the beamline</h1><p>{{ errormessage }}</p>"
                     '<form action="{{ login_endpoint }}" method="post"></form>')
    logout.write_text("<h1>Signed out of ECHO S3 Viewer</h1>")
    auth = ServerAuth.from_options(basic_auth=PASSWORD, cookie_secret=COOKIE_SECRET,
                                   login_template=str(login), logout_template=str(logout))
    with RunningServer(Settings(endpoint=moto_server.endpoint), auth=auth) as server:
        opener, _ = _opener()
        code, _, page = _fetch(opener, server.url + "login?error=Wrong%20password")
        assert code == 200 and "ECHO S3 Viewer at the beamline" in page
        assert "Wrong password" in page
        code, _, page = _fetch(opener, server.url + "logout")
        assert code == 200 and "Signed out of ECHO S3 Viewer" in page


# -- a shared server does not lend its own keys ------------------------------------------------


def test_a_login_turns_server_keys_off_unless_asked(capsys, no_serve, monkeypatch):
    monkeypatch.setenv("ECHO_S3_COOKIE_SECRET", COOKIE_SECRET)
    monkeypatch.delenv("ECHO_S3_SERVER_KEYS", raising=False)
    assert run_cli(["serve", "--demo"], capsys)[0] == 0
    assert no_serve[-1]["settings"].server_keys is True  # one user, their own machine
    assert run_cli(["serve", "--basic-auth", PASSWORD], capsys)[0] == 0
    assert no_serve[-1]["settings"].server_keys is False  # shared: the keys are not theirs
    assert run_cli(["serve", "--basic-auth", PASSWORD, "--server-keys"], capsys)[0] == 0
    assert no_serve[-1]["settings"].server_keys is True
    monkeypatch.setenv("ECHO_S3_SERVER_KEYS", "yes")
    assert run_cli(["serve", "--basic-auth", PASSWORD], capsys)[0] == 0
    assert no_serve[-1]["settings"].server_keys is True
    assert run_cli(["serve", "--no-server-keys"], capsys)[0] == 0
    assert no_serve[-1]["settings"].server_keys is False


def test_without_server_keys_connect_uses_only_keys_from_the_page(moto_server, credentials,
                                                                 tmp_path, monkeypatch):
    import json as json_module

    from dashboard.config import Settings
    from dashboard.state.session import Session

    # The operator's keys: a file on the server and the server's environment.
    key_file = tmp_path / "operator.json"
    key_file.write_text(json_module.dumps({"access_key": credentials.access_key,
                                           "secret_key": credentials.secret_key}))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
    session = Session(Settings(endpoint=moto_server.endpoint, server_keys=False))
    try:
        b = session.browser
        assert b.credentials_path == ""
        for path in (str(key_file), ""):  # a typed path, then nothing (the default chain)
            b.credentials_path = path
            b.connect = True
            assert session.wait(30) and not b.connected
            assert b.status == ("Not connected: This server uses only keys given in the page: "
                                "paste or upload your key file, then press Connect.")
        b.credentials_text = key_file.read_text()  # pasted keys still work
        b.connect = True
        assert session.wait(30) and b.connected
    finally:
        session.close()
