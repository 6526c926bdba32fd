"""The README's notebook cell, for real: in a Jupyter kernel (nbclient), and in JupyterLab in
Chromium with every request outside 127.0.0.1 refused, driving the dashboard it renders.

The cell is read from README.md (so the two cannot drift). Its key file ``~/.echo-keys.json``
is written into a temporary HOME; the only change to the cell is the ``endpoint=`` its comment
offers, pointed at the moto server. Kernels and the Jupyter server import this checkout
(``PYTHONPATH``), whatever is installed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser_fixtures import browser, tick  # noqa: F401 - the fixture
from conftest import ACCESS_KEY, SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def readme_cell() -> str:
    """The ```python block after "**In a notebook**" in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"\*\*In a notebook\*\*.*?```python\n(.*?)```", text, re.S)
    assert found, "README.md has no notebook cell after **In a notebook**"
    return found.group(1)


def cell_for(endpoint: str) -> str:
    """The README cell with ``endpoint=`` given (as its comment says), nothing else changed."""
    cell = readme_cell()
    assert cell.count("credentials_path=") == 1
    return cell.replace("credentials_path=", f'endpoint="{endpoint}", credentials_path=')


def user_home(tmp_path: Path) -> Path:
    """A HOME with the key file the README cell names, readable by its owner only."""
    home = tmp_path / "home"
    home.mkdir()
    keys = home / ".echo-keys.json"
    keys.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}))
    keys.chmod(0o600)
    return home


def kernel_env(home: Path) -> dict:
    env = {**os.environ, "HOME": str(home), "JUPYTER_PLATFORM_DIRS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env.pop(name, None)
    return env


def notebook(cell: str):
    import nbformat

    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(cell)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}})


@pytest.mark.slow
def test_the_readme_cell_runs_verbatim_in_a_kernel(tmp_path, moto_server, demo):
    from nbclient import NotebookClient

    home = user_home(tmp_path)
    nb = notebook(cell_for(moto_server.endpoint))
    client = NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env(home))  # raises CellExecutionError on any error

    outputs = nb.cells[0].outputs
    assert [o for o in outputs if o.output_type == "error"] == []
    assert [o for o in outputs if o.output_type == "stream" and o.name == "stderr"] == []
    results = [o for o in outputs if o.output_type == "execute_result"]
    assert len(results) == 1
    data = results[0].data
    # Panel's notebook output (a Bokeh document that the PyViz extension renders) of the viewer.
    assert "application/vnd.holoviews_exec.v0+json" in data
    assert "ECHO S3 Viewer" in data["text/html"] and "List Objects" in data["text/html"]
    # Bokeh's and Panel's scripts came inline with the output, not as URLs to a CDN.
    loads = [o.data.get("application/javascript", "") for o in outputs
             if o.output_type == "display_data"]
    assert max(map(len, loads)) > 1_000_000, "Bokeh's scripts are not inline in the output"


@pytest.mark.slow
def test_the_readme_array_recipe_runs_in_a_kernel(tmp_path, moto_server, demo):
    """README's "The stack as an array" cell, as written but for ``BUCKET`` (the key file names
    the test endpoint, as a key file may): indexing, a dask reduction, xarray with axes."""
    from nbclient import NotebookClient

    from dashboard.demo.store import DEMO_BUCKET, NEXUS_KEY

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"\*\*The stack as an array\*\*.*?```python\n(.*?)```", text, re.S)
    assert found, "README.md has no cell after **The stack as an array**"
    cell = found.group(1)
    assert f"s3://BUCKET/{NEXUS_KEY}" in cell
    cell = cell.replace("s3://BUCKET/", f"s3://{DEMO_BUCKET}/")
    home = user_home(tmp_path)
    keys = json.loads((home / ".echo-keys.json").read_text())
    (home / ".echo-keys.json").write_text(json.dumps({**keys, "endpoint": moto_server.endpoint}))
    check = ("import numpy as np\n"
             "expected = np.stack([stack.frame(i) for i in range(10, 30, 5)])[:, 64:192, ::2]\n"
             "assert np.array_equal(part, expected)\n"
             "assert np.allclose(mean_frame, np.mean([stack.frame(i) for i in range(len(stack))],"
             " axis=0))\n"
             "print(scan.dims, list(scan.coords))")
    nb = notebook(cell)
    nb.cells.append(__import__("nbformat").v4.new_code_cell(check))
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=kernel_env(home))
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
    assert printed.strip() == "('frame', 'row', 'column') ['time']"


# -- JupyterLab in Chromium, offline -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``jupyter lab`` (or ``jupyter server``) on 127.0.0.1 with a token, in a temporary root."""

    def __init__(self, root: Path, home: Path, app: str = "lab", extra=(), env=None):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log = root / f"jupyter-{app}.log"
        args = [sys.executable, "-m", "jupyter", app, "--no-browser", "--ip=127.0.0.1",
                f"--port={self.port}", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}", *extra]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(args, cwd=root, env=env or kernel_env(home),
                                            stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}api/status?token={self.token}", timeout=2):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Jupyter did not start:\n{self.log.read_text()[-3000:]}")
            try:  # waits on the process: returns at once if it has died
                self.process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"Jupyter exited:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def offline(context) -> list[str]:
    """Refuse every request to a host other than 127.0.0.1/localhost; returns the refused."""
    refused: list[str] = []

    def route(r):
        host = re.match(r"^[a-z]+://\[?([^/:\]]+)", r.request.url)
        if host and host.group(1) in LOCAL_HOSTS:
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    return refused


@pytest.mark.browser
@pytest.mark.slow
def test_the_readme_cell_in_jupyterlab_offline(browser, tmp_path, moto_server, demo):
    from browser_fixtures import TIMEOUT_MS, shot
    from playwright.sync_api import expect

    from dashboard.demo.store import SHORT_KEY

    home = user_home(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    import nbformat

    nbformat.write(notebook(cell_for(moto_server.endpoint)), work / "readme.ipynb")
    server = JupyterServer(work, home, "lab", ["--LabApp.news_url=",
                           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"])
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    context.set_default_timeout(TIMEOUT_MS)
    refused = offline(context)
    errors: list[str] = []
    try:
        server.wait_ready()
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(e.message))
        page.goto(f"{server.url}lab/tree/readme.ipynb?token={server.token}")
        page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.locator('.jp-Toolbar [data-command="notebook:run-cell-and-select-next"]').first.click()

        # The cell's output: the dashboard (or a traceback, which fails at once).
        list_objects = page.get_by_role("button", name="List Objects", exact=True)
        failed = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        expect(list_objects.or_(failed).first).to_be_visible(timeout=120_000)
        assert failed.count() == 0, failed.first.inner_text()
        expect(page.locator(".echo-connect-status").first).to_contain_text(
            "Connected to", timeout=60_000)  # the key file in ~ connected it
        shot(page, "notebook-01-connected")

        # Other tests' buckets on the shared test server may sort before the demo's.
        page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
            .select_option("echo-demo")
        list_objects.click()
        expect(page.locator(".echo-count").first).to_contain_text("objects shown")
        page.locator(".bk-input-group", has_text="Directory").locator("select").first \
            .select_option("beamline/2026-11/")
        expect(page.locator(".tabulator-row").filter(has_not_text="beamline/2026-11/")) \
            .to_have_count(0)
        tick(page, SHORT_KEY)
        page.locator(".bk-tab", has_text="Frames").first.click()
        page.get_by_role("button", name="Load Selected H5 File", exact=True).click()
        label = page.locator(".echo-frame-label").first
        expect(label).to_have_text("Frame 0 of 11", timeout=60_000)
        canvas = page.locator(".echo-frame canvas").first
        expect(canvas).to_be_visible()
        first = wait_for_image(page, canvas)
        shot(page, "notebook-02-frame-0")

        page.get_by_role("button", name="Next", exact=True).click()
        expect(label).to_have_text("Frame 1 of 11")
        deadline = time.monotonic() + 30
        while canvas.screenshot() == first:
            assert time.monotonic() < deadline, "the frame's pixels did not change after Next"
            page.wait_for_timeout(100)
        shot(page, "notebook-03-frame-1")
    except Exception:
        shot(page, "notebook-failed")
        raise
    finally:
        context.close()
        server.stop()

    assert errors == [], errors
    # Nothing the page runs came from outside: every script was served by Jupyter or inline.
    # (Known gap: widgets that Panel builds after the first render still name Panel's style
    # sheets on its CDN; the page works without them.)
    scripts = [url for url in refused if not url.split("?")[0].endswith(".css")]
    assert scripts == [], scripts
    sheets = {url.split("?")[0].rsplit("/dist/", 1)[-1] for url in refused}
    assert sheets <= {"css/loading.css", "css/markdown.css", "bundled/theme/default.css",
                      "bundled/theme/native.css"}, sheets


def wait_for_image(page, canvas, timeout: float = 30.0) -> bytes:
    """The canvas's pixels once they show an image (many grey levels), not an empty plot."""
    import io

    from PIL import Image

    deadline = time.monotonic() + timeout
    while True:
        pixels = canvas.screenshot()
        levels = Image.open(io.BytesIO(pixels)).convert("L").getcolors(maxcolors=256) or []
        if len(levels) > 40:
            return pixels
        assert time.monotonic() < deadline, "the frame shows no image"
        page.wait_for_timeout(100)
