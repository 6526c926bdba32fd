"""No key anywhere, across every flow of the served dashboard and the CLI.

A browser session (real IAM keys on an auth-enforcing moto, ``auth_moto.py``) goes through
every flow: a wrong secret, connecting with a key file on the server, with an uploaded key file
and with pasted keys, then list, select, download, last-frame thumbnail, load, frames, preview,
batch, and a file that is not HDF5. Meanwhile everything is recorded:

* every log record of every logger at DEBUG (root, botocore, urllib3, s3fs, fsspec, bokeh,
  panel, tornado, asyncio, dashboard), including Panel's own event log, formatted with
  tracebacks;
* every websocket frame the page sent or received (``page.on("websocket")``) and every URL the
  page requested;
* the page (HTML and every text, attribute and input value, shadow DOMs included) after each
  step;
* every file written: downloads, processed frames, provenance JSON;
* the CLI's output (``ls``, ``info``, ``process``, and an error with a wrong key file).

None may contain the access key or the secret key, nor any 8-character piece of either.
"""

from __future__ import annotations

import json
import logging

import pytest
from auth_moto import auth_moto_server
from browser_fixtures import *  # noqa: F403
from faultproxy import write_stack
from served_sessions import record_sessions

from dashboard.app import RunningServer
from dashboard.config import Settings

BUCKET = "secret-bucket"
KEY = "scans/run_secret.h5"
NOT_HDF5 = "scans/not_really.h5"
N = 26
LOGGERS = ("", "botocore", "boto3", "urllib3", "s3fs", "fsspec", "aiobotocore", "bokeh",
           "panel", "tornado", "asyncio", "dashboard", "param", "holoviews")


def fragments(*secrets: str, size: int = 8) -> set[str]:
    """Every ``size``-character piece of each secret."""
    return {s[i:i + size] for s in secrets for i in range(len(s) - size + 1)}


class Leaks:
    """Collects texts by where they came from and says which carry a fragment of a key."""

    def __init__(self, *secrets: str):
        self.pieces = fragments(*secrets)
        self.secrets = secrets
        self.texts: dict[str, list[str]] = {}

    def add(self, where: str, data) -> None:
        if isinstance(data, bytes):
            data = data.decode("latin-1")
        self.texts.setdefault(where, []).append(data)

    def found(self, allowed=lambda where, text: False) -> dict[str, list[str]]:
        hits = {}
        for where, texts in self.texts.items():
            bad = [t for t in texts if any(p in t for p in self.pieces)
                   and not allowed(where, t)]
            if bad:
                hits[where] = [_around(t, self.pieces) for t in bad[:3]]
        return hits

    def count(self, where: str) -> int:
        return len(self.texts.get(where, []))


def _around(text: str, pieces: set[str]) -> str:
    for piece in pieces:
        at = text.find(piece)
        if at >= 0:
            return text[max(0, at - 120):at + 60].replace(piece, "<KEY PIECE>")
    return ""


class Capture(logging.Handler):
    def __init__(self, leaks: Leaks):
        super().__init__(level=logging.DEBUG)
        self.leaks = leaks
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.leaks.add(f"log {record.name}", self.format(record))
        except Exception:  # noqa: BLE001 - a record that cannot format is not our leak
            self.leaks.add(f"log {record.name}", str(record.msg))


@pytest.fixture
def debug_everything():
    """Every logger at DEBUG with a capturing handler on each (some do not propagate)."""
    saved = []
    handlers = []

    def install(leaks: Leaks) -> None:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            handler = Capture(leaks)
            saved.append((logger, logger.level))
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)
            handlers.append((logger, handler))

    yield install
    for logger, handler in handlers:
        logger.removeHandler(handler)
    for logger, level in saved:
        logger.setLevel(level)


@pytest.fixture(scope="module")
def alice(tmp_path_factory):
    with auth_moto_server({"alice": [BUCKET]}) as server:
        folder = tmp_path_factory.mktemp("secret-files")
        write_stack(folder / "run.h5", n=N, h=32, w=40)
        s3 = server.s3("alice")
        s3.client.upload_file(str(folder / "run.h5"), BUCKET, KEY)
        s3.client.put_object(Bucket=BUCKET, Key=NOT_HDF5, Body=b"not an HDF5 file " * 64)
        yield server


def page_state(leaks: Leaks, page, step: str, check=None) -> None:
    if check is not None:
        check(step)
    leaks.add(f"page text after {step}", everything_on_the_page(page))  # noqa: F405
    leaks.add(f"page HTML after {step}", page.content())


@pytest.mark.timeout(300)
def test_no_key_in_logs_websocket_page_urls_files_or_cli(browser, alice, tmp_path,
                                                          debug_everything, capsys,
                                                          monkeypatch):
    from playwright.sync_api import expect

    by_id, _ = record_sessions(monkeypatch)
    left_in_state = []

    def state_keys(step: str) -> None:
        for session in list(by_id.values()):
            if session.browser.credentials_text:
                left_in_state.append(step)

    creds = alice.credentials("alice")
    leaks = Leaks(creds.access_key, creds.secret_key)
    debug_everything(leaks)
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps({"access_key": creds.access_key,
                                    "secret_key": creds.secret_key}))
    key_file.chmod(0o600)
    downloads, processed = tmp_path / "downloads", tmp_path / "processed"

    with RunningServer(Settings(endpoint=alice.endpoint)) as server:
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)  # noqa: F405
        page = context.new_page()

        def on_websocket(ws) -> None:
            ws.on("framesent", lambda payload: leaks.add("websocket sent", payload))
            ws.on("framereceived", lambda payload: leaks.add("websocket received", payload))

        page.on("websocket", on_websocket)
        page.on("request", lambda request: leaks.add("URL", request.url))
        try:
            page.goto(server.url)
            page.get_by_role("button", name="Connect").wait_for()
            connect_status = status(page, "echo-connect-status")  # noqa: F405

            # 1. A wrong secret: refused, with a message.
            wrong = type(creds)(access_key=creds.access_key,
                                secret_key=creds.secret_key[::-1], source="wrong")
            leaks.pieces |= fragments(wrong.secret_key)
            connect(page, endpoint=alice.endpoint, credentials=wrong,  # noqa: F405
                    expect="keys were rejected")
            page_state(leaks, page, "wrong secret", state_keys)

            # 2. A key file on the server.
            page.get_by_label("Credentials file (on the server)").fill(str(key_file))
            click(page, "Connect")  # noqa: F405
            expect(connect_status).to_contain_text("Connected to")
            page_state(leaks, page, "key file", state_keys)
            page.get_by_label("Credentials file (on the server)").fill("")
            # (A refused connect between the good ones: each "Connected to" is then fresh.)
            connect(page, endpoint=alice.endpoint, credentials=wrong,  # noqa: F405
                    expect="keys were rejected")

            # 3. An uploaded key file.
            page.locator("input[type=file]").first.set_input_files(str(key_file))
            expect(connect_status).to_contain_text("Key file received")
            click(page, "Connect")  # noqa: F405
            expect(connect_status).to_contain_text("Connected to")
            page_state(leaks, page, "upload", state_keys)
            connect(page, endpoint=alice.endpoint, credentials=wrong,  # noqa: F405
                    expect="keys were rejected")

            # 4. Pasted keys, then every flow.
            connect(page, endpoint=alice.endpoint, credentials=creds)  # noqa: F405
            click(page, "List Objects")  # noqa: F405
            expect(status(page, "echo-browse-status")).to_contain_text("Listed")  # noqa: F405
            tick(page, KEY)  # noqa: F405
            field = page.locator(".bk-input-group", has_text="Download folder").locator("input")
            field.first.fill(str(downloads))
            field.first.press("Enter")
            click(page, "Download Selected")  # noqa: F405
            expect(status(page, "echo-download-status")).to_contain_text(  # noqa: F405
                "1 downloaded")
            click(page, "View Last Frame")  # noqa: F405
            expect(status(page, "echo-thumbnail-title")).to_contain_text(  # noqa: F405
                "run_secret.h5")
            page_state(leaks, page, "browse", state_keys)

            tab(page, "Frames")  # noqa: F405
            click(page, "Load Selected H5 File")  # noqa: F405
            label = status(page, "echo-frame-label")  # noqa: F405
            expect(label).to_have_text(f"Frame 0 of {N - 1}")
            click(page, "Next")  # noqa: F405
            expect(label).to_have_text(f"Frame 1 of {N - 1}")
            click(page, "Last")  # noqa: F405
            expect(label).to_have_text(f"Frame {N - 1} of {N - 1}")
            page_state(leaks, page, "frames")

            tab(page, "Process")  # noqa: F405
            out = page.locator(".bk-input-group", has_text="Output folder").locator("input")
            out.first.fill(str(processed))
            out.first.press("Enter")
            click(page, "Preview Last Frame")  # noqa: F405
            expect(status(page, "echo-preview-title")).to_contain_text(  # noqa: F405
                f"Frame {N - 1}")
            click(page, "Batch Process & Save")  # noqa: F405
            expect(status(page, "echo-process-status")).to_have_text(  # noqa: F405
                "Batch finished.")
            page_state(leaks, page, "process")

            # An error path: a file that is not HDF5.
            tab(page, "1 · Browse")  # noqa: F405
            tick(page, KEY, selected=0, on=False)  # noqa: F405
            tick(page, NOT_HDF5)  # noqa: F405
            tab(page, "Frames")  # noqa: F405
            click(page, "Load Selected H5 File")  # noqa: F405
            expect(status(page, "echo-viewer-status")).to_contain_text(  # noqa: F405
                "not_really.h5")
            page_state(leaks, page, "not HDF5")
            shot(page, "secrets-after-every-flow")  # noqa: F405
        finally:
            context.close()

    # Files written by the flows: downloads, processed frames, provenance.
    written = [p for folder in (downloads, processed) for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in written) and any(p.suffix == ".png" for p in written)
    for path in written:
        leaks.add(f"file {path.name}", path.read_bytes())

    # The CLI: list, info, process, and a refused key.
    from dashboard.cli import main

    common = ["--endpoint", alice.endpoint, "--credentials", str(key_file)]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps({"access_key": creds.access_key,
                                    "secret_key": wrong.secret_key}))
    bad_file.chmod(0o600)
    runs = [
        ["ls", f"s3://{BUCKET}/", *common],
        ["info", f"s3://{BUCKET}/{KEY}", *common],
        ["process", f"s3://{BUCKET}/{KEY}", "--start", "20", "--end", "21",
         "--out", str(tmp_path / "cli-out"), *common],
        ["ls", f"s3://{BUCKET}/", "--endpoint", alice.endpoint, "--credentials", str(bad_file),
         "--debug"],
        ["info", f"s3://{BUCKET}/{NOT_HDF5}", *common, "--debug"],
    ]
    codes = []
    for argv in runs:
        try:
            codes.append(main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
        except Exception:  # noqa: BLE001 - --debug shows the traceback: it is output too
            import traceback

            codes.append("raised")
            leaks.add(f"CLI {argv[0]} traceback", traceback.format_exc())
        output = capsys.readouterr()
        leaks.add(f"CLI {argv[0]} stdout", output.out)
        leaks.add(f"CLI {argv[0]} stderr", output.err)
    assert codes[:3] == [0, 0, 0] and codes[3] and codes[4], codes
    for path in (tmp_path / "cli-out").rglob("*"):
        if path.is_file():
            leaks.add(f"CLI file {path.name}", path.read_bytes())

    # The recording really saw the traffic it checks.
    assert leaks.count("websocket sent") > 20 and leaks.count("websocket received") > 20
    assert leaks.count("URL") > 5
    assert any(w.startswith("log botocore") for w in leaks.texts)
    assert any(w.startswith("log bokeh") or w.startswith("log tornado") for w in leaks.texts)
    print("\n" + ", ".join(f"{w}: {len(t)}" for w, t in sorted(leaks.texts.items())
                           if not w.startswith(("page", "file", "CLI file"))))
    # The one place keys may travel: the browser sending what the user pasted into the keys
    # box to the server (the PasswordInput's value; https in production). Never back.
    pasted = {keys_json(creds), keys_json(wrong)}  # noqa: F405

    def typed_keys(where: str, text: str) -> bool:
        if where != "websocket sent":
            return False
        try:
            events = json.loads(text)["events"]
        except (ValueError, KeyError, TypeError):
            return False
        return all(
            e.get("kind") == "ModelChanged" and e.get("attr") in ("value", "value_input")
            and isinstance(e.get("new"), str) and any(p.startswith(e["new"]) for p in pasted)
            for e in events if any(piece in json.dumps(e) for piece in leaks.pieces))

    assert not leaks.found(typed_keys), (leaks.found(typed_keys), left_in_state)
    assert not left_in_state


@pytest.mark.timeout(120)
def test_keys_box_is_empty_after_a_refused_connect(browser, alice):
    creds = alice.credentials("alice")
    wrong = type(creds)(access_key=creds.access_key, secret_key=creds.secret_key[::-1],
                        source="wrong")
    with RunningServer(Settings(endpoint=alice.endpoint)) as server:
        page = new_page(browser, server.url)  # noqa: F405
        try:
            connect(page, endpoint=alice.endpoint, credentials=wrong,  # noqa: F405
                    expect="keys were rejected")
            box = page.get_by_placeholder('{"access_key"')
            assert box.input_value() == ""
            assert wrong.secret_key not in everything_on_the_page(page)  # noqa: F405
        finally:
            page.context.close()
