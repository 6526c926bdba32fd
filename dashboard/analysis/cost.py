"""What reading a frame of the open dataset costs, and why: the cost inspector's report."""

from __future__ import annotations

import importlib.util
import math

import h5py

from ..hdf5.decode import BITSHUFFLE, BLOSC, DECODERS, GZIP, LZ4, SHUFFLE, ZSTD

#: The Python package behind each built-in decoder of :mod:`dashboard.hdf5.decode`.
DECODER_PACKAGES = {
    GZIP: ("imagecodecs", "DEFLATE"),
    SHUFFLE: ("numpy", None),
    BLOSC: ("imagecodecs", "BLOSC"),
    LZ4: ("imagecodecs", "LZ4H5"),
    BITSHUFFLE: ("bitshuffle", None),
    ZSTD: ("imagecodecs", "ZSTD"),
}


def builtin_decoder(filter_id: int) -> bool:
    """Whether the project's own decoder (direct read path) can undo filter ``filter_id`` here."""
    if filter_id not in DECODERS:
        return False
    package, codec = DECODER_PACKAGES.get(filter_id, (None, None))
    if package is None or importlib.util.find_spec(package) is None:
        return False
    if codec is None:
        return True
    module = importlib.import_module(package)
    return bool(getattr(getattr(module, codec, None), "available", False))


def h5py_decoder(filter_id: int) -> bool:
    """Whether HDF5 itself (with hdf5plugin's filters) can undo filter ``filter_id``."""
    import hdf5plugin  # noqa: F401  (registers the plugin filters with HDF5)

    return bool(h5py.h5z.filter_avail(int(filter_id)))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def cost_report(stack) -> dict:
    """The storage layout of ``stack``'s dataset and what its frames cost to read.

    Parameters
    ----------
    stack : FrameStack
        An open stack (its counters say what was read so far).

    Returns
    -------
    dict
        ``dataset``, ``shape``, ``dtype``, ``layout`` (chunked/contiguous/…), ``chunks`` (or
        ``None``), ``chunks_per_frame``, ``frames_per_chunk``, ``frame_aligned``,
        ``frame_bytes`` (decoded), ``filters`` (``id``, ``name``, ``builtin``, ``h5py``,
        ``available``), ``read_path`` (``direct``/``h5py``), ``last_frame`` (path, requests,
        bytes, stored_bytes, seconds of the last frame shown, or ``None``), ``cache_hits``,
        ``cache_misses``, ``get_requests``, ``bytes_fetched`` (whole file so far) and
        ``warnings`` (sentences for the user; empty when frames are read the cheap way).
    """
    stats = stack.stats
    shape = tuple(int(n) for n in stack.shape)
    height, width = shape[-2:]
    frame_bytes = height * width * stack.dtype.itemsize
    chunks = stack.chunks
    layout = stack.layout
    if chunks is not None:
        ch, cw = chunks[-2:]
        tiles = (math.ceil(height / ch), math.ceil(width / cw))
        chunks_per_frame = tiles[0] * tiles[1]
        frames_per_chunk = math.prod(chunks[:-2]) if len(chunks) > 2 else 1
    else:
        tiles, chunks_per_frame, frames_per_chunk = (1, 1), 1, 1
    filters = []
    for f in stack.filters:
        builtin, native = builtin_decoder(f["id"]), h5py_decoder(f["id"])
        filters.append({"id": f["id"], "name": f["name"], "builtin": builtin, "h5py": native,
                        "available": builtin or native})

    warnings = []
    if chunks_per_frame > 1:
        warnings.append(
            f"Chunks are not frame-aligned: each {height}×{width} frame is split over "
            f"{_plural(chunks_per_frame, 'chunk')} ({tiles[0]}×{tiles[1]} tiles of "
            f"{chunks[-2]}×{chunks[-1]}), so every frame costs {chunks_per_frame} chunk "
            "reads and decodes (adjacent chunks share one GET). Boxes and profiles inside one "
            "tile read only that tile.")
    if frames_per_chunk > 1:
        warnings.append(
            f"Each chunk holds {frames_per_chunk} frames: showing one frame fetches and decodes "
            f"all {frames_per_chunk} (the next ones then come from the chunk cache).")
    missing = [f["name"] for f in filters if not f["available"]]
    if missing:
        warnings.append(f"No decoder for {', '.join(missing)} in this installation: frames "
                        "cannot be read.")
    elif stats["read_path"] == "h5py":
        why = [f["name"] for f in filters if not f["builtin"]]
        reason = (f"{', '.join(why)} has no built-in decoder" if why
                  else f"the dataset is {layout}")
        warnings.append(f"Frames are read through h5py ({reason}): one request at a time, "
                        "without the parallel direct path.")

    hits, misses = stats["cache_hits"], stats["cache_misses"]
    return {
        "url": stack.url,
        "dataset": stack.dataset,
        "shape": shape,
        "dtype": str(stack.dtype),
        "layout": layout,
        "chunks": chunks,
        "chunks_per_frame": chunks_per_frame,
        "frames_per_chunk": frames_per_chunk,
        "frame_aligned": chunks_per_frame == 1 and frames_per_chunk == 1,
        "frame_bytes": frame_bytes,
        "filters": filters,
        "read_path": stats["read_path"],
        "last_frame": stats["last_frame"],
        "cache_hits": hits,
        "cache_misses": misses,
        "get_requests": stats["get_requests"],
        "bytes_fetched": stats["bytes_fetched"],
        "warnings": warnings,
    }
