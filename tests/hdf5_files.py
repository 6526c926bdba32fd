"""Small synthetic HDF5 files for the hdf5 tests (each well under 2 MB)."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

N, H, W = 6, 64, 96

#: The image stack of each real third-party test file (tests/data/third_party), None where there is none.
SHARED_STACKS = {
    "diamond_k11_diad_imaging.h5": "/entry/detector/detector",
    "aps_tooth_dataexchange.h5": "/exchange/data",
    "eiger_bitshuffle_lz4.h5": "/entry/data/data",
    "blosc_float32.h5": "/dset",
    "zstd_uint8.h5": "/DS1",
    "blosc2.h5": "/DS1",
    "lz4.h5": "/DS1",
    "bshuf.h5": "/DS1",
    "dataexchange_example5.h5": "/exchange/data",
    "scalar.h5": None,
    "compound.h5": None,
    "empty.h5": None,
}


def _frames(dtype, n=N, h=H, w=W, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 1000 + 800 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (w * h / 6))
    stack = np.stack([rng.poisson(base * (1 + 0.05 * k)) for k in range(n)])
    if np.dtype(dtype).kind == "f":
        return (stack / 7.0).astype(dtype)
    return stack.astype(dtype)


# name -> (dtype, h5py create_dataset keyword arguments, shape or None for (N, H, W))
VARIANTS = {
    "one_frame_chunks": ("uint16", {"chunks": (1, H, W)}, None),
    "tiled_chunks": ("uint16", {"chunks": (4, 32, 32)}, None),  # spans frames and tiles them
    "contiguous": ("uint16", {}, None),
    "bitshuffle_lz4": ("uint16", {"chunks": (1, H, W), **hdf5plugin.Bitshuffle(cname="lz4")}, None),
    "bitshuffle_zstd": ("uint32", {"chunks": (1, H, W), **hdf5plugin.Bitshuffle(cname="zstd")}, None),
    "lz4": ("uint16", {"chunks": (1, H, W), **hdf5plugin.LZ4()}, None),
    "blosc": ("float32", {"chunks": (1, H, W), **hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE)}, None),
    "zstd": ("uint32", {"chunks": (1, H, W), **hdf5plugin.Zstd()}, None),
    "gzip_shuffle": ("uint16", {"chunks": (1, H, W), "compression": "gzip", "shuffle": True}, None),
    "gzip_shuffle_f32_tiled": ("float32", {"chunks": (2, 40, 40), "compression": "gzip", "shuffle": True}, None),
    "two_d": ("uint16", {"chunks": (32, 32), "compression": "gzip"}, (H, W)),
    "four_d": ("uint16", {"chunks": (1, 1, H, W), "compression": "gzip"}, (2, 3, H, W)),
    "big_endian": (">u2", {"chunks": (1, H, W), "compression": "gzip"}, None),
}


def write_variant(path: Path, name: str) -> Path:
    dtype, kwargs, shape = VARIANTS[name]
    if shape is None:
        data = _frames(dtype)
    else:
        n = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        data = _frames(dtype, n=n).reshape(shape)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=data, dtype=dtype, **kwargs)
    return path


def write_userblock(path: Path) -> Path:
    with h5py.File(path, "w", userblock_size=32768) as f:
        f.create_dataset("/exchange/data", data=_frames("uint16"), chunks=(1, H, W),
                         compression="gzip")
    with open(path, "r+b") as f:
        f.write(b"userblock: not HDF5".ljust(64, b" "))
    return path


def write_partial(path: Path) -> Path:
    """A chunked stack where only frames 0 and 2 were ever written (the rest: fill value)."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("/data", shape=(4, H, W), dtype="uint16", chunks=(1, H, W),
                             compression="gzip", fillvalue=7)
        frames = _frames("uint16", n=3)
        d[0], d[2] = frames[0], frames[2]
    return path


def write_unknown_filter(path: Path) -> Path:
    """A stack whose filter id was patched to 32999, a filter nobody has."""
    with h5py.File(path, "w") as f:
        f.create_dataset("/data", data=_frames("uint16"), chunks=(1, H, W), **hdf5plugin.BZip2())
    raw = bytearray(path.read_bytes())
    # v1 filter pipeline message: id, name length (8, padded), flags, n values, "bzip2\0.."
    needle = (307).to_bytes(2, "little") + (8).to_bytes(2, "little")
    at = raw.find(needle)
    assert raw[at + 8 : at + 13] == b"bzip2"
    assert at > 0 and raw.find(needle, at + 1) == -1, "pipeline message not found exactly once"
    raw[at : at + 2] = (32999).to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    return path


def write_links(path: Path) -> Path:
    """Soft, external and dangling links; a virtual dataset over another file; attributes."""
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "links and things"
        f.attrs["long"] = np.arange(1000.0)
        f.attrs["small"] = np.array([1, 2, 3], dtype=np.int32)
        f.attrs["bytes"] = np.bytes_(b"bytes text")
        g = f.create_group("entry")
        g.attrs["NX_class"] = "NXentry"
        g.create_dataset("stack", data=_frames("uint16", n=3), chunks=(1, H, W))
        f["soft"] = h5py.SoftLink("/entry/stack")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["external"] = h5py.ExternalLink("other_file.h5", "/data")
        layout = h5py.VirtualLayout(shape=(2, H, W), dtype="uint16")
        layout[0] = h5py.VirtualSource("other_file.h5", "/data", shape=(H, W))
        f.create_virtual_dataset("virtual", layout, fillvalue=0)
    return path


def write_nexus(path: Path) -> Path:
    """NeXus default chain pointing at /scan/det/frames, plus a larger decoy stack."""
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "scan"
        scan = f.create_group("scan")
        scan.attrs.update({"NX_class": "NXentry", "default": "det"})
        det = scan.create_group("det")
        det.attrs.update({"NX_class": "NXdata", "signal": "frames"})
        det.create_dataset("frames", data=_frames("uint16", n=2), chunks=(1, H, W))
        f.create_dataset("decoy/big", data=_frames("uint16", n=5), chunks=(1, H, W))
    return path


def write_largest(path: Path) -> Path:
    """No well-known path: the largest 3-D dataset wins over bigger 2-D and 1-D ones."""
    with h5py.File(path, "w") as f:
        f.create_dataset("a/small3d", data=_frames("uint16", n=2))
        f.create_dataset("b/c/large3d", data=_frames("uint16", n=4))
        f.create_dataset("big2d", data=np.zeros((300, 300), "uint16"))
        f.create_dataset("line", data=np.zeros(100000, "uint16"))
        f.create_dataset("text", data=np.array([b"a", b"b"]))
    return path


def write_only2d(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("small", data=np.zeros((10, 10), "float32"))
        f.create_dataset("image", data=np.ones((40, 50), "float32"))
    return path


def write_filter_mask(path: Path) -> tuple[Path, np.ndarray]:
    """gzip+shuffle stack whose chunks 1 and 2 were stored with filters skipped (filter_mask)."""
    frames = _frames("uint16", n=3)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("/data", shape=frames.shape, dtype="uint16", chunks=(1, H, W),
                             compression="gzip", shuffle=True)
        filters = [d.id.get_create_plist().get_filter(k)[0] for k in range(2)]
        assert filters == [2, 1]  # shuffle first, then gzip
        d[0] = frames[0]
        shuffled = frames[1].view(np.uint8).reshape(-1, 2).T.tobytes()
        d.id.write_direct_chunk((1, 0, 0), shuffled, filter_mask=0b10)  # gzip skipped
        d.id.write_direct_chunk((2, 0, 0), frames[2].tobytes(), filter_mask=0b11)  # both skipped
    return path, frames
