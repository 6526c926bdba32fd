"""Decode one HDF5 chunk in Python, byte-exact with HDF5's own filter pipeline.

Supported filters (the ones X-ray detectors write): gzip (1, libdeflate via imagecodecs),
shuffle (2), Blosc (32001), LZ4 (32004, HDF5 LZ4 framing), Bitshuffle (32008, with or without
LZ4/Zstd; the 12-byte header of 8-byte big-endian size + 4-byte block size) and Zstd (32015).
Anything else (Blosc2's frames, fletcher32, szip, scaleoffset, nbit, ZFP, ...) is read by h5py.
No decoder writes more than the chunk's size, whatever a compressed stream's header claims.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .errors import HDF5Error

GZIP, SHUFFLE, BLOSC, LZ4, BITSHUFFLE, ZSTD = 1, 2, 32001, 32004, 32008, 32015


class DecodeError(HDF5Error):
    """A chunk could not be decoded here (the caller falls back to h5py)."""


@dataclass(frozen=True)
class Filter:
    """One step of a dataset's filter pipeline."""

    id: int
    flags: int
    cd_values: tuple


def pipeline(dset) -> tuple[Filter, ...]:
    """The dataset's filters in write order (decode runs them backwards)."""
    plist = dset.id.get_create_plist()
    out = []
    for k in range(plist.get_nfilters()):
        fid, flags, cd_values, _name = plist.get_filter(k)
        out.append(Filter(int(fid), int(flags), tuple(int(v) for v in cd_values)))
    return tuple(out)


def _gzip(data: bytes, nbytes: int, f: Filter, itemsize: int) -> bytes:
    import imagecodecs

    return imagecodecs.deflate_decode(data, out=nbytes)


def _shuffle(data: bytes, nbytes: int, f: Filter, itemsize: int) -> bytes:
    size = f.cd_values[0] if f.cd_values else itemsize
    if size <= 1 or len(data) < size:
        return data
    n = len(data) // size
    body = np.frombuffer(data, np.uint8, n * size).reshape(size, n).T.tobytes()
    return body + data[n * size :]  # HDF5 leaves the remainder bytes as they are


def _blosc(data: bytes, nbytes: int, f: Filter, itemsize: int) -> bytes:
    import imagecodecs

    return imagecodecs.blosc_decode(data, out=nbytes)  # never more than the chunk


def _zstd(data: bytes, nbytes: int, f: Filter, itemsize: int) -> bytes:
    import imagecodecs

    return imagecodecs.zstd_decode(data, out=nbytes)  # never more than the chunk


def _lz4(data: bytes, nbytes: int, f: Filter, itemsize: int) -> bytes:
    import imagecodecs

    return imagecodecs.lz4h5_decode(data, out=nbytes)  # never more than the chunk


def _bitshuffle(data: bytes, nbytes: int, f: Filter, itemsize: int) -> bytes:
    import bitshuffle

    cd = f.cd_values
    elem = cd[2] if len(cd) > 2 and cd[2] else itemsize
    compression = cd[4] if len(cd) > 4 else 0
    if compression in (2, 3):  # LZ4, Zstd: 8-byte BE total size + 4-byte BE block size
        total, block_bytes = struct.unpack(">QI", data[:12])
        if total != nbytes:  # a header claiming more than the chunk: never allocated
            raise DecodeError(f"Bitshuffle header claims {total} bytes, the chunk has {nbytes}")
        n = total // elem
        body = np.frombuffer(data, np.uint8, offset=12)
        if compression == 2:
            out = bitshuffle.decompress_lz4(body, (n,), np.dtype(f"V{elem}"), block_bytes // elem)
        else:
            out = bitshuffle.decompress_zstd(body, (n,), np.dtype(f"V{elem}"), block_bytes // elem)
        return out.tobytes()
    if compression != 0:
        raise DecodeError(f"Bitshuffle compression {compression} is not supported here")
    block = cd[3] if len(cd) > 3 else 0
    n = len(data) // elem
    arr = np.frombuffer(data, np.dtype(f"V{elem}"), n)
    return bitshuffle.bitunshuffle(arr, block).tobytes() + data[n * elem :]


DECODERS = {
    GZIP: _gzip,
    SHUFFLE: _shuffle,
    BLOSC: _blosc,
    ZSTD: _zstd,
    LZ4: _lz4,
    BITSHUFFLE: _bitshuffle,
}


def supported(filters: tuple[Filter, ...]) -> bool:
    """Whether :func:`decode_chunk` can decode every filter of this pipeline."""
    return all(f.id in DECODERS for f in filters)


def decode_chunk(raw: bytes, filters: tuple[Filter, ...], filter_mask: int, dtype: np.dtype,
                 chunk_shape: tuple) -> np.ndarray:
    """Undo ``filters`` (skipping those whose bit is set in ``filter_mask``) on one chunk.

    Returns
    -------
    ndarray
        Shape ``chunk_shape``, dtype ``dtype``, read-only view of the decoded bytes.

    Raises
    ------
    DecodeError
        A filter is not supported here, or the decoded size is not the chunk's size.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(chunk_shape)) * dtype.itemsize
    data = raw
    for k in range(len(filters) - 1, -1, -1):
        if filter_mask & (1 << k):
            continue
        f = filters[k]
        decoder = DECODERS.get(f.id)
        if decoder is None:
            raise DecodeError(f"filter {f.id} is not decoded here")
        try:
            data = decoder(data, nbytes, f, dtype.itemsize)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"filter {f.id} failed: {type(exc).__name__}: {exc}") from None
    if len(data) != nbytes:
        raise DecodeError(f"decoded chunk has {len(data)} bytes, expected {nbytes}")
    return np.frombuffer(data, dtype).reshape(chunk_shape)
