"""The JupyterHub launcher entry, for real: a Jupyter server (with a hub-like base URL) runs
``jupyter-server-proxy``, which starts the dashboard from our ``jupyter_serverproxy_servers``
entry point; Chromium opens the launcher's URL through the proxy, offline, and lists a bucket
on the moto store: the page and its websocket work under the proxy's prefix."""

from __future__ import annotations

import urllib.request

import pytest
from browser_fixtures import browser  # noqa: F401 - the fixture
from test_notebook import JupyterServer, kernel_env, offline, user_home

from dashboard.demo.store import DEMO_BUCKET
from dashboard.jupyter import NAME

BASE_URL = "/user/echo-test/"


@pytest.mark.browser
@pytest.mark.slow
def test_the_launcher_entry_serves_the_dashboard_through_the_proxy(
        browser, tmp_path, moto_server, demo):  # noqa: F811 - the fixture
    from browser_fixtures import TIMEOUT_MS, shot
    from playwright.sync_api import expect

    home = user_home(tmp_path)
    env = kernel_env(home)  # PYTHONPATH: the proxied process imports this checkout
    env["ECHO_S3_ENDPOINT"] = moto_server.endpoint
    env["ECHO_S3_CREDENTIALS"] = str(home / ".echo-keys.json")
    work = tmp_path / "work"
    work.mkdir()
    server = JupyterServer(work, home, "server", [f"--ServerApp.base_url={BASE_URL}"], env=env)
    server.url = f"http://127.0.0.1:{server.port}{BASE_URL}"
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    refused = offline(context)
    try:
        server.wait_ready()
        # The launcher lists the entry (jupyter-server-proxy's own API).
        with urllib.request.urlopen(f"{server.url}server-proxy/servers-info?token={server.token}",
                                    timeout=30) as response:
            assert NAME in response.read().decode()

        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(e.message))
        page.goto(f"{server.url}{NAME}/app?token={server.token}", timeout=150_000)
        expect(page.get_by_role("button", name="Connect")).to_be_visible(timeout=150_000)
        assert page.url.startswith(f"{server.url}{NAME}/app")
        status = page.locator(".echo-connect-status").first
        expect(status).to_contain_text("Connected to", timeout=60_000)  # keys from the env
        page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
            .select_option(DEMO_BUCKET)
        page.get_by_role("button", name="List Objects", exact=True).click()
        expect(page.locator(".echo-count").first).to_contain_text("objects shown")
        expect(page.locator(".tabulator-row").first).to_be_visible()
        shot(page, "jupyterhub-listed")
    finally:
        context.close()
        server.stop()
    assert errors == [], errors
    # Everything came through the proxy except the FastListTemplate's web font (Google Fonts),
    # which the served page asks for and works without (the browser's fallback font).
    assert {url.split("?")[0] for url in refused} <= {"https://fonts.googleapis.com/css"}, refused
