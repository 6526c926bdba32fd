"""Encoders, names, completeness checks and atomic writes, locally and to S3 (moto)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dashboard.processing import export
from dashboard.processing.export import (
    LocalOutput,
    OutputError,
    S3Output,
    decode,
    encode,
    file_stem,
    is_complete,
    open_output,
    output_name,
    provenance_name,
)
from dashboard.processing.pipeline import to_uint8

RNG = np.random.default_rng(7)


def image(shape=(48, 64)):
    return RNG.normal(0.5, 0.3, shape).astype(np.float32)


# -- names -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "stem"), [
    ("s3://bucket/raw/scan_001.h5", "scan_001"),
    ("/data/tomo.nxs", "tomo"),
    ("s3://b/k/file.with.dots.hdf5", "file.with.dots"),
    ("s3://b/no_extension", "no_extension"),
    ("s3://b/we ird#name.h5", "we_ird_name"),
    ("s3://b/.hidden", ".hidden"),
])
def test_file_stem(source, stem):
    assert file_stem(source) == stem


def test_output_and_provenance_names():
    assert output_name("scan", 20, "png") == "scan_000020.png"
    assert output_name("scan", 1234567, "npy") == "scan_1234567.npy"
    assert output_name("s", 5, "tiff") == "s_000005.tiff"
    assert provenance_name("scan") == "scan_processing.json"
    with pytest.raises(OutputError, match="Unknown output format 'jpg'"):
        output_name("scan", 1, "jpg")


# -- encoders --------------------------------------------------------------------------------

def test_png_is_8bit_rounded_clipped_and_deterministic():
    x = image()
    data = encode(x, "png")
    assert data.startswith(b"\x89PNG")
    decoded = decode(data, "png")
    assert decoded.dtype == np.uint8 and decoded.shape == x.shape
    np.testing.assert_array_equal(decoded, np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))
    assert encode(x, "png") == data
    smooth = np.tile(np.linspace(0, 1, 512, dtype=np.float32), (256, 1))
    assert len(encode(smooth, "png", png_level=0)) > len(encode(smooth, "png", png_level=1))
    best = decode(encode(smooth, "png", png_level=9), "png")
    np.testing.assert_array_equal(best, to_uint8(smooth))
    with pytest.raises(OutputError, match="0 to 9"):
        encode(x, "png", png_level=10)


def test_png_without_opencv_uses_pillow_with_the_same_pixels(monkeypatch):
    x = image()
    with_cv2 = encode(x, "png")
    monkeypatch.setattr(export, "_cv2", None)
    assert export.png_encoder() == "pillow"
    without = encode(x, "png")
    np.testing.assert_array_equal(decode(without, "png"), decode(with_cv2, "png"))


def test_tiff_is_float32_with_description_and_software():
    x = image()
    description = json.dumps({"frame": 20, "sigma": 4.0})
    data = encode(x, "tiff", description=description, software="echo-s3-viewer 0.1.0")
    decoded = decode(data, "tiff")
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, x)
    import io

    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        assert page.description == description
        assert page.software == "echo-s3-viewer 0.1.0"
        assert page.compression == 1  # uncompressed: readable everywhere
    assert encode(x, "tiff", description=description, software="echo-s3-viewer 0.1.0") == data


def test_npy_is_float32():
    x = image().astype(np.float64)
    decoded = decode(encode(x, "npy"), "npy")
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, x.astype(np.float32))


# -- completeness ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "tiff", "npy"])
def test_is_complete_accepts_whole_files_only(tmp_path, fmt):
    x = image((40, 30))
    data = encode(x, fmt, description="{}")
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(data)
    assert is_complete(path, fmt)
    assert is_complete(path, fmt, (40, 30))
    assert not is_complete(path, fmt, (30, 40))
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        assert not is_complete(path, fmt), cut
    path.write_bytes(b"garbage" * 100)
    assert not is_complete(path, fmt)
    assert not is_complete(tmp_path / "missing", fmt)


# -- local output ----------------------------------------------------------------------------

def test_local_write_is_atomic_and_creates_folders(tmp_path):
    out = LocalOutput(tmp_path / "a" / "b")
    out.check_writable()
    assert not (tmp_path / "a").exists()  # checking writes nothing
    out.write("x.png", b"payload")
    assert (tmp_path / "a" / "b" / "x.png").read_bytes() == b"payload"
    assert out.existing() == {"x.png": 7}
    assert out.read_text("missing.json") is None


def test_local_write_failure_leaves_no_file(tmp_path, monkeypatch):
    out = LocalOutput(tmp_path)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "replace", failing_replace)
    with pytest.raises(OutputError, match="No space left on device") as info:
        out.write("frame.png", b"x" * 1000)
    assert str(info.value).count("\n") == 0
    assert os.listdir(tmp_path) == []


def test_local_check_writable_refuses_files(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        LocalOutput(blocker).check_writable()
    with pytest.raises(OutputError, match="cannot be created"):
        LocalOutput(blocker / "sub").check_writable()
    with pytest.raises(OutputError, match="Could not write"):
        LocalOutput(blocker / "sub").write("a.png", b"1")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_open_output_dispatches(tmp_path, s3):
    assert isinstance(open_output(tmp_path), LocalOutput)
    target = open_output("s3://bucket/some/prefix/", s3=s3)
    assert isinstance(target, S3Output) and target.location == "s3://bucket/some/prefix/"
    with pytest.raises(OutputError):
        open_output("s3://bucket/p")
    with pytest.raises(OutputError):
        open_output("  ")


# -- S3 output -------------------------------------------------------------------------------

def test_s3_output_writes_complete_objects(s3, bucket):
    out = S3Output(s3, bucket, "results/run1")
    out.check_writable()
    assert out.existing() == {}  # the probe is gone
    out.write("scan_000020.png", b"\x89PNG-data")
    export.write_json(out, "scan_processing.json", {"status": "incomplete"})
    head = s3.client.head_object(Bucket=bucket, Key="results/run1/scan_000020.png")
    assert head["ContentType"] == "image/png" and head["ContentLength"] == 9
    assert out.existing() == {"scan_000020.png": 9,
                              "scan_processing.json": len(out.read_bytes("scan_processing.json"))}
    assert export.read_json(out, "scan_processing.json") == {"status": "incomplete"}
    assert out.read_text("absent.json") is None


def test_s3_output_missing_bucket_is_one_sentence_and_writes_nothing(s3, bucket):
    out = S3Output(s3, bucket + "-missing", "p")
    with pytest.raises(OutputError, match="is not writable") as info:
        out.check_writable()
    assert "\n" not in str(info.value)
    assert bucket + "-missing" not in s3.list_buckets()
