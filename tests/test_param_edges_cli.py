"""Every CLI argument at and beyond its bounds: exit 2 (usage) or exit 1 with one line
``error: ...``, no traceback, and nothing written."""

from __future__ import annotations

import json
import sys
import types
import uuid

import pytest
from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import write_stack

from dashboard.cli import main



@pytest.fixture
def env(moto_server, s3, tmp_path):
    """A key file, a bucket with one object, a 25-frame local stack and an output path."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}))
    keys.chmod(0o600)
    bucket = f"cli-edges-{uuid.uuid4().hex[:8]}"
    s3.client.create_bucket(Bucket=bucket)
    s3.client.put_object(Bucket=bucket, Key="a.h5", Body=b"not really hdf5")
    stack = tmp_path / "stack.h5"
    write_stack(stack, n=25, h=16, w=16)
    return types.SimpleNamespace(
        conn=["--endpoint", moto_server.endpoint, "--credentials", str(keys)],
        bucket=bucket, stack=str(stack), out=tmp_path / "out", tmp=tmp_path)


@pytest.fixture
def no_serving(monkeypatch):
    """``serve`` must never start a server here: a stand-in app module fails loudly."""
    fake = types.ModuleType("dashboard.app")

    def serve(**kwargs):
        raise AssertionError(f"serve() reached with {kwargs.get('port')!r}: not validated")

    fake.serve = serve
    monkeypatch.setitem(sys.modules, "dashboard.app", fake)


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    return code, captured.out, captured.err


def assert_usage_error(argv, capsys, option: str):
    code, out, err = run(argv, capsys)
    assert code == 2, (code, err)
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert "error:" in last and option in last, last


def assert_one_error_line(argv, capsys, *words: str):
    code, out, err = run(argv, capsys)
    assert code == 1, (code, err)
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# -- ls --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_ls_limit_below_one_is_a_usage_error(env, capsys, limit):
    assert_usage_error(["ls", f"s3://{env.bucket}", "--limit", limit, *env.conn], capsys,
                       "--limit")


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_ls_limit_below_one_is_refused(env, capsys, limit):
    """Today: refused with one line (naming the setting, not the option)."""
    code, _out, err = run(["ls", f"s3://{env.bucket}", "--limit", limit, *env.conn], capsys)
    assert code in (1, 2)
    assert "error:" in err.strip().splitlines()[-1]


def test_ls_limit_not_a_number(env, capsys):
    assert_usage_error(["ls", f"s3://{env.bucket}", "--limit", "ten", *env.conn], capsys,
                       "--limit")


def test_ls_huge_limit_lists_everything(env, capsys):
    code, out, _err = run(["ls", f"s3://{env.bucket}", "--limit", str(10**20), "--json",
                           *env.conn], capsys)
    assert code == 0
    assert [o["key"] for o in json.loads(out)] == ["a.h5"]


@pytest.mark.parametrize("url", ["http://x/y", "s3:/", "bucket/key"])
def test_ls_not_an_s3_url(env, capsys, url):
    if url == "s3:/":  # "s3://" and "s3:/" mean "list the buckets"
        code, out, _err = run(["ls", url, "--json", *env.conn], capsys)
        assert code == 0 and env.bucket in json.loads(out)
        return
    assert_one_error_line(["ls", url, *env.conn], capsys, "Not an S3 URL")


def test_ls_missing_bucket(env, capsys):
    assert_one_error_line(["ls", "s3://no-such-bucket-here", *env.conn], capsys, "does not exist")


# -- download ------------------------------------------------------------------------------------


def test_download_without_urls_is_a_usage_error(env, capsys):
    assert_usage_error(["download", "--out", str(env.out), *env.conn], capsys, "s3://BUCKET/KEY")
    assert not env.out.exists()


def test_download_without_out_is_a_usage_error(env, capsys):
    assert_usage_error(["download", f"s3://{env.bucket}/a.h5", *env.conn], capsys, "--out")


@pytest.mark.parametrize("url", ["s3://", "notaurl", "https://host/b/k.h5"])
def test_download_bad_urls(env, capsys, url):
    assert_one_error_line(["download", url, "--out", str(env.out), *env.conn], capsys,
                          "Not an S3 URL")
    assert not env.out.exists() or not any(env.out.iterdir())


@pytest.mark.parametrize("key", ["missing.h5", "../escape.h5", "a//b.h5"])
def test_download_failing_keys_write_nothing(env, capsys, key):
    line = assert_one_error_line(["download", f"s3://{env.bucket}/{key}", "--out", str(env.out),
                                  *env.conn], capsys, "1 of 1 downloads failed")
    assert line.startswith("error: ")
    assert [p for p in env.out.rglob("*") if p.is_file()] == []
    assert not (env.tmp / "escape.h5").exists()


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_download_workers_below_one_is_a_usage_error(env, capsys, workers):
    assert_usage_error(["download", f"s3://{env.bucket}/a.h5", "--out", str(env.out),
                        "--workers", workers, *env.conn], capsys, "--workers")
    assert not env.out.exists()


# -- process -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    (["--start", "19"], ["start frame must be at least 20", "19"]),
    (["--start", "-5"], ["start frame must be at least 20"]),
    (["--end", "25"], ["end frame (25)", "25"]),  # 25 frames: the last is 24
    (["--end", "10"], ["end frame (10)"]),
    (["--start", "24", "--end", "21"], ["end frame (21)"]),
    (["--step", "0"], ["step", "0"]),
    (["--step", "-1"], ["step"]),
    (["--sigma", "0"], ["Sigma"]),
    (["--sigma", "-1"], ["Sigma"]),
    (["--sigma", "nan"], ["Sigma"]),
    (["--sigma", "inf"], ["Sigma"]),
    (["--sigma", "1e-300"], ["Sigma", "0.01 to 100"]),
    (["--sigma", "1000"], ["Sigma", "0.01 to 100"]),
    (["--dataset", "/no/such/dataset"], []),
])
def test_process_bad_values_write_nothing(env, capsys, extra, words):
    assert_one_error_line(["process", env.stack, "--out", str(env.out), *extra, *env.conn],
                          capsys, *words)
    assert not env.out.exists() or not any(env.out.iterdir())


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_process_workers_below_one_write_nothing(env, capsys, workers):
    """Refused by plan/run (exit 1) today, by the parser (exit 2) with patch 07."""
    code, out, err = run(["process", env.stack, "--out", str(env.out), "--workers", workers,
                          *env.conn], capsys)
    assert code in (1, 2) and out == ""
    last = err.strip().splitlines()[-1]
    assert "error:" in last and "workers" in last, last
    assert not env.out.exists() or not any(env.out.iterdir())


def test_process_start_20_end_24_is_the_valid_edge(env, capsys):
    code, _out, err = run(["process", env.stack, "--out", str(env.out), "--start", "20",
                           "--end", "24", "--format", "npy", *env.conn], capsys)
    assert code == 0, err
    assert len(list(env.out.glob("stack_0000*.npy"))) == 5


@pytest.mark.parametrize("extra, option", [
    (["--format", "bad"], "--format"),
    (["--format", "PNG"], "--format"),
    (["--png-level", "10"], "--png-level"),
    (["--png-level", "-1"], "--png-level"),
    (["--start", "x"], "--start"),
    (["--sigma", "wide"], "--sigma"),
])
def test_process_usage_errors_write_nothing(env, capsys, extra, option):
    assert_usage_error(["process", env.stack, "--out", str(env.out), *extra, *env.conn], capsys,
                       option)
    assert not env.out.exists()


def test_process_missing_source_and_empty_out(env, capsys):
    assert_one_error_line(["process", str(env.tmp / "missing.h5"), "--out", str(env.out),
                           *env.conn], capsys, "not found")
    assert_one_error_line(["process", env.stack, "--out", "", *env.conn], capsys, "output")
    assert not env.out.exists()


def test_process_not_an_hdf5_object_on_s3(env, capsys):
    assert_one_error_line(["process", f"s3://{env.bucket}/a.h5", "--out", str(env.out),
                           *env.conn], capsys, "not an HDF5 file")
    assert not env.out.exists()


# -- info ----------------------------------------------------------------------------------------


def test_info_on_a_directory_and_missing_paths(env, capsys):
    assert_one_error_line(["info", str(env.tmp)], capsys, "folder")
    assert_one_error_line(["info", str(env.tmp / "missing.h5")], capsys, "not found")
    assert_one_error_line(["info", f"s3://{env.bucket}/missing.h5", *env.conn], capsys, "404")


def test_info_without_a_path_is_a_usage_error(capsys):
    assert_usage_error(["info"], capsys, "url")


# -- serve (argument validation only: nothing is served) -----------------------------------------


@pytest.mark.parametrize("port", ["-1", "65536", "70000"])
def test_serve_port_out_of_range_is_a_usage_error(no_serving, capsys, port):
    assert_usage_error(["serve", "--port", port], capsys, "--port")


def test_serve_port_not_a_number(no_serving, capsys):
    assert_usage_error(["serve", "--port", "http"], capsys, "--port")


def test_serve_max_objects_zero_is_a_usage_error(no_serving, capsys):
    assert_usage_error(["serve", "--max-objects", "0"], capsys, "--max-objects")


def test_serve_negative_max_objects_is_refused(no_serving, capsys):
    code, _out, err = run(["serve", "--max-objects", "-5"], capsys)
    assert code in (1, 2)
    assert "error:" in err.strip().splitlines()[-1]


def test_unknown_command_and_option(capsys):
    assert_usage_error(["frobnicate"], capsys, "invalid choice")
    assert_usage_error(["ls", "--no-such-option"], capsys, "unrecognized arguments")
