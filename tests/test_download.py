"""Downloads against moto over HTTP: progress, verification, resume, cancel, unsafe keys."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from dashboard.errors import EchoError
from dashboard.storage.download import (
    CANCELLED,
    DOWNLOADED,
    FAILED,
    DownloadError,
    PART_MARKER,
    SKIPPED,
    DownloadProgress,
    UnsafeKeyError,
    _verify,
    download_objects,
    is_single_part_etag,
    safe_local_path,
)

MiB = 1 << 20


def payload(n: int, seed: int) -> bytes:
    """``n`` reproducible, incompressible bytes."""
    out = bytearray()
    block = seed.to_bytes(4, "little")
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def put(s3, bucket, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        s3.client.put_object(Bucket=bucket, Key=key, Body=data)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative POSIX path -> content)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if PART_MARKER in p.name]


class Recorder:
    """A progress callback that keeps every snapshot (calls never overlap, so no lock)."""

    def __init__(self):
        self.calls: list[DownloadProgress] = []

    def __call__(self, p: DownloadProgress) -> None:
        self.calls.append(p)


OBJECTS = {
    "raw/2024/scan_001.h5": payload(int(2.5 * MiB), 1),
    "raw/2024/scan_002.h5": payload(3 * MiB + 17, 2),
    "raw/flat.nxs": payload(1000, 3),
    "top.h5": payload(1, 4),
    "empty.h5": b"",
}


# -- safe_local_path ---------------------------------------------------------------------


def test_safe_local_path_maps_keys_below_the_folder(tmp_path):
    assert safe_local_path(tmp_path, "a.h5") == tmp_path / "a.h5"
    assert safe_local_path(tmp_path, "raw/2024/scan 1.h5") == tmp_path / "raw" / "2024" / "scan 1.h5"
    assert safe_local_path(str(tmp_path), "..a/b..h5") == tmp_path / "..a" / "b..h5"
    assert safe_local_path(tmp_path, ".hidden.h5") == tmp_path / ".hidden.h5"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("a/../../x.h5", "'..' segment"),
        ("../x.h5", "'..' segment"),
        ("..", "'..' segment"),
        ("/abs.h5", "absolute path"),
        ("/etc/passwd", "absolute path"),
        ("a\\b.h5", "backslash"),
        ("..\\..\\x.h5", "backslash"),
        ("a//b.h5", "empty path segment"),
        ("dir/", "folder marker"),
        ("nul\x00.h5", "NUL"),
        ("a/./b.h5", "'.' segment"),
        (".", "'.' segment"),
        ("", "empty key"),
    ],
)
def test_safe_local_path_refuses_escaping_keys(tmp_path, key, reason):
    with pytest.raises(UnsafeKeyError) as info:
        safe_local_path(tmp_path, key)
    assert isinstance(info.value, EchoError)
    message = str(info.value)
    assert message.startswith(f"Refused to download {key!r}: ")
    assert reason in message
    assert "\n" not in message


def test_safe_local_path_refuses_a_symlink_that_leaves_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside)
    (out / "inner").symlink_to(out)
    with pytest.raises(UnsafeKeyError, match="outside the download folder"):
        safe_local_path(out, "link/x.h5")
    assert safe_local_path(out, "inner/x.h5") == out / "inner" / "x.h5"  # stays inside


def test_single_part_etag_rule():
    assert is_single_part_etag("0123456789abcdef0123456789ABCDEF")
    assert is_single_part_etag('"0123456789abcdef0123456789abcdef"')
    assert not is_single_part_etag("0123456789abcdef0123456789abcdef-2")
    assert not is_single_part_etag("")
    assert not is_single_part_etag("xyz")


def test_verify_rejects_size_and_md5_mismatches():
    md5 = hashlib.md5(b"abc").hexdigest()
    assert _verify(3, md5, 3, md5) == ""
    assert _verify(3, md5, 3, md5.upper()) == ""
    assert _verify(2, md5, 3, md5) == "got 2 bytes, expected 3"
    assert _verify(3, md5, 3, "0" * 32) == "the MD5 checksum does not match the ETag"
    assert _verify(3, md5, 3, "0" * 32 + "-2") == ""  # multipart: size only


# -- downloads ---------------------------------------------------------------------------


def test_download_is_byte_identical_with_monotonic_progress(s3, bucket, tmp_path):
    put(s3, bucket, OBJECTS)
    record = Recorder()
    out = tmp_path / "out"
    report = download_objects(s3, bucket, list(OBJECTS), out, progress=record,
                              progress_interval=0)

    assert [r.status for r in report.results] == [DOWNLOADED] * len(OBJECTS)
    assert [r.key for r in report.results] == list(OBJECTS)
    assert report.ok and not report.cancelled
    assert files_under(out) == OBJECTS
    assert report.bytes_downloaded == sum(map(len, OBJECTS.values()))
    assert report.summary().startswith("5 downloaded (")

    calls = record.calls
    assert len(calls) > 5  # per-chunk updates with progress_interval=0
    for field in ("bytes_done", "files_done", "bytes_total"):
        values = [getattr(c, field) for c in calls]
        assert values == sorted(values), field
    total = sum(map(len, OBJECTS.values()))
    last = calls[-1]
    assert (last.bytes_done, last.bytes_total, last.files_done, last.files_total) == (
        total, total, len(OBJECTS), len(OBJECTS))
    assert last.fraction == 1.0
    per_file = [c for c in calls if c.key == "raw/2024/scan_002.h5"]
    assert per_file and all(c.file_total == 3 * MiB + 17 for c in per_file)
    assert [c.file_bytes for c in per_file] == sorted(c.file_bytes for c in per_file)
    assert all(0 < c.file_bytes <= c.file_total for c in per_file)


def test_progress_is_throttled(s3, bucket, tmp_path):
    put(s3, bucket, OBJECTS)
    record = Recorder()
    download_objects(s3, bucket, list(OBJECTS), tmp_path, progress=record,
                     progress_interval=3600)
    # First update, then only the final summary: the hour-long interval suppressed the rest.
    assert len(record.calls) == 2
    assert record.calls[-1].files_done == len(OBJECTS)


def test_rerun_skips_identical_files_and_replaces_changed_ones(s3, bucket, tmp_path):
    put(s3, bucket, OBJECTS)
    first = download_objects(s3, bucket, list(OBJECTS), tmp_path)
    assert first.ok
    mtimes = {k: (tmp_path / k).stat().st_mtime_ns for k in OBJECTS}

    record = Recorder()
    second = download_objects(s3, bucket, list(OBJECTS), tmp_path, progress=record)
    assert [r.status for r in second.results] == [SKIPPED] * len(OBJECTS)
    assert second.summary().startswith("0 downloaded, 5 skipped (0 B in ")
    assert {k: (tmp_path / k).stat().st_mtime_ns for k in OBJECTS} == mtimes
    last = record.calls[-1]
    assert last.bytes_done == last.bytes_total == sum(map(len, OBJECTS.values()))

    # Same size but different bytes (single-part ETag -> MD5 compared), and a truncated file.
    (tmp_path / "raw/flat.nxs").write_bytes(b"x" * 1000)
    (tmp_path / "raw/2024/scan_001.h5").write_bytes(b"partial")
    third = download_objects(s3, bucket, list(OBJECTS), tmp_path)
    status = {r.key: r.status for r in third.results}
    assert status == {**{k: SKIPPED for k in OBJECTS},
                      "raw/flat.nxs": DOWNLOADED, "raw/2024/scan_001.h5": DOWNLOADED}
    assert files_under(tmp_path) == OBJECTS


def test_cancel_mid_file_leaves_nothing_at_final_names(s3, bucket, tmp_path):
    big = {"big/first.h5": payload(6 * MiB, 5), "big/second.h5": payload(2 * MiB, 6)}
    put(s3, bucket, big)
    cancel = threading.Event()
    seen: list[DownloadProgress] = []

    def stop_mid_file(p: DownloadProgress):
        seen.append(p)
        if p.key == "big/first.h5" and 0 < p.file_bytes < p.file_total:
            cancel.set()

    report = download_objects(s3, bucket, list(big), tmp_path, progress=stop_mid_file,
                              cancel=cancel, max_workers=1, progress_interval=0)
    assert cancel.is_set()
    assert report.cancelled and not report.ok
    assert [r.status for r in report.results] == [CANCELLED, CANCELLED]
    assert report.cancelled_files == list(report.results)
    assert report.results[0].message == "Cancelled; partial data removed."
    assert report.results[1].message == "Cancelled before it started."
    # It really stopped mid-file: no more than one chunk after the cancel.
    assert max(p.file_bytes for p in seen if p.key == "big/first.h5") <= 2 * MiB
    assert files_under(tmp_path) == {}
    assert temp_files(tmp_path) == []

    # A re-run after the cancel completes everything.
    again = download_objects(s3, bucket, list(big), tmp_path)
    assert again.ok and files_under(tmp_path) == big


def test_keyboard_interrupt_cleans_up_and_reraises(s3, bucket, tmp_path):
    put(s3, bucket, {"k.h5": payload(3 * MiB, 7)})

    def interrupt(p: DownloadProgress):
        if p.file_bytes:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_objects(s3, bucket, ["k.h5"], tmp_path, progress=interrupt, progress_interval=0)
    assert files_under(tmp_path) == {}
    assert temp_files(tmp_path) == []


def test_failing_objects_fail_alone_and_leave_no_files(s3, bucket, tmp_path):
    objects = {
        "a/first.h5": payload(3 * MiB, 8),
        "a/deleted.h5": payload(2 * MiB, 9),
        "a/replaced.h5": payload(2 * MiB, 10),
        "a/blocked.h5": payload(1000, 11),
        "a/last.h5": payload(5000, 12),
    }
    put(s3, bucket, objects)
    (tmp_path / "a" / "blocked.h5").mkdir(parents=True)  # a folder where the file should go

    def sabotage(p: DownloadProgress):
        # After every HEAD, during the first file: delete one object and replace another.
        if p.key == "a/first.h5" and p.file_bytes == MiB:
            s3.client.delete_object(Bucket=bucket, Key="a/deleted.h5")
            s3.client.put_object(Bucket=bucket, Key="a/replaced.h5", Body=payload(2 * MiB, 99))

    keys = [*objects, "a/never-existed.h5"]
    record = Recorder()

    def both(p):
        sabotage(p)
        record(p)

    report = download_objects(s3, bucket, keys, tmp_path, progress=both, max_workers=1,
                              progress_interval=0)
    status = {r.key: r.status for r in report.results}
    assert status == {
        "a/first.h5": DOWNLOADED,
        "a/deleted.h5": FAILED,
        "a/replaced.h5": FAILED,
        "a/blocked.h5": FAILED,
        "a/last.h5": DOWNLOADED,
        "a/never-existed.h5": FAILED,
    }
    messages = {r.key: r.message for r in report.failed}
    assert messages["a/deleted.h5"] == (
        f"Not found at {s3.endpoint}: s3://{bucket}/a/deleted.h5 (404).")
    assert messages["a/replaced.h5"] == (
        f"s3://{bucket}/a/replaced.h5 changed on the server during the download; "
        "run the download again.")
    assert messages["a/blocked.h5"] == (
        f"Cannot write {tmp_path / 'a' / 'blocked.h5'}: a folder of that name is in the way.")
    assert messages["a/never-existed.h5"] == (
        f"Not found at {s3.endpoint}: s3://{bucket}/a/never-existed.h5 (404).")
    for message in messages.values():
        assert "Traceback" not in message and "\n" not in message

    assert files_under(tmp_path) == {k: objects[k] for k in ("a/first.h5", "a/last.h5")}
    assert temp_files(tmp_path) == []
    # Failed files count as processed, so the overall bar still ends at its total.
    last = record.calls[-1]
    assert (last.bytes_done, last.files_done) == (last.bytes_total, len(keys))
    assert report.summary().startswith("2 downloaded, 4 failed (")


def test_unsafe_keys_never_escape_while_the_rest_succeeds(s3, bucket, tmp_path):
    bad = ["a/../../x.h5", "/abs.h5", "a\\b.h5", "a//b.h5", "nul\x00.h5", "a/./b.h5",
           "../up.h5", "dir/"]
    good = {"a/ok.h5": b"fine", "b/c/ok2.h5": b"also fine"}
    put(s3, bucket, {k: b"evil" for k in bad})
    put(s3, bucket, good)
    listed = {o.key for o in s3.list_objects(bucket).objects}
    assert set(bad) <= listed  # S3 (moto) stores these keys as given

    out = tmp_path / "deep" / "out"
    report = download_objects(s3, bucket, [*bad, *good], out)
    status = {r.key: r.status for r in report.results}
    assert status == {**{k: FAILED for k in bad}, **{k: DOWNLOADED for k in good}}
    for result in report.failed:
        assert result.message.startswith(f"Refused to download {result.key!r}: ")
    assert files_under(tmp_path) == {f"deep/out/{k}": v for k, v in good.items()}
    assert not Path("/abs.h5").exists()
    assert not (tmp_path / "x.h5").exists()


def test_multipart_objects_are_verified_by_size(s3, bucket, tmp_path):
    data = payload(9 * MiB, 13)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.client.upload_fileobj(__import__("io").BytesIO(data), bucket, "multi.h5", Config=config)
    etag = s3.head(bucket, "multi.h5").etag
    assert etag.endswith("-2") and not is_single_part_etag(etag)

    report = download_objects(s3, bucket, ["multi.h5"], tmp_path)
    assert [r.status for r in report.results] == [DOWNLOADED]
    assert (tmp_path / "multi.h5").read_bytes() == data

    # Multipart ETags are not MD5s: an existing file of the right size counts as identical...
    tampered = bytearray(data)
    tampered[0] ^= 0xFF
    (tmp_path / "multi.h5").write_bytes(bytes(tampered))
    assert download_objects(s3, bucket, ["multi.h5"], tmp_path).results[0].status == SKIPPED
    # ...and one of another size does not.
    (tmp_path / "multi.h5").write_bytes(data[:-1])
    assert download_objects(s3, bucket, ["multi.h5"], tmp_path).results[0].status == DOWNLOADED
    assert (tmp_path / "multi.h5").read_bytes() == data


def test_missing_bucket_fails_every_file_with_a_message(s3, tmp_path):
    report = download_objects(s3, "no-such-bucket-dl", ["a.h5", "b.h5"], tmp_path)
    assert [r.status for r in report.results] == [FAILED, FAILED]
    assert all(r.message.endswith("(404).") or "does not exist" in r.message
               for r in report.failed)
    assert files_under(tmp_path) == {}


def test_broken_progress_callback_does_not_break_the_download(s3, bucket, tmp_path, caplog):
    put(s3, bucket, {"x.h5": payload(2 * MiB, 14)})

    def broken(p):
        raise ValueError("display went away")

    report = download_objects(s3, bucket, ["x.h5"], tmp_path, progress=broken,
                              progress_interval=0)
    assert report.ok
    assert "progress callback failed" in caplog.text


def test_downloaded_files_get_normal_permissions(s3, bucket, tmp_path):
    put(s3, bucket, {"perm.h5": b"data"})
    download_objects(s3, bucket, ["perm.h5"], tmp_path)
    umask = int(next(line.split()[1] for line in open("/proc/self/status")
                     if line.startswith("Umask:")), 8)
    assert (tmp_path / "perm.h5").stat().st_mode & 0o777 == 0o666 & ~umask


def test_empty_batch_and_unusable_folder(s3, bucket, tmp_path):
    record = Recorder()
    report = download_objects(s3, bucket, [], tmp_path / "new", progress=record)
    assert report.results == () and report.ok and (tmp_path / "new").is_dir()
    assert record.calls[-1] == DownloadProgress("", 0, 0, 0, 0, 0, 0)
    assert report.summary().startswith("0 downloaded (0 B in ")

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DownloadError) as info:
        download_objects(s3, bucket, ["a.h5"], tmp_path / "file" / "sub")
    assert isinstance(info.value, EchoError)
    assert str(info.value).startswith(f"Cannot create the download folder {tmp_path / 'file' / 'sub'}: ")
