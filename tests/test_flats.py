"""Flats and darks from the file: the sources, the correction against an independent formula
on hand-made arrays and on real Data Exchange files, the CLI and the provenance."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from dashboard.cli import main
from dashboard.processing import flats
from dashboard.processing.batch import InvalidBatch, plan_batch, run_batch
from dashboard.processing.flats import FieldSource, parse_source
from dashboard.processing.pipeline import process

DX = "dataexchange_example5.h5"  # uint16 projections, 2 white and 10 dark frames
TOOTH = "aps_tooth_dataexchange.h5"  # float32 projections, 10 white and 10 dark frames


def norm(a):
    a = np.asarray(a)
    return a / np.iinfo(a.dtype).max if a.dtype.kind in "ui" else a.astype(np.float64)


def reference(frame, flat_frames, dark_frames=None, sigma=4.0, flat=None):
    """The pipeline written out in float64 from its description (no project code); ``flat``:
    the frame's flat itself (normalized), instead of the mean of ``flat_frames``."""
    image = norm(frame)
    if flat is None:
        flat = np.mean([norm(f) for f in flat_frames], axis=0)
    if dark_frames is not None:
        dark = np.mean([norm(d) for d in dark_frames], axis=0)
        image, flat = image - dark, flat - dark
    corrected = image / np.maximum(flat, 1e-6)
    lo, hi = np.percentile(corrected, [1, 99])
    stretched = np.clip((corrected - lo) / (hi - lo), 0, 1) if hi > lo else 0 * corrected
    return corrected, gaussian_filter(stretched, sigma, mode="reflect")


def test_sources_parse_from_the_options_text():
    assert parse_source("", "flat") == flats.BEFORE_START
    assert parse_source(None, "dark") == flats.NO_DARK
    assert parse_source("file", "dark") == FieldSource("file")
    assert parse_source("key:exchange/data_dark", "dark") == FieldSource(
        "dataset", dataset="/exchange/data_dark")
    other = parse_source("s3://bucket/flats.h5#/entry/flat", "flat")
    assert other == FieldSource("object", dataset="/entry/flat", url="s3://bucket/flats.h5")
    assert other.text == "s3://bucket/flats.h5#/entry/flat"
    assert parse_source("/data/flats.nxs", "flat").url == "/data/flats.nxs"
    with pytest.raises(flats.FieldUnavailable, match="dark cannot come from the frames"):
        parse_source("before-start", "dark")
    with pytest.raises(flats.FieldUnavailable, match="needs a flat"):
        parse_source("none", "flat")
    with pytest.raises(flats.FieldUnavailable, match="Unknown flat source 'sideways'"):
        parse_source("sideways", "flat")
    with pytest.raises(flats.FieldUnavailable, match="after key:"):
        parse_source("key:", "flat")


def test_dark_correction_equals_the_formula_on_hand_made_arrays():
    rng = np.random.default_rng(3)
    dark = rng.integers(90, 110, (64, 48)).astype(np.uint16)
    flat = (dark + rng.integers(20_000, 30_000, (64, 48))).astype(np.uint16)
    frame = (dark + (flat - dark) * rng.uniform(0.2, 0.9, (64, 48))).astype(np.uint16)
    frame[0, 0] = flat[0, 0] = dark[0, 0]  # F - D = 0 there: floored, never a division by 0
    norm = np.float32(65535)
    stages = process(frame, flat / norm, 2.0, dark=dark / norm)
    corrected, smoothed = reference(frame, [flat], [dark], sigma=2.0)
    np.testing.assert_allclose(stages.flat_corrected, corrected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(stages.smoothed, smoothed, atol=2e-5)
    # Without a dark, the seed's I / F.
    plain = process(frame, flat / norm, 2.0)
    np.testing.assert_allclose(plain.flat_corrected, reference(frame, [flat])[0], rtol=1e-5)


def test_data_exchange_flats_and_darks_from_the_file(testdata, tmp_path):
    """``file`` finds /exchange/data_white and data_dark; Start may be 0; the outputs equal the
    formula; the provenance and the TIFF description say which fields were used."""
    path = testdata / DX
    with h5py.File(path) as f:
        data, white, dark = (f[f"/exchange/{n}"][()] for n in ("data", "data_white", "data_dark"))
    with plan_batch(str(path), start=0, end=4, step=2, fmt="tiff", out=str(tmp_path / "out"),
                    flat="file", dark="file") as plan:
        result = run_batch(plan)
    assert result.ok and result.written == [0, 2, 4]
    import tifffile

    for i in (0, 2, 4):
        out = tifffile.imread(tmp_path / "out" / f"dataexchange_example5_{i:06d}.tiff")
        np.testing.assert_allclose(out, reference(data[i], white, dark)[1], atol=1e-4)
    record = json.loads((tmp_path / "out" / "dataexchange_example5_processing.json").read_text())
    assert record["flat"] == {"source": "dataset", "dataset": "/exchange/data_white",
                              "floor": 1e-6}
    assert record["dark"] == {"source": "dataset", "dataset": "/exchange/data_dark"}
    assert "(I - D) / max(F - D, 1e-6)" in record["parameters"]["pipeline"]
    with tifffile.TiffFile(tmp_path / "out" / "dataexchange_example5_000002.tiff") as tif:
        description = json.loads(tif.pages[0].description)
    assert description["flat"] is None
    assert description["flat_source"]["dataset"] == "/exchange/data_white"
    assert description["dark_source"]["dataset"] == "/exchange/data_dark"


def test_the_cli_takes_the_same_choice_and_key_paths_equal_file(testdata, tmp_path, capsys):
    """``--flat file --dark file`` on the float32 tooth scan equals the formula, and naming the
    same datasets with ``key:`` writes the same bytes."""
    path = testdata / TOOTH
    with h5py.File(path) as f:
        data, white, dark = (f[f"/exchange/{n}"][()] for n in ("data", "data_white", "data_dark"))
    base = ["process", str(path), "--end", "3", "--format", "npy", "--sigma", "1"]
    assert main([*base, "--flat", "file", "--dark", "file", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--flat", "key:/exchange/data_white", "--dark",
                 "key:/exchange/data_dark", "--out", str(tmp_path / "b")]) == 0
    for i in range(4):
        name = f"aps_tooth_dataexchange_{i:06d}.npy"
        a = np.load(tmp_path / "a" / name)
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
        np.testing.assert_allclose(a, reference(data[i], white, dark, sigma=1)[1], atol=1e-4)


def test_flats_from_another_object_on_s3(s3, bucket, tmp_path):
    """Flats and darks kept in a file of their own (as httomo's test data does)."""
    rng = np.random.default_rng(5)
    frames = rng.integers(1000, 3000, (6, 32, 40)).astype(np.uint16)
    white = rng.integers(30_000, 40_000, (3, 32, 40)).astype(np.uint16)
    dark = rng.integers(50, 80, (5, 32, 40)).astype(np.uint16)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["/entry/data/data"] = frames
    with h5py.File(tmp_path / "fields.h5", "w") as f:
        f["/flat"], f["/dark"], f["/small"] = white, dark, white[:, :16]
    for name in ("scan.h5", "fields.h5"):
        s3.client.upload_file(str(tmp_path / name), bucket, name)
    fields = f"s3://{bucket}/fields.h5"
    with plan_batch(f"s3://{bucket}/scan.h5", start=0, end=5, fmt="npy", out=str(tmp_path / "o"),
                    s3=s3, flat=f"{fields}#/flat", dark=f"{fields}#/dark") as plan:
        assert run_batch(plan).ok
    for i in range(6):
        np.testing.assert_allclose(np.load(tmp_path / "o" / f"scan_{i:06d}.npy"),
                                   reference(frames[i], white, dark)[1], atol=1e-4)
    record = json.loads((tmp_path / "o" / "scan_processing.json").read_text())
    assert record["flat"]["url"] == fields and record["dark"]["dataset"] == "/dark"

    # Another run into the same folder with other fields is another run: refused.
    with pytest.raises(InvalidBatch, match="holds the results of another run"):
        plan_batch(f"s3://{bucket}/scan.h5", start=0, end=5, fmt="npy", out=str(tmp_path / "o"),
                   s3=s3, flat=f"{fields}#/flat")
    # Fields of another frame shape are refused before anything is written.
    with pytest.raises(InvalidBatch, match=r"frames of 16×40 pixels; the frames processed "
                                           r"have 32×40"):
        plan_batch(f"s3://{bucket}/scan.h5", start=0, end=5, fmt="npy",
                   out=str(tmp_path / "p"), s3=s3, flat=f"{fields}#/small")
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())


def test_a_file_without_fields_of_its_own_gets_one_sentence(testdata, tmp_path, capsys):
    code = main(["process", str(testdata / "lz4.h5"), "--flat", "file", "--end", "0",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and "has no flat field of its own" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # The seed's flat still needs the 20 frames before Start.
    with pytest.raises(InvalidBatch, match="at least 20"):
        plan_batch(str(testdata / DX), start=3, end=4, out=str(tmp_path / "x"))


def nxtomo(path, *, keys, shape=(24, 20), seed=9, drift=0.0):
    """An NXtomo-style file: one stack of darks, flats and projections marked by image_key
    (the detector's data linked into NXdata, as NeXus writers do). ``drift``: the beam
    brightens linearly over the stack by this fraction (flats after the scan are brighter)."""
    rng = np.random.default_rng(seed)
    keys = np.asarray(keys)
    dark = rng.integers(80, 120, shape)
    flat = dark + rng.integers(20_000, 24_000, shape)
    frames = np.empty((len(keys), *shape), np.uint16)
    for i, k in enumerate(keys):
        level = {2: 0.0, 1: 1.0, 0: rng.uniform(0.3, 0.8)}[int(k)]
        beam = (flat - dark) * (1 + drift * i / (len(keys) - 1))
        frames[i] = dark + beam * level + rng.integers(0, 30, shape)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        det = entry.create_group("instrument/detector")
        det["data"], det["image_key"] = frames, keys.astype(np.int32)
        entry.create_group("data")
        entry["data/data"] = det["data"]
        entry["data/image_key"] = det["image_key"]
    return frames


def test_nxtomo_image_key_splits_the_stack_and_numbers_projections(tmp_path):
    """``file`` on an NXtomo stack: flats and darks are its frames marked 1 and 2 (before and
    after the scan, averaged); Start, End and the outputs count projections (key 0)."""
    keys = [2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    frames = nxtomo(tmp_path / "tomo.nxs", keys=keys)
    projections = [i for i, k in enumerate(keys) if k == 0]
    out = tmp_path / "out"
    code = main(["process", str(tmp_path / "tomo.nxs"), "--dataset", "/entry/data/data",
                 "--flat", "file", "--dark", "file", "--start", "1", "--end", "5", "--step", "2",
                 "--format", "npy", "--out", str(out)])
    assert code == 0
    flats_, darks = frames[[2, 3, 11, 12]], frames[[0, 1]]
    for number in (1, 3, 5):
        got = np.load(out / f"tomo_{number:06d}.npy")
        np.testing.assert_allclose(got, reference(frames[projections[number]], flats_, darks)[1],
                                   atol=1e-4)
    record = json.loads((out / "tomo_processing.json").read_text())
    assert record["flat"]["source"] == "image-key" and record["dark"]["source"] == "image-key"
    assert record["flat"]["dataset"] == "/entry/data/image_key"
    assert record["frames"]["numbering"].startswith("projections")
    # End counts projections: 7 of them.
    with pytest.raises(InvalidBatch, match=r"less than the number of projections .*7"):
        plan_batch(str(tmp_path / "tomo.nxs"), dataset="/entry/data/data", flat="file",
                   start=0, end=7, out=str(tmp_path / "o2"))
    # A key that marks no dark frames: one sentence, before anything is written.
    nxtomo(tmp_path / "nodark.nxs", keys=[1, 0, 0, 0])
    with pytest.raises(InvalidBatch, match="marks no dark frames"):
        plan_batch(str(tmp_path / "nodark.nxs"), dataset="/entry/data/data", flat="file",
                   dark="file", start=0, out=str(tmp_path / "o3"))
    assert not (tmp_path / "o3").exists() or not any((tmp_path / "o3").iterdir())


def test_the_process_step_offers_the_files_fields_and_previews_what_the_batch_writes(
        tmp_path, testdata):
    """Dashboard state: an NXtomo file offers its image key's flats and darks (Start and End
    then count projections), a Data Exchange file its white and dark fields; the preview's
    smoothed panel equals the batch's NPY output bit for bit."""
    from test_state_provider import load, memory_session

    keys = [2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    frames = nxtomo(tmp_path / "tomo.nxs", keys=keys)
    files = {"tomo.nxs": ((tmp_path / "tomo.nxs").read_bytes(), None),
             "dx.h5": ((testdata / DX).read_bytes(), None)}
    session, _ = memory_session(files)
    try:
        load(session, "tomo.nxs")
        p = session.processor
        assert session.wait(30)
        key = "key:/entry/data/image_key"
        assert list(p.param.flat.objects.values()) == ["before-start", key]
        assert list(p.param.dark.objects.values()) == ["none", key]
        assert list(p.param.flat.names)[1] == "image_key (4 flat frames)"
        assert p.problem()  # 13 frames: too few for the 20 before Start
        p.param.update(flat=key, dark=key)
        assert p.param.end.bounds == (0, 6) and p.end == 6  # 7 projections
        p.param.update(start=2, end=6, step=2, sigma=1.5, format="NPY",
                       output=str(tmp_path / "out"))
        assert p.check().startswith("3 frames will be written as NPY. Flat: image_key (4 flat "
                                  "frames) (/entry/data/image_key)")
        assert "Start and End count projections (7)" in p.check()
        p.preview = True
        assert session.wait(60) and p.stages is not None, p.status
        assert p.preview_title.startswith("Projection 6 (the last of the range), flat: the "
                                          "frames /entry/data/image_key marks; dark: ")
        projection = [i for i, k in enumerate(keys) if k == 0][6]
        expected = reference(frames[projection], frames[[2, 3, 11, 12]], frames[[0, 1]], 1.5)
        np.testing.assert_allclose(p.stages.smoothed, expected[1], atol=1e-4)
        p.batch = True
        assert session.wait(120) and p.status == "Batch finished.", p.status
        assert sorted(f.name for f in (tmp_path / "out").iterdir() if f.suffix == ".npy") == [
            "tomo_000002.npy", "tomo_000004.npy", "tomo_000006.npy"]
        assert np.array_equal(np.load(tmp_path / "out" / "tomo_000006.npy"), p.stages.smoothed)

        # Flats before and after the scan: interpolated by position, preview = batch.
        assert p.interpolable
        p.param.update(flat_mode="interpolate", output=str(tmp_path / "interpolated"))
        assert "before and after the scan interpolated by position" in p.check()
        assert (p.start, p.end) == (2, 6)  # the same flat, another way: the range stays
        p.preview = True
        assert session.wait(60) and p.stages is not None, p.status
        assert "before and after the scan, interpolated by position" in p.preview_title
        p.batch = True
        assert session.wait(120) and p.status == "Batch finished.", p.status
        written = np.load(tmp_path / "interpolated" / "tomo_000006.npy")
        assert np.array_equal(written, p.stages.smoothed)
        assert not np.array_equal(written, np.load(tmp_path / "out" / "tomo_000006.npy"))

        load(session, "dx.h5")
        assert session.wait(30)
        assert not p.interpolable and p.flat_mode == "average"
        assert list(p.param.flat.objects.values()) == ["before-start",
                                                       "key:/exchange/data_white"]
        assert list(p.param.dark.objects.values()) == ["none", "key:/exchange/data_dark"]
        assert p.flat == "before-start" and p.start == 20  # the seed's flat stays the default
        p.param.update(flat="key:/exchange/data_white", dark="key:/exchange/data_dark")
        assert p.start == 0 and p.end == 179  # another flat: the whole range, from 0
        p.param.update(step=1, end=3, output=str(tmp_path / "dx"))
        assert p.check() == ("4 frames will be written as NPY. Flat: data_white (2 frames) "
                             "(/exchange/data_white); dark: data_dark (10 frames) "
                             "(/exchange/data_dark).")
    finally:
        session.close()


def test_flats_before_and_after_the_scan_interpolated_by_position(tmp_path):
    """``--flat-interpolate``: each projection's flat is the flats before and after the scan
    (each group averaged) weighted by where it lies between them, against a formula."""
    keys = [2, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    frames = nxtomo(tmp_path / "tomo.nxs", keys=keys, drift=0.25)
    projections = [i for i, k in enumerate(keys) if k == 0]
    out = tmp_path / "out"
    assert main(["process", str(tmp_path / "tomo.nxs"), "--flat", "file", "--dark", "file",
                 "--flat-interpolate", "--format", "npy", "--out", str(out)]) == 0
    before = np.mean([norm(f) for f in frames[[1, 2]]], axis=0)
    after = np.mean([norm(f) for f in frames[[9, 10]]], axis=0)
    for number, raw in enumerate(projections):
        w = (raw - 1.5) / (9.5 - 1.5)
        expected = reference(frames[raw], None, frames[[0]], flat=(1 - w) * before + w * after)
        got = np.load(out / f"tomo_{number:06d}.npy")
        np.testing.assert_allclose(got, expected[1], atol=1e-4)
    averaged = reference(frames[projections[0]], frames[[1, 2, 9, 10]], frames[[0]])[1]
    assert np.abs(np.load(out / "tomo_000000.npy") - averaged).max() > 1e-3  # not the average
    record = json.loads((out / "tomo_processing.json").read_text())
    assert record["flat"]["interpolated"]["before"] == [1, 2]
    assert record["flat"]["interpolated"]["after"] == [9, 10]
    assert "interpolated linearly by stack index" in record["parameters"]["pipeline"]

    # Flats on one side only: nothing to interpolate between, one sentence, nothing written.
    nxtomo(tmp_path / "once.nxs", keys=[2, 1, 1, 0, 0, 0])
    with pytest.raises(InvalidBatch, match="marks flats only before the projections"):
        plan_batch(str(tmp_path / "once.nxs"), flat="file", dark="file", flat_interpolate=True,
                   start=0, fmt="npy", out=str(tmp_path / "once"))
    assert not (tmp_path / "once").exists()
