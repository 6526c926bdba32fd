"""Paths a user types (key file, download folder, output folder): bad ones get one clear sentence.

Found by the widget-edge tests: a NUL byte or an over-long name surfaced as "unexpected
ValueError/OSError", ``/dev/zero`` as a key file hung Connect while memory grew, and a download
folder of ``s3://b/x`` quietly wrote into a local folder ``s3:/b/x``.
"""

from __future__ import annotations

import os
import threading

import pytest

from dashboard.errors import EchoError
from dashboard.processing.export import OutputError, open_output
from dashboard.storage.credentials import (
    MAX_KEY_FILE_BYTES,
    CredentialsError,
    from_json_file,
)
from dashboard.storage.download import DownloadError, download_objects
from dashboard.storage.paths import MAX_NAME_BYTES, UnusablePath, local_path

LONG_NAME = "n" * (MAX_NAME_BYTES + 1)
BAD = [
    ("", "No {what} given."),
    ("   ", "No {what} given."),
    ("out\x00put", "contains a NUL character"),
    (f"/tmp/{LONG_NAME}/x", "longer than 255 bytes"),
    ("/tmp/" + "d/" * 2100, "is too long"),
    ("s3://bucket/prefix", "not an s3:// address"),
    ("bad\ud800", "not valid text for a file name"),
]


@pytest.mark.parametrize("text, words", BAD)
def test_local_path_names_the_problem(text, words):
    with pytest.raises(UnusablePath) as info:
        local_path(text, what="output folder")
    message = str(info.value)
    assert words.format(what="output folder") in message
    assert len(message) < 200 and "\n" not in message  # a long path is not repeated whole


def test_local_path_expands_the_home_folder():
    assert local_path("~/results", what="x") == local_path(os.path.expanduser("~/results"), what="x")
    assert str(local_path("data/ünïcode folder", what="x")) == "data/ünïcode folder"


@pytest.mark.parametrize("text, words", [b for b in BAD if not b[0].startswith("s3://")])
def test_output_folder_refuses_with_an_output_error(text, words, tmp_path):
    with pytest.raises(OutputError) as info:
        open_output(text)
    assert words.format(what="output folder") in str(info.value)


@pytest.mark.parametrize("text, words", BAD)
def test_download_folder_refuses_before_any_request(text, words, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_objects(None, "bucket", ["a.h5"], text)  # no S3 needed: refused first
    assert words.format(what="download folder") in str(info.value)
    assert not (tmp_path / "s3:").exists()


def test_key_file_that_never_ends_is_refused_at_once():
    with pytest.raises(CredentialsError, match="not a regular file: /dev/zero"):
        from_json_file("/dev/zero")


def test_key_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "keys.json"
    os.mkfifo(fifo)
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_error_of(from_json_file, fifo)))
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock the open() so the test process can end, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO as the key file blocked")
    assert "not a regular file" in outcome[0]


def test_key_file_larger_than_a_key_file_is_refused(tmp_path):
    big = tmp_path / "keys.json"
    big.write_text('{"access_key": "A", "secret_key": "' + "s" * MAX_KEY_FILE_BYTES + '"}')
    with pytest.raises(CredentialsError, match="larger than 64 KiB"):
        from_json_file(big)


@pytest.mark.parametrize("text, words", [b for b in BAD if not b[0].startswith("s3://")])
def test_key_file_path_problems_are_credentials_errors(text, words):
    with pytest.raises(CredentialsError) as info:
        from_json_file(text)
    assert words.format(what="credentials file path") in str(info.value)


def _error_of(fn, *args) -> str:
    try:
        fn(*args)
    except EchoError as exc:
        return str(exc)
    return "no error"
