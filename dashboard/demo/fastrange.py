"""Serve ranged GETs from moto without reading the whole object (demo server only).

Why: moto 5 answers ``GET`` with ``Range: bytes=a-b`` by reading the *whole* object out of its
spooled temporary file (``FakeKey.value``) and slicing the result afterwards
(``S3Response._handle_range_header``). For the demo's 300 MB NeXus stack that is ~140 ms per
frame request, which makes frame-by-frame browsing feel slow, while a real S3/Ceph endpoint
reads only the bytes asked for.

What: :func:`install` wraps ``S3Response.get_object``. For a GET with one satisfiable byte range
(and no ``partNumber``), the key handed to moto's own ``get_object`` is a thin proxy whose
``value`` is a lazy window over the key's buffer; moto's unchanged ``_handle_range_header`` then
computes the range from ``len(window)`` and slices ``window[begin:end + 1]``, which reads only
those bytes (under the key's lock). Everything else — authentication, conditional headers,
metadata, error responses, requests without a range, multi-range and unparsable ranges — runs
moto's code path untouched, so responses are byte-for-byte the same (the tests compare them).

The patch is process-wide (moto's state is process-wide too) and idempotent; only the demo
store (:func:`dashboard.demo.store.start_demo_store`) installs it. :func:`uninstall` restores
moto's method.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_MARK = "_echo_fast_ranges_original"


class _Window:
    """``bytes``-like view of a moto key: ``len()`` is its size, slicing reads only the slice."""

    def __init__(self, key):
        self._key = key
        self._size = key.size

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __getitem__(self, item) -> bytes:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("only contiguous slices of an object can be read")
        start, stop, _ = item.indices(self._size)
        if stop <= start:
            return b""
        with self._key.lock:
            buffer = self._key._value_buffer
            buffer.seek(start)
            return buffer.read(stop - start)


class _WindowKey:
    """A moto ``FakeKey`` whose ``value`` is a :class:`_Window`; every other attribute delegates."""

    def __init__(self, key):
        self._key = key

    def __getattr__(self, name):
        return getattr(self._key, name)

    @property
    def value(self) -> _Window:
        return _Window(self._key)


def partial_range(header: str | None, size: int) -> bool:
    """Whether moto's ``_handle_range_header`` turns ``header`` into a 206 (or a 416 error).

    Mirrors moto 5.2's rules: one ``bytes=`` range; ``a-b``, ``a-`` or ``-n``. Multiple ranges,
    unparsable specs and ranges that moto answers with the whole object return ``False``, so
    those requests keep moto's own path.
    """
    if not header or "=" not in header:
        return False
    _, spec = header.split("=", 1)
    if "," in spec:
        return False
    try:
        begin, end = [int(i) if i else None for i in spec.split("-")]
    except ValueError:
        return False
    last = size - 1
    if (begin is None and end == 0) or (begin is not None and begin > last):
        return True  # moto raises InvalidRange from the length alone
    if begin is not None:
        end = last if end is None else min(end, last)
    elif end is not None:
        begin, end = size - min(end, size), last
    else:
        return False
    return begin <= min(end, last)


def install() -> None:
    """Make moto read only the requested bytes for single-range GETs (idempotent)."""
    from moto.s3.responses import S3Response

    with _lock:
        if hasattr(S3Response, _MARK):
            return
        original = S3Response.get_object

        def get_object(self):
            header = self.headers.get("range")
            if not header or self._get_int_param("partNumber"):
                return original(self)
            get_key = self._get_key

            def windowed_get_key(*args, **kwargs):
                key, not_modified = get_key(*args, **kwargs)
                if partial_range(header, key.size):
                    key = _WindowKey(key)
                return key, not_modified

            self._get_key = windowed_get_key  # this response object serves one request only
            try:
                return original(self)
            finally:
                del self._get_key

        get_object.__doc__ = original.__doc__
        setattr(S3Response, _MARK, original)
        S3Response.get_object = get_object


def uninstall() -> None:
    """Restore moto's own ``get_object``."""
    from moto.s3.responses import S3Response

    with _lock:
        original = S3Response.__dict__.get(_MARK)
        if original is not None:
            S3Response.get_object = original
            delattr(S3Response, _MARK)


def installed() -> bool:
    from moto.s3.responses import S3Response

    return _MARK in S3Response.__dict__
