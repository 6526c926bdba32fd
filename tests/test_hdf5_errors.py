"""Every way an HDF5 object can fail gives its own exception type and a one-line message."""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hdf5_files  # noqa: E402

from dashboard import open_stack  # noqa: E402
from dashboard.errors import EchoError  # noqa: E402
from dashboard.hdf5.errors import (  # noqa: E402
    FilterUnavailable,
    LinkUnreachable,
    NotAnImageStack,
    NotHDF5File,
    TruncatedFile,
)
from dashboard.hdf5.describe import describe  # noqa: E402
from dashboard.storage.s3 import S3, AccessDenied, EndpointUnreachable, NotFound  # noqa: E402


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert isinstance(exc, EchoError)
    assert "\n" not in text and "Traceback" not in text and len(text) < 300
    return text


@pytest.fixture
def upload(s3, bucket):
    def put(path: Path, key: str | None = None) -> str:
        key = key or path.name
        s3.client.upload_file(str(path), bucket, key)
        return f"s3://{bucket}/{key}"
    return put


def test_not_an_hdf5_file(s3, upload, testdata):
    url = upload(testdata / "notahdf5file.h5")
    for call in (lambda: open_stack(url, s3=s3), lambda: describe(url, s3=s3)):
        with pytest.raises(NotHDF5File) as info:
            call()
        assert "is not an HDF5 file" in _one_line(info.value)
    with pytest.raises(NotHDF5File):
        open_stack(testdata / "notahdf5file.h5")


def test_zero_byte_object_is_not_hdf5(s3, bucket):
    s3.client.put_object(Bucket=bucket, Key="zero.h5", Body=b"")
    with pytest.raises(NotHDF5File, match="empty"):
        open_stack(f"s3://{bucket}/zero.h5", s3=s3)


@pytest.mark.parametrize("name", ["empty.h5", "scalar.h5", "compound.h5", "group1k.h5"])
def test_files_without_a_stack(s3, upload, testdata, name):
    url = upload(testdata / name)
    with pytest.raises(NotAnImageStack) as info:
        open_stack(url, s3=s3)
    assert "contains no image stack" in _one_line(info.value)
    assert describe(url, s3=s3)["default_stack"] is None


@pytest.mark.parametrize("dataset,words", [
    ("/0d", "single value"), ("/1d", "1-D"), ("/0ds", "single value"), ("/1ds", "text"),
])
def test_scalar_and_1d_datasets_are_not_stacks(s3, upload, testdata, dataset, words):
    url = upload(testdata / "scalar.h5")
    with pytest.raises(NotAnImageStack, match=words) as info:
        open_stack(url, dataset, s3=s3)
    _one_line(info.value)


def test_compound_dataset_is_not_a_stack(s3, upload, testdata):
    url = upload(testdata / "compound.h5")
    with pytest.raises(NotAnImageStack, match="compound"):
        open_stack(url, "/dset", s3=s3)


def test_missing_dataset_and_group_path(s3, upload, tmp_path):
    url = upload(hdf5_files.write_nexus(tmp_path / "nexus.h5"))
    with pytest.raises(NotAnImageStack, match="no dataset /nope"):
        open_stack(url, "/nope", s3=s3)
    with pytest.raises(NotAnImageStack, match="group"):
        open_stack(url, "/scan", s3=s3)


def test_truncated_copy_of_a_stack(s3, upload, testdata, tmp_path):
    data = (testdata / "diamond_k11_diad_imaging.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    url = upload(cut)
    with pytest.raises(TruncatedFile) as info:
        open_stack(url, s3=s3)
    assert "truncated" in _one_line(info.value)
    with pytest.raises(TruncatedFile):
        open_stack(cut)


def test_filter_unavailable_names_the_filter(s3, upload, tmp_path):
    url = upload(hdf5_files.write_unknown_filter(tmp_path / "unknown_filter.h5"))
    with pytest.raises(FilterUnavailable) as info:
        open_stack(url, s3=s3)
    text = _one_line(info.value)
    assert "32999" in text and "bzip2" in text and info.value.filter_id == 32999


def test_external_link_and_virtual_sources_unreachable(s3, upload, tmp_path):
    url = upload(hdf5_files.write_links(tmp_path / "links.h5"))
    with pytest.raises(LinkUnreachable, match="external link to other_file.h5"):
        open_stack(url, "/external", s3=s3)
    with pytest.raises(LinkUnreachable, match="virtual dataset"):
        open_stack(url, "/virtual", s3=s3)
    with pytest.raises(LinkUnreachable, match="does not exist"):
        open_stack(url, "/dangling", s3=s3)
    # the soft link to a real stack works
    with open_stack(url, "/soft", s3=s3) as stack:
        assert stack.dataset == "/soft" and len(stack) == 3
    # locally, the virtual dataset's source is missing too: never a silent fill value
    with pytest.raises(LinkUnreachable):
        open_stack(tmp_path / "links.h5", "/virtual")


def test_virtual_dataset_with_reachable_local_source(tmp_path):
    source = tmp_path / "other_file.h5"
    with h5py.File(source, "w") as f:
        f["data"] = np.arange(64 * 96, dtype="uint16").reshape(64, 96)
    path = hdf5_files.write_links(tmp_path / "links.h5")
    with open_stack(path, "/virtual") as stack:
        assert not stack.direct
        np.testing.assert_array_equal(stack.frame(0), np.arange(64 * 96, dtype="uint16").reshape(64, 96))


def test_404(s3, bucket):
    with pytest.raises(NotFound) as info:
        open_stack(f"s3://{bucket}/gone.h5", s3=s3)
    assert "404" in _one_line(info.value)
    with pytest.raises(NotFound):
        describe(f"s3://{bucket}/gone.h5", s3=s3)


def test_403_with_keys_that_lack_permission(testdata):
    from auth_moto import auth_moto_server

    with auth_moto_server({"alice": ["alice-h5"], "bob": ["bob-h5"]}) as server:
        alice = server.s3("alice")
        alice.client.upload_file(str(testdata / "zstd_uint8.h5"), "alice-h5", "scan.h5")
        with open_stack("s3://alice-h5/scan.h5", s3=alice) as stack:  # the owner can read it
            assert stack.shape == (2, 512, 1024)
        with pytest.raises(AccessDenied) as info:
            open_stack("s3://alice-h5/scan.h5", s3=server.s3("bob"))
        text = _one_line(info.value)
        assert "403" in text
        for secret in server.credentials("bob").secrets():
            assert secret not in text


def test_timeout_after_retries():
    """An endpoint that accepts connections but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()
    held = []

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        from dashboard.storage.credentials import Credentials

        s3 = S3(f"http://127.0.0.1:{sock.getsockname()[1]}",
                Credentials(access_key="AKIAXXXXXXXX", secret_key="x" * 20),
                connect_timeout=0.5, read_timeout=0.3, max_attempts=2)
        with pytest.raises(EndpointUnreachable) as info:
            open_stack(f"s3://b-{uuid.uuid4().hex[:6]}/x.h5", s3=s3)
        _one_line(info.value)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_object_replaced_while_open(s3, bucket, testdata):
    """Ranges are pinned to the ETag seen at open: a replaced object is an error, not garbage."""
    from dashboard.hdf5.chunks import LRUBytes
    from dashboard.hdf5.errors import ObjectChanged

    s3.client.upload_file(str(testdata / "diamond_k11_diad_imaging.h5"), bucket, "scan.h5")
    with open_stack(f"s3://{bucket}/scan.h5", s3=s3, prefetch=False, cache=LRUBytes(1 << 20)) as stack:
        stack.frame(0)
        s3.client.upload_file(str(testdata / "aps_tooth_dataexchange.h5"), bucket, "scan.h5")
        with pytest.raises(ObjectChanged) as info:
            stack.frame(1000)
        assert "replaced" in _one_line(info.value)
