"""The demo's files: synthetic NeXus and Data Exchange stacks, odd cases, and a few hundred small
objects, each written by one deterministic function (``write_*(path, ...)``)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from .synthetic import RadiographSimulator

MIN_FRAMES = 21  # processing needs 20 flat frames before the first processed one


def _hdf5():
    import h5py
    import hdf5plugin

    return h5py, hdf5plugin


def write_nexus(path: Path, shape: tuple[int, int, int], *, seed: int = 1,
                file_name: str | None = None) -> None:
    """A NeXus (NXentry/NXdata) stack with Bitshuffle-LZ4, one frame per chunk.

    Layout: ``/entry`` (``default="data"``), ``/entry/data`` (NXdata, ``signal="data"``,
    ``axes=["time", ".", "."]``), ``/entry/data/data`` (uint16 frames), ``/entry/data/time``,
    ``/entry/instrument`` (source, monochromator energy, detector with exposure time and pixel
    size; ``detector/data`` is a hard link to the same frames, as beamline writers do),
    ``/entry/sample``, and start/end timestamps.
    """
    h5py, hdf5plugin = _hdf5()
    frames, height, width = shape
    sim = RadiographSimulator(frames, height, width, seed=seed)
    exposure = 0.05
    start = datetime(2026, 11, 17, 14, 3, 12, tzinfo=timezone.utc)
    times = np.arange(frames, dtype=np.float64) * (exposure + 0.002)
    end = start + timedelta(seconds=float(times[-1]) + exposure)
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        f.attrs["file_name"] = file_name or path.name
        f.attrs["file_time"] = start.isoformat()
        f.attrs["creator"] = "echo-s3-viewer demo generator (synthetic data)"
        f.attrs["NeXus_version"] = "v2024.02"
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        entry["title"] = "Foam drainage in a glass capillary (synthetic demo)"
        entry["experiment_identifier"] = "ECHO-DEMO-0001"
        entry["start_time"] = start.isoformat()
        entry["end_time"] = end.isoformat()
        entry["definition"] = "NXxbase"

        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        inst["name"] = "ECHO demo imaging beamline"
        source = inst.create_group("source")
        source.attrs["NX_class"] = "NXsource"
        source["name"] = "Synthetic Light Source"
        source["type"] = "Synchrotron X-ray Source"
        source["probe"] = "x-ray"
        source.create_dataset("current", data=300.0).attrs["units"] = "mA"
        mono = inst.create_group("monochromator")
        mono.attrs["NX_class"] = "NXmonochromator"
        mono.create_dataset("energy", data=25.0).attrs["units"] = "keV"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det["description"] = "sCMOS camera behind a 20 um LuAG:Ce scintillator (simulated)"
        det.create_dataset("count_time", data=exposure).attrs["units"] = "s"
        det.create_dataset("frame_time", data=exposure + 0.002).attrs["units"] = "s"
        det.create_dataset("x_pixel_size", data=1.625).attrs["units"] = "um"
        det.create_dataset("y_pixel_size", data=1.625).attrs["units"] = "um"
        det["layout"] = "area"

        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample["name"] = "aqueous foam in 1.5 mm glass capillary"
        sample["description"] = "Synthetic: drifting capillary, rising liquid front, growing bubbles"
        sample.create_dataset("temperature", data=295.0).attrs["units"] = "K"

        data = entry.create_group("data")
        data.attrs.update({
            "NX_class": "NXdata", "signal": "data", "axes": ["time", ".", "."],
            "time_indices": 0,
        })
        dset = data.create_dataset(
            "data", shape=shape, dtype="uint16", chunks=(1, height, width),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        dset.attrs.update({"units": "counts", "long_name": "X-ray intensity",
                           "interpretation": "image"})
        t = data.create_dataset("time", data=times)
        t.attrs.update({"units": "s", "long_name": "time since start of scan",
                        "start": start.isoformat()})
        for i, frame in enumerate(sim):
            dset[i] = frame
        det["data"] = dset  # hard link, as in files written by beamline software


def write_dxchange(path: Path, shape: tuple[int, int, int], flats: int, *, seed: int = 2) -> None:
    """A Data Exchange file: ``/exchange/data``, ``data_white``, ``data_dark``; gzip + shuffle."""
    h5py, _ = _hdf5()
    frames, height, width = shape
    sim = RadiographSimulator(frames, height, width, seed=seed, peak_counts=30000.0, particles=16)
    comp = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with h5py.File(path, "w") as f:
        f.create_dataset("implements", data="exchange:measurement:process")
        exchange = f.create_group("exchange")
        datasets = {
            "data": (frames, sim.frame),
            "data_white": (flats, sim.white),
            "data_dark": (flats, sim.dark),
        }
        for name, (n, make) in datasets.items():
            dset = exchange.create_dataset(name, shape=(n, height, width), dtype="uint16",
                                           chunks=(1, height, width), **comp)
            dset.attrs["units"] = "counts"
            for i in range(n):
                dset[i] = make(i)
        exchange["data"].attrs["axes"] = "theta:y:x"
        exchange.create_dataset("theta", data=np.linspace(0.0, 180.0, frames)).attrs["units"] = "deg"
        meas = f.create_group("measurement")
        inst = meas.create_group("instrument")
        inst.create_group("source")["name"] = "Synthetic Light Source"
        mono = inst.create_group("monochromator")
        mono.create_dataset("energy", data=30.0).attrs["units"] = "keV"
        det = inst.create_group("detector")
        det["manufacturer"] = "Simulated"
        det.create_dataset("exposure_time", data=0.1).attrs["units"] = "s"
        det.create_dataset("pixel_size_x", data=3.25).attrs["units"] = "um"
        meas.create_group("sample")["name"] = "sintered glass beads (synthetic)"


def write_short(path: Path, shape: tuple[int, int, int], *, seed: int = 3) -> None:
    """A NeXus stack with fewer than 21 frames (Zstd), which processing must refuse."""
    h5py, hdf5plugin = _hdf5()
    frames, height, width = shape
    assert frames < MIN_FRAMES
    sim = RadiographSimulator(frames, height, width, seed=seed, particles=8)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        entry["title"] = "Alignment scan (short)"
        data = entry.create_group("data")
        data.attrs.update({"NX_class": "NXdata", "signal": "data"})
        dset = data.create_dataset("data", shape=shape, dtype="uint16",
                                   chunks=(1, height, width), **hdf5plugin.Zstd(clevel=3))
        for i, frame in enumerate(sim):
            dset[i] = frame


def write_image2d(path: Path, shape: tuple[int, int], *, seed: int = 4) -> None:
    """A single 2-D image (an averaged flat field), contiguous, which is not a stack."""
    h5py, _ = _hdf5()
    sim = RadiographSimulator(1, *shape, seed=seed)
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("image", data=sim.white(0))
        dset.attrs.update({"units": "counts", "description": "averaged open-beam image"})
        f.attrs["instrument"] = "ECHO demo imaging beamline"


def write_not_hdf5(path: Path) -> None:
    path.write_text(
        "Scan 0004 notes\n===============\n\n"
        "This object is named .h5 but it is plain text: the beamline logbook was exported\n"
        "with the wrong extension. Opening it as HDF5 must fail with a clear message.\n"
    )


# -- many small objects, so that listing, filtering and sorting have something to do ----


def small_objects() -> dict[str, Callable[[Path], None]]:
    """About 300 small objects across nested directories, deterministic."""
    rng = np.random.default_rng(20261117)
    out: dict[str, Callable[[Path], None]] = {}

    corpus = _corpus(1 << 18)

    def text(n: int, seed: int) -> Callable[[Path], None]:
        start = seed * 7919 % len(corpus)
        return lambda p: p.write_bytes((corpus[start:] + corpus * (n // len(corpus) + 1))[:n])

    def tiny_h5(frames: int, side: int, seed: int) -> Callable[[Path], None]:
        return lambda p: _write_tiny_h5(p, frames, side, seed)

    def tif(side: int, seed: int) -> Callable[[Path], None]:
        return lambda p: _write_tiff(p, side, seed)

    def js(seed: int) -> Callable[[Path], None]:
        return lambda p: p.write_text(json.dumps(_metadata(seed), indent=2))

    seed = 100
    for month in ("2026-09", "2026-10", "2026-11"):
        for n in range(1, 21):
            seed += 1
            stem = f"beamline/{month}/raw/scan_{n:04d}"
            out[f"{stem}.h5"] = tiny_h5(int(rng.integers(5, 40)), int(rng.choice([16, 32, 48])),
                                        seed)
            out[f"{stem}.log"] = text(int(rng.integers(200, 40_000)), seed)
            if n % 2:
                out[f"{stem}_meta.json"] = js(seed)
    for n in range(1, 41):
        seed += 1
        out[f"processed/scan_0001/frames/frame_{20 + n:05d}.tif"] = tif(
            int(rng.choice([32, 64, 96])), seed)
    for n in range(1, 31):
        seed += 1
        out[f"processed/scan_0007/png_export/frame_{20 + n:05d}.png.txt"] = text(
            int(rng.integers(50, 500)), seed)
    for kind in ("darks", "flats"):
        for n in range(1, 16):
            seed += 1
            out[f"calibration/{kind}/{kind[:-1]}_{n:03d}.hdf5"] = tiny_h5(
                int(rng.integers(MIN_FRAMES, 26)), 32, seed)
    out["calibration/geometry.json"] = js(7)
    for user in ("alice", "bob", "chandra"):
        for n in range(1, 11):
            seed += 1
            out[f"users/{user}/notes_{n:02d}.txt"] = text(int(rng.integers(100, 200_000)), seed)
            out[f"users/{user}/analysis/run_{n:02d}.nxs"] = tiny_h5(
                int(rng.integers(2, 30)), 24, seed)
    for week in range(44, 49):
        for n in range(1, 7):
            seed += 1
            out[f"archive/2025/q4/week_{week}/run_{n:03d}/result.h5"] = tiny_h5(
                int(rng.integers(2, 16)), 16, seed)
            out[f"archive/2025/q4/week_{week}/run_{n:03d}/summary.json"] = js(seed)
    out["docs/BEAMLINE_README.md"] = text(3000, 1)
    out["docs/Data Policy (2026).pdf.txt"] = text(12_000, 2)  # spaces and brackets in a key
    return out


_WORDS = ("beam", "shutter", "sample", "stage", "flat", "dark", "exposure", "frame", "energy",
          "ring", "current", "top-up", "detector", "temperature", "ok", "warning", "scan")


def _corpus(size: int) -> bytes:
    """About ``size`` bytes of log-like text lines (deterministic)."""
    rng = np.random.default_rng(42)
    words = rng.choice(_WORDS, size=size // 6 + 8)
    lines = [f"2026-11-17T14:{i % 60:02d}:{(i * 7) % 60:02d} " + " ".join(words[i:i + 8])
             for i in range(0, len(words), 8)]
    return ("\n".join(lines) + "\n").encode()


def _metadata(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "proposal": f"RB{2600000 + seed}",
        "energy_keV": round(float(rng.uniform(15, 40)), 2),
        "exposure_s": round(float(rng.choice([0.01, 0.02, 0.05, 0.1])), 3),
        "pixel_size_um": float(rng.choice([0.65, 1.625, 3.25])),
        "sample": str(rng.choice(["foam", "battery", "alloy", "bone", "concrete"])),
        "frames": int(rng.integers(10, 4000)),
        "synthetic": True,
    }


def _write_tiny_h5(path: Path, frames: int, side: int, seed: int) -> None:
    h5py, hdf5plugin = _hdf5()
    sim = RadiographSimulator(frames, side, side, seed=seed, particles=3)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        data = entry.create_group("data")
        data.attrs.update({"NX_class": "NXdata", "signal": "data"})
        data.create_dataset("data", data=np.stack(list(sim)), chunks=(1, side, side),
                            **hdf5plugin.Bitshuffle(cname="lz4"))


def _write_tiff(path: Path, side: int, seed: int) -> None:
    import tifffile

    sim = RadiographSimulator(1, side, side, seed=seed, particles=3)
    buf = io.BytesIO()
    tifffile.imwrite(buf, sim.frame(0))
    path.write_bytes(buf.getvalue())
