"""Data never reaches outside its object (issue 14, item 4).

A crafted HDF5 object in a user's own bucket names files on the server: external raw storage
pointing at ``/proc/self/environ`` and at a file in another user's area, external links and
virtual datasets to a local file (absolute, and relative names that HDF5's
``HDF5_EXTFILE_PREFIX`` / ``HDF5_EXT_PREFIX`` / ``HDF5_VDS_PREFIX`` would find in that area).
Served from moto and loaded, inspected, measured (ROI) and processed: every such dataset is
refused with one sentence, no frame, ROI number, tree or CLI output carries the secret bytes,
and the other user's files are never opened (their access time does not move).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ACCESS_KEY, ROOT, SECRET_KEY

from dashboard.cli import main
from dashboard.errors import EchoError
from dashboard.hdf5.describe import describe
from dashboard.hdf5.errors import LinkUnreachable, OutsideObject
from dashboard.hdf5.stack import open_stack
from dashboard.processing.batch import plan_batch
from dashboard.state.provider import MemoryProvider
from dashboard.state.session import Session

SHAPE = (1, 8, 8)  # 64 bytes of uint8: one frame of secret bytes if it were ever read
AREA_SECRET = b"ALICE-PRIVATE-" + bytes(range(65, 115))  # 64 bytes
NORMAL = "/entry/data/data"
HOSTILE = {  # dataset -> what HDF5 would read on the server
    "/ext_environ": "external storage: /proc/self/environ",
    "/ext_area": "external storage: a file in another user's area",
    "/ext_relative": "external storage, relative name (HDF5_EXTFILE_PREFIX)",
    "/elink": "external link to a local file",
    "/elink_relative": "external link, relative name (HDF5_EXT_PREFIX)",
    "/via_soft": "soft link through the external link",
    "/vds": "virtual dataset over a local file",
    "/vds_relative": "virtual dataset, relative name (HDF5_VDS_PREFIX)",
}


def environ_bytes() -> bytes:
    return Path("/proc/self/environ").read_bytes()[: SHAPE[1] * SHAPE[2]]


@pytest.fixture(scope="module")
def area(tmp_path_factory) -> Path:
    """Another user's area on the server: a raw secret and an HDF5 file of secret pixels."""
    folder = tmp_path_factory.mktemp("alice-area")
    (folder / "secret.bin").write_bytes(AREA_SECRET)
    with h5py.File(folder / "other.h5", "w") as f:
        f["data"] = np.frombuffer(AREA_SECRET, np.uint8).reshape(SHAPE)
    return folder


def craft(path: Path, area: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(NORMAL, data=np.arange(3 * 64, dtype=np.uint8).reshape(3, 8, 8) % 50)
        nbytes = int(np.prod(SHAPE))
        for name, target in (("ext_environ", "/proc/self/environ"),
                             ("ext_area", str(area / "secret.bin")),
                             ("ext_relative", "secret.bin")):
            f.create_dataset(name, shape=SHAPE, dtype="u1", external=[(target, 0, nbytes)])
        f["elink"] = h5py.ExternalLink(str(area / "other.h5"), "/data")
        f["elink_relative"] = h5py.ExternalLink("other.h5", "/data")
        f["via_soft"] = h5py.SoftLink("/elink")
        for name, source in (("vds", str(area / "other.h5")), ("vds_relative", "other.h5")):
            layout = h5py.VirtualLayout(shape=SHAPE, dtype="u1")
            layout[:] = h5py.VirtualSource(source, "/data", shape=SHAPE)
            f.create_virtual_dataset(name, layout, fillvalue=0)
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, area) -> bytes:
    path = craft(tmp_path_factory.mktemp("hostile") / "hostile.h5", area)
    # The file really points there: plain h5py on the local copy reads the secrets.
    with h5py.File(path) as f:
        assert f["/ext_area"][()].tobytes() == AREA_SECRET
        assert f["/ext_environ"][()].tobytes() == environ_bytes()
        assert f["/vds"][()].tobytes() == AREA_SECRET
    return path.read_bytes()


@pytest.fixture
def prefixes(monkeypatch, area):
    """HDF5's prefix variables point at the other user's area (they only redirect names)."""
    for name in ("HDF5_EXTFILE_PREFIX", "HDF5_EXT_PREFIX", "HDF5_VDS_PREFIX"):
        monkeypatch.setenv(name, str(area))


@pytest.fixture
def untouched(area):
    """Assert afterwards that nothing opened the other user's files (their atime is set before
    their mtime, so a read moves it even on a ``relatime`` mount)."""
    files = [area / "secret.bin", area / "other.h5"]
    past = time.time() - 3600
    for path in files:
        os.utime(path, (past, past + 60))
    yield
    assert [path.stat().st_atime for path in files] == [past] * len(files), \
        "a file in the other user's area was opened"


@pytest.fixture
def url(s3, bucket, hostile) -> str:
    s3.client.put_object(Bucket=bucket, Key="scans/hostile.h5", Body=hostile)
    return f"s3://{bucket}/scans/hostile.h5"


def secrets() -> list[bytes]:
    return [AREA_SECRET[:16], environ_bytes()[:16]]


def carries_secret(data) -> bool:
    blob = data if isinstance(data, bytes) else (
        np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray)
        else json.dumps(data, default=str).encode())
    return any(s in blob for s in secrets())


def test_every_path_refuses_with_one_sentence_and_reads_nothing(s3, url, prefixes, untouched):
    messages = {}
    for dataset in HOSTILE:
        with pytest.raises((OutsideObject, LinkUnreachable)) as info:
            open_stack(url, dataset, s3=s3)
        messages[dataset] = str(info.value)
        with pytest.raises(EchoError):  # processing reads through the same checks
            plan_batch(url, dataset=dataset, start=20, s3=s3, out="s3://nowhere/x")
    for dataset, text in messages.items():
        assert "\n" not in text and len(text) < 300 and dataset.lstrip("/") in text, text
        assert not carries_secret(text.encode())
    assert "outside the object" in messages["/ext_environ"]
    assert "cannot be reached" in messages["/via_soft"]
    # The tree lists them (as links or datasets) but reads none of their bytes.
    doc = describe(url, s3=s3)
    assert doc["default_stack"] == NORMAL and not carries_secret(doc)
    kinds = {n["path"]: n["kind"] for n in doc["nodes"]}
    assert kinds["/elink"] == "external_link" and kinds["/via_soft"] == "soft_link"
    with open_stack(url, s3=s3) as stack:  # the object's own pixels are fine
        frames = list(stack.frames())
    assert stack.dataset == NORMAL and not any(carries_secret(f) for f in frames)
    print("\nrefusals:\n" + "\n".join(f"  {d}: {t}" for d, t in messages.items()))


def test_the_dashboard_says_why_and_shows_only_the_objects_pixels(hostile, prefixes, untouched):
    session = Session(provider=MemoryProvider({"mine": {"hostile.h5": hostile}}))
    viewer, analysis = session.viewer, session.analysis
    try:
        assert session.wait(30) and session.browser.connected
        session.browser.param.trigger("list_objects")
        assert session.wait(30)
        session.browser.selection = ["hostile.h5"]
        viewer.param.trigger("load")
        assert viewer.wait_for_frame(0), viewer.status
        shown = [viewer.frame.copy()]
        for dataset in HOSTILE:
            viewer.dataset = dataset
            assert session.wait(30)
            assert viewer.stack.dataset == NORMAL  # the refused dataset never replaced it
            assert dataset.lstrip("/") in viewer.status and "\n" not in viewer.status
            assert ("outside the object" in viewer.status
                    or "cannot be reached" in viewer.status), viewer.status
            viewer.index = (viewer.index + 1) % 3
            assert viewer.wait_for_frame(viewer.index)
            shown.append(viewer.frame.copy())
        assert analysis.start_series() and analysis.wait_series(60)
        assert not any(carries_secret(f) for f in shown)
        assert not carries_secret(analysis.csv_text().encode())
        assert not carries_secret(viewer.tree)
    finally:
        session.close()
        assert session.wait_released(30)


def test_cli_info_and_process_refuse(capsys, tmp_path, moto_server, url, prefixes, untouched):
    keyfile = tmp_path / "keys.json"
    keyfile.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                   "endpoint": moto_server.endpoint}))
    keyfile.chmod(0o600)
    assert main(["info", url, "--json", "--credentials", str(keyfile)]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out)["default_stack"] == NORMAL and not carries_secret(out.encode())
    for dataset in ("/ext_environ", "/vds"):
        code = main(["process", url, "--dataset", dataset, "--out", str(tmp_path / "out"),
                     "--credentials", str(keyfile)])
        _, err = capsys.readouterr()
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert not carries_secret(err.encode())
    assert not (tmp_path / "out").exists()


def test_plugin_folders_others_can_write_are_not_searched(tmp_path):
    """``HDF5_PLUGIN_PATH`` naming a folder another account can write to (a shared /tmp
    folder, a user's area): HDF5 would load any library put there when a file names an unknown
    filter. Dropped from the search path when the HDF5 layer loads; a private folder stays."""
    shared, private = tmp_path / "shared-plugins", tmp_path / "private-plugins"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    private.mkdir(mode=0o755)
    code = ("import h5py.h5pl as p, dashboard.hdf5.source; "
            "print([p.get(i).decode() for i in range(p.size())])")
    env = dict(os.environ, HDF5_PLUGIN_PATH=f"{shared}:{private}",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    searched = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert str(shared) not in searched and str(private) in searched
    assert "writable by other accounts" in done.stderr


def test_in_memory_objects_refuse_the_same_way(hostile, untouched):
    """The in-memory provider (RangeFile, like S3) refuses the same way, without prefixes."""
    provider = MemoryProvider({"b": {"h.h5": hostile}})
    for dataset in HOSTILE:
        with pytest.raises((OutsideObject, LinkUnreachable)):
            provider.stack("s3://b/h.h5", dataset)
