"""HDF5 straight from S3 (or a local path): the lazy tree and the one reader of frames.

Modules (import them directly; nothing is imported eagerly here):

- :mod:`.source` — open ``s3://bucket/key`` or a path read-only (hdf5plugin registered, userblocks
  fine); metadata through a small block cache over ranged GETs; exact ``read_range``; I/O stats.
- :mod:`.tree` — ``children`` (one group, paged), ``walk`` (bounded breadth-first).
- :mod:`.stacks` — ``stack_candidates``, ``default_stack`` (NeXus default, well-known paths,
  then NXdata > NXdetector > others > NXmonitor, largest frame, most frames).
- :mod:`.describe` — ``describe`` (the ``info --json`` document), ``format_tree`` (its text).
- :mod:`.stack` — ``open_stack`` / ``StackSpec`` (within the pixel budget); :mod:`.frames` — ``FrameStack``:
  frames, cache, prefetch, mean; :mod:`.rangefile` — the block-cached metadata file object;
  :mod:`.metadata` — attributes and member names read within bounds.
- :mod:`.chunks` — the direct path: chunk index (lazy, then built in the background), exact GETs.
- :mod:`.decode` — Python decoders for gzip, shuffle, Blosc, LZ4, Bitshuffle(-LZ4/Zstd), Zstd.
- :mod:`.errors` — ``NotHDF5File``, ``TruncatedFile``, ``FilterUnavailable``, ``LinkUnreachable``,
  ``OutsideObject``, ``TooLarge``,
  ``NotAnImageStack``, ``ObjectChanged`` (all :class:`~dashboard.errors.EchoError`).
"""
