"""A server with a login offers the operator's endpoints only, in Chromium: the Endpoint is a
choice, not a text box; a value forced into it from the page is refused, a key file naming
another endpoint and a link to another endpoint are refused with one sentence, and the
"internal service" they name receives no request; the allowed endpoint connects and lists."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import TIMEOUT_MS, click, keys_json, shot, status
from conftest import ACCESS_KEY, SECRET_KEY
from http_reply import ReplyServer

from dashboard.app import RunningServer, ServerAuth
from dashboard.config import Settings
from dashboard.demo.store import DEMO_BUCKET
from dashboard.storage.credentials import Credentials

pytestmark = pytest.mark.slow

PASSWORD = "endpoint-test-password-51c2"
COOKIE_SECRET = "endpoint-cookie-secret-0123456789abcdef-0123"

# Bokeh's model of the Endpoint choice, given a value the page never offered (a tampered page).
_FORCE = """(url) => {
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      if (model.title === 'Endpoint' && 'options' in model) { model.value = url; return true; }
    }
  }
  return false;
}"""


@pytest.fixture(scope="module")
def internal():
    with ReplyServer() as server:
        server.url = f"{server.endpoint}/some/internal/path"
        yield server


@pytest.fixture(scope="module")
def shared_server(moto_server, demo, tmp_path_factory):
    users = tmp_path_factory.mktemp("endpoint-auth") / "users.json"
    users.write_text(json.dumps({"alice": PASSWORD}))
    auth = ServerAuth.from_options(basic_auth=str(users), cookie_secret=COOKIE_SECRET)
    with RunningServer(Settings(endpoint=moto_server.endpoint), auth=auth) as server:
        yield server


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def logged_in(browser, url: str):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    expect(page).to_have_url(re.compile(r"/login"))
    page.locator("input[name=username]").fill("alice")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("button[type=submit], input[type=submit]").first.click()
    page.get_by_role("button", name="Connect").wait_for()
    return page


def paste_and_connect(page, text: str) -> None:
    page.get_by_placeholder('{"access_key"').fill(text)
    click(page, "Connect")


def test_a_login_server_connects_only_to_the_allowed_endpoint(browser, shared_server,
                                                               moto_server, internal):
    keys = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    page = logged_in(browser, shared_server.url)
    try:
        # A choice of one, not a text box.
        choice = page.locator(".bk-input-group", has_text="Endpoint").locator("select")
        expect(choice).to_have_count(1)
        assert choice.locator("option").all_text_contents() == [moto_server.endpoint]
        expect(page.locator(".bk-input-group", has_text="Endpoint").locator("input")) \
            .to_have_count(0)

        # A value forced into the choice from the page: the server's choice refuses it (Panel
        # logs "not in list"), and Connect goes to the allowed endpoint (a value that got past
        # it would be refused by the session: test_allowed_endpoints.py).
        assert page.evaluate(_FORCE, internal.url)
        paste_and_connect(page, keys_json(keys))
        expect(status(page, "echo-connect-status")).to_contain_text(
            f"Connected to {moto_server.endpoint}")
        shot(page, "endpoints-01-forced-value-refused")

        # A key file naming another endpoint: refused.
        named = json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                            "endpoint": internal.url})
        paste_and_connect(page, named)
        expect(status(page, "echo-connect-status")).to_have_text(
            f"Not connected: The keys are for the endpoint {internal.url}, which this server "
            "does not connect to.")

        # The allowed endpoint works.
        paste_and_connect(page, keys_json(keys))
        expect(status(page, "echo-connect-status")).to_contain_text(
            f"Connected to {moto_server.endpoint}")
        page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
            .select_option(DEMO_BUCKET)
        click(page, "List Objects")
        expect(status(page, "echo-count")).to_contain_text("objects shown")
        shot(page, "endpoints-02-allowed-one-works")
    finally:
        page.context.close()

    # A link to another endpoint: not opened.
    page = logged_in(browser, f"{shared_server.url}?endpoint={quote(internal.url)}"
                              f"&bucket={DEMO_BUCKET}")
    try:
        expect(status(page, "echo-link-status")).to_have_text(
            f"This link is for the endpoint {internal.url}, which this server does not "
            "connect to: it was not opened.")
    finally:
        page.context.close()
    assert internal.requests == 0
