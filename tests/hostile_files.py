"""Small HDF5 files that ask a server for far more than their size (issue 14, item 6).

Each is a few bytes to a few MB on the store and claims gigabytes, thousands of chunks or
megabytes of metadata: what one session could open to starve everyone else. Every file also
holds a normal small stack at ``/entry/data/data`` where that helps the test load it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import h5py
import numpy as np

#: The frame the issue's files claim: 40000 wide, 20000 high, uint16 (1.6 GB per frame).
HUGE = (20000, 40000)


def claim(path: Path, frames: int = 5) -> Path:
    """A file of a few hundred bytes claiming ``frames`` frames of 40000×20000 uint16 (8 GB):
    no chunk is written, so reading a frame would allocate it full of the fill value."""
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("data", shape=(frames, *HUGE), dtype="u2", chunks=(1, 2000, 4000))
    return path


def bomb(path: Path, frames: int = 1, chunk: tuple[int, int] = (4000, 4000)) -> Path:
    """A decompression bomb: every chunk of 40000×20000 uint16 frames is the same deflated
    block of zeros (32 MB each, ~32 KB stored): ~1.6 MB per 1.6 GB frame."""
    block = zlib.compress(bytes(2 * chunk[0] * chunk[1]), 9)
    with h5py.File(path, "w", libver="latest") as f:
        dset = f.create_dataset("data", shape=(frames, *HUGE), dtype="u2", chunks=(1, *chunk),
                                compression="gzip")
        for k in range(frames):
            for y in range(0, HUGE[0], chunk[0]):
                for x in range(0, HUGE[1], chunk[1]):
                    dset.id.write_direct_chunk((k, y, x), block)
    return path


def many_chunks(path: Path, frame: tuple[int, int] = (256, 256), chunk: int = 4,
                frames: int = 2) -> Path:
    """Frames split into tiny chunks: (256/4)² = 4096 chunks per frame (a frame read costs
    4096 chunk-index lookups: ~8 s in memory, more over the network)."""
    data = (np.arange(frames * frame[0] * frame[1]) % 60000).astype("u2").reshape(frames, *frame)
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("data", data=data, chunks=(1, chunk, chunk))
    return path


def normal_stack(f: h5py.File, frames: int = 4) -> None:
    f.create_dataset("/entry/data/data", data=np.arange(frames * 64, dtype="u2").reshape(
        frames, 8, 8), chunks=(1, 8, 8))


def big_attributes(path: Path, nbytes: int = 2 * 1024**2) -> Path:
    """Attributes of ``nbytes``: a uint8 array (dense attribute storage) and a string."""
    with h5py.File(path, "w", libver="latest") as f:
        normal_stack(f)
        f.attrs["blob"] = np.full(nbytes, 7, np.uint8)
        f.attrs["text"] = "x" * nbytes
        f.attrs["title"] = "small and shown"
    return path


def many_groups(path: Path, n: int) -> Path:
    """A root with ``n`` (empty) groups besides the stack."""
    with h5py.File(path, "w", libver="latest") as f:
        normal_stack(f)
        for k in range(n):
            f.create_group(f"g{k:06d}")
    return path


def all_of(folder: Path, *, groups: int = 2000) -> dict[str, Path]:
    """Every hostile file, by name."""
    return {
        "claim.h5": claim(folder / "claim.h5"),
        "bomb.h5": bomb(folder / "bomb.h5"),
        "chunks.h5": many_chunks(folder / "chunks.h5"),
        "attrs.h5": big_attributes(folder / "attrs.h5"),
        "groups.h5": many_groups(folder / "groups.h5", groups),
    }
