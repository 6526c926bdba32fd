"""The command line against the moto server: output, exit codes, one-line errors, no secrets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ACCESS_KEY, ROOT, SECRET_KEY
from dashboard.cli import main


@pytest.fixture
def keyfile(tmp_path, moto_server):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                "endpoint": moto_server.endpoint}))
    path.chmod(0o600)
    return path


@pytest.fixture
def filled(s3, bucket):
    for key, body in [("raw/scan_001.h5", b"a" * 10), ("raw/scan_002.H5", b"b" * 30),
                      ("raw/notes.txt", b"c"), ("proc/out.nxs", b"d" * 20)]:
        s3.client.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_json_lists_hdf5_objects(capsys, keyfile, filled):
    code, out, err = run(capsys, "ls", f"s3://{filled}", "--json", "--credentials", keyfile)
    assert code == 0, err
    listed = json.loads(out)
    assert [o["key"] for o in listed] == ["proc/out.nxs", "raw/scan_001.h5", "raw/scan_002.H5"]
    assert set(listed[0]) == {"key", "size", "last_modified", "etag"}
    assert listed[1]["size"] == 10


def test_ls_all_prefix_and_limit(capsys, keyfile, filled):
    code, out, err = run(capsys, "ls", f"s3://{filled}/raw/", "--all", "--json", "--limit", "2",
                         "--credentials", keyfile)
    assert code == 0
    assert [o["key"] for o in json.loads(out)] == ["raw/notes.txt", "raw/scan_001.h5"]
    assert "first 2 objects shown; more exist" in err


def test_ls_table_and_buckets(capsys, keyfile, filled):
    code, out, _ = run(capsys, "ls", f"s3://{filled}", "--credentials", keyfile)
    assert code == 0 and "raw/scan_001.h5" in out and "10 B" in out
    code, out, _ = run(capsys, "ls", "--credentials", keyfile)
    assert code == 0 and filled in out.split()


def test_missing_bucket_is_one_line_exit_1(capsys, keyfile):
    code, out, err = run(capsys, "ls", "s3://no-such-bucket-here", "--credentials", keyfile)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "does not exist" in err
    assert "Traceback" not in err


def test_bad_credentials_file_is_one_line(capsys, tmp_path):
    bad = tmp_path / "keys.json"
    bad.write_text('{"access_key": "AKIAX", "secret_key": ')
    code, _, err = run(capsys, "ls", "s3://x", "--credentials", bad)
    assert code == 1 and err.startswith("error: ") and "not valid JSON" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["download", "s3://b/k"])  # --out missing
    assert info.value.code == 2


def test_debug_shows_the_traceback(keyfile):
    with pytest.raises(Exception, match="does not exist"):
        main(["ls", "s3://no-such-bucket-here", "--credentials", str(keyfile), "--debug"])


def test_download_and_resume(capsys, keyfile, filled, tmp_path):
    out_dir = tmp_path / "out"
    urls = [f"s3://{filled}/raw/scan_001.h5", f"s3://{filled}/proc/out.nxs"]
    code, _, err = run(capsys, "download", *urls, "--out", out_dir, "--credentials", keyfile)
    assert code == 0, err
    assert (out_dir / "raw" / "scan_001.h5").read_bytes() == b"a" * 10
    assert (out_dir / "proc" / "out.nxs").read_bytes() == b"d" * 20
    code, _, err = run(capsys, "download", *urls, "--out", out_dir, "--credentials", keyfile)
    assert code == 0 and err.count("skipped") == 2


def test_download_failure_exits_1_and_keeps_the_rest(capsys, keyfile, filled, tmp_path):
    urls = [f"s3://{filled}/raw/scan_001.h5", f"s3://{filled}/raw/gone.h5"]
    code, _, err = run(capsys, "download", *urls, "--out", tmp_path, "--credentials", keyfile)
    assert code == 1
    assert (tmp_path / "raw" / "scan_001.h5").exists() and not (tmp_path / "raw" / "gone.h5").exists()
    assert err.rstrip().splitlines()[-1] == "error: 1 of 2 downloads failed (see above)."


def test_no_secret_in_any_output(capsys, keyfile, filled, tmp_path, caplog):
    caplog.set_level("DEBUG")
    for argv in (["ls", f"s3://{filled}", "--all"], ["ls", "s3://no-such-bucket-here"],
                 ["download", f"s3://{filled}/raw/scan_001.h5", "--out", str(tmp_path)]):
        _, out, err = run(capsys, *argv, "--credentials", keyfile)
        for text in (out, err, caplog.text):
            assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_console_script_is_installed():
    exe = shutil.which("echo-s3-viewer", path=str(ROOT / ".venv" / "bin")) or shutil.which("echo-s3-viewer")
    command = [exe] if exe else [sys.executable, "-m", "dashboard"]
    result = subprocess.run([*command, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("echo-s3-viewer ")


@pytest.fixture
def stack_object(s3, bucket, testdata):
    key = "diamond/k11_imaging.h5"
    s3.client.upload_file(str(testdata / "diamond_k11_diad_imaging.h5"), bucket, key)
    return f"s3://{bucket}/{key}"


def test_info_json_names_the_default_stack(capsys, keyfile, stack_object):
    code, out, err = run(capsys, "info", stack_object, "--json", "--credentials", keyfile)
    assert code == 0, err
    info = json.loads(out)
    assert info["default_stack"] == "/entry/detector/detector"
    node = next(n for n in info["nodes"] if n["path"] == "/entry/detector/detector")
    assert node["kind"] == "dataset" and node["shape"] == [3201, 22, 26] and node["dtype"] == "uint16"
    code, out, _ = run(capsys, "info", stack_object, "--credentials", keyfile)
    assert code == 0 and "/entry/detector/detector" in out


def test_info_on_a_text_file_is_one_line(capsys, keyfile, s3, bucket):
    s3.client.put_object(Bucket=bucket, Key="fake.h5", Body=b"this is not an HDF5 file at all")
    code, out, err = run(capsys, "info", f"s3://{bucket}/fake.h5", "--credentials", keyfile)
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert "not an HDF5 file" in err


def test_process_writes_frames_and_provenance(capsys, keyfile, stack_object, tmp_path):
    out_dir = tmp_path / "results"
    code, _, err = run(capsys, "process", stack_object, "--start", 20, "--end", 24, "--step", 2,
                       "--sigma", 1.5, "--format", "npy", "--out", out_dir, "--credentials", keyfile)
    assert code == 0, err
    written = sorted(p.name for p in out_dir.glob("*.npy"))
    assert written == ["k11_imaging_000020.npy", "k11_imaging_000022.npy", "k11_imaging_000024.npy"]
    provenance = json.loads((out_dir / "k11_imaging_processing.json").read_text())
    assert provenance["parameters"]["sigma"] == 1.5 and provenance["status"] == "complete"
    assert provenance["frames_written"] == [20, 22, 24]
    assert SECRET_KEY not in (out_dir / "k11_imaging_processing.json").read_text()
    assert "Processed 3 of 3 frames" in err


def test_process_refuses_start_below_20(capsys, keyfile, stack_object, tmp_path):
    code, _, err = run(capsys, "process", stack_object, "--start", 5, "--end", 30,
                       "--out", tmp_path / "never", "--credentials", keyfile)
    assert code == 1 and err.startswith("error: ") and "at least 20" in err
    assert not (tmp_path / "never").exists()


# -- --demo: the embedded demo store, no keys typed --------------------------------------------


def _cli(*argv, cwd):
    """The console command in a process of its own: moto's state is per process, and the
    full-scale demo must not meet the suite's small-scale ``echo-demo`` bucket."""
    return subprocess.run([sys.executable, "-m", "dashboard.cli", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_demo_flag_lists_and_processes_without_keys(tmp_path):
    scan = "s3://echo-demo/beamline/2026-11/scan_0001.nxs"
    listed = _cli("ls", "--demo", "s3://echo-demo/beamline/2026-11/", "--json", cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    keys = [o["key"] for o in json.loads(listed.stdout)]
    assert "beamline/2026-11/scan_0001.nxs" in keys

    out = tmp_path / "out"
    done = _cli("process", "--demo", scan, "--start", 20, "--end", 22, "--format", "npy",
                "--out", out, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.npy")) == [
        f"scan_0001_{i:06d}.npy" for i in (20, 21, 22)]
    assert "Traceback" not in done.stderr


def test_demo_flag_refuses_other_connection_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ls", "--demo", "--endpoint", "http://127.0.0.1:1"])
    assert exit_.value.code == 2
    assert "--demo uses the demo store's own endpoint and keys" in capsys.readouterr().err
