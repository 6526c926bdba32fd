"""Values in Inspect and ``info --values``: small values whole (with units), 1-D numbers for a
plot (with their NeXus axis), small tables, compound rows; hostile datasets (huge, vlen, odd
types) get a bounded read or a one-line reason. Over S3 (moto) the bytes fetched are counted."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dashboard.cli import main
from dashboard.hdf5.source import open_source
from dashboard.hdf5.values import MAX_ELEMENTS, VALUE_BYTES, read_value

TOOTH = "aps_tooth_dataexchange.h5"


def test_the_tooth_files_angles_title_and_names(testdata):
    with open_source(str(testdata / TOOTH)) as source:
        theta = read_value(source, "/exchange/theta")
        title = read_value(source, "/exchange/title")
        stack = read_value(source, "/exchange/data")
        group = read_value(source, "/exchange")
    with h5py.File(testdata / TOOTH) as f:
        angles = f["/exchange/theta"][()]
    assert theta.kind == "array" and theta.units == "degrees" and theta.partial is None
    np.testing.assert_array_equal(theta.data, angles)
    assert theta.text().endswith(f"degrees (min 0, max {angles.max():.6g})")
    assert (title.kind, title.data) == ("text", "tomography_raw_projections")
    assert stack.kind == "reason" and stack.reason.endswith("an image stack, shown in Frames")
    assert group.reason == "a group"


def test_scalars_strings_and_compound_rows(testdata):
    with open_source(str(testdata / "scalar.h5")) as source:
        assert read_value(source, "/0d").text() == "42"
        assert read_value(source, "/0ds").text() == "hello"
        assert read_value(source, "/1ds").text() == "['hello']"
    with open_source(str(testdata / "compound.h5")) as source:
        rows = read_value(source, "/dset")
    assert rows.kind == "records" and len(rows.data) == 72
    assert rows.data[0] == {"date": 24, "time": "13:53", "temp": 63, "pressure": 29.88,
                            "wind": "SE 10"}


def hostile(path):
    """A small file with every odd dataset a viewer meets, and a few huge ones (compressed)."""
    with h5py.File(path, "w") as f:
        f["energy"] = 30.0
        f["energy"].attrs["units"] = "keV"
        f.create_dataset("huge", shape=(50_000_000,), dtype="uint8", chunks=(100_000,),
                         compression="gzip", fillvalue=7)
        f["huge"][:100_000] = np.arange(100_000) % 251
        f.create_dataset("long_string", data="x" * 3_000_000, dtype=h5py.string_dtype())
        f.create_dataset("nothing", data=h5py.Empty("f4"))
        f.create_dataset("zero", shape=(0, 3), dtype="f4")
        f.create_dataset("mode", data=np.array([0, 1, 1], "u1"),
                         dtype=h5py.enum_dtype({"off": 0, "on": 1}, basetype="u1"))
        f.create_dataset("ragged", shape=(2,), dtype=h5py.vlen_dtype("i4"))
        f["ragged"][0] = [1, 2, 3]
        f.create_dataset("refs", data=[f["energy"].ref], dtype=h5py.ref_dtype)
        f["opaque"] = np.void(b"\x00\x01\x02\x03")
        f["matrix"] = np.arange(12.0).reshape(3, 4)
        f["image"] = np.zeros((512, 512), "u2")
        f["elsewhere"] = h5py.ExternalLink("/etc/passwd.h5", "/secret")
        nxdata = f.create_group("scan")
        nxdata.attrs.update({"NX_class": "NXdata", "signal": "current", "axes": ["time"]})
        nxdata["current"] = np.linspace(200.0, 198.0, 50)
        nxdata["current"].attrs["units"] = "mA"
        nxdata["time"] = np.arange(50) * 0.5
        trap = f.create_group("trap")  # an axis named by the file that is a link elsewhere
        trap.attrs.update({"NX_class": "NXdata", "signal": "y", "axes": ["x"]})
        trap["y"] = np.arange(5.0)
        trap["x"] = h5py.ExternalLink("/etc/other.h5", "/x")
    return path


def test_hostile_datasets_over_s3_are_bounded_or_refused_in_one_line(s3, bucket, tmp_path):
    s3.client.upload_file(str(hostile(tmp_path / "odd.h5")), bucket, "odd.h5")
    with open_source(f"s3://{bucket}/odd.h5", s3=s3) as source:
        def value(path):
            before = source.stats.snapshot()
            found = read_value(source, path)
            after = source.stats.snapshot()
            fetched = sum(after[k] - before[k] for k in after if k.endswith("bytes"))
            assert fetched <= VALUE_BYTES, (path, fetched)
            return found

        assert value("/energy").text() == "30 keV"
        huge = value("/huge")
        assert huge.kind == "array" and len(huge.data) == MAX_ELEMENTS
        assert huge.partial == f"first {MAX_ELEMENTS} of 50000000 values"
        np.testing.assert_array_equal(huge.data, np.arange(MAX_ELEMENTS) % 251)
        assert value("/long_string").reason == (
            f"reading it would take more than {VALUE_BYTES // 1024} KiB (its chunks are too "
            "large to preview)")
        assert value("/nothing").reason == "empty: no data (a null dataspace)"
        assert value("/zero").reason == "empty (shape 0×3)"
        assert value("/mode").text() == "['off', 'on', 'on']"
        assert value("/ragged").reason == "variable-length sequences of int32 (not shown)"
        assert value("/refs").reason == "HDF5 object references (not followed)"
        assert value("/opaque").reason == "opaque data (4 bytes each)"
        matrix = value("/matrix")
        assert matrix.kind == "table" and matrix.data.tolist()[2] == [8.0, 9.0, 10.0, 11.0]
        assert value("/image").reason == ("2-D, 512×512: an image, shown in Frames (too large "
                                          "for a table)")
        assert value("/elsewhere").reason == "an external link (/elsewhere), not followed"
        assert value("/elsewhere/deeper").reason == "an external link (/elsewhere), not followed"
        trapped = value("/trap/y")
        assert trapped.kind == "array" and trapped.axis is None  # the link was not opened
        assert value("/missing").reason == "not in this file"
        current = value("/scan/current")
        assert current.units == "mA" and current.axis[0] == "time"
        np.testing.assert_array_equal(current.axis[1], np.arange(50) * 0.5)
        assert read_value(source, "/energy").text() == "30 keV"  # the budget is per read


def test_info_values_prints_them(testdata, capsys):
    assert main(["info", str(testdata / TOOTH), "--values"]) == 0
    out = capsys.readouterr().out
    assert "title  scalar object" in out and "= tomography_raw_projections" in out
    theta = next(line for line in out.splitlines() if line.strip().startswith("theta"))
    assert "= [0, 0.994475, 1.98895" in theta and "degrees (min 0, max 179.006)" in theta
    assert main(["info", str(testdata / TOOTH), "--values", "--json"]) == 0
    assert '"kind": "array"' in capsys.readouterr().out


@pytest.mark.parametrize("path, text", [("/exchange/theta", "degrees"),
                                        ("/measurement/sample/name", "Tooth")])
def test_the_inspect_step_reads_the_value_chosen(testdata, path, text):
    """Dashboard state: the tree's datasets are offered; the chosen one's value arrives."""
    from test_state_provider import load, memory_session

    session, _ = memory_session({"tooth.h5": ((testdata / TOOTH).read_bytes(), None)})
    try:
        load(session, "tooth.h5")
        values = session.values
        assert path in values.param.path.objects.values()
        values.path = path
        assert session.wait(30) and values.value is not None, values.status
        assert values.value.path == path and text in values.value.text()
        assert values.status == "" and not values.failed
    finally:
        session.close()
